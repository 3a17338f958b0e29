r"""Random importance: the baseline every pruning comparison needs.

Every weight and every unit (neuron / output channel) gets an independent score drawn uniformly
from :math:`[0, 1)`, so pruning by these scores removes a uniformly random subset. A method that
does not beat it has learned nothing about importance; at moderate sparsity it is often
surprisingly close (Blalock et al., "What is the State of Neural Network Pruning?", MLSys 2020;
Liu et al., "Rethinking the Value of Network Pruning", ICLR 2019).

The scores come from a private ``torch.Generator`` seeded with ``seed`` on the CPU (then moved to
each weight's device and dtype): the same seed gives the same scores on every device and
whatever the global random state. Layers are drawn in definition order, each layer's weight
scores before its unit scores.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from pruneplug import Batch, LossFn, Param, Scorer, Scores, hookimpl, prunable_layers
from pruneplug.plumbing import layer_tensor, prunable_tensors


class RandomImportance(Scorer):
    name = "random"
    description = "Uniform random scores per weight and per unit (seeded baseline)"
    params = (
        Param(
            "seed", int, 0, low=0, high=2**63 - 1, help="seed of the scores: same seed, same scores"
        ),
    )

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        generator = torch.Generator().manual_seed(self.config["seed"])
        scores = Scores()
        for name, layer in prunable_layers(model).items():
            weight = layer.weight
            scores.weight[name] = torch.rand(weight.shape, generator=generator).to(weight)
            scores.unit[name] = torch.rand(weight.shape[0], generator=generator).to(weight)
        for name, (module, attribute) in prunable_tensors(model).items():  # after the layers
            weight = layer_tensor(module, attribute)
            scores.tensor[name] = torch.rand(weight.shape, generator=generator).to(weight)
        return scores


@hookimpl
def register_scorers(register):
    register(RandomImportance)
