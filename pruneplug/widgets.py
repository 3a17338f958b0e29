"""ipywidgets for the course: controls generated from declared parameters, and explorers.

* :func:`controls` builds a control for every declared :class:`~pruneplug.Param` of a plugin
  (slider for a bounded number, dropdown for choices, checkbox for a bool, text box otherwise),
  with the parameter's help as tooltip. No plugin writes widget code.
* Explorers do real work on every change and **render by updating widget state** - a PNG drawn
  with matplotlib's Agg backend into an :class:`ipywidgets.Image`, an HTML table - never by
  printing or clearing output inside callbacks, which strict ``nbval`` rejects. Each exposes its
  last numbers as ``explorer.result`` so that the next cell can print them (and nbval checks it).
* What a control does not change (the trained model, the scores) is cached, so moving a slider
  only re-prunes and redraws.
"""

from __future__ import annotations

import copy
import html
import io
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .contracts import Plugin, prunable_layers
from .params import Param
from .registry import get_registry


def control(param: Param) -> w.Widget:
    """The widget for one declared parameter, set to its default."""
    common = {"description": param.name, "tooltip": param.help or param.name}
    common["style"] = {"description_width": "initial"}
    if param.choices is not None:
        return w.Dropdown(options=list(param.choices), value=param.default, **common)
    if param.type is bool:
        return w.Checkbox(value=param.default, indent=False, **common)
    bounded = param.low is not None and param.high is not None
    if param.type is int:
        if bounded:
            return w.IntSlider(value=param.default, min=param.low, max=param.high, **common)
        return w.IntText(value=param.default, **common)
    if param.type is float:
        if bounded:
            step = (param.high - param.low) / 100
            return w.FloatSlider(
                value=param.default, min=param.low, max=param.high, step=step, **common
            )
        return w.FloatText(value=param.default, **common)
    return w.Text(value=param.default, **common)


def controls(plugin: type[Plugin] | str, kind: str | None = None) -> dict[str, w.Widget]:
    """Controls for every parameter of ``plugin`` (a class, or a registered name of ``kind``)."""
    if isinstance(plugin, str):
        if kind is None:
            raise ValueError("give kind= ('scorer', 'pruner' or 'augmenter') with a plugin name")
        plugin = get_registry().entry(kind, plugin).cls
    return {p.name: control(p) for p in plugin.params}


def values(widgets: dict[str, w.Widget]) -> dict[str, Any]:
    """The current values of a :func:`controls` dict, ready to pass as plugin parameters."""
    return {name: widget.value for name, widget in widgets.items()}


def figure_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend (no pyplot, no output)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    return buffer.getvalue()


def html_table(rows: dict[str, Any]) -> str:
    """A two-column HTML table of names and values (floats shown with 4 significant digits)."""
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.4g}</td></tr>"
        if isinstance(v, float)
        else f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table>{cells}</table>"


class Explorer:
    """Base of the explorers: a control panel, an image and a table, redrawn on every change.

    Subclasses build ``self.panel`` (a list of control widgets), implement :meth:`compute`
    (returns the numbers shown and kept in :attr:`result`) and :meth:`draw` (fills a figure).
    """

    def __init__(self) -> None:
        self.image = w.Image(format="png")
        self.table = w.HTML()
        self.result: dict[str, Any] = {}
        self.panel: list[w.Widget] = []

    def _watch(self, widgets: Sequence[w.Widget]) -> None:
        for widget in widgets:
            widget.observe(self.update, names="value")

    def update(self, change: object = None) -> None:
        """Recompute and redraw from the current control values."""
        self.result = self.compute()
        fig = Figure(figsize=(8, 3))
        self.draw(fig)
        self.image.value = figure_png(fig)
        self.table.value = html_table(self.result)

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError

    def draw(self, fig: Figure) -> None:
        raise NotImplementedError

    @property
    def widget(self) -> w.Widget:
        """The whole explorer as one widget."""
        return w.VBox([w.VBox(self.panel), w.HBox([self.image, self.table])])

    def _repr_mimebundle_(self, **kwargs: Any) -> dict | None:
        return self.widget._repr_mimebundle_(**kwargs)


class PluginPicker:
    """A dropdown of registered plugins of one kind plus the chosen plugin's own controls."""

    def __init__(self, kind: str, names: Sequence[str], value: str, on_change: Callable) -> None:
        self.kind = kind
        self.dropdown = w.Dropdown(options=list(names), value=value, description=kind)
        self.params = w.VBox()
        self._on_change = on_change
        self.dropdown.observe(self._rebuild, names="value")
        self._rebuild()

    def _rebuild(self, change: object = None) -> None:
        self.controls = controls(self.dropdown.value, self.kind)
        for widget in self.controls.values():
            widget.observe(self._on_change, names="value")
        self.params.children = list(self.controls.values())
        if change is not None:
            self._on_change()

    def create(self) -> Plugin:
        """The chosen plugin with the chosen parameter values."""
        return get_registry().create(self.kind, self.dropdown.value, **values(self.controls))

    @property
    def widget(self) -> w.Widget:
        return w.VBox([self.dropdown, self.params])


class PruningExplorer(Explorer):
    """Pick a scorer, a pruner and an amount; see accuracy, sparsity per layer and the weights.

    Args:
        model: a trained model (never modified: each change prunes a copy).
        test_data: dataset for accuracy.
        batches: a few (inputs, targets) batches for scorers that need data.
        scorers, pruners: names offered (default: every registered one).
    """

    def __init__(
        self,
        model: nn.Module,
        test_data: torch.utils.data.Dataset,
        batches: Sequence[tuple[Tensor, Tensor]] | None = None,
        scorers: Sequence[str] | None = None,
        pruners: Sequence[str] | None = None,
        scorer: str = "magnitude",
        pruner: str = "unstructured",
        amount: float = 0.5,
    ) -> None:
        from .engine import evaluate

        super().__init__()
        self._evaluate = evaluate
        self.model = model
        self.test_data = test_data
        self.batches = list(batches) if batches is not None else None
        registry = get_registry()
        self.dense_accuracy = evaluate(model, test_data)["accuracy"]
        self._scores: dict[tuple, Any] = {}
        self.scorer = PluginPicker(
            "scorer", scorers or registry.names("scorer"), scorer, self.update
        )
        self.pruner = PluginPicker(
            "pruner", pruners or registry.names("pruner"), pruner, self.update
        )
        self.amount = w.FloatSlider(
            value=amount, min=0.0, max=0.99, step=0.01, description="amount"
        )
        self._watch([self.amount])
        self.panel = [w.HBox([self.scorer.widget, self.pruner.widget]), self.amount]
        self.pruned = model
        self.update()

    def scores(self) -> Any:
        """Scores of the chosen scorer, computed once per scorer and parameters."""
        scorer = self.scorer.create()
        key = (scorer.name, tuple(sorted(scorer.config.items())))
        if key not in self._scores:
            self._scores[key] = scorer(self.model, self.batches)
        return self._scores[key]

    def compute(self) -> dict[str, Any]:
        from .metrics import count_parameters, layer_sparsity

        pruned = self.pruner.create()(
            copy.deepcopy(self.model), self.scores(), amount=self.amount.value
        )
        self.pruned = pruned
        counts = count_parameters(pruned)
        result: dict[str, Any] = {
            "dense accuracy": self.dense_accuracy,
            "accuracy": self._evaluate(pruned, self.test_data)["accuracy"],
            "parameters": counts["total"],
            "non-zero": counts["nonzero"],
        }
        result.update({f"sparsity {k}": v for k, v in layer_sparsity(pruned).items()})
        return result

    def draw(self, fig: Figure) -> None:
        before = torch.cat(
            [m.weight.detach().flatten() for m in prunable_layers(self.model).values()]
        )
        after = torch.cat(
            [m.weight.detach().flatten() for m in prunable_layers(self.pruned).values()]
        )
        ax = fig.add_subplot(1, 2, 1)
        ax.hist(before.numpy(), bins=60, alpha=0.6, label="dense")
        ax.hist(after[after != 0].numpy(), bins=60, alpha=0.6, label="kept")
        ax.set(title="weights", xlabel="value")
        ax.legend()
        ax = fig.add_subplot(1, 2, 2)
        names = list(prunable_layers(self.pruned))
        sparsity = [self.result[f"sparsity {n}"] for n in names]
        ax.bar(range(len(names)), sparsity)
        ax.set(title="sparsity per layer", ylim=(0, 1), xticks=range(len(names)))
        ax.set_xticklabels(names, rotation=45)


class AugmentationGallery(Explorer):
    """Pick an augmenter and its parameters; see a grid of augmented samples.

    Args:
        images: a batch ``N x C x H x W`` in [0, 1] (e.g. digits or photos).
        augmenters: names offered (default: every registered image augmenter that needs
            neither targets nor a model).
        seed: seed of the generator; the *reseed* button draws new parameters.
    """

    def __init__(
        self,
        images: Tensor,
        augmenters: Sequence[str] | None = None,
        augmenter: str = "hflip",
        seed: int = 0,
        columns: int = 8,
    ) -> None:
        super().__init__()
        registry = get_registry()
        if augmenters is None:
            augmenters = [
                e.name
                for e in registry.entries("augmenter")
                if getattr(e.cls, "modality", "") == "image"
                and not getattr(e.cls, "mixes_targets", False)
                and not getattr(e.cls, "needs_model", False)
            ]
        self.images = images
        self.columns = columns
        self.seed = w.IntText(value=seed, description="seed")
        self.reseed = w.Button(description="reseed")
        self.reseed.on_click(lambda _: setattr(self.seed, "value", self.seed.value + 1))
        self.augmenter = PluginPicker("augmenter", augmenters, augmenter, self.update)
        self._watch([self.seed])
        self.panel = [self.augmenter.widget, w.HBox([self.seed, self.reseed])]
        self.augmented = images
        self.update()

    def compute(self) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.seed.value)
        self.augmented = self.augmenter.create()(self.images, generator=generator)
        changed = (self.augmented - self.images).abs().flatten(1).amax(1) > 1e-6
        return {
            "augmenter": self.augmenter.dropdown.value,
            "samples changed": int(changed.sum()),
            "mean |change|": float((self.augmented - self.images).abs().mean()),
        }

    def draw(self, fig: Figure) -> None:
        n = len(self.images)
        rows = 2 * ((n + self.columns - 1) // self.columns)
        fig.set_size_inches(self.columns, rows)
        for i in range(n):
            for offset, batch in ((0, self.images), (1, self.augmented)):
                row = 2 * (i // self.columns) + offset
                ax = fig.add_subplot(rows, self.columns, row * self.columns + i % self.columns + 1)
                image = batch[i].permute(1, 2, 0).squeeze(-1).numpy()
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_axis_off()
