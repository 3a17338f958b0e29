r"""LAMP: layer-adaptive magnitude-based pruning scores, for global pruning.

Sort a layer's weights by magnitude, ascending (index :math:`u`). The LAMP score of weight
:math:`u` is its squared magnitude relative to every weight at least as large:

.. math:: \mathrm{score}(u) = \frac{w_u^2}{\sum_{v \ge u} w_v^2}

Lee, Park, Mo, Ahn & Shin, "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021.
Within a layer the score orders weights exactly as :math:`|w|` does, so local pruning with LAMP
is magnitude pruning; its use is **global** pruning (one threshold across layers): every layer's
largest weight scores 1 and the scores are comparable across layers, which yields a per-layer
sparsity without hand-tuned ratios and never empties a layer.

Ties: weights of equal magnitude share one score, with the denominator summing over all of them
(:math:`\sum_{v: |w_v| \ge |w_u|} w_v^2`), so the result does not depend on the sort order; the
paper's definition, for distinct magnitudes, is unchanged. Already-pruned weights (zero in the
effective, masked weight) score 0 and add nothing to the denominators, so the live weights get
the LAMP scores of the layer as it is now. A layer whose weights are all zero scores 0.
Per-weight scores only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from pruneplug import LayerScorer, hookimpl


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP score of each entry of ``weight`` (same shape and dtype), computed in float64."""
    squares = weight.detach().flatten().double().square()
    ordered = squares.sort().values
    at_least = ordered.flip(0).cumsum(0).flip(0)  # at_least[i] = sum of ordered[i:]
    first_tie = torch.searchsorted(ordered, squares)  # first index of each value in `ordered`
    denominator = at_least[first_tie]
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    scores = torch.where(denominator > 0, squares / safe, torch.zeros_like(squares))
    return scores.view_as(weight).to(weight.dtype)


class LAMP(LayerScorer):
    name = "lamp"
    description = "Layer-adaptive magnitude score w^2 / sum of larger w^2, for global pruning"

    def score_layer(self, name: str, weight: Tensor) -> Tensor:
        return lamp_scores(weight)


@hookimpl
def register_scorers(register):
    register(LAMP)
