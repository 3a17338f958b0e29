r"""FPGM: filter pruning via the geometric median.

He et al., "Filter Pruning via Geometric Median for Deep Convolutional Neural Networks
Acceleration", CVPR 2019. Norm-based criteria assume that small filters matter little; FPGM
instead removes the filters that are **redundant**: those whose information the other filters
of the layer already carry. The geometric median :math:`x^*` of a layer's filters
:math:`F_1, \dots, F_n` (flattened to vectors) minimises :math:`\sum_j \|x - F_j\|_2`; filters
near it can be represented by the others. The paper approximates "near the geometric median"
by the filter's own sum of distances to the other filters of the layer,

.. math:: s_i = \sum_{j=1}^{n} d(F_i, F_j),

and prunes the filters with the smallest :math:`s_i`. So :math:`s_i` is the score directly
(higher means keep), one score per output unit (filter of a Conv, neuron of a Linear).
:math:`d` is the Euclidean distance of the paper, or the L1 or cosine distance
(:math:`1 - \cos(F_i, F_j)`) that its reference code also offers.

The scores are per unit only: use the structured pruner (``get_pruner("structured")``), which
removes whole filters.
"""

from __future__ import annotations

import torch
from pruneplug import LayerScorer, Param
from torch import Tensor, nn


def distance_sums(filters: Tensor, distance: str = "l2") -> Tensor:
    """For each row of ``filters`` (``n x d``), the sum of its distances to all rows."""
    if distance == "cosine":
        unit = nn.functional.normalize(filters, dim=1)
        pairwise = (1 - unit @ unit.T).clamp(min=0)
    else:
        p = 1.0 if distance == "l1" else 2.0
        pairwise = torch.cdist(filters, filters, p=p, compute_mode="donot_use_mm_for_euclid_dist")
    return pairwise.sum(1)


class FPGM(LayerScorer):
    name = "fpgm"
    description = "Sum of distances to the layer's other filters: near the geometric median = prune"
    params = (
        Param(
            "distance",
            str,
            "l2",
            choices=("l2", "l1", "cosine"),
            help="distance between two filters: Euclidean (the paper), L1 or cosine",
        ),
    )

    def score_layer(self, name: str, weight: Tensor) -> None:
        return None  # per unit only: FPGM scores whole filters

    def score_units(self, name: str, weight: Tensor) -> Tensor:
        return distance_sums(weight.flatten(1), self.config["distance"])
