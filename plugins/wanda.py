r"""Wanda importance: a weight matters as much as it is large times how large its input is.

Sun, Liu, Bair & Kolter, "A Simple and Effective Pruning Approach for Large Language Models"
(Wanda, "pruning by weights and activations"), ICLR 2024. The score of weight :math:`W_{ij}`,
from input feature :math:`j` to output unit :math:`i`, is

.. math:: S_{ij} = |W_{ij}| \cdot \|X_j\|_2,

where :math:`X_j` collects feature :math:`j` of the layer's input over every calibration token:
all samples of the first ``max_batches`` batches, and for a Linear every position of its
leading dimensions (sequence tokens), so :math:`\|X_j\|_2^2 = \sum_{\text{tokens}} x_j^2`. A
large weight on a feature that is always near zero changes little; a small weight on a feature
with huge activations (the outlier features of large models) does. Without the input norm the
score is plain magnitude.

* **Linear**: :math:`X_j` is column :math:`j` of the input flattened to (tokens, in_features).
* **Conv**: the input norm is taken per input channel, over samples and positions, and
  broadcast over the kernel: :math:`S_{o,c,k} = |W_{o,c,k}| \cdot \|X_{g(o) C_g + c}\|_2`
  where a grouped convolution's output :math:`o` in group :math:`g(o)` reads the
  :math:`C_g` input channels of its group.
* **Per unit** (neuron / output channel): the sum of the unit's weight scores, the usual
  reduction (``Scores.units``), which the structured pruner reads.

The paper compares scores within each output row (per-output pruning); pruneplug's pruners
choose the comparison group (an unstructured pruner ranks all of a layer's or model's
weights). The norms are gathered with forward pre-hooks on the prunable layers during
no-grad, eval-mode forward passes; a layer called twice sees both inputs, one never called
scores zero. A masked (already pruned) layer is scored on its effective weight, so a pruned
weight scores zero. The model is left as it was: hooks removed, modes and the masked layers'
``weight`` attributes restored, even when a batch does not fit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pruneplug_plugins.gradient import masked_weights_kept
from torch import Tensor, nn

from pruneplug import Batch, LossFn, Scorer, Scores, effective_weight, hookimpl, prunable_layers
from pruneplug.plumbing import (
    batch_loss,
    evaluation_mode,
    max_batches_param,
    model_device,
    take_batches,
)


def squared_input_norms(layer: nn.Module, inputs: Tensor) -> Tensor:
    """Sum of squares of each input feature (Linear) or input channel (Conv) of one call."""
    x = inputs.detach().float()
    if isinstance(layer, nn.Linear):
        return x.reshape(-1, x.shape[-1]).square().sum(0)
    if x.dim() == layer.weight.dim() - 1:  # an unbatched convolution input (C, *spatial)
        x = x.unsqueeze(0)
    return x.transpose(0, 1).reshape(x.shape[1], -1).square().sum(1)


def wanda_scores(weight: Tensor, norms: Tensor, groups: int = 1) -> Tensor:
    """:math:`|W| \\cdot \\|X_j\\|_2` shaped like ``weight``, ``norms`` the input norms.

    For a convolution with ``groups`` groups, output unit :math:`o` reads input channels
    :math:`g(o) C_g, ..., g(o) C_g + C_g - 1` with :math:`C_g` = ``weight.shape[1]``.
    """
    per_group = weight.shape[1]
    index = torch.arange(per_group, device=weight.device)
    group_of = torch.arange(weight.shape[0], device=weight.device) // (weight.shape[0] // groups)
    scale = norms[group_of[:, None] * per_group + index[None, :]]  # out x in-per-group
    return weight.abs() * scale.view(*scale.shape, *[1] * (weight.dim() - 2)).to(weight.dtype)


class Wanda(Scorer):
    name = "wanda"
    description = "|W_ij| * ||X_j||_2: weight times its input's norm on calibration data (Wanda)"
    needs_data = True
    params = (max_batches_param(8),)

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        assert batches is not None  # Scorer.__call__ refuses needs_data scorers without data
        taken = take_batches(batches, self.config["max_batches"], model_device(model))
        layers = prunable_layers(model)
        sums = {
            name: torch.zeros(
                layer.weight.shape[1] * getattr(layer, "groups", 1), device=layer.weight.device
            )
            for name, layer in layers.items()
        }

        def recorder(name: str):
            def record(layer: nn.Module, args: tuple) -> None:
                sums[name] += squared_input_norms(layer, args[0])

            return record

        handles = [layer.register_forward_pre_hook(recorder(n)) for n, layer in layers.items()]
        try:
            with masked_weights_kept(model), evaluation_mode(model), torch.no_grad():
                for index, (inputs, targets) in enumerate(taken):
                    batch_loss(model, inputs, targets, loss_fn, index)
        finally:
            for handle in handles:
                handle.remove()
        weights = {
            name: wanda_scores(
                effective_weight(layer), sums[name].sqrt(), getattr(layer, "groups", 1)
            )
            for name, layer in layers.items()
        }
        return Scores(weight=weights, unit={n: w.flatten(1).sum(1) for n, w in weights.items()})


@hookimpl
def register_scorers(register):
    register(Wanda)
