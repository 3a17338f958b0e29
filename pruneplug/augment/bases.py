"""Bases of the fusable augmenters: geometric (a sampling matrix) and colour (an affine map).

A plugin deriving from :class:`GeometricAugmenter` or :class:`ColourAugmenter` implements one
method returning its per-sample map; :class:`~pruneplug.augment.Compose` multiplies the maps of
consecutive stages and applies them in one pass (see :mod:`pruneplug.augment`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..contracts import ImageAugmenter
from ..params import Param
from .kernels import INTERPOLATIONS, PADDING_MODES, colour_pass, warp


class GeometricAugmenter(ImageAugmenter):
    """Base of augmenters that move pixels by a per-sample affine map (fusable in a pipeline).

    Implement :meth:`matrix`. Declare any of the parameters ``interpolation``,
    ``padding_mode`` and ``fill`` that matter to the op (:data:`INTERPOLATION`,
    :data:`PADDING`, :data:`FILL` are ready-made); an op that never interpolates or never reads
    outside the image leaves them out, and then fuses with stages whatever their settings.
    """

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """``N x 3 x 3`` sampling matrices (output pixel -> input location) for every sample."""
        raise NotImplementedError

    def sampling_matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """:meth:`matrix` for the selected samples and the identity for the others."""
        matrix = self.matrix(params, shape)
        applied = params.get("applied")
        if applied is None:
            return matrix
        eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
        return torch.where(applied.view(-1, 1, 1), matrix, eye)

    def warp_options(self) -> dict[str, Any]:
        """The declared ``interpolation`` / ``padding_mode`` / ``fill`` values."""
        return {
            k: self.config[k] for k in ("interpolation", "padding_mode", "fill") if k in self.config
        }

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return warp(images, self.sampling_matrix(params, images.shape), **self.warp_options())


INTERPOLATION = Param(
    "interpolation", str, "bilinear", choices=INTERPOLATIONS, help="how pixels are resampled"
)
PADDING = Param(
    "padding_mode",
    str,
    "constant",
    choices=tuple(PADDING_MODES),
    help="what is read outside the image: fill, the edge pixel, or a mirror image",
)
FILL = Param("fill", float, 0.0, low=0.0, high=1.0, help="value outside the image (constant mode)")


class ColourAugmenter(ImageAugmenter):
    """Base of augmenters that map each pixel's colour by a per-sample affine map (fusable).

    Implement :meth:`affine`.
    """

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, t)``, ``N x C x C`` and ``N x C``: the map :math:`c \\mapsto A c + t` of each
        sample, given ``mean`` (``N x C``), the channel means of the image it applies to."""
        raise NotImplementedError

    def colour_map(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`affine` for the selected samples and the identity for the others."""
        a, t = self.affine(params, mean)
        applied = params.get("applied")
        if applied is None:
            return a, t
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        return torch.where(applied.view(-1, 1, 1), a, eye), torch.where(applied.view(-1, 1), t, 0)

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return colour_pass(images, [(self, params)])
