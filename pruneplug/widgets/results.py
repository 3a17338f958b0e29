"""Explore a sweep's results: filter by any axis, one metric against another, seeds pooled.

A sweep (:mod:`pruneplug.sweep`) leaves one record per trial. What a reader wants from them is
a trade-off: accuracy against what the pruning saves (sparsity, non-zero weights, MACs,
latency), one curve per method, with the spread over seeds, and which settings are worth
having at all - the **Pareto front**. :class:`ResultsExplorer` draws exactly that from a
:class:`~pruneplug.sweep.Results`, with controls generated from the axes present, and keeps the
summary rows it shows in ``explorer.result``.

Like the other explorers it renders by updating widget state (a PNG in an
:class:`ipywidgets.Image`, an HTML table), never by printing, and leaves a static picture for
readers without a kernel. It is not an :class:`~pruneplug.widgets.Explorer` subclass: its
result is a list of table rows, not one dict of numbers.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..sweep.results import Results, format_table, order, spread
from ..sweep.spec import canonical_json
from ..sweep.store import Record
from .explorer import figure_png

#: what the error bars show: ``"ci95"`` or ``"std"``
ERRORS = {
    "ci95": "95 % interval (Student's t)",
    "std": "± 1 sample std",
}
#: metrics and settings where more is better besides those named "...accuracy..." (the costs -
#: MACs, parameters, latency, loss, time - are better low)
HIGHER_IS_BETTER = frozenset({"sparsity", "amount"})
JSONScalar = str | int | float | bool | None


def is_higher_better(name: str) -> bool:
    """Whether more of ``name`` is better: accuracies, sparsity and amount; not costs."""
    return "accuracy" in name or name in HIGHER_IS_BETTER


def pareto_front(
    points: Sequence[tuple[float, float]], x_higher: bool = False, y_higher: bool = True
) -> list[bool]:
    """For each ``(x, y)`` point, whether no other point is at least as good on both and
    strictly better on one (``x_higher`` / ``y_higher``: which direction is better)."""
    sx, sy = (1 if x_higher else -1), (1 if y_higher else -1)
    scored = [(sx * x, sy * y) for x, y in points]
    return [
        not any(
            ox >= px and oy >= py and (ox > px or oy > py)
            for j, (ox, oy) in enumerate(scored)
            if j != i
        )
        for i, (px, py) in enumerate(scored)
    ]


def _option(value: Any) -> JSONScalar:
    """A config value as a selection option: scalars as they are, lists/tables as JSON text."""
    return value if isinstance(value, JSONScalar) else canonical_json(value)


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(_option(value))


def _cell(value: Any) -> str:
    """A table cell: whole floats as integers (counts such as MACs), others to 4 digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        whole = value.is_integer() and abs(value) < 1e15
        return str(int(value)) if whole else f"{value:.4g}"
    return str(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class ResultsExplorer:
    """Filter a sweep's results by any axis, plot ``y`` against ``x`` per method, find the front.

    Each **point** is one setting of every axis that varies except ``replicate`` (the seeds):
    the mean of ``x`` and of ``y`` over its seeds, with error bars of the chosen kind
    (:data:`ERRORS`: the t-based 95 % interval of the mean, or one sample standard deviation;
    an axis whose value does not vary over the seeds, like the sparsity a pruner sets, gets
    none). Points of the same **method** (by default the values of the axes whose values are
    not numbers, e.g. scorer and pruner) share a colour and a line, sorted along ``x``. The
    **Pareto front** rings the points that no other shown point beats on both axes (of the
    means; which direction is better: :func:`is_higher_better`, or ``higher_is_better=``).

    Controls: ``x``, ``y`` and ``error`` dropdowns, and one multi-select per varying axis
    (``filters[axis]``; :meth:`select` sets several at once). ``result`` holds the rows of the
    table shown: the point's axis values, ``method``, ``n``, ``"<x> mean"`` / ``std`` /
    ``ci95`` (half-width), the same for ``y``, and ``pareto``.

    Args:
        results: a sweep's results (``run(...)`` or ``Results.load(path)``); failed trials are
            left out.
        x, y: a numeric metric, or a numeric axis such as ``"amount"``.
        method: the axes whose values name a method (default: the non-numeric varying axes).
        replicate: the axis pooled into each point (``None``: every trial is its own point).
        error: ``"ci95"`` or ``"std"``.
        higher_is_better: overrides of :func:`is_higher_better`, e.g. ``{"loss": False}``.
    """

    def __init__(
        self,
        results: Results,
        x: str = "sparsity",
        y: str = "accuracy",
        *,
        method: Sequence[str] | None = None,
        replicate: str | None = "seed",
        error: str = "ci95",
        higher_is_better: Mapping[str, bool] | None = None,
    ) -> None:
        self.records: list[Record] = results.ok
        if not self.records:
            raise ValueError(
                f"no successful trials to explore ({len(results.failed)} failed): see "
                "results.failed for their errors, fix them and run again with retry_failed=True"
            )
        config_keys = sorted({k for r in self.records for k in r["config"]})
        values = {k: [r["config"].get(k) for r in self.records] for k in config_keys}
        self.axes = [k for k in config_keys if len({canonical_json(v) for v in values[k]}) > 1]
        if replicate is not None and replicate not in config_keys:
            raise ValueError(
                f"replicate={replicate!r} is not a config key of these results; pass one of "
                f"{', '.join(config_keys)}, or replicate=None to show every trial as a point"
            )
        self.replicate = replicate
        self.group_keys = [k for k in self.axes if k != replicate]
        if method is None:
            method = [k for k in self.group_keys if not all(_number(v) for v in values[k])]
        unknown = [k for k in method if k not in self.group_keys]
        if unknown:
            raise ValueError(
                f"method keys {unknown} are not axes that vary in these results; choose among "
                f"{', '.join(self.group_keys) or '(none)'}"
            )
        self.method = list(method)
        self.numeric = self._numeric_columns(values)
        for role, name in (("x", x), ("y", y)):
            if name not in self.numeric:
                raise ValueError(
                    f"{role}={name!r} is not a numeric metric or axis of these results; choose "
                    f"one of {', '.join(self.numeric)}"
                )
        if error not in ERRORS:
            raise ValueError(f"error={error!r}: choose one of {', '.join(ERRORS)}")
        self.better = dict(higher_is_better or {})
        methods = sorted({canonical_json(self._method_values(r)) for r in self.records})
        self.colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}

        self.x = w.Dropdown(options=self.numeric, value=x, description="x")
        self.y = w.Dropdown(options=self.numeric, value=y, description="y")
        self.error = w.Dropdown(
            options=[(label, key) for key, label in ERRORS.items()],
            value=error,
            description="error bars",
            style={"description_width": "initial"},
        )
        self.filters: dict[str, w.SelectMultiple] = {}
        for key in self.axes:
            options = sorted({_option(v) for v in values[key]}, key=order)
            self.filters[key] = w.SelectMultiple(
                options=[(_label(v), v) for v in options],
                value=options,
                rows=min(len(options), 6),
                description=key,
                layout={"width": "auto"},
            )
        self.image = w.Image(format="png")
        self.table = w.HTML()
        self.result: list[dict[str, Any]] = []
        self._holding = False
        for control in (self.x, self.y, self.error, *self.filters.values()):
            control.observe(self.update, names="value")
        self.update()

    def _numeric_columns(self, values: Mapping[str, list[Any]]) -> list[str]:
        """Metrics whose values are all numbers (where present), then numeric varying axes."""
        metrics: dict[str, list[Any]] = {}
        for r in self.records:
            for k, v in r["metrics"].items():
                metrics.setdefault(k, []).append(v)
        numeric = [k for k in sorted(metrics) if all(_number(v) for v in metrics[k])]
        axes = [k for k in self.group_keys if all(_number(v) for v in values[k])]
        return numeric + [k for k in axes if k not in numeric]

    def _method_values(self, record: Record) -> list[Any]:
        return [record["config"].get(k) for k in self.method]

    def _value(self, record: Record, name: str) -> Any:
        metrics = record["metrics"]
        return metrics[name] if name in metrics else record["config"].get(name)

    def _higher(self, name: str) -> bool:
        return self.better.get(name, is_higher_better(name))

    # ------------------------------------------------------------------ controls

    def select(self, **chosen: Any) -> None:
        """Show only these values of these axes, e.g. ``select(scorer="magnitude", amount=[0.8,
        0.9])`` (a value or a list of values per axis); redraw once.

        Raises ``ValueError`` naming the axes or values there are.
        """
        lists = {
            key: list(v) if isinstance(v, (list, tuple, set)) else [v] for key, v in chosen.items()
        }
        for key, wanted in lists.items():
            if key not in self.filters:
                raise ValueError(
                    f"no axis {key!r} to filter; the axes that vary are {', '.join(self.filters)}"
                )
            offered = [value for _, value in self.filters[key].options]
            wanted = [_option(v) for v in wanted]
            missing = [v for v in wanted if v not in offered]
            if missing:
                raise ValueError(
                    f"axis {key!r} has no value {missing[0]!r}; it has "
                    f"{', '.join(map(_label, offered))}"
                )
        self._holding = True
        try:
            for key, wanted in lists.items():
                self.filters[key].value = tuple(_option(v) for v in wanted)
        finally:
            self._holding = False
        self.update()

    # ------------------------------------------------------------------ computing

    def compute(self) -> list[dict[str, Any]]:
        """The table's rows for the current controls: one per point, ``pareto`` marked."""
        x, y = self.x.value, self.y.value
        shown = {key: set(control.value) for key, control in self.filters.items()}
        groups: dict[str, tuple[list[Any], list[Record]]] = {}
        for record in self.records:
            config = record["config"]
            if any(_option(config.get(k)) not in allowed for k, allowed in shown.items()):
                continue
            key_values = [config.get(k) for k in self.group_keys]
            groups.setdefault(canonical_json(key_values), (key_values, []))[1].append(record)
        rows = []
        for key_values, records in sorted(groups.values(), key=lambda group: order(group[0])):
            pairs = [(self._value(r, x), self._value(r, y)) for r in records]
            pairs = [(a, b) for a, b in pairs if _number(a) and _number(b)]
            if not pairs:  # no trial of this point reports both metrics
                continue
            row: dict[str, Any] = dict(zip(self.group_keys, key_values, strict=True))
            row["method"] = ", ".join(_label(v) for v in self._method_values(records[0])) or "all"
            row["n"] = len(pairs)
            for name, sample in ((x, [a for a, _ in pairs]), (y, [b for _, b in pairs])):
                stats = spread(sample)
                row.update(
                    {
                        f"{name} mean": stats.mean,
                        f"{name} std": stats.std,
                        f"{name} ci95": stats.ci95,
                    }
                )
            rows.append(row)
        front = pareto_front(
            [(r[f"{x} mean"], r[f"{y} mean"]) for r in rows], self._higher(x), self._higher(y)
        )
        for row, on_front in zip(rows, front, strict=True):
            row["pareto"] = on_front
        return rows

    def update(self, change: object = None) -> None:
        """Recompute the rows from the current controls and redraw the picture and the table."""
        if self._holding:
            return
        self.result = self.compute()
        if not self.result:
            self.image.value = b""
            self.table.value = (
                "<p>nothing to show: the filters leave no trial that reports both "
                f"{html.escape(self.x.value)} and {html.escape(self.y.value)}; select at least one "
                "value of every axis</p>"
            )
            return
        fig = Figure(figsize=(7, 3.6))
        self.draw(fig.add_subplot(1, 1, 1))
        self.image.value = figure_png(fig)
        self.table.value = self.html()

    # ------------------------------------------------------------------ drawing

    def _error(self, row: dict[str, Any], name: str) -> float:
        value = row[f"{name} {self.error.value}"]
        return 0.0 if value is None else value

    def draw(self, ax: Axes) -> None:
        """Means with error bars, one colour and line per method, and the Pareto front ringed."""
        x, y = self.x.value, self.y.value
        by_method: dict[str, list[dict[str, Any]]] = {}
        for row in self.result:
            by_method.setdefault(row["method"], []).append(row)
        for label, rows in by_method.items():
            rows = sorted(rows, key=lambda r: r[f"{x} mean"])
            method_key = canonical_json([rows[0][k] for k in self.method])
            xerr = [self._error(r, x) for r in rows]
            ax.errorbar(
                [r[f"{x} mean"] for r in rows],
                [r[f"{y} mean"] for r in rows],
                yerr=[self._error(r, y) for r in rows],
                xerr=xerr if any(xerr) else None,
                fmt="o-",
                capsize=3,
                markersize=4,
                color=self.colours.get(method_key, "C0"),
                label=label,
            )
        front = sorted((r for r in self.result if r["pareto"]), key=lambda r: r[f"{x} mean"])
        ax.plot(
            [r[f"{x} mean"] for r in front],
            [r[f"{y} mean"] for r in front],
            "o:",
            color="black",
            linewidth=1,
            markersize=11,
            markerfacecolor="none",
            markeredgecolor="black",
            label="Pareto front",
        )
        n = "/".join(str(k) for k in sorted({r["n"] for r in self.result}))
        title = (
            f"points: mean over {self.replicate} (n = {n}); bars: {ERRORS[self.error.value]}"
            if self.replicate is not None
            else "points: one trial each"
        )
        ax.set(
            xlabel=f"{x} ({'higher' if self._higher(x) else 'lower'} is better)",
            ylabel=f"{y} ({'higher' if self._higher(y) else 'lower'} is better)",
            title=title,
        )
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7)

    def _columns(self) -> list[str]:
        """The table's columns: the axes, n, x (its error only where it varies), y, pareto."""
        x, y, err = self.x.value, self.y.value, self.error.value
        x_varies = any(self._error(r, x) for r in self.result)
        columns = [*self.group_keys, "n", f"{x} mean", *([f"{x} {err}"] if x_varies else [])]
        columns += [f"{y} mean", f"{y} {err}", "pareto"]
        return list(dict.fromkeys(columns))  # x may equal y

    def html(self) -> str:
        """The current rows as an HTML table (floats to 4 significant digits)."""

        columns = self._columns()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns)
            + "</tr>"
            for row in self.result
        )
        return f"<table><tr>{head}</tr>{body}</table>"

    def static_png(self) -> bytes:
        """The current picture with the table below it, as PNG bytes (for readers without a
        kernel: GitHub, nbviewer, an untrusted notebook)."""
        fig = Figure(figsize=(7, 3.6))
        if self.result:
            self.draw(fig.add_subplot(1, 1, 1))
            columns = self._columns()
            text = format_table([{c: _cell(r.get(c)) for c in columns} for r in self.result])
        else:
            text = "nothing to show: the filters leave no trial"
        fig.text(0.0, -0.04, text, va="top", ha="left", family="monospace", size=7)
        return figure_png(fig)

    @property
    def widget(self) -> w.Widget:
        """The whole explorer as one widget: metric and error choices, filters, picture, table."""
        return w.VBox(
            [
                w.HBox([self.x, self.y, self.error]),
                w.HBox(list(self.filters.values())),
                self.image,
                self.table,
            ]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view, a static PNG of the current state, and a stable text line.

        The text names the explorer only: it is what nbval compares, so it holds no digits.
        """
        bundle = self.widget._repr_mimebundle_(**kwargs) or {}
        bundle["image/png"] = base64.b64encode(self.static_png()).decode("ascii")
        bundle["text/plain"] = f"{type(self).__name__} (interactive: run in Jupyter)"
        return bundle
