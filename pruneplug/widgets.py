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

The explorers: :class:`PruningExplorer` (scorer, pruner, amount -> accuracy, MACs, sparsity per
layer, weights or masks), :class:`RankingExplorer` (do two scorers rank weights alike?),
:class:`SensitivityViewer` (accuracy against the amount, one layer at a time),
:class:`TrainingCurves` (train on every change and overlay the curves) and
:class:`AugmentationGallery` (augmented samples).
"""

from __future__ import annotations

import base64
import copy
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ipywidgets as w
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .contracts import Plugin, Scorer, Scores, prunable_layers
from .engine import History, evaluate
from .metrics import count_parameters, macs
from .params import Param
from .plumbing import effective_weight
from .registry import get_registry
from .schedules import Sensitivity, sensitivity_scan


def readout_format(step: float) -> str:
    """A slider's number format showing at least two decimals and the digits ``step`` changes."""
    decimals = max(2, math.ceil(-math.log10(step))) if step > 0 else 2
    return f".{decimals}f"


# ------------------------------------------------------------------ sliders that keep defaults
#
# A browser does not show a slider's value as Python set it: ipywidgets 8 hands it to
# noUiSlider, which moves it to the nearest grid position and syncs that back to the kernel.
# A declared default off the grid would silently change the plugin's settings (mixup's alpha
# 0.2 became 0.001 with the old step = range / 100). So every slider is built on a grid that
# holds its default exactly, checked by replaying the browser's own arithmetic; a value no grid
# holds gets a text box, which never rewrites what it shows.

#: A slider offers about this many positions; grids outside [MIN_STEPS, MAX_STEPS] are refused.
TARGET_STEPS = 100
MIN_STEPS, MAX_STEPS = 10, 1000


def _js_round(x: float) -> float:
    """JavaScript's ``Math.round``: halves go up (Python's ``round`` goes to even)."""
    return float(math.floor(x + 0.5))


def browser_snap(value: float, low: float, high: float, step: float) -> float:
    """The value a browser's slider on ``[low, high]`` with ``step`` settles on for ``value``.

    Replays noUiSlider 15 (ipywidgets 8) operation by operation, in IEEE doubles like the
    browser: the value becomes a percentage of the range, is rounded to whole steps (in
    percent) and is turned back into a value. ``browser_snap(v, ...) == v`` means the browser
    leaves ``v`` as it is; anything else is what it syncs back to the kernel.
    """
    if value >= high:
        return high
    percent = max(0.0, 100 * (value - low) / (high - low))
    percent_step = 100 * step / (high - low)
    percent = min(max(_js_round(percent / percent_step) * percent_step, 0.0), 100.0)
    if percent >= 100:
        return high
    return percent * (100 / 100) * (high - low) / 100 + low


def nice_steps(span: float) -> list[float]:
    """Steps 1, 2 or 5 x 10^k that cut ``span`` into MIN_STEPS..MAX_STEPS positions.

    The steps giving closest to TARGET_STEPS positions come first.
    """
    if not span > 0:
        return []
    k0 = math.floor(math.log10(span / TARGET_STEPS))
    steps = [float(f"{m}e{k}") for k in range(k0 - 3, k0 + 3) for m in (1, 2, 5)]
    steps = [s for s in steps if MIN_STEPS <= span / s <= MAX_STEPS]
    return sorted(steps, key=lambda s: abs(math.log(span / s / TARGET_STEPS)))


@dataclass(frozen=True)
class SliderGrid:
    """Where a slider's positions lie: ``min + k * step`` for k = 0 .. (max - min) / step.

    For a log-scale slider the grid is of exponents: the values are ``base ** position``.
    """

    min: float
    max: float
    step: float
    base: float | None = None  # None: linear

    def shown(self, value: float) -> float:
        """The value the browser's slider settles on (and syncs back) for ``value``."""
        if self.base is None:
            return browser_snap(value, self.min, self.max, self.step)
        # FloatLogSlider: exponent = log(value) / log(base), clamped, snapped, raised back
        exponent = min(max(math.log(value) / math.log(self.base), self.min), self.max)
        return math.pow(self.base, browser_snap(exponent, self.min, self.max, self.step))

    def position(self, value: float) -> float:
        """Number of steps from ``min`` to ``value`` (a whole number when it is on the grid)."""
        at = value if self.base is None else math.log(value) / math.log(self.base)
        return (at - self.min) / self.step


def linear_grid(default: float, low: float, high: float) -> SliderGrid | None:
    """A linear grid of a nice step inside ``[low, high]`` that the browser keeps ``default`` on.

    The grid is the multiples of the step, so its positions read as round numbers; ``None``
    when no nice step divides ``default`` (e.g. 8/255) or the browser would still move it.
    """
    for step in nice_steps(high - low):
        if abs(default / step - round(default / step)) > 1e-9:
            continue
        decimals = max(0, -math.floor(math.log10(step)))
        lowest = round(math.ceil(low / step - 1e-9) * step, decimals)
        highest = round(math.floor(high / step + 1e-9) * step, decimals)
        if not low <= lowest <= default <= highest <= high or highest - lowest < step:
            continue
        grid = SliderGrid(lowest, highest, step)
        if grid.shown(default) == default:
            return grid
    return None


def log_grid(default: float, low: float, high: float) -> SliderGrid | None:
    """A log-scale grid inside ``[low, high]`` on which the browser keeps ``default`` exactly.

    A log slider moves an exponent ``x`` and shows ``base ** x``; the browser turns the value
    into ``log(value) / log(base)``, snaps it and raises ``base`` to it again, which lands on
    almost no decimal (no double power of 10 is 0.2). So the unit is the default itself:
    ``base = default`` at ``x = 1`` (``1 / default`` at ``x = -1`` below 1; 10 at ``x = 0``
    for 1), where every libm's pow is exact, and the step is a power of two, so the snapping
    arithmetic is exact too. The positions are ``default ** (1 + k * step)``, about
    TARGET_STEPS of them. ``None`` when the bounds leave too few positions or ``1 / default``
    does not invert back to ``default``.
    """
    if default == 1.0:
        base, anchor = 10.0, 0.0
    elif default > 1.0:
        base, anchor = default, 1.0
    else:
        base, anchor = 1.0 / default, -1.0
    if math.pow(base, anchor) != default:
        return None
    e_low, e_high = math.log(low) / math.log(base), math.log(high) / math.log(base)
    step = 2.0 ** round(math.log2((e_high - e_low) / TARGET_STEPS))
    below = math.floor((anchor - e_low) / step)
    above = math.floor((e_high - anchor) / step)
    for n_below, n_above in ((below, above), (below - 1, above), (below, above - 1)):
        if n_below < 0 or n_above < 0 or n_below + n_above < MIN_STEPS:
            continue
        grid = SliderGrid(anchor - n_below * step, anchor + n_above * step, step, base)
        inside = low <= math.pow(base, grid.min) and math.pow(base, grid.max) <= high
        if inside and grid.shown(default) == default:
            return grid
    return None


def slider_grid(param: Param) -> SliderGrid | None:
    """The grid of the slider for a bounded number ``param``, or ``None`` for a text box.

    ``param.log``: a log-scale grid (a linear one if no log grid holds the default); else
    linear. Integers always fit a grid of step 1.
    """
    if param.low is None or param.high is None or param.choices is not None:
        return None
    if param.type is int:
        return SliderGrid(param.low, param.high, 1)
    if param.log:
        grid = log_grid(param.default, param.low, param.high)
        if grid is not None:
            return grid
    return linear_grid(param.default, param.low, param.high)


def control(param: Param) -> w.Widget:
    """The widget for one declared parameter, showing its default exactly in a browser.

    A bounded number gets a slider (log-scale for ``Param(log=True)``) on a grid that holds
    the default (:func:`slider_grid`), else a bounded text box; choices a dropdown, a bool a
    checkbox, anything else a text box.
    """
    common = {"description": param.name, "tooltip": param.help or param.name}
    common["style"] = {"description_width": "initial"}
    if param.choices is not None:
        return w.Dropdown(options=list(param.choices), value=param.default, **common)
    if param.type is bool:
        return w.Checkbox(value=param.default, indent=False, **common)
    if param.type is str:
        return w.Text(value=param.default, **common)
    grid = slider_grid(param)
    if param.type is int:
        if grid is not None:
            return w.IntSlider(value=param.default, min=grid.min, max=grid.max, **common)
        return w.IntText(value=param.default, **common)
    value = float(param.default)
    if grid is not None and grid.base is not None:
        return w.FloatLogSlider(
            value=value, min=grid.min, max=grid.max, step=grid.step, base=grid.base, **common
        )
    if grid is not None:
        return w.FloatSlider(
            value=value,
            min=grid.min,
            max=grid.max,
            step=grid.step,
            readout_format=readout_format(grid.step),
            **common,
        )
    if param.low is not None and param.high is not None:  # no grid holds the default
        return w.BoundedFloatText(value=value, min=param.low, max=param.high, **common)
    return w.FloatText(value=value, **common)


def value_slider(
    description: str, value: float, low: float, high: float, step: float
) -> w.SelectionSlider:
    """A slider over ``low, low + step, ..., high`` (plus ``value`` if it is off that grid).

    The explorers' own knobs (amount, tolerance): the browser moves an index, never a number,
    so the kernel's value is always exactly one of these, whatever the range (a float slider
    on [0, 0.99] would turn 0.5 into 0.5000000000000001). ``.value`` is the float.
    """
    decimals = max(0, -math.floor(math.log10(step)))
    grid = {round(low + k * step, decimals) for k in range(round((high - low) / step) + 1)}
    options = [(f"{v:.4g}", v) for v in sorted(grid | {value})]
    return w.SelectionSlider(
        options=options,
        value=value,
        description=description,
        style={"description_width": "initial"},
    )


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


def host(tensor: Tensor) -> np.ndarray:
    """``tensor`` as a NumPy array on the host: what is drawn or measured leaves the GPU here."""
    return tensor.detach().cpu().numpy()


def figure_png(fig: Figure, tight: bool = True) -> bytes:
    """Render a matplotlib figure to PNG bytes with the Agg backend (no pyplot, no output).

    ``tight`` crops the margins, at the price of drawing the figure twice; figures whose
    layout is set by hand (``fig.subplots_adjust``) pass ``False`` to render faster.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight" if tight else None)
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

    #: crop the figure's margins when rendering (slower: see :func:`figure_png`)
    tight: bool = True

    def __init__(self) -> None:
        self.image = w.Image(format="png")
        self.table = w.HTML()
        self.result: dict[str, Any] = {}
        self.panel: list[w.Widget] = []

    def _watch(self, widgets: Sequence[w.Widget]) -> None:
        for widget in widgets:
            widget.observe(self.update, names="value")

    def update(self, change: object = None) -> None:
        """Recompute and redraw from the current control values.

        A choice the plugins refuse (e.g. a scorer without per-weight scores for the
        unstructured pruner) shows the error message in the table and in ``result["error"]``
        - an exception raised in a widget callback would only reach Jupyter's log.
        """
        try:
            self.result = self.compute()
        except ValueError as error:
            self.result = {"error": str(error)}
            self.table.value = f'<p style="color:#b00">{html.escape(str(error))}</p>'
            return
        fig = Figure(figsize=(8, 3))
        self.draw(fig)
        self.image.value = figure_png(fig, tight=self.tight)
        self.table.value = html_table(self.result)

    def compute(self) -> dict[str, Any]:
        raise NotImplementedError

    def draw(self, fig: Figure) -> None:
        raise NotImplementedError

    @property
    def widget(self) -> w.Widget:
        """The whole explorer as one widget."""
        return w.VBox([w.VBox(self.panel), w.HBox([self.image, self.table])])

    def rounded(self, digits: int = 3) -> dict[str, Any]:
        """:attr:`result` with floats rounded, for printing in a cell that nbval checks."""
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in self.result.items()}

    def static_png(self) -> bytes:
        """The current picture with the current numbers beside it, as PNG bytes.

        What a reader without a kernel sees (GitHub, nbviewer, an untrusted fresh clone in
        JupyterLab, which shows a safe image rather than an unsafe widget view).
        """
        fig = Figure(figsize=(8, 3))
        draws = type(self).draw is not Explorer.draw  # an explorer may show HTML, not a figure
        if draws and "error" not in self.result:
            self.draw(fig)
        lines = [
            f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in self.result.items()
        ]
        fig.text(1.0, 0.95, "\n".join(lines), va="top", ha="left", family="monospace", size=8)
        return figure_png(fig, tight=True)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, a static PNG of the current state, and a stable text line.

        Live Jupyter shows the widget; without a kernel the PNG shows what was run. The text
        names the explorer only: it is what nbval compares, so it holds no machine's digits.
        """
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["image/png"] = base64.b64encode(self.static_png()).decode("ascii")
        # the widget's own text repr lists every control's state: replaced by a stable line
        bundle["text/plain"] = f"{type(self).__name__} (interactive: run in Jupyter)"
        return bundle


def choose(names: Sequence[str], value: str | None, preferred: Sequence[str]) -> str:
    """``value`` if given, else the first of ``preferred`` that is offered, else the first name."""
    if value is not None:
        return value
    return next((n for n in preferred if n in names), names[0])


class PluginPicker:
    """A dropdown of registered plugins of one kind plus the chosen plugin's own controls."""

    def __init__(
        self,
        kind: str,
        names: Sequence[str],
        value: str,
        on_change: Callable,
        description: str | None = None,
    ) -> None:
        if value not in names:
            raise ValueError(f"{kind} {value!r} is not among those offered: {', '.join(names)}")
        self.kind = kind
        self.dropdown = w.Dropdown(
            options=list(names), value=value, description=description or kind
        )
        self.params = w.VBox()
        self._on_change = on_change
        self.dropdown.observe(self._rebuild, names="value")
        self._rebuild()

    @classmethod
    def offering(
        cls,
        kind: str,
        names: Sequence[str] | None,
        value: str | None,
        default: str,
        on_change: Callable,
    ) -> PluginPicker:
        """A picker over ``names`` (default: every registered plugin of ``kind``), set to
        ``value``, else to ``default`` when it is offered, else to the first name."""
        names = list(names or get_registry().names(kind))
        return cls(kind, names, choose(names, value, (default,)), on_change)

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
        name: 1.0 - int(torch.count_nonzero(effective_weight(after[name]))) / layer.weight.numel()
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
        return self.cache(self.scorer.create())

    def compute(self) -> dict[str, Any]:
        pruner = self.pruner.create()
        # a structured pruner returns a new model; an unstructured one prunes what it is given
        model = self.model if pruner.structured else copy.deepcopy(self.model)
        self.pruned = pruner(model, self.scores(), amount=self.amount.value)
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
            shapes = {name: dense[name].weight.flatten(1).shape for name in layers}
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


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman's rank correlation of two score tensors (ties get their average rank)."""
    from scipy.stats import spearmanr

    return float(spearmanr(host(a.flatten()), host(b.flatten())).statistic)


def kendall(a: Tensor, b: Tensor) -> float:
    """Kendall's tau-b of two score tensors (the tie-corrected variant)."""
    from scipy.stats import kendalltau

    return float(kendalltau(host(a.flatten()), host(b.flatten())).statistic)


def pruned_overlap(a: Tensor, b: Tensor, amount: float) -> float:
    """Share of the ``amount`` lowest-scored items under ``a`` that are also lowest under ``b``.

    This is how much two scorers agree on *what to prune* at that amount (1 = same set).
    """
    a, b = a.flatten(), b.flatten()
    k = max(1, round(amount * a.numel()))
    low_a = set(a.topk(k, largest=False).indices.tolist())
    low_b = set(b.topk(k, largest=False).indices.tolist())
    return len(low_a & low_b) / k


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
        a, b = self.cache(self.first.create()), self.cache(self.second.create())
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
    points of the dense model (``result["max amount <layer>"]``). A scan runs once per scorer
    and pruner, so the tolerance slider only redraws.

    Args:
        model: a trained model (not modified).
        data: dataset the accuracy is measured on (a validation split).
        batches: batches for scorers that need data (default: ``data``).
        scorers, pruners: names offered.
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
        self.pruner = PluginPicker.offering("pruner", pruners, pruner, "unstructured", self.update)
        self.tolerance = value_slider("tolerance (points)", tolerance, 0.0, 20.0, 0.5)
        self._watch([self.tolerance])
        self.panel = [w.HBox([self.scorer.widget, self.pruner.widget]), self.tolerance]
        self._scans: dict[tuple[str, str], Sensitivity] = {}
        self.update()

    @property
    def scan(self) -> Sensitivity:
        """The scan of the chosen scorer and pruner (computed once for each pair)."""
        scorer, pruner = self.scorer.create(), self.pruner.create()
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
        ax.bar(range(len(self.layers)), [self.result[f"max amount {n}"] for n in self.layers])
        ax.set(title="largest amount within tolerance", ylim=(0, 1))
        ax.set_xticks(range(len(self.layers)))
        ax.set_xticklabels(self.layers, rotation=45, fontsize=8)


Run = Callable[..., "History | tuple[History, dict[str, Any]]"]


class TrainingCurves(Explorer):
    """Train on every change of a control and overlay the learning curves of the runs so far.

    ``run(**values)`` trains (e.g. with :func:`pruneplug.engine.train`) and returns its
    :class:`~pruneplug.engine.History`, or ``(history, numbers)`` where ``numbers`` is a dict of
    extra results (accuracy after pruning, sparsity...). Its controls are generated from
    ``params`` like any plugin's (number sliders apply on release, since each change trains).
    Runs are cached by their values: going back to a setting redraws without training.

    Args:
        run: the training function.
        params: its parameters, declared with :class:`~pruneplug.Param`.
        column: the History column plotted on the left (the right shows ``train_loss``).
        keep: how many of the latest distinct runs are overlaid.
    """

    def __init__(
        self, run: Run, params: Sequence[Param], column: str = "val_accuracy", keep: int = 5
    ) -> None:
        super().__init__()
        self.run = run
        self.column = column
        self.keep = keep
        self.controls = {p.name: control(p) for p in params}
        for widget in self.controls.values():
            if hasattr(widget, "continuous_update"):
                widget.continuous_update = False
        self._watch(list(self.controls.values()))
        self.panel = list(self.controls.values())
        self.runs: dict[tuple, tuple[History, dict[str, Any]]] = {}
        self.update()

    @property
    def history(self) -> History:
        """The History of the current setting's run."""
        return self.runs[self.key][0]

    @property
    def key(self) -> tuple:
        return tuple(values(self.controls).items())

    def compute(self) -> dict[str, Any]:
        key = self.key
        if key not in self.runs:
            out = self.run(**dict(key))
            history, numbers = out if isinstance(out, tuple) else (out, {})
            self.runs[key] = (history, dict(numbers))
        else:  # most recent last
            self.runs[key] = self.runs.pop(key)
        history, numbers = self.runs[key]
        return {**dict(key), f"final {self.column}": history[self.column][-1], **numbers}

    def draw(self, fig: Figure) -> None:
        left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        shown = list(self.runs.items())[-self.keep :]
        for key, (history, _) in shown:
            current = key == self.key
            label = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in key
            )
            style = {"linewidth": 2.5 if current else 1.0, "alpha": 1.0 if current else 0.6}
            left.plot(history["epoch"], history[self.column], label=label, **style)
            right.plot(history["epoch"], history["train_loss"], **style)
        left.set(title=self.column, xlabel="epoch")
        left.legend(fontsize=7)
        right.set(title="train_loss", xlabel="epoch", yscale="log")


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
                image = host(batch[i].permute(1, 2, 0).squeeze(-1))
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
                ax.set_axis_off()
                if i % self.columns == 0:  # label each row at its left
                    label = ("original", "augmented")[offset]
                    ax.text(-0.1, 0.5, label, transform=ax.transAxes, ha="right", va="center")
