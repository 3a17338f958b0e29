r"""The pixel passes behind the augmenters, as pure functions of tensors.

:func:`warp` resamples each image through its 3 x 3 sampling matrix in one ``grid_sample``;
:func:`colour_pass` applies a run of per-sample affine colour maps (composed by
:func:`colour_affine`) as one batched matrix product. The augmenter bases (:mod:`.bases`) and
the pipelines (:mod:`.pipeline`) call them; :class:`WarpMap` and :class:`ColourMap` are what a
stage must offer to be fused into them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.nn import functional as F

from ..plumbing import constant

#: ``padding_mode`` choices of geometric augmenters -> ``grid_sample``'s names. "constant"
#: fills with ``fill``; "border" repeats the edge pixel; "reflection" mirrors about the edge.
PADDING_MODES = {"constant": "zeros", "border": "border", "reflection": "reflection"}
INTERPOLATIONS = ("bilinear", "nearest", "bicubic")


# --------------------------------------------------------------------------- geometry


def _sample(
    images: Tensor, matrix: Tensor, interpolation: str, padding_mode: str, fill: float
) -> Tensor:
    """Read every sample at ``matrix @ (x, y, 1)`` with one ``grid_sample``."""
    n, _, h, w = images.shape
    # grid_sample's coordinates (align_corners=False): u = (2 x + 1) / W - 1.
    to_unit = constant(
        ((2 / w, 0.0, 1 / w - 1), (0.0, 2 / h, 1 / h - 1)), matrix.device, matrix.dtype
    )
    theta = (to_unit @ matrix).transpose(1, 2)  # N x 3 x 2: rows are the x, y and 1 terms
    xs = torch.arange(w, device=images.device, dtype=images.dtype).view(1, 1, w, 1)
    ys = torch.arange(h, device=images.device, dtype=images.dtype).view(1, h, 1, 1)
    rows = ys * theta[:, None, None, 1] + theta[:, None, None, 2]  # N x H x 1 x 2
    grid = torch.addcmul(rows, xs, theta[:, None, None, 0])  # N x H x W x 2
    filled = padding_mode == "constant" and fill != 0
    if filled:  # a channel of ones tells how much of each output pixel lies inside the image
        images = torch.cat([images, images.new_ones(n, 1, h, w)], 1)
    out = F.grid_sample(
        images,
        grid,
        mode=interpolation,
        padding_mode=PADDING_MODES[padding_mode],
        align_corners=False,
    )
    if filled:
        out, inside = out[:, :-1], out[:, -1:]
        out = out + (1 - inside) * fill  # exact where inside == 1
    return out.clamp_(0, 1)


def moved_and_exact(matrix: Tensor, shape: torch.Size) -> tuple[Tensor, Tensor]:
    """Per sample of ``N x 3 x 3`` sampling matrices for images of ``shape``: whether its matrix
    is not the identity, and whether it sends every pixel centre to within 1e-3 pixel of a
    pixel centre (so that nearest-neighbour sampling reads it exactly)."""
    eye = torch.eye(3, dtype=matrix.dtype, device=matrix.device)
    moved = (matrix != eye).flatten(1).any(1)
    # largest distance (pixels) between where a pixel centre goes and the nearest pixel centre
    h, w = shape[-2:]
    error = (matrix[:, :2] - matrix[:, :2].round()).abs()
    reach = error @ constant((w - 1.0, h - 1.0, 1.0), matrix.device, matrix.dtype)
    return moved, reach.amax(1) < 1e-3


def warp(
    images: Tensor,
    matrix: Tensor,
    *,
    interpolation: str = "bilinear",
    padding_mode: str = "constant",
    fill: float = 0.0,
) -> Tensor:
    """Resample each image through its 3 x 3 sampling matrix (see the module docstring).

    Exact where it can be: samples whose matrix is the identity are copied, and samples whose
    matrix sends pixel centres to pixel centres, to within 1e-3 pixel (flips, multiples of 90
    degrees on square images, whole-pixel shifts), are read with nearest-neighbour sampling,
    which copies pixel values bit for bit - ``torch.rot90`` and ``torch.flip`` give the same
    tensors. The others use ``interpolation``. Locations outside the image follow
    ``padding_mode`` (with ``fill`` for "constant"). Returns a new tensor in [0, 1].
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"padding_mode must be one of {tuple(PADDING_MODES)}, got {padding_mode!r}"
        )
    matrix = matrix.to(images.dtype)
    moved, exact = moved_and_exact(matrix, images.shape)
    if interpolation == "nearest":
        groups = [(moved, "nearest")]
    else:
        groups = [(moved & ~exact, interpolation), (moved & exact, "nearest")]
    out = None
    for mask, mode in groups:
        count = int(mask.sum())  # one wait for a GPU answers "all?" and "any?"
        if count == len(mask):
            return _sample(images, matrix, mode, padding_mode, fill)
        if count:
            out = images.clone() if out is None else out
            index = mask.nonzero().squeeze(1)
            out[index] = _sample(images[index], matrix[index], mode, padding_mode, fill)
    return images.clone() if out is None else out


def merge_options(options: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """One set of warp options agreeing with all of ``options``, or ``None`` if they clash."""
    merged: dict[str, Any] = {}
    for option in options:
        for key, value in option.items():
            if merged.setdefault(key, value) != value:
                return None
    return merged


class WarpMap(Protocol):
    """A stage a fused warp can apply: per-sample sampling matrices and its warp options."""

    def sampling_matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        """``N x 3 x 3`` sampling matrices, the identity for unselected samples."""
        ...

    def warp_options(self) -> dict[str, Any]:
        """The ``interpolation`` / ``padding_mode`` / ``fill`` the stage declares."""
        ...


class ColourMap(Protocol):
    """A stage a fused colour pass can apply: a per-sample affine map of channel vectors."""

    def colour_map(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, t)``: ``N x C x C`` and ``N x C``, the identity for unselected samples."""
        ...


def colour_affine(
    mean: Tensor, stages: Sequence[tuple[ColourMap, Mapping[str, Tensor]]]
) -> tuple[Tensor, Tensor]:
    """``(A, t)``, ``N x C x C`` and ``N x C``: a run of colour stages composed into one affine
    map per sample, for images whose channel means are ``mean`` (``N x C``; a stage such as
    contrast reads the mean of its input, which the maps before it move)."""
    n, c = mean.shape
    matrix = torch.eye(c, dtype=mean.dtype, device=mean.device).expand(n, c, c)
    # the offset so far and the image mean after the stages so far, as the columns of N x C x 2:
    # one product per stage moves both
    offsets = torch.stack([torch.zeros_like(mean), mean], 2)
    for augmenter, params in stages:
        a, t = augmenter.colour_map(params, offsets[:, :, 1])
        a, t = a.to(mean.dtype), t.to(mean.dtype)
        matrix = a @ matrix
        offsets = a @ offsets + t[..., None]
    return matrix, offsets[:, :, 0]


def colour_pass(
    images: Tensor,
    stages: Sequence[tuple[ColourMap, Mapping[str, Tensor]]],
) -> Tensor:
    """Apply a run of colour stages as one affine map per sample, then clamp to [0, 1] once."""
    n, c, h, w = images.shape
    matrix, offset = colour_affine(images.mean((2, 3)), stages)
    out = torch.baddbmm(offset[..., None], matrix, images.reshape(n, c, h * w))
    return out.view(n, c, h, w).clamp_(0, 1)
