r"""Unstructured pruning: zero individual weights with PyTorch's own masks.

Given per-weight scores :math:`s` (higher means keep), the pruner removes

* by **rate** ``amount``: the :math:`\lfloor a \cdot n \rceil` lowest-scored weights, where
  :math:`n` counts the weights of one layer (``scope="local"``) or of all scored layers in one
  ranking (``scope="global"``). ``amount`` is the sparsity reached *after* the call, counting
  weights that were already pruned, so a schedule can ask for 50 %, then 80 %, then 90 %;
* by **threshold** :math:`t`: every weight with :math:`s < t`.

Masks are applied with :func:`torch.nn.utils.prune.custom_from_mask`, so a pruned layer has
``weight_orig``, ``weight_mask`` and a forward pre-hook, and ``prune.is_pruned`` /
``prune.remove`` work. Scores of the weights outside Linear and Conv layers (``Scores.tensor``:
attention's ``in_proj_weight``, recurrent weights, embeddings; see
:func:`pruneplug.plumbing.prunable_tensors`) are pruned the same way and ranked with the layers
(``in_proj_weight_orig``, ``in_proj_weight_mask`` on the attention module). Pruning a pruned
model composes masks as PyTorch does (their product):
a pruned weight never comes back. A prune never empties a layer: global rate pruning keeps each
layer's best weight, and a threshold above every score of a layer is refused.

Han et al., "Learning both Weights and Connections for Efficient Neural Networks", NeurIPS 2015;
Zhu & Gupta, "To prune, or not to prune", 2017 (global vs local rates).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from pruneplug import Param, Pruner, Scores, hookimpl
from pruneplug.plumbing import layer_tensor, prunable_targets


def current_mask(layer: nn.Module, name: str = "weight") -> Tensor:
    """The mask of ``layer.<name>`` (all ones when it is not pruned yet)."""
    mask = getattr(layer, f"{name}_mask", None)
    if mask is None:
        return torch.ones_like(layer_tensor(layer, name), dtype=torch.bool)
    return layer_tensor(layer, f"{name}_mask").bool()


def keep_masks_by_rate(
    scores: dict[str, Tensor], alive: dict[str, Tensor], amount: float, scope: str
) -> dict[str, Tensor]:
    """Masks (True = keep) that reach sparsity ``amount`` per layer or over all layers."""
    groups = {n: [n] for n in scores} if scope == "local" else {"all": list(scores)}
    masks: dict[str, Tensor] = {}
    for names in groups.values():
        # already-pruned weights rank first so they stay pruned
        flat = torch.cat([scores[n].flatten().where(alive[n].flatten(), -torch.inf) for n in names])
        remove = min(round(amount * flat.numel()), flat.numel())
        keep = torch.ones_like(flat, dtype=torch.bool)
        if remove:
            keep[flat.topk(remove, largest=False).indices] = False
        for name, piece in zip(names, keep.split([scores[n].numel() for n in names]), strict=True):
            piece = piece.view_as(scores[name]) & alive[name]
            if not piece.any():  # never empty a layer: keep its best live weight
                best = scores[name].where(alive[name], -torch.inf).flatten().argmax()
                piece.view(-1)[best] = True
            masks[name] = piece
    return masks


class Unstructured(Pruner):
    name = "unstructured"
    description = "Zero individual weights (PyTorch masks), local or global, by rate or threshold"
    params = (
        Param(
            "scope",
            str,
            "global",
            choices=("local", "global"),
            help="rank weights within each layer (local) or across all layers (global)",
        ),
    )

    def prune(
        self, model: nn.Module, scores: Scores, *, amount: float | None, threshold: float | None
    ) -> nn.Module:
        if not scores.weight and not scores.tensor:
            raise ValueError(
                "the unstructured pruner needs per-weight scores, but the scores hold only "
                "per-unit ones: use a scorer that scores weights, or the structured pruner"
            )
        known = prunable_targets(model)  # layer name -> (layer, "weight"); tensor name -> ...
        targets = {n: known[n] for n in (*scores.weight, *scores.tensor)}
        alive = {n: current_mask(*target) for n, target in targets.items()}
        given = {**scores.weight, **scores.tensor}
        weights = {n: s.detach().to(alive[n].device) for n, s in given.items()}
        if threshold is not None:
            masks = {n: (s >= threshold) & alive[n] for n, s in weights.items()}
            empty = [n for n, m in masks.items() if not m.any()]
            if empty:
                top = weights[empty[0]].where(alive[empty[0]], -torch.inf).max().item()
                raise ValueError(
                    f"threshold={threshold:g} would remove every weight of layer {empty[0]!r} "
                    f"(its highest score is {top:.4g}): lower the threshold"
                )
        else:
            masks = keep_masks_by_rate(weights, alive, amount, self.config["scope"])
        for name, mask in masks.items():  # every mask is computed before any is applied
            module, attribute = targets[name]
            dtype = layer_tensor(module, attribute).dtype
            prune.custom_from_mask(module, attribute, mask.to(dtype))
        return model


@hookimpl
def register_pruners(register):
    register(Unstructured)
