"""The scorer contract: a model in, :class:`Scores` (higher means keep) out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..plumbing import (
    Batch,
    LossFn,
    effective_tensor,
    effective_weight,
    layer_tensor,
    prunable_layers,
    prunable_tensors,
)
from .base import Plugin


@dataclass
class Scores:
    """Importance of a model's prunable layers; **higher means keep**.

    Attributes:
        weight: layer name -> tensor shaped like that layer's ``weight`` (one score per weight).
        unit: layer name -> 1-D tensor with one score per output unit (neuron of a Linear,
            output channel of a Conv).
        tensor: qualified parameter name -> scores shaped like that parameter, for the weights
            outside Linear and Conv layers (:func:`pruneplug.plumbing.prunable_tensors`:
            attention's ``in_proj_weight``, recurrent weights, embeddings). Unstructured
            pruners prune them with the layers; structured pruners use ``unit`` only.

    A scorer fills the granularities it supports. :meth:`units` derives per-unit scores from
    per-weight ones (sum over each unit's weights) when a scorer gave only those.
    """

    weight: dict[str, Tensor] = field(default_factory=dict)
    unit: dict[str, Tensor] = field(default_factory=dict)
    tensor: dict[str, Tensor] = field(default_factory=dict)

    def units(self) -> dict[str, Tensor]:
        """Per-unit scores for every scored layer (given, or summed from per-weight scores)."""
        derived = {n: w.flatten(1).sum(1) for n, w in self.weight.items() if n not in self.unit}
        return {**derived, **self.unit}

    def check(self, model: nn.Module) -> None:
        """Raise ``ValueError`` if a score names no layer, has the wrong shape, or is not finite."""
        layers = prunable_layers(model)
        tensors = prunable_tensors(model)
        for name in self.tensor:
            if name not in tensors:
                raise ValueError(
                    f"tensor scores name {name!r}, which is not a prunable tensor of the model; "
                    f"its prunable tensors are: {', '.join(tensors) or 'none'}"
                )
        tables = (("weight", self.weight), ("unit", self.unit), ("tensor", self.tensor))
        for granularity, table in tables:
            for name, score in table.items():
                if granularity != "tensor" and name not in layers:
                    raise ValueError(
                        f"{granularity} scores name layer {name!r}, which is not a prunable "
                        f"layer of the model; its prunable layers are: {', '.join(layers)}"
                    )
                if granularity == "tensor":
                    weight = layer_tensor(*tensors[name])
                else:
                    weight = layer_tensor(layers[name])
                expected = weight.shape[:1] if granularity == "unit" else weight.shape
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
        if not self.weight and not self.unit and not self.tensor:
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
    :meth:`score_layer` also scores the weights of :func:`~pruneplug.plumbing.prunable_tensors`
    (attention, recurrent, embedding), named by their qualified parameter names, into
    ``Scores.tensor``.
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
            for name, (module, attribute) in prunable_tensors(model).items():
                per_weight = self.score_layer(name, effective_tensor(module, attribute))
                if per_weight is not None:
                    scores.tensor[name] = per_weight
        return scores

    def score_layer(self, name: str, weight: Tensor) -> Tensor | None:
        """Scores shaped like ``weight`` (higher means keep); ``None`` for unit scores only."""
        raise NotImplementedError

    def score_units(self, name: str, weight: Tensor) -> Tensor | None:
        """One score per output unit (``weight.shape[0]``), or ``None`` to derive them."""
        return None
