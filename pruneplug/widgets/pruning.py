"""Pruning explorers: what a scorer and a pruner do to a trained model.

:class:`PruningExplorer` (scorer, pruner, amount -> accuracy, MACs, sparsity per layer, weights
or masks), :class:`RankingExplorer` (do two scorers rank weights alike?) and
:class:`SensitivityViewer` (accuracy against the amount, one layer at a time). What a control
does not change (the trained model, the scores) is cached, so moving a slider only re-prunes
and redraws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..contracts import Pruner, Scorer, Scores
from ..engine import evaluate
from ..metrics import count_parameters, kendall, macs, pruned_overlap, spearman
from ..plumbing import copy_model, effective_weight, layer_tensor, prunable_layers
from ..registry import get_registry
from ..schedules import Sensitivity, sensitivity_scan
from .controls import PluginPicker, choose, value_slider
from .explorer import Explorer, host


class ScoreCache:
    """Scores of one model, computed once per scorer and parameter values.

    Moving a slider that does not change the scorer then costs no re-scoring, which is what
    keeps the explorers fast (and an ``ablation`` scorer bearable).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[tuple[Tensor, Tensor]] | None = None,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        self.model = model
        self.batches = list(batches) if batches is not None else None
        self.loss_fn = loss_fn
        self._scores: dict[tuple, Scores] = {}

    def __call__(self, scorer: Scorer) -> Scores:
        key = (scorer.name, tuple(sorted(scorer.config.items())))
        if key not in self._scores:
            self._scores[key] = scorer(self.model, self.batches, self.loss_fn)
        return self._scores[key]


def removed_per_layer(dense: nn.Module, pruned: nn.Module) -> dict[str, float]:
    """Fraction of each dense layer's weights that are gone from ``pruned`` (zeroed or removed).

    Equal to the layer's sparsity after unstructured pruning; after structured pruning it counts
    the removed rows and columns, which the smaller layer's own sparsity cannot show.
    """
    after = prunable_layers(pruned)
    return {
        name: 1.0
        - int(torch.count_nonzero(effective_weight(after[name]))) / layer_tensor(layer).numel()
        for name, layer in prunable_layers(dense).items()
        if name in after
    }


def first_input(dataset: torch.utils.data.Dataset) -> Tensor:
    """A batch of one: the first sample of ``dataset`` (for counting MACs)."""
    return dataset[0][0].unsqueeze(0)


class PruningExplorer(Explorer):
    """Pick a scorer, a pruner and an amount; see accuracy, MACs, sparsity per layer and weights.

    Args:
        model: a trained model (never modified: each change prunes a copy).
        test_data: dataset for accuracy.
        batches: a few (inputs, targets) batches for scorers that need data.
        scorers, pruners: names offered (default: every registered one).
        scorer, pruner, amount: the starting choice (default: ``magnitude`` and
            ``unstructured`` when offered, else the first name offered).
        view: ``"histogram"`` (weights before and after) or ``"masks"`` (each layer's kept
            weights as a heat-map, outputs as rows); a dropdown switches it.

    ``result`` holds the dense and pruned accuracy, parameters (all and non-zero), MACs per
    sample and, per layer, ``sparsity <layer>``: the fraction of the dense layer's weights that
    are gone (zeroed by an unstructured pruner, or removed with their unit by a structured one).
    Scores are cached per scorer and parameters, so moving the amount only re-prunes.
    """

    tight = False  # margins set by hand: one draw per slider move

    def __init__(
        self,
        model: nn.Module,
        test_data: torch.utils.data.Dataset,
        batches: Sequence[tuple[Tensor, Tensor]] | None = None,
        scorers: Sequence[str] | None = None,
        pruners: Sequence[str] | None = None,
        scorer: str | None = None,
        pruner: str | None = None,
        amount: float = 0.5,
        view: str = "histogram",
    ) -> None:
        super().__init__()
        self.model = model
        self.test_data = test_data
        self.cache = ScoreCache(model, batches)
        self.example = first_input(test_data)
        self.dense_accuracy = evaluate(model, test_data)["accuracy"]
        self.dense_macs = macs(model, self.example)
        dense = torch.cat([effective_weight(m).flatten() for m in prunable_layers(model).values()])
        self.dense_histogram = np.histogram(host(dense), bins=60)
        self.scorer = PluginPicker.offering("scorer", scorers, scorer, "magnitude", self.update)
        self.pruner = PluginPicker.offering("pruner", pruners, pruner, "unstructured", self.update)
        self.amount = value_slider("amount", amount, 0.0, 0.99, 0.01)
        self.view = w.Dropdown(options=["histogram", "masks"], value=view, description="view")
        self._watch([self.amount, self.view])
        self.panel = [
            w.HBox([self.scorer.widget, self.pruner.widget]),
            w.HBox([self.amount, self.view]),
        ]
        self.pruned = model
        self.update()

    def scores(self) -> Scores:
        """Scores of the chosen scorer, computed once per scorer and parameters."""
        return self.cache(self.scorer.create_as(Scorer))

    def compute(self) -> dict[str, Any]:
        pruner = self.pruner.create_as(Pruner)
        # a structured pruner returns a new model; an unstructured one prunes what it is given
        model = self.model if pruner.structured else copy_model(self.model)
        # a pruner such as n_m removes what its own parameters say: the amount does not apply
        self.amount.disabled = not pruner.takes_amount
        amount = {"amount": self.amount.value} if pruner.takes_amount else {}
        self.pruned = pruner(model, self.scores(), **amount)
        counts = count_parameters(self.pruned)
        result: dict[str, Any] = {
            "dense accuracy": self.dense_accuracy,
            "accuracy": evaluate(self.pruned, self.test_data)["accuracy"],
            "parameters": counts["total"],
            "non-zero": counts["nonzero"],
            "MACs": macs(self.pruned, self.example),
            "dense MACs": self.dense_macs,
        }
        removed = removed_per_layer(self.model, self.pruned)
        result.update({f"sparsity {k}": v for k, v in removed.items()})
        return result

    def draw(self, fig: Figure) -> None:
        layers = prunable_layers(self.pruned)
        if self.view.value == "masks":
            dense = prunable_layers(self.model)
            shapes = {name: layer_tensor(dense[name]).flatten(1).shape for name in layers}
            # square cells: each layer keeps its own proportions, and a wide layer gets a wide
            # slot (within limits, so that a 10 x 100 classifier is not a hair-line)
            ratios = [min(4.0, max(0.5, cols / rows)) for rows, cols in shapes.values()]
            axes = fig.subplots(1, len(layers), squeeze=False, width_ratios=ratios)[0]
            for ax, (name, layer) in zip(axes, layers.items(), strict=True):
                kept = host((effective_weight(layer) != 0).flatten(1).float())
                rows, cols = shapes[name]
                # a smaller (structured) layer is drawn to scale inside its dense shape
                extent = (0, kept.shape[1], kept.shape[0], 0)
                ax.imshow(
                    kept,
                    cmap="Greys",
                    vmin=0,
                    vmax=1,
                    aspect="equal",
                    extent=extent,
                    interpolation="nearest",
                )
                ax.set(xlim=(0, cols), ylim=(rows, 0), xticks=[], yticks=[])
                shape = f"{kept.shape[0]}x{kept.shape[1]} of {rows}x{cols}"
                ax.set_title(f"{name}\n{shape}", fontsize=8)
            fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.85, wspace=0.1)
            return
        after = torch.cat([effective_weight(m).flatten() for m in layers.values()])
        ax = fig.add_subplot(1, 2, 1)
        counts, edges = self.dense_histogram
        kept, _ = np.histogram(host(after[after != 0]), bins=edges)
        ax.stairs(counts, edges, fill=True, alpha=0.5, label="dense")
        ax.stairs(kept, edges, fill=True, alpha=0.6, label="kept")
        ax.set(title="weights", xlabel="value", ylabel="count (log scale)", yscale="log")
        ax.legend()
        ax = fig.add_subplot(1, 2, 2)
        names = [n for n in prunable_layers(self.model) if f"sparsity {n}" in self.result]
        ax.bar(range(len(names)), [self.result[f"sparsity {n}"] for n in names])
        ax.set(title="weights removed per layer", ylim=(0, 1), xticks=range(len(names)))
        ax.set_xticklabels(names, rotation=45, fontsize=8, ha="right")
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.3, top=0.9, wspace=0.25)


class RankingExplorer(Explorer):
    """Compare two scorers: do they rank a layer's weights (or units) the same way?

    Two importance scores only matter through the order they put weights in, so the explorer
    shows rank against rank and three numbers: Spearman's :math:`\\rho`, Kendall's
    :math:`\\tau`, and the overlap of the sets each would prune at ``amount``. The bar chart
    gives Spearman's :math:`\\rho` of every layer.

    Args:
        model: a trained model (not modified).
        batches: batches for scorers that need data (gradient, Taylor, ablation).
        scorers: names offered (default: every registered one).
        first, second: the starting pair (default: ``magnitude`` and ``taylor`` when offered).
        granularity: ``"weight"`` or ``"unit"`` (a scorer without per-weight scores is
            compared per unit).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[tuple[Tensor, Tensor]] | None = None,
        scorers: Sequence[str] | None = None,
        first: str | None = None,
        second: str | None = None,
        granularity: str = "weight",
        amount: float = 0.5,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.cache = ScoreCache(model, batches, loss_fn)
        names = list(scorers or get_registry().names("scorer"))
        first = choose(names, first, ("magnitude",))
        second = choose(names, second, [n for n in ("taylor", *names) if n != first])
        self.first = PluginPicker("scorer", names, first, self.update, description="scorer A")
        self.second = PluginPicker("scorer", names, second, self.update, description="scorer B")
        layers = list(prunable_layers(model))
        self.layer = w.Dropdown(options=layers, value=layers[0], description="layer")
        self.granularity = w.Dropdown(
            options=["weight", "unit"], value=granularity, description="compare"
        )
        self.amount = value_slider("amount", amount, 0.01, 0.99, 0.01)
        self._watch([self.layer, self.granularity, self.amount])
        self.panel = [
            w.HBox([self.first.widget, self.second.widget]),
            w.HBox([self.layer, self.granularity, self.amount]),
        ]
        self.pair: tuple[Tensor, Tensor] = (torch.zeros(1), torch.zeros(1))
        self.update()

    @staticmethod
    def by_granularity(scores: Scores, granularity: str) -> dict[str, Tensor]:
        return scores.weight if granularity == "weight" else scores.units()

    def compute(self) -> dict[str, Any]:
        a, b = self.cache(self.first.create_as(Scorer)), self.cache(self.second.create_as(Scorer))
        granularity = self.granularity.value
        if granularity == "weight" and not (a.weight and b.weight):
            granularity = "unit"  # e.g. bn_scale scores channels only
        table_a, table_b = self.by_granularity(a, granularity), self.by_granularity(b, granularity)
        self.per_layer = {n: spearman(table_a[n], table_b[n]) for n in table_a if n in table_b}
        layer = self.layer.value
        if layer not in self.per_layer:
            layer = next(iter(self.per_layer))
        # ranked and drawn on the host (the scores sit where the model does)
        self.pair = (
            table_a[layer].detach().flatten().cpu(),
            table_b[layer].detach().flatten().cpu(),
        )
        return {
            "layer": layer,
            "compared": granularity,
            "items": self.pair[0].numel(),
            "spearman": spearman(*self.pair),
            "kendall": kendall(*self.pair),
            "pruned-set overlap": pruned_overlap(*self.pair, self.amount.value),
        }

    def draw(self, fig: Figure) -> None:
        a, b = self.pair
        n = a.numel()
        rank_a = a.argsort().argsort().float() / max(1, n - 1)
        rank_b = b.argsort().argsort().float() / max(1, n - 1)
        shown = torch.linspace(0, n - 1, min(n, 3000)).long()
        k = self.amount.value
        both = (rank_a < k) & (rank_b < k)
        ax = fig.add_subplot(1, 2, 1)
        ax.scatter(rank_a[shown], rank_b[shown], s=3, c=both[shown].float(), cmap="coolwarm")
        ax.set(
            title=f"{self.result['layer']}: rank by rank ({self.result['compared']}s)",
            xlabel=self.first.dropdown.value,
            ylabel=self.second.dropdown.value,
        )
        ax = fig.add_subplot(1, 2, 2)
        names = list(self.per_layer)
        ax.bar(range(len(names)), list(self.per_layer.values()))
        ax.set(title="Spearman per layer", ylim=(-1, 1), xticks=range(len(names)))
        ax.set_xticklabels(names, rotation=45, fontsize=8)
        ax.axhline(0, color="black", linewidth=0.5)


#: Amounts (fractions of a layer removed) tried by the sensitivity viewer.
SENSITIVITY_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


class SensitivityViewer(Explorer):
    """Sensitivity scan: prune one layer at a time and plot accuracy against the amount.

    Layers differ in how much pruning they take (Han et al., NeurIPS 2015, Fig. 5); the scan
    (:func:`pruneplug.schedules.sensitivity_scan`) shows it, and the ``tolerance`` slider turns
    it into a per-layer budget: the largest amount whose accuracy stays within ``tolerance``
    points of the dense model (``result["max amount <layer>"]``). Layers the pruner leaves as
    they were (the output layer under a structured pruner) get no budget and are listed under
    ``result["left as they were"]``. A scan runs once per scorer and pruner, so the tolerance
    slider only redraws.

    Args:
        model: a trained model (not modified).
        data: dataset the accuracy is measured on (a validation split).
        batches: batches for scorers that need data (default: ``data``).
        scorers, pruners: names offered (default: every scorer, every pruner that takes an
            amount).
        layers: the layers scanned (default: every prunable layer).
        amounts: the amounts tried.
        tolerance: the starting tolerance, in accuracy points.
    """

    def __init__(
        self,
        model: nn.Module,
        data: torch.utils.data.Dataset,
        batches: Sequence[tuple[Tensor, Tensor]] | None = None,
        scorers: Sequence[str] | None = None,
        pruners: Sequence[str] | None = None,
        scorer: str | None = None,
        pruner: str | None = None,
        layers: Sequence[str] | None = None,
        amounts: Sequence[float] = SENSITIVITY_AMOUNTS,
        tolerance: float = 1.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.data = data
        self.batches = list(batches) if batches is not None else None
        self.layers = list(layers or prunable_layers(model))
        self.amounts = list(amounts)
        self.scorer = PluginPicker.offering("scorer", scorers, scorer, "magnitude", self.update)
        if pruners is None:  # a scan needs pruners that take an amount (not n_m)
            registry = get_registry()
            names = registry.names("pruner")
            classes = {n: registry.entry("pruner", n).cls for n in names}
            pruners = [n for n, c in classes.items() if issubclass(c, Pruner) and c.takes_amount]
        self.pruner = PluginPicker.offering("pruner", pruners, pruner, "unstructured", self.update)
        self.tolerance = value_slider("tolerance (points)", tolerance, 0.0, 20.0, 0.5)
        self._watch([self.tolerance])
        self.panel = [w.HBox([self.scorer.widget, self.pruner.widget]), self.tolerance]
        self._scans: dict[tuple[str, str], Sensitivity] = {}
        self.update()

    @property
    def scan(self) -> Sensitivity:
        """The scan of the chosen scorer and pruner (computed once for each pair)."""
        scorer, pruner = self.scorer.create_as(Scorer), self.pruner.create_as(Pruner)
        key = (repr(scorer), repr(pruner))
        if key not in self._scans:
            self._scans[key] = sensitivity_scan(
                self.model,
                self.layers,
                self.amounts,
                scorer=scorer,
                pruner=pruner,
                data=self.data,
                score_data=self.batches,
                progress=False,
            )
        return self._scans[key]

    @property
    def curves(self) -> dict[str, list[float]]:
        """Accuracy at each of ``amounts`` for each layer pruned alone."""
        return self.scan.accuracy

    @property
    def dense_accuracy(self) -> float:
        return self.scan.dense_accuracy

    def compute(self) -> dict[str, Any]:
        tolerable = self.scan.tolerable(self.tolerance.value / 100)
        result: dict[str, Any] = {"dense accuracy": self.dense_accuracy}
        result.update({f"max amount {name}": a for name, a in tolerable.items()})
        if self.scan.untouched:  # e.g. the output layer under a structured pruner
            result["left as they were"] = ", ".join(self.scan.untouched)
        return result

    def draw(self, fig: Figure) -> None:
        ax = fig.add_subplot(1, 2, 1)
        for name, accuracies in self.curves.items():
            ax.plot(self.amounts, accuracies, marker="o", markersize=3, label=name)
        ax.axhline(self.dense_accuracy, color="black", linewidth=0.8, label="dense")
        floor = self.dense_accuracy - self.tolerance.value / 100
        ax.axhline(floor, color="black", linestyle="--", linewidth=0.8, label="tolerance")
        ax.set(title="one layer pruned at a time", xlabel="amount", ylabel="accuracy")
        ax.legend(fontsize=7)
        ax = fig.add_subplot(1, 2, 2)
        scanned = list(self.curves)  # the layers the pruner changed
        ax.bar(range(len(scanned)), [self.result[f"max amount {n}"] for n in scanned])
        ax.set(title="largest amount within tolerance", ylim=(0, 1))
        ax.set_xticks(range(len(scanned)))
        ax.set_xticklabels(scanned, rotation=45, fontsize=8)
