r"""Head importance: how much the loss depends on each attention head (and on each unit).

Michel, Levy & Neubig, "Are Sixteen Heads Really Better than One?", NeurIPS 2019. A mask
variable :math:`\xi_h` multiplies the output of head :math:`h` of a multi-head attention layer,
:math:`\mathrm{MHA}(x) = \sum_h \xi_h\, W^O_h\, \mathrm{Att}_h(x) + b^O`, and the importance of
the head is the expected sensitivity of the loss to it at :math:`\xi = 1`,

.. math:: I_h = \mathbb{E}_{x} \left| \frac{\partial L(x)}{\partial \xi_h} \right|,

which by the chain rule is :math:`\mathbb{E}_x |\mathrm{Att}_h(x)^\top W^{O\top}_h
\partial L / \partial \mathrm{MHA}(x)|`, a first-order Taylor estimate of the loss change when
the head is removed (so heads with little effect score near zero).

The expectation runs over **samples**, not batches: every sample gets its own mask
(:math:`\xi \in \mathbb{R}^{N \times H}` for a batch of :math:`N`), so one backward pass of
the batch's mean loss gives each sample's gradient, :math:`\partial L(x_n) / \partial \xi_h =
N\, \partial \bar L / \partial \xi_{n,h}` (eval mode: samples do not interact). This assumes
``loss_fn`` averages over the batch, as everywhere in pruneplug.

The same mask on every **output unit** (neuron of a Linear, channel of a Conv) of the prunable
layers gives their importance by the same formula, :math:`I_i = \mathbb{E}_x |\partial
L(x) / \partial \xi_i|` with :math:`\xi_i` multiplying unit :math:`i`'s output (the
per-example Taylor criterion of Molchanov et al., ICLR 2017). These are the scorer's
``Scores.unit``, what the structured pruner ranks; a mask's rows follow the output's leading
dimension, the batch for every layer of a batch-first model (a sequence-first layer sums over
its positions instead).

**From heads to the structured pruner.** ``nn.MultiheadAttention`` couples its heads to its
input and output width (``embed_dim`` = heads x ``head_dim``), so the structured pruner
removes a head together with its channels of the residual stream, in every attention layer
that shares the stream; its head score is the mean of the unit scores of the layers writing
the stream (a ViT's patch embedding and MLP outputs). pruneplug's ``Scores`` name prunable
layers only, and ``prunable_layers`` leaves out the attention's ``out_proj``, so the per-head
scores :math:`I_h` are not part of ``Scores``: :func:`head_scores` returns them (attention
module name -> one score per head), for reports and for choosing heads by hand.

Gradients are taken with respect to the masks only (``torch.autograd.grad``): the model's
parameters, their ``.grad`` and ``requires_grad`` flags are untouched; the masks are applied by
forward hooks on the prunable layers and, for attention, by a ``TorchFunctionMode`` that
catches ``F.multi_head_attention_forward`` (which also keeps PyTorch's fused fast path off).
Hooks are removed, modes and masked layers' ``weight`` attributes restored, even on error.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from pruneplug_plugins.gradient import masked_weights_kept
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from pruneplug import Batch, LossFn, Scorer, Scores, hookimpl, prunable_layers
from pruneplug.plumbing import (
    batch_loss,
    evaluation_mode,
    max_batches_param,
    model_device,
    take_batches,
)

ATTENTION_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


class Masks:
    """The masks of one batch: per key (a layer or attention name) the mask tensors it used.

    A mask is made on a key's first call, ``rows x units`` of ones that require grad; a later
    call of the same shape (a layer used twice) reuses it, so the gradient sums over both uses.
    """

    def __init__(self) -> None:
        self.tensors: dict[str, list[Tensor]] = {}

    def get(self, key: str, rows: int, units: int, like: Tensor) -> Tensor:
        for mask in self.tensors.setdefault(key, []):
            if mask.shape == (rows, units):
                return mask
        mask = torch.ones(rows, units, dtype=like.dtype, device=like.device, requires_grad=True)
        self.tensors[key].append(mask)
        return mask


class HeadMaskMode(TorchFunctionMode):
    """Multiply each head's output by its mask in the attention calls of known modules.

    ``F.multi_head_attention_forward`` is run with an identity output projection and no bias
    (exact: one non-zero product per output), which returns the concatenated head outputs
    ``(L, N, E)`` (or ``(L, E)`` unbatched); they are masked per sample and head, then
    projected with the module's own ``out_proj``.
    """

    def __init__(self, attention: dict[int, tuple[str, int]], masks: Masks) -> None:
        super().__init__()
        self.attention = attention  # id(out_proj.weight) -> (module name, num_heads)
        self.masks = masks

    def __torch_function__(
        self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if func is not F.multi_head_attention_forward:
            return func(*args, **kwargs)
        bound = ATTENTION_SIGNATURE.bind(*args, **kwargs)
        weight, bias = bound.arguments["out_proj_weight"], bound.arguments["out_proj_bias"]
        if id(weight) not in self.attention:
            return func(*args, **kwargs)
        name, heads = self.attention[id(weight)]
        bound.arguments["out_proj_weight"] = torch.eye(
            weight.shape[1], dtype=weight.dtype, device=weight.device
        )
        bound.arguments["out_proj_bias"] = None
        concatenated, attention_weights = func(*bound.args, **bound.kwargs)
        batched = concatenated.dim() == 3
        heads_out = concatenated if batched else concatenated.unsqueeze(1)  # (L, N, E)
        length, rows, width = heads_out.shape
        mask = self.masks.get(name, rows, heads, heads_out)
        masked = heads_out.view(length, rows, heads, width // heads) * mask[None, :, :, None]
        out = F.linear(masked.view(length, rows, width), weight, bias)
        return (out if batched else out.squeeze(1)), attention_weights


def unit_mask_hook(name: str, masks: Masks) -> Callable:
    """A forward hook multiplying each output unit of a Linear/Conv by its mask."""

    def hook(layer: nn.Module, args: tuple, output: Tensor) -> Tensor:
        if isinstance(layer, nn.Linear):
            if output.dim() == 1:  # one unbatched sample
                return output * masks.get(name, 1, output.shape[0], output)[0]
            rows, units = output.shape[0], output.shape[-1]
            mask = masks.get(name, rows, units, output)
            return output * mask.view(rows, *[1] * (output.dim() - 2), units)
        batched = output.dim() == layer.weight.dim()
        rows, units = (output.shape[0], output.shape[1]) if batched else (1, output.shape[0])
        mask = masks.get(name, rows, units, output)
        shaped = mask.view(rows, units, *[1] * (output.dim() - 2))
        return output * (shaped if batched else shaped[0])

    return hook


@contextmanager
def masked_forward(model: nn.Module, masks: Masks) -> Iterator[None]:
    """Apply ``masks`` to every prunable layer's units and every attention head of ``model``."""
    attention = {
        id(m.out_proj.weight): (name, m.num_heads)
        for name, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
    }
    handles = [
        layer.register_forward_hook(unit_mask_hook(name, masks))
        for name, layer in prunable_layers(model).items()
    ]
    try:
        with masked_weights_kept(model), evaluation_mode(model), torch.enable_grad():
            with HeadMaskMode(attention, masks):
                yield
    finally:
        for handle in handles:
            handle.remove()


def mask_importance(model: nn.Module, batches: list[Batch], loss_fn: LossFn) -> dict[str, Tensor]:
    r""":math:`\mathbb{E}_x |\partial L(x) / \partial \xi|` for every mask key of ``model``:
    prunable layers (one score per unit) and attention modules (one per head)."""
    sums: dict[str, Tensor] = {}
    samples = 0
    for index, (inputs, targets) in enumerate(batches):
        masks = Masks()
        with masked_forward(model, masks):
            loss = batch_loss(model, inputs, targets, loss_fn, index)
        keys = [key for key, used in masks.tensors.items() for _ in used]
        used = [mask for tensors in masks.tensors.values() for mask in tensors]
        samples += len(inputs)
        if not loss.requires_grad:  # no mask reaches the loss (e.g. a detached forward)
            continue
        grads = torch.autograd.grad(loss, used, allow_unused=True)
        for key, grad in zip(keys, grads, strict=True):
            if grad is not None:  # per sample: N times the gradient of the batch's mean loss
                term = len(inputs) * grad.detach().abs().sum(0)
                sums[key] = sums.get(key, torch.zeros_like(term)) + term
    return {key: total / max(samples, 1) for key, total in sums.items()}


def head_scores(
    model: nn.Module,
    batches: Iterable[Batch],
    loss_fn: LossFn = F.cross_entropy,
    max_batches: int = 8,
) -> dict[str, Tensor]:
    """Michel et al.'s :math:`I_h` of every ``nn.MultiheadAttention`` of ``model``, by name.

    One score per head (higher means keep), averaged over the samples of the first
    ``max_batches`` batches; the model is left as it was.
    """
    taken = take_batches(batches, max_batches, model_device(model))
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    importance = mask_importance(model, taken, loss_fn)
    return {
        name: importance.get(name, unused_heads(model.get_submodule(name))) for name in attention
    }


def unused_heads(module: nn.Module) -> Tensor:
    """Zero scores for an attention module the batches never ran (one per head)."""
    assert isinstance(module, nn.MultiheadAttention)
    return torch.zeros(module.num_heads, device=module.out_proj.weight.device)


class HeadImportance(Scorer):
    name = "head_importance"
    description = "E|dL/d xi| of a mask on each attention head / unit (Michel et al. 2019)"
    needs_data = True
    params = (max_batches_param(8),)

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        assert batches is not None  # Scorer.__call__ refuses needs_data scorers without data
        taken = take_batches(batches, self.config["max_batches"], model_device(model))
        importance = mask_importance(model, taken, loss_fn)
        units = {}
        for name, layer in prunable_layers(model).items():
            width = layer.weight.shape[0]
            score = importance.get(name, torch.zeros(width, device=layer.weight.device))
            units[name] = score.to(layer.weight.dtype)
        return Scores(unit=units)


@hookimpl
def register_scorers(register):
    register(HeadImportance)
