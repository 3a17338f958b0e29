"""An explorer that trains on every change and overlays the learning curves."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.figure import Figure

from ..engine import History
from ..params import Param
from .controls import param_controls, values
from .explorer import Explorer

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
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep={keep!r}: give how many runs to overlay, a whole number >= 1")
        self.keep = keep
        self.controls = param_controls(params)
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
            width, alpha = (2.5, 1.0) if current else (1.0, 0.6)
            left.plot(
                history["epoch"], history[self.column], label=label, linewidth=width, alpha=alpha
            )
            right.plot(history["epoch"], history["train_loss"], linewidth=width, alpha=alpha)
        left.set(title=self.column, xlabel="epoch")
        left.legend(fontsize=7)
        right.set(title="train_loss", xlabel="epoch", yscale="log")
