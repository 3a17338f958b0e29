r"""Gradient-based importance: how strongly the loss reacts to each weight.

For each batch :math:`b` let :math:`g_b = \partial L_b / \partial w` be the gradient of the
batch's loss (``loss_fn``, a mean over the batch) with respect to the **effective** weight
:math:`w` - the weight the forward pass uses, :math:`w_{orig} \odot mask` for a layer pruned with
``torch.nn.utils.prune``, so a pruned weight counts as zero. Every score is the average over the
first ``max_batches`` batches, weighted by batch size, written :math:`\mathbb{E}_b` below.

Per-batch terms are averaged (rather than taking the gradient accumulated over all batches)
because the gradient of a trained model averages out to almost zero over the data: the
accumulated gradient measures how well the batches cancel, not how sensitive the loss is.
Molchanov et al. (2019) likewise average the per-minibatch importance.

* ``gradient`` - sensitivity: per weight :math:`\mathbb{E}_b |g_b|`; per unit (neuron or output
  channel) the sum over the unit's weights. A pruned weight still gets its gradient, which says
  how much the loss would gain from letting it grow back (the regrowth criterion of RigL, Evci
  et al., "Rigging the Lottery", ICML 2020).
* ``taylor`` - first-order Taylor estimate of the loss change when a weight is set to zero,
  :math:`L(w = 0) - L(w) \approx -g\,w` ("importance = gradient x weight"): per weight
  :math:`\mathbb{E}_b |w\,g_b|`; per unit the group estimate
  :math:`\mathbb{E}_b |\sum_{s \in unit} w_s g_{b,s}|` (all of a unit's weights removed at
  once). Molchanov et al., "Pruning Convolutional Neural Networks for Resource Efficient
  Inference", ICLR 2017, which writes it on activations: for a unit with output :math:`z`,
  :math:`\sum z\,\partial L / \partial z` over a batch equals :math:`\sum w g` plus the bias
  term (that paper takes the absolute value per example, this scorer per batch);
  Molchanov et al., "Importance Estimation for Neural Network Pruning", CVPR 2019, which
  squares the group sum instead of taking its absolute value - the same ranking for each batch.
  Biases are not included (as in Torch-Pruning's ``GroupTaylorImportance`` default).
* ``hessian`` - Optimal Brain Damage (LeCun, Denker & Solla, NIPS 2, 1990): the
  second-order loss change of removing weight :math:`i` at a minimum (:math:`g \approx 0`) with a
  diagonal Hessian is :math:`\tfrac12 h_{ii} w_i^2`. :math:`h_{ii}` is approximated by the
  empirical Fisher information :math:`\mathbb{E}_b\, g_{b,i}^2` of **per-batch** gradients.
  With batches of :math:`B` samples its expectation is :math:`\bar g_i^2 + \mathrm{Var}_i / B`
  (mean and variance of the per-sample gradients) instead of the per-sample Fisher's
  :math:`\bar g_i^2 + \mathrm{Var}_i`; a loader with ``batch_size=1`` gives the per-sample
  empirical Fisher exactly, at the cost of one backward pass per sample. Per unit: the sum over
  the unit's weights (under a diagonal Hessian the saliency of a set is the sum of its members').

The model runs in eval mode (batch norm uses its running statistics, dropout is off), so scoring
is deterministic and leaves batch-norm statistics alone, and gradients are taken with respect to
fresh leaf tensors swapped in for the weights (``torch.func.functional_call``): the model's
parameters, ``requires_grad`` flags, ``.grad`` and train/eval modes are left as they were.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils import prune

from pruneplug import Batch, LossFn, Scorer, Scores, effective_weight, hookimpl, prunable_layers
from pruneplug.plumbing import (
    batch_loss,
    evaluation_mode,
    max_batches_param,
    model_device,
    take_batches,
)


@contextmanager
def masked_weights_kept(model: nn.Module) -> Iterator[None]:
    """Give masked tensors back their attribute after the block.

    A pruned layer's forward pre-hook recomputes ``weight = weight_orig * weight_mask`` (or
    ``weight_ih_l0``, ``in_proj_weight``... for the tensors of recurrent and attention layers)
    as a plain attribute on every forward pass; restoring them leaves the model exactly as it
    was (not holding tensors of the block's autograd graph).
    """
    kept = [
        (module, name, module.__dict__[name])
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
        and (name := hook._tensor_name) in module.__dict__
    ]
    try:
        yield
    finally:
        for module, name, tensor in kept:
            setattr(module, name, tensor)


@contextmanager
def weight_leaves(
    model: nn.Module,
) -> Iterator[tuple[Callable[[Tensor], Tensor], dict[str, Tensor]]]:
    """A forward function of ``model`` in eval mode whose prunable weights are fresh leaves.

    Yields ``(forward, leaves)``: ``leaves`` maps each prunable layer's name to a new tensor
    holding its effective weight (``weight_orig * weight_mask`` for a pruned layer) that requires
    grad, and ``forward(inputs)`` runs the model with those leaves swapped in by
    :func:`torch.func.functional_call` (a pruned layer's mask is swapped for ones, so its leaf is
    exactly the weight the layer uses). Gradients are taken with respect to the leaves, so the
    model's own parameters keep their ``requires_grad`` flags and ``.grad``; afterwards the modes
    and the pruned layers' ``weight`` attributes are restored.
    """
    layers = prunable_layers(model)
    leaves = {name: effective_weight(layer).requires_grad_() for name, layer in layers.items()}
    swapped: dict[str, Tensor] = {}
    for name, layer in layers.items():
        prefix = f"{name}." if name else ""
        if hasattr(layer, "weight_orig"):
            swapped[prefix + "weight_orig"] = leaves[name]
            swapped[prefix + "weight_mask"] = torch.ones_like(layer.weight_mask)
        else:
            swapped[prefix + "weight"] = leaves[name]

    def forward(inputs: Tensor) -> Tensor:
        return functional_call(model, swapped, (inputs,))

    with masked_weights_kept(model), evaluation_mode(model), torch.enable_grad():
        yield forward, leaves  # grad is enabled even if the caller disabled it


class BatchAveragedScorer(Scorer):
    """Base of the gradient scorers: average per-batch terms of (weight, gradient).

    Subclasses implement :meth:`terms`, returning the per-weight and per-unit term of one
    batch; :meth:`score` averages them over the batches, weighted by batch size.
    """

    needs_data = True
    params = (max_batches_param(10),)

    def terms(self, weight: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        """Per-weight and per-unit term of one batch for a layer's ``weight`` and its ``grad``."""
        raise NotImplementedError

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        assert batches is not None  # Scorer.__call__ refuses needs_data scorers without data
        taken = take_batches(batches, self.config["max_batches"], model_device(model))
        weight_sums: dict[str, Tensor] = {}
        unit_sums: dict[str, Tensor] = {}
        samples = 0
        with weight_leaves(model) as (forward, leaves):
            for index, (inputs, targets) in enumerate(taken):
                loss = batch_loss(forward, inputs, targets, loss_fn, index)
                grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                samples += len(inputs)
                for (name, leaf), grad in zip(leaves.items(), grads, strict=True):
                    weight = leaf.detach()
                    per_weight, per_unit = self.terms(
                        weight, torch.zeros_like(weight) if grad is None else grad
                    )
                    weight_sums[name] = weight_sums.get(name, 0) + len(inputs) * per_weight
                    unit_sums[name] = unit_sums.get(name, 0) + len(inputs) * per_unit
        return Scores(
            weight={n: s / samples for n, s in weight_sums.items()},
            unit={n: s / samples for n, s in unit_sums.items()},
        )


class Gradient(BatchAveragedScorer):
    name = "gradient"
    description = "|dL/dw| averaged over batches; per unit the sum over the unit's weights"

    def terms(self, weight: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        per_weight = grad.abs()
        return per_weight, per_weight.flatten(1).sum(1)


class Taylor(BatchAveragedScorer):
    name = "taylor"
    description = "First-order Taylor |w * dL/dw|; per unit |sum of w * dL/dw| (Molchanov 2019)"

    def terms(self, weight: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        product = weight * grad
        return product.abs(), product.flatten(1).sum(1).abs()


class Hessian(BatchAveragedScorer):
    name = "hessian"
    description = (
        "Optimal Brain Damage 1/2 h w^2, h from squared batch gradients (empirical Fisher)"
    )

    def terms(self, weight: Tensor, grad: Tensor) -> tuple[Tensor, Tensor]:
        per_weight = 0.5 * grad.square() * weight.square()
        return per_weight, per_weight.flatten(1).sum(1)


@hookimpl
def register_scorers(register):
    register(Gradient)
    register(Taylor)
    register(Hessian)
