"""An explorer of augmenters: pick one and its parameters, see augmented samples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..contracts import ImageAugmenter
from ..registry import get_registry
from .controls import PluginPicker
from .explorer import Explorer, host


class AugmentationGallery(Explorer):
    """Pick an augmenter and its parameters; see a grid of augmented samples.

    Args:
        images: a batch ``N x C x H x W`` in [0, 1] (e.g. digits or photos).
        augmenters: names offered (default: every registered image augmenter that needs
            neither targets nor a model).
        augmenter: the one shown first (default: ``hflip`` when offered, else the first).
        seed: seed of the generator; the *reseed* button draws new parameters.
        columns: images per row of the grid.
    """

    def __init__(
        self,
        images: Tensor,
        augmenters: Sequence[str] | None = None,
        augmenter: str | None = None,
        seed: int = 0,
        columns: int = 8,
    ) -> None:
        super().__init__()
        if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
            raise ValueError(f"columns={columns!r}: give a whole number >= 1")
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
        self.augmenter = PluginPicker.offering(
            "augmenter", augmenters, augmenter, "hflip", self.update
        )
        self._watch([self.seed])
        self.panel = [self.augmenter.widget, w.HBox([self.seed, self.reseed])]
        self.augmented = images
        self.update()

    def compute(self) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(self.seed.value)
        self.augmented = self.augmenter.create_as(ImageAugmenter)(self.images, generator=generator)
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
