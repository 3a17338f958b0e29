"""Declared parameters: each plugin states its knobs once, the core validates every call.

A plugin lists its parameters as :class:`Param` objects. The same declarations serve three
purposes, so a third-party plugin gets all three for free:

* validation - :func:`validate` checks type, range and choices and names the plugin, the
  parameter, the value and what is allowed when something is wrong;
* the CLI - :meth:`Param.to_json` is what ``pruneplug plugins --json`` prints;
* the widgets - sliders, dropdowns and checkboxes are built from the declarations.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: The value types a parameter may declare (they map onto JSON and onto widgets).
PARAM_TYPES = (bool, int, float, str)


class ParamError(ValueError):
    """A plugin was called with a parameter it does not declare, or with a bad value."""


@dataclass(frozen=True)
class Param:
    """One declared parameter of a plugin.

    Args:
        name: keyword the plugin is called with.
        type: one of ``bool``, ``int``, ``float``, ``str``.
        default: value used when the caller gives none (must itself be valid).
        low, high: inclusive bounds for ``int`` / ``float`` (``None`` = unbounded on that side).
        choices: the allowed values, for a parameter that takes one of a few options.
        help: one line saying what the parameter does (shown in the CLI and as widget tooltip).
        log: the useful values span decades (e.g. a Beta concentration from 0.001 to 100), so
            the widget is a log-scale slider. Needs a ``float`` with bounds ``0 < low < high``.
        probability: this is the per-sample probability of an image augmenter (a ``float`` in
            [0, 1]); the base class draws which samples to transform from it. Declare it with
            :func:`probability`.
        at_most: the name of another parameter this one may not exceed (a min/max pair such as
            ``sigma_min`` / ``sigma_max``), checked on every call with a :class:`ParamError`;
            a linear pair with equal bounds is shown as one range slider.

    Values given as NumPy scalars or 0-d tensors are accepted wherever a number is.
    """

    name: str
    type: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    log: bool = False
    probability: bool = False
    at_most: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"Param name {self.name!r} is not a Python identifier: callers pass it as a "
                "keyword (get_augmenter('x', name=...)), so use letters, digits and '_'"
            )
        if self.type not in PARAM_TYPES:
            raise TypeError(
                f"Param {self.name!r}: type must be one of bool, int, float, str, got {self.type!r}"
            )
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
        if self.type is bool and (self.low is not None or self.high is not None):
            raise TypeError(f"Param {self.name!r}: a bool parameter cannot have low/high bounds")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"Param {self.name!r}: low={self.low} is above high={self.high}")
        if self.log:
            self._check_log_scale()
        if self.probability and (self.type is not float or (self.low, self.high) != (0, 1)):
            raise ValueError(
                f"Param {self.name!r}: a probability is a float in [0, 1]; declare it with "
                "pruneplug.params.probability()"
            )
        problem = self.problem(self.default)
        if problem:
            raise ValueError(
                f"Param {self.name!r}: its default {self.default!r} {problem} "
                f"(allowed: {self.allowed()})"
            )

    def _check_log_scale(self) -> None:
        """A log scale needs a float whose both bounds are positive (log 0 is undefined)."""
        if self.type is not float:
            raise TypeError(
                f"Param {self.name!r}: log=True needs type float, got {self.type.__name__} "
                "(drop log=True, or declare the parameter as float)"
            )
        if self.low is None or self.high is None or not 0 < self.low < self.high:
            raise ValueError(
                f"Param {self.name!r}: log=True needs bounds 0 < low < high, got "
                f"low={self.low}, high={self.high} (give positive bounds, or drop log=True)"
            )

    def allowed(self) -> str:
        """Human-readable description of the allowed values, e.g. ``float in [0, 1]``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        if self.low is None and self.high is None:
            return self.type.__name__
        return f"{self.type.__name__} in [{low}, {high}]"

    def problem(self, value: Any) -> str | None:
        """Say what is wrong with ``value`` for this parameter, or ``None`` if it is valid."""
        value = plain(value)
        if self.type is float:
            ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
        elif self.type is int:
            ok_type = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        else:
            ok_type = isinstance(value, self.type)
        if not ok_type:
            return f"has type {type(value).__name__}, expected {self.type.__name__}"
        if self.type is float and math.isnan(value):
            return "is NaN"
        if self.choices is not None and value not in self.choices:
            return "is not an allowed choice"
        if (self.low is not None and value < self.low) or (
            self.high is not None and value > self.high
        ):
            return "is out of range"
        return None

    def to_json(self) -> dict[str, Any]:
        """The declaration as plain JSON-serialisable data."""
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "low": self.low,
            "high": self.high,
            "choices": list(self.choices) if self.choices is not None else None,
            "help": self.help,
            "log": self.log,
            "probability": self.probability,
            "at_most": self.at_most,
        }


def probability(default: float = 1.0, name: str = "p", help: str = "") -> Param:
    """The per-sample probability parameter of an image augmenter (float in [0, 1]).

    The base class draws, for each sample, whether to transform it (``rand(N) < p``).
    """
    return Param(
        name,
        float,
        default,
        low=0.0,
        high=1.0,
        help=help or "probability that a sample is transformed",
        probability=True,
    )


def plain(value: Any) -> Any:
    """A NumPy scalar or a 0-d tensor as the Python number it holds; anything else as is."""
    if isinstance(value, np.generic) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        return value.item()
    return value


def validate(owner: str, params: Iterable[Param], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return the full, checked parameter dict for a call of plugin ``owner``.

    Defaults fill what ``values`` omits; an ``int`` given for a ``float`` is converted.
    Raises :class:`ParamError` naming the plugin, the parameter, the value and the allowed
    values, or listing the declared names when an undeclared keyword is given.
    """
    declared = {p.name: p for p in params}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        known = ", ".join(declared) or "(none)"
        raise ParamError(f"{owner}: unknown parameter(s) {', '.join(unknown)}; it accepts: {known}")
    checked: dict[str, Any] = {}
    for name, param in declared.items():
        value = plain(values.get(name, param.default))
        problem = param.problem(value)
        if problem:
            raise ParamError(
                f"{owner}: parameter {name}={value!r} {problem} (allowed: {param.allowed()})"
            )
        checked[name] = {float: float, int: int}.get(param.type, lambda v: v)(value)
    for name, param in declared.items():
        bound = param.at_most
        if bound is not None and checked[name] > checked[bound]:
            raise ParamError(
                f"{owner}: {name}={checked[name]!r} is above {bound}={checked[bound]!r}; give "
                f"{name} <= {bound} (swap them)"
            )
    return checked


def check_declarations(owner: str, params: Iterable[Param]) -> None:
    """Refuse declarations that contradict each other: duplicate names, an ``at_most`` naming
    no parameter of the same type, several probabilities. Raises ``TypeError``."""
    declared: dict[str, Param] = {}
    for param in params:
        if param.name in declared:
            raise TypeError(f"{owner}: parameter {param.name!r} is declared twice")
        declared[param.name] = param
    for param in declared.values():
        other = declared.get(param.at_most) if param.at_most is not None else param
        if other is None or other.type is not param.type:
            raise TypeError(
                f"{owner}: parameter {param.name!r} has at_most={param.at_most!r}, which names "
                f"no {param.type.__name__} parameter of the plugin"
            )
    if sum(p.probability for p in declared.values()) > 1:
        raise TypeError(f"{owner}: declares several probability parameters; keep one")
