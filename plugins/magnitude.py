r"""Magnitude importance: a weight that is small matters little.

Per weight the score is :math:`|w|`; per unit (neuron / output channel) it is the
:math:`L_p` norm of the unit's incoming weights, :math:`\|W_{i,:}\|_p` with ``p`` 1 or 2.
Magnitude pruning as in Han et al., "Learning both Weights and Connections for Efficient
Neural Networks", NeurIPS 2015; L1-norm filter pruning as in Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from pruneplug import Param, Scorer, Scores, hookimpl, prunable_layers
from pruneplug.contracts import Batch, LossFn


class Magnitude(Scorer):
    name = "magnitude"
    description = "|w| per weight; L1 or L2 norm of each unit's weights per neuron/channel"
    params = (
        Param("p", int, 1, choices=(1, 2), help="norm of a unit's weights: 1 (L1) or 2 (L2)"),
    )

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        scores = Scores()
        for name, layer in prunable_layers(model).items():
            w = layer.weight.detach()
            scores.weight[name] = w.abs()
            scores.unit[name] = w.flatten(1).norm(p=self.config["p"], dim=1)
        return scores


@hookimpl
def register_scorers(register):
    register(Magnitude)
