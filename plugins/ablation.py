r"""Ablation (error-based) importance: remove each unit and measure what the loss does.

For every output unit :math:`k` (neuron of a Linear, output channel of a Conv) of every prunable
layer, the score is the increase of the loss on the given batches when that one unit is removed:

.. math:: \mathrm{score}(k) = L(\text{model without unit } k) - L(\text{model})

(higher means keep; it can be negative when a unit hurts). This is the quantity the Taylor
scores only estimate, measured exactly, one unit at a time - the "oracle" ranking of Molchanov et
al., "Pruning Convolutional Neural Networks for Resource Efficient Inference", ICLR 2017, and the
sensitivity-by-removal idea of Mozer & Smolensky, "Skeletonization", NeurIPS 1988.

How a unit is removed: a forward hook zeroes its output, so neither the weights nor the model are
changed. When the layer feeds a batch norm directly (found as in
:mod:`pruneplug_plugins.bn_scale`), the batch norm's output channel is zeroed instead, since a
structured prune removes the channel from both (zeroing before the batch norm would leave its
shift :math:`\beta - \gamma \mu / \sigma`). Removal equals zeroing when the activation that follows
maps 0 to 0 (ReLU, GELU, SiLU, tanh); residual connections that share the channel are not
removed with it - this is a single-layer ablation.

Cost: one forward pass per unit and batch (the reference CNN on the 200 validation digits: about
11 s on one CPU thread). To batch the work, ``units_per_pass`` units are ablated side by side: the
batch is replicated that many times and the hook zeroes a different unit in each replica (the
model's first dimension must be the batch). This vectorises the passes, which helps where small
batches leave the hardware idle (a GPU), but does not reduce the arithmetic. The model runs in eval
mode (batch norm with running statistics, dropout off) under ``torch.no_grad``; modes, hooks and
pruned layers' ``weight`` attributes are restored afterwards. ``progress=True`` shows a ``tqdm``
bar; it is off by default so notebooks and logs stay deterministic. Per-unit scores only: ablating
single weights is out of scope (one forward pass per weight).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from pruneplug import Batch, LossFn, Param, Scorer, Scores, hookimpl, prunable_layers
from pruneplug.plumbing import (
    batch_loss,
    evaluation_mode,
    max_batches_param,
    model_device,
    take_batches,
)

from .bn_scale import batchnorm_after
from .gradient import masked_weights_kept

Hook = Callable[[nn.Module, tuple, Tensor], Tensor]


def zero_one_unit_per_replica(units: Sequence[int], axis: int) -> Hook:
    """Forward hook: replica ``r`` of the (replicated) batch gets unit ``units[r]`` zeroed.

    ``axis`` is the unit dimension of the module's output (-1 for Linear, 1 for conv and batch
    norm outputs).
    """

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
        replicas = output.unflatten(0, (len(units), -1))
        dim = axis % output.dim() + 1
        keep = torch.ones(len(units), replicas.shape[dim], dtype=output.dtype, device=output.device)
        keep[torch.arange(len(units)), torch.tensor(units)] = 0
        shape = [len(units)] + [1] * (replicas.dim() - 1)
        shape[dim] = replicas.shape[dim]
        return (replicas * keep.view(shape)).flatten(0, 1)

    return hook


class Ablation(Scorer):
    name = "ablation"
    description = "Loss increase when each unit is removed (exact; batched; per unit)"
    needs_data = True
    params = (
        max_batches_param(4),
        Param(
            "units_per_pass",
            int,
            16,
            low=1,
            help="units ablated side by side in one forward pass (the batch is replicated)",
        ),
        Param("progress", bool, False, help="show a tqdm progress bar"),
    )

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        assert batches is not None  # Scorer.__call__ refuses needs_data scorers without data
        taken = take_batches(batches, self.config["max_batches"], model_device(model))
        per_pass = self.config["units_per_pass"]
        layers = prunable_layers(model)
        after = batchnorm_after(model)
        samples = sum(len(x) for x, _ in taken)
        chunks = {
            name: [
                list(range(start, min(start + per_pass, units)))
                for start in range(0, units, per_pass)
            ]
            for name, units in ((n, m.weight.shape[0]) for n, m in layers.items())
        }
        passes = sum(len(c) for c in chunks.values()) * len(taken)
        scores = Scores()
        bar = tqdm(total=passes, desc="ablation", disable=not self.config["progress"])
        with bar, masked_weights_kept(model), evaluation_mode(model), torch.no_grad():
            baseline = [batch_loss(model, x, y, loss_fn, i) for i, (x, y) in enumerate(taken)]
            for name, layer in layers.items():
                target = model.get_submodule(after.get(name, name))
                axis = -1 if isinstance(target, nn.Linear) else 1
                total = torch.zeros(layer.weight.shape[0], dtype=torch.float64)
                for units in chunks[name]:
                    handle = target.register_forward_hook(zero_one_unit_per_replica(units, axis))
                    try:
                        for (x, y), base in zip(taken, baseline, strict=True):
                            out = model(x.repeat(len(units), *[1] * (x.dim() - 1)))
                            losses = [loss_fn(logits, y) for logits in out.split(len(x))]
                            increases = (torch.stack(losses) - base).tolist()  # one wait a pass
                            for unit, increase in zip(units, increases, strict=True):
                                total[unit] += len(x) * increase
                            bar.update()
                    finally:
                        handle.remove()
                scores.unit[name] = (total / samples).to(layer.weight)
        return scores


@hookimpl
def register_scorers(register):
    register(Ablation)
