"""Claims: how a chapter states a result of training so that its check holds on any machine.

A seeded training run repeats bit for bit on one machine, not across machines: the vector
instructions a CPU offers (SSE, AVX2, AVX-512, AMX, NEON) and the thread count change the order
in which floats are summed, and training amplifies that last bit into a different accuracy. A
stored ``0.955`` is therefore a fact about one machine, and strict ``nbval`` on another machine
fails on it. So a chapter never prints a raw result of training; it states what the result
shows, and checks it where it is made::

    claims.at_least("pruning 90 % of the weights keeps 95 % test accuracy", accuracy, 0.95)
    claims.greater("distillation beats fine-tuning at 98 % sparsity (mean of 3 seeds)",
                   distilled, fine_tuned, margin=0.005)

A claim that holds prints one stable line (``✓ <claim>``), which nbval compares exactly; one
that does not raises :class:`ClaimError` naming the claim, what was measured and the bound, so
the cell fails and a regression cannot pass unseen. Bounds come from the measured spread across
seeds and numeric environments (``make test`` runs the course under two), with a margin: a
claim should be true of the method, not of one lucky run.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

__all__ = ["ClaimError", "at_least", "at_most", "between", "check", "greater"]

Measured = Mapping[str, float]


class ClaimError(AssertionError):
    """A chapter's claim did not hold: the message names it, the measurements and the bound."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # tensors and NumPy scalars: anything with .item() that gives a real number
        item = getattr(value, "item", None)
        value = item() if callable(item) else value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"claim value {name!r} must be a real number, got {value!r}")
    if math.isnan(value):
        raise ClaimError(f"claim value {name!r} is NaN: the run diverged or evaluated nothing")
    return float(value)


def _bound(name: str, value: object) -> float:
    """A claim's bound, refused unless it is a real number (a NaN bound holds for no value, so
    its failure would blame the measurement)."""
    item = getattr(value, "item", None)  # tensors and NumPy scalars, as for values
    number = item() if callable(item) and not isinstance(value, numbers.Real) else value
    if isinstance(number, bool) or not isinstance(number, numbers.Real) or math.isnan(number):
        raise ValueError(f"the claim's bound {name}={value!r} must be a number")
    return float(number)


def _format(measured: Measured) -> str:
    """``name = value, ...``: numbers to 4 significant digits, anything else as its repr (the
    evidence of a failed claim must never itself fail to print)."""
    return ", ".join(
        f"{name} = {value:.4g}" if isinstance(value, numbers.Real) else f"{name} = {value!r}"
        for name, value in measured.items()
    )


def check(claim: str, holds: bool, measured: Measured | None = None, expected: str = "") -> None:
    """Print ``✓ claim`` if ``holds``; otherwise raise :class:`ClaimError` with the evidence.

    ``measured`` (name -> number) and ``expected`` (the bound, in words) appear only in the
    error, never in the printed line, so the line is the same on every machine.
    """
    if not isinstance(claim, str) or not claim.strip():
        raise TypeError("a claim needs a non-empty sentence that says what holds")
    if not holds:
        evidence = f"; measured {_format(measured)}" if measured else ""
        bound = f"; expected {expected}" if expected else ""
        raise ClaimError(
            f"claim does not hold: {claim}{evidence}{bound}. If the code regressed, fix it; if "
            "the spread across seeds or machines is wider than the bound allows, re-measure it "
            "and widen the bound (and the chapter's prose) to match."
        )
    print(f"✓ {claim}")


def at_least(claim: str, value: float, low: float) -> None:
    """Claim that ``value >= low``."""
    low = _bound("low", low)
    v = _number("value", value)
    check(claim, v >= low, {"value": v}, f">= {low:g}")


def at_most(claim: str, value: float, high: float) -> None:
    """Claim that ``value <= high``."""
    high = _bound("high", high)
    v = _number("value", value)
    check(claim, v <= high, {"value": v}, f"<= {high:g}")


def between(claim: str, value: float, low: float, high: float) -> None:
    """Claim that ``low <= value <= high``."""
    low, high = _bound("low", low), _bound("high", high)
    if low > high:
        raise ValueError(f"between: low={low:g} is above high={high:g}; swap them")
    v = _number("value", value)
    check(claim, low <= v <= high, {"value": v}, f"in [{low:g}, {high:g}]")


def greater(claim: str, a: float, b: float, margin: float = 0.0) -> None:
    """Claim that ``a`` exceeds ``b`` by more than ``margin`` (``a - b > margin``).

    Use a margin when the claim is "clearly better": a difference inside the seed-to-seed
    spread is not a finding.
    """
    margin = _bound("margin", margin)
    x, y = _number("a", a), _number("b", b)
    check(claim, x - y > margin, {"a": x, "b": y, "a - b": x - y}, f"a - b > {margin:g}")
