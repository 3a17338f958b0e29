"""Controls generated from declared parameters, on slider grids that keep their defaults.

:func:`controls` builds a control for every declared :class:`~pruneplug.Param` of a plugin
(slider for a bounded number, one range slider for a linear min/max pair, dropdown for
choices, checkbox for a bool, text box otherwise), with the parameter's help as tooltip, so
no plugin writes widget code. :class:`PluginPicker` is a dropdown of registered plugins plus
the chosen one's controls.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import ipywidgets as w

from ..contracts import Plugin
from ..params import Param
from ..registry import get_registry

P = TypeVar("P", bound=Plugin)


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


def linear_grid(defaults: float | Sequence[float], low: float, high: float) -> SliderGrid | None:
    """A linear grid of a nice step inside ``[low, high]`` that the browser keeps ``defaults`` on.

    ``defaults`` is one value, or both ends of a range slider. The grid is the multiples of the
    step, so its positions read as round numbers; ``None`` when no nice step divides every
    default (e.g. 8/255) or the browser would still move one.
    """
    held = [float(defaults)] if isinstance(defaults, (int, float)) else [float(d) for d in defaults]
    for step in nice_steps(high - low):
        if any(abs(d / step - round(d / step)) > 1e-9 for d in held):
            continue
        decimals = max(0, -math.floor(math.log10(step)))
        lowest = round(math.ceil(low / step - 1e-9) * step, decimals)
        highest = round(math.floor(high / step + 1e-9) * step, decimals)
        inside = all(lowest <= d <= highest for d in held)
        if not (low <= lowest and highest <= high and inside) or highest - lowest < step:
            continue
        grid = SliderGrid(lowest, highest, step)
        if all(grid.shown(d) == d for d in held):
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
    linear. Integers get a grid of step 1 when it has at most MAX_STEPS positions (a seed up
    to 2**63 does not: a pixel of slider would skip 10**16 values).
    """
    if param.low is None or param.high is None or param.choices is not None:
        return None
    if param.type is int:
        return SliderGrid(param.low, param.high, 1) if param.high - param.low <= MAX_STEPS else None
    if param.log:
        grid = log_grid(param.default, param.low, param.high)
        if grid is not None:
            return grid
    return linear_grid(param.default, param.low, param.high)


def linear_slider(grid: SliderGrid) -> dict[str, Any]:
    """The keywords of a linear float slider (or range slider) on ``grid``."""
    return {
        "min": grid.min,
        "max": grid.max,
        "step": grid.step,
        "readout_format": readout_format(grid.step),
    }


def control(param: Param) -> w.Widget:
    """The widget for one declared parameter, showing its default exactly in a browser.

    A bounded number gets a slider (log-scale for ``Param(log=True)``) on a grid that holds
    the default (:func:`slider_grid`), else a bounded text box; choices a dropdown, a bool a
    checkbox, anything else a text box.
    """
    common: dict[str, Any] = {
        "description": param.name,
        "tooltip": param.help or param.name,
        "style": {"description_width": "initial"},
    }
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
        if param.low is not None and param.high is not None:
            return w.BoundedIntText(value=param.default, min=param.low, max=param.high, **common)
        return w.IntText(value=param.default, **common)
    value = float(param.default)
    if grid is not None and grid.base is not None:
        return w.FloatLogSlider(
            value=value, min=grid.min, max=grid.max, step=grid.step, base=grid.base, **common
        )
    if grid is not None:
        return w.FloatSlider(value=value, **linear_slider(grid), **common)
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


#: Joins a min/max pair's names into the key of their one range slider, ``"sigma_min..sigma_max"``;
#: parameter names are identifiers, so :func:`values` splits the key back unambiguously.
RANGE_JOIN = ".."


def range_control(low: Param, high: Param) -> w.Widget | None:
    """One range slider for a min/max pair (``low.at_most == high.name``), or ``None``.

    A pair of numbers of one type, on linear scales with the same bounds, gets an
    ``IntRangeSlider`` or a ``FloatRangeSlider`` on a grid holding both defaults, so it can
    never show a minimum above its maximum; log-scale pairs and pairs no grid holds keep a
    control each (two log sliders read better than one linear range across decades).
    """
    numeric = low.type is high.type and low.type in (int, float)
    if not numeric or low.log or high.log or low.choices is not None or high.choices is not None:
        return None
    if low.low is None or low.high is None or (low.low, low.high) != (high.low, high.high):
        return None
    common: dict[str, Any] = {
        "description": f"{low.name}{RANGE_JOIN}{high.name}",
        "tooltip": f"{low.help or low.name}; {high.help or high.name}",
        "style": {"description_width": "initial"},
    }
    value = (low.default, high.default)
    if low.type is int:
        return w.IntRangeSlider(value=value, min=low.low, max=low.high, **common)
    grid = linear_grid(value, low.low, low.high)
    if grid is None:
        return None
    return w.FloatRangeSlider(value=value, **linear_slider(grid), **common)


def param_controls(params: Sequence[Param]) -> dict[str, w.Widget]:
    """A control per parameter, keyed by name, with one range slider per linear min/max pair.

    A pair's slider takes the place of its minimum and is keyed ``"<min>..<max>"``
    (:data:`RANGE_JOIN`); :func:`values` turns it back into the two parameters.
    """
    declared = {p.name: p for p in params}
    ranges = {
        p.name: ranged
        for p in params
        if p.at_most is not None and (ranged := range_control(p, declared[p.at_most]))
    }
    covered = {declared[name].at_most for name in ranges}
    made: dict[str, w.Widget] = {}
    for param in params:
        if param.name in ranges:
            made[ranges[param.name].description] = ranges[param.name]
        elif param.name not in covered:
            made[param.name] = control(param)
    return made


def controls(plugin: type[Plugin] | str, kind: str | None = None) -> dict[str, w.Widget]:
    """Controls for every parameter of ``plugin`` (a class, or a registered name of ``kind``).

    See :func:`param_controls`; :func:`values` reads them back as the plugin's parameters.
    """
    if isinstance(plugin, str):
        if kind is None:
            raise ValueError("give kind= ('scorer', 'pruner' or 'augmenter') with a plugin name")
        plugin = get_registry().entry(kind, plugin).cls
    return param_controls(plugin.params)


def values(widgets: dict[str, w.Widget]) -> dict[str, Any]:
    """The current values of a :func:`controls` dict, ready to pass as plugin parameters.

    A range slider's ``(min, max)`` becomes its two parameters again.
    """
    found: dict[str, Any] = {}
    for key, widget in widgets.items():
        if isinstance(widget, (w.FloatRangeSlider, w.IntRangeSlider)):
            low, high = key.split(RANGE_JOIN)
            found[low], found[high] = widget.value
        else:
            found[key] = widget.value
    return found


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

    def create_as(self, base: type[P]) -> P:
        """:meth:`create`, checked to be a ``base`` (e.g. :class:`~pruneplug.Scorer`).

        What the explorers call, so that a picker over the wrong kind of plugin fails here
        with both names rather than later inside a call the plugin does not have.
        """
        plugin = self.create()
        if not isinstance(plugin, base):
            raise TypeError(
                f"{self.kind} {self.dropdown.value!r} is a {type(plugin).__name__}, not a "
                f"{base.__name__}: offer only {base.__name__} plugins in this picker"
            )
        return plugin

    @property
    def widget(self) -> w.Widget:
        return w.VBox([self.dropdown, self.params])
