r"""Magnitude importance: a weight that is small matters little.

Per weight the score is :math:`|w|`; per unit (neuron / output channel) it is the
:math:`L_p` norm of the unit's incoming weights, :math:`\|W_{i,:}\|_p` with ``p`` 1 or 2.
Magnitude pruning as in Han et al., "Learning both Weights and Connections for Efficient
Neural Networks", NeurIPS 2015; L1-norm filter pruning as in Li et al., "Pruning Filters for
Efficient ConvNets", ICLR 2017.
"""

from __future__ import annotations

from torch import Tensor

from pruneplug import LayerScorer, Param, hookimpl


class Magnitude(LayerScorer):
    name = "magnitude"
    description = "|w| per weight; L1 or L2 norm of each unit's weights per neuron/channel"
    params = (
        Param("p", int, 1, choices=(1, 2), help="norm of a unit's weights: 1 (L1) or 2 (L2)"),
    )

    def score_layer(self, name: str, weight: Tensor) -> Tensor:
        return weight.abs()

    def score_units(self, name: str, weight: Tensor) -> Tensor:
        return weight.flatten(1).norm(p=self.config["p"], dim=1)


@hookimpl
def register_scorers(register):
    register(Magnitude)
