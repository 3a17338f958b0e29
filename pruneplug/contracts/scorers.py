"""The scorer contract: a model in, :class:`Scores` (higher means keep) out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..plumbing import Batch, LossFn, effective_weight, layer_tensor, prunable_layers
from .base import Plugin


@dataclass
class Scores:
    """Importance of a model's prunable layers; **higher means keep**.

    Attributes:
        weight: layer name -> tensor shaped like that layer's ``weight`` (one score per weight).
        unit: layer name -> 1-D tensor with one score per output unit (neuron of a Linear,
            output channel of a Conv).

    A scorer fills the granularities it supports. :meth:`units` derives per-unit scores from
    per-weight ones (sum over each unit's weights) when a scorer gave only those.
    """

    weight: dict[str, Tensor] = field(default_factory=dict)
    unit: dict[str, Tensor] = field(default_factory=dict)

    def units(self) -> dict[str, Tensor]:
        """Per-unit scores for every scored layer (given, or summed from per-weight scores)."""
        derived = {n: w.flatten(1).sum(1) for n, w in self.weight.items() if n not in self.unit}
        return {**derived, **self.unit}

    def check(self, model: nn.Module) -> None:
        """Raise ``ValueError`` if a score names no layer, has the wrong shape, or is not finite."""
        layers = prunable_layers(model)
        for granularity, table in (("weight", self.weight), ("unit", self.unit)):
            for name, score in table.items():
                if name not in layers:
                    raise ValueError(
                        f"{granularity} scores name layer {name!r}, which is not a prunable "
                        f"layer of the model; its prunable layers are: {', '.join(layers)}"
                    )
                weight = layer_tensor(layers[name])
                expected = weight.shape if granularity == "weight" else weight.shape[:1]
                if score.shape != expected:
                    raise ValueError(
                        f"{granularity} scores for layer {name!r} have shape "
                        f"{tuple(score.shape)}, expected {tuple(expected)}: score the same "
                        "model you prune"
                    )
                if not torch.isfinite(score).all():
                    raise ValueError(
                        f"{granularity} scores for layer {name!r} contain NaN or inf: check "
                        "the scorer's inputs (a diverged model or an empty batch)"
                    )
        if not self.weight and not self.unit:
            raise ValueError("the scores are empty: the scorer returned no layer")


class Scorer(Plugin):
    """Importance scorer: model (+ optional batches and loss) -> :class:`Scores`.

    Implement :meth:`score`. Set ``needs_data = True`` if it needs batches (gradients,
    ablation); the core then refuses a call without them with a clear error. A scorer that
    looks at one layer's weight at a time derives from :class:`LayerScorer` instead.
    Scorers must not change the model's parameters or its training mode. What :meth:`score`
    returns is checked where it is made: an error names the scorer and what is wrong.
    """

    kind = "scorer"
    needs_data: ClassVar[bool] = False

    def __call__(
        self,
        model: nn.Module,
        batches: Iterable[Batch] | None = None,
        loss_fn: LossFn | None = None,
    ) -> Scores:
        """Score ``model``; checks inputs and outputs around :meth:`score`."""
        prunable_layers(model)
        if self.needs_data and batches is None:
            raise ValueError(
                f"scorer {self.name!r} needs data: pass batches=<an iterable of (inputs, "
                "targets)>, e.g. a DataLoader over a few training batches"
            )
        scores = self.score(model, batches, loss_fn or nn.functional.cross_entropy)
        if not isinstance(scores, Scores):
            raise TypeError(
                f"scorer {self.name!r} returned a {type(scores).__name__}, not pruneplug.Scores: "
                "return Scores(weight={layer name: tensor shaped like its weight}) and/or "
                "Scores(unit={layer name: one score per output unit})"
            )
        try:
            scores.check(model)
        except ValueError as err:
            raise ValueError(f"scorer {self.name!r} returned bad scores: {err}") from err
        return scores

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        """Return the importance of ``model``'s prunable layers (higher means keep)."""
        raise NotImplementedError


class LayerScorer(Scorer):
    """A scorer that needs no data and scores each prunable layer from its weight alone.

    Implement :meth:`score_layer`: it receives a layer's name and its **effective** weight
    (the masked weight of an already pruned layer, detached) and returns one score per weight.
    Per-unit scores are the sum over each unit's weights unless :meth:`score_units` is
    overridden (magnitude returns the unit's L1 or L2 norm, FPGM only unit scores).
    """

    def score(self, model: nn.Module, batches: Iterable[Batch] | None, loss_fn: LossFn) -> Scores:
        scores = Scores()
        with torch.no_grad():
            for name, layer in prunable_layers(model).items():
                weight = effective_weight(layer)
                per_weight = self.score_layer(name, weight)
                if per_weight is not None:
                    scores.weight[name] = per_weight
                per_unit = self.score_units(name, weight)
                if per_unit is not None:
                    scores.unit[name] = per_unit
        return scores

    def score_layer(self, name: str, weight: Tensor) -> Tensor | None:
        """Scores shaped like ``weight`` (higher means keep); ``None`` for unit scores only."""
        raise NotImplementedError

    def score_units(self, name: str, weight: Tensor) -> Tensor | None:
        """One score per output unit (``weight.shape[0]``), or ``None`` to derive them."""
        return None
