"""The explorers' base: a control panel, a picture and a table, redrawn on every change.

Explorers do real work on every change and **render by updating widget state** - a PNG drawn
with matplotlib's Agg backend into an :class:`ipywidgets.Image`, an HTML table - never by
printing or clearing output inside callbacks, which strict ``nbval`` rejects. Each exposes its
last numbers as ``explorer.result`` so that the next cell can print them (and nbval checks it).
Without a kernel an explorer still shows a static PNG of its last state.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor


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
