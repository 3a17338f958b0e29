r"""N:M pruning: keep the ``n`` best of every ``m`` consecutive weights (2:4 by default).

For each group :math:`G` of ``m`` consecutive weights along a layer's **input dimension**, with
per-weight scores :math:`s` (higher means keep), the mask keeps

.. math:: \mathrm{keep}_i = [\, s_i \text{ is among the } n \text{ largest of }
          \{ s_j : j \in G \} \,] \quad (i \in G),

so every group holds at most ``n`` non-zeros and the layer's sparsity is :math:`1 - n/m`
(50 % for 2:4) by construction: the pruner takes no ``amount``. Groups run

* for ``nn.Linear`` (``out x in``), along ``in_features``: ``weight[o, 4k : 4k + 4]``;
* for convolutions (``out x in x k...``), along the input channels at each kernel position,
  as NVIDIA's ASP groups them after permuting ``[out, in, kh, kw]`` to ``[out, kh, kw, in]``:
  ``weight[o, 4k : 4k + 4, y, x]`` (for a grouped convolution, the channels of its group).

2:4 is the pattern NVIDIA's sparse tensor cores (Ampere and later) execute at twice the dense
math rate; :func:`pruneplug.sparse.to_semi_structured` converts 2:4 Linear layers for them.

Masks are applied with :func:`torch.nn.utils.prune.custom_from_mask` and compose with earlier
ones: a weight already pruned ranks last in its group and stays pruned, so a group keeps
``min(n, weights still alive)``. A layer whose input dimension is not a multiple of ``m`` (a
first convolution on 1 or 3 image channels, a depthwise convolution, a 10-feature classifier)
is **left dense**, as ASP does, with a :class:`pruneplug.sparse.LeftDenseWarning` naming it:
it still gets a mask (keeping what it had), so the whole model follows PyTorch's convention.

Mishra et al., "Accelerating Sparse Deep Neural Networks", arXiv 2104.08378, 2021 (2:4 on
Ampere, ASP); Zhou et al., "Learning N:M Fine-grained Structured Sparse Neural Networks From
Scratch", ICLR 2021 (N:M sparsity).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from pruneplug import Param, ParamError, Pruner, Scores, hookimpl, prunable_layers
from pruneplug.plumbing import layer_tensor
from pruneplug.sparse import LeftDenseWarning, nm_groups


class NM(Pruner):
    name = "n_m"
    description = "N:M sparsity: keep the n best of every m consecutive input weights (2:4)"
    params = (
        Param("n", int, 2, low=1, high=31, help="weights kept in each group (n < m)"),
        Param("m", int, 4, low=2, high=32, help="consecutive input weights per group"),
    )
    takes_amount = False

    def check_config(self, config: Mapping[str, Any]) -> None:
        if config["n"] >= config["m"]:
            raise ParamError(
                f"pruner {self.name!r}: n={config['n']} must be below m={config['m']} (n of "
                "every m weights are kept; n = m keeps everything): e.g. n=2, m=4"
            )

    def prune(
        self, model: nn.Module, scores: Scores, *, amount: float | None, threshold: float | None
    ) -> nn.Module:
        if not scores.weight:
            raise ValueError(
                "the n_m pruner needs per-weight scores, but the scores hold only per-unit "
                "ones: use a scorer that scores weights (e.g. 'magnitude')"
            )
        n, m = self.config["n"], self.config["m"]
        layers = prunable_layers(model)
        masks: dict[str, torch.Tensor] = {}
        dense: list[str] = []
        for name, score in scores.weight.items():
            layer = layers[name]
            if hasattr(layer, "weight_mask"):
                alive = layer_tensor(layer, "weight_mask").bool()
            else:
                alive = torch.ones_like(layer_tensor(layer), dtype=torch.bool)
            if alive.shape[1] % m:
                masks[name] = alive
                dense.append(f"{name!r} (input dimension {alive.shape[1]})")
                continue
            # already-pruned weights rank last in their group, so they stay pruned
            groups = nm_groups(score.detach().to(alive.device).where(alive, -torch.inf), m)
            keep = torch.zeros_like(groups, dtype=torch.bool)
            keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
            masks[name] = keep.flatten(-2).movedim(-1, 1) & alive
        if dense:
            warnings.warn(
                f"n_m ({n}:{m}) left {', '.join(dense)} dense: an input dimension that is not a "
                f"multiple of {m} has no groups of {m}; choose an m that divides it to prune "
                "it, or leave it dense (first and depthwise convolutions usually stay dense)",
                LeftDenseWarning,
                stacklevel=3,
            )
        for name, mask in masks.items():  # every mask is computed before any is applied
            dtype = layer_tensor(layers[name]).dtype
            prune.custom_from_mask(layers[name], "weight", mask.to(dtype))
        return model


@hookimpl
def register_pruners(register):
    register(NM)
