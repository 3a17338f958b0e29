r"""Geometric augmentation: flips, right-angle and free rotations, affine maps and crops.

Every op is a per-sample affine map of pixel coordinates, given as its *sampling matrix* ``M``
(``N x 3 x 3``): output pixel :math:`(x, y)` (column, row; pixel centres at integers) reads the
input at :math:`M (x, y, 1)^T` (see :mod:`pruneplug.augment`). One ``grid_sample`` applies a
batch, and a :class:`~pruneplug.augment.Compose` multiplies the matrices of consecutive
geometric stages so a whole chain is resampled once.

With :math:`c` the image centre, an affine map with rotation angle :math:`\theta`
(counter-clockwise, as torchvision's ``rotate``), scale :math:`s`, shear :math:`\phi` along x
and translation :math:`t` sends input :math:`p` to :math:`T_t\, C\, R_\theta\, Sh_\phi\,
S_s\, C^{-1} p` (the composition of torchvision's ``RandomAffine``, whose functional
``affine`` takes the angle clockwise and the shear with the other sign: ``affine`` here with
:math:`\theta, \phi` is ``TF.affine`` with :math:`-\theta, -\phi`; the draws are symmetric,
so the distributions are the same); its sampling matrix is the inverse, built in closed form so
multiples of 90 degrees are exact.

* Flips mirror a pixel :math:`(x, y)` to :math:`(W-1-x, y)` or :math:`(x, H-1-y)`; flips, crops
  and rotations are the classic label-preserving augmentations (Krizhevsky et al., "ImageNet
  Classification with Deep Convolutional Neural Networks", NeurIPS 2012, section 4.1;
  Simard et al., "Best Practices for Convolutional Neural Networks Applied to Visual Document
  Analysis", ICDAR 2003, for affine distortions).
* ``crop`` pads by ``padding`` pixels and cuts a window of the original size at a random offset:
  a whole-pixel shift in :math:`[-padding, padding]^2` (the CIFAR recipe of He et al., "Deep
  Residual Learning for Image Recognition", CVPR 2016).
* ``resized_crop`` cuts a box of random area fraction and aspect ratio and scales it to the full
  size (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015); the box's corner pixel
  centres go to the output's corner pixel centres, so nothing outside the image is read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pruneplug import Param, ParamError, hookimpl
from pruneplug.augment import FILL, INTERPOLATION, PADDING, GeometricAugmenter
from pruneplug.params import probability
from pruneplug.plumbing import constant, uniform


def _device(params: Mapping[str, Tensor]) -> torch.device:
    return next(iter(params.values())).device if params else torch.device("cpu")


def _cos_sin(degrees: Tensor) -> tuple[Tensor, Tensor]:
    """cos and sin of angles in degrees, exact (0, 1, -1) at multiples of 90 degrees."""
    radians = torch.deg2rad(degrees)
    quarter = degrees / 90
    exact = quarter == quarter.round()
    k = quarter.round().remainder(4).long()
    cos_table = constant((1.0, 0.0, -1.0, 0.0), degrees.device, degrees.dtype)
    sin_table = constant((0.0, 1.0, 0.0, -1.0), degrees.device, degrees.dtype)
    cos = torch.where(exact, cos_table[k], radians.cos())
    sin = torch.where(exact, sin_table[k], radians.sin())
    return cos, sin


def affine_matrix(
    shape: torch.Size,
    angle: Tensor,
    scale: Tensor | None = None,
    shear: Tensor | None = None,
    translate: Tensor | None = None,
) -> Tensor:
    """Sampling matrices of rotations (degrees, counter-clockwise) about the centre, with
    optional per-sample scale, x-shear (degrees) and translation (``N x 2``, pixels)."""
    n, _, h, w = shape
    cos, sin = _cos_sin(angle)
    # inverse of R Sh S is S^-1 Sh^-1 R^-1, with R^-1 = [[cos, -sin], [sin, cos]] (y down)
    a, b, c, d = cos, -sin, sin, cos
    if shear is not None:
        tan = torch.tan(torch.deg2rad(shear))
        a, b = a - tan * c, b - tan * d
    if scale is not None:
        a, b, c, d = a / scale, b / scale, c / scale, d / scale
    linear = torch.stack([a, b, c, d], -1).view(n, 2, 2)
    centre = constant(((w - 1) / 2, (h - 1) / 2), angle.device, angle.dtype)
    shifted = centre if translate is None else centre + translate
    offset = centre - (linear @ shifted.expand(n, 2)[..., None]).squeeze(-1)
    matrix = torch.zeros(n, 3, 3, dtype=angle.dtype, device=angle.device)
    matrix[:, :2, :2] = linear
    matrix[:, :2, 2] = offset
    matrix[:, 2, 2] = 1
    return matrix


class _Flip(GeometricAugmenter):
    """Mirror along one image axis: ``axis`` 0 is x (left-right), 1 is y (top-bottom)."""

    axis: int
    params = (probability(0.5),)

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        n, _, h, w = shape
        rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        rows[self.axis][self.axis] = -1.0
        rows[self.axis][2] = (w, h)[self.axis] - 1.0
        flip = constant(tuple(map(tuple, rows)), _device(params))
        return flip.expand(n, 3, 3)

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return images.flip(-1 - self.axis)


class HorizontalFlip(_Flip):
    name = "hflip"
    description = "Mirror each image left-right with probability p"
    axis = 0


class VerticalFlip(_Flip):
    name = "vflip"
    description = "Mirror each image top-bottom with probability p"
    axis = 1


class Rot90(GeometricAugmenter):
    name = "rot90"
    description = "Rotate by a random multiple of 90 degrees (exact; square images)"
    params = (probability(0.5),)

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``k``: quarter turns counter-clockwise, 1, 2 or 3 (p decides whether to turn)."""
        if shape[-1] != shape[-2]:
            raise ValueError(
                f"rot90 needs square images to keep their shape, got {shape[-2]} x "
                f"{shape[-1]}: use 'rotation' for those, or crop them to a square first"
            )
        return {"k": torch.randint(1, 4, (shape[0],), generator=generator, device=device)}

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        return affine_matrix(shape, 90.0 * params["k"].float())


class Rotation(GeometricAugmenter):
    name = "rotation"
    description = "Rotate each image by an angle drawn from [-degrees, degrees]"
    params = (
        Param("degrees", float, 15.0, low=0.0, high=180.0, help="largest angle, either way"),
        INTERPOLATION,
        PADDING,
        FILL,
        probability(1.0),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``angle``: degrees counter-clockwise."""
        d = self.config["degrees"]
        return {"angle": uniform(shape[0], -d, d, generator, device)}

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        return affine_matrix(shape, params["angle"])


class Affine(GeometricAugmenter):
    name = "affine"
    description = "Random rotation, scale, shear and translation in one resampling"
    params = (
        Param("degrees", float, 15.0, low=0.0, high=180.0, help="largest rotation, either way"),
        Param("translate", float, 0.1, low=0.0, high=1.0, help="largest shift, fraction of size"),
        Param(
            "scale_min", float, 0.9, low=0.01, high=10.0, help="smallest zoom", at_most="scale_max"
        ),
        Param("scale_max", float, 1.1, low=0.01, high=10.0, help="largest zoom factor"),
        Param("shear", float, 0.0, low=0.0, high=80.0, help="largest x-shear in degrees"),
        INTERPOLATION,
        PADDING,
        FILL,
        probability(1.0),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``angle`` (degrees), ``scale``, ``shear`` (degrees) and ``translate`` (N x 2 pixels)."""
        n, _, h, w = shape
        cfg = self.config
        angle = uniform(n, -cfg["degrees"], cfg["degrees"], generator, device)
        scale = uniform(n, cfg["scale_min"], cfg["scale_max"], generator, device)
        shear = uniform(n, -cfg["shear"], cfg["shear"], generator, device)
        fraction = uniform(2 * n, -cfg["translate"], cfg["translate"], generator, device)
        size = constant((float(w), float(h)), device)
        return {
            "angle": angle,
            "scale": scale,
            "shear": shear,
            "translate": fraction.view(n, 2) * size,
        }

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        return affine_matrix(
            shape, params["angle"], params["scale"], params["shear"], params["translate"]
        )


class Crop(GeometricAugmenter):
    name = "crop"
    description = "Pad by `padding` pixels and crop back to size at a random offset"
    params = (
        Param("padding", int, 4, low=0, high=256, help="pixels added on each side"),
        PADDING,
        FILL,
        probability(1.0),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``offset``: whole-pixel shift (x, y) of the window, in [-padding, padding]."""
        pad = self.config["padding"]
        offset = torch.randint(-pad, pad + 1, (shape[0], 2), generator=generator, device=device)
        return {"offset": offset}

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        offset = params["offset"].float()
        matrix = torch.eye(3, device=offset.device).repeat(len(offset), 1, 1)
        matrix[:, :2, 2] = offset
        return matrix


class ResizedCrop(GeometricAugmenter):
    name = "resized_crop"
    description = "Crop a box of random area and aspect ratio, scaled to the full size"
    params = (
        Param(
            "scale_min", float, 0.08, low=0.0, high=1.0, help="smallest area", at_most="scale_max"
        ),
        Param("scale_max", float, 1.0, low=0.0, high=1.0, help="largest area fraction"),
        Param(
            "ratio_min",
            float,
            3 / 4,
            low=0.01,
            high=100.0,
            help="smallest width / height",
            log=True,
            at_most="ratio_max",
        ),
        Param(
            "ratio_max", float, 4 / 3, low=0.01, high=100.0, help="largest width / height", log=True
        ),
        INTERPOLATION,
        probability(1.0),
    )

    #: candidate boxes drawn per sample; the first that fits is used (torchvision tries 10)
    attempts = 10

    def check_config(self, config: Mapping[str, Any]) -> None:
        if config["scale_max"] <= 0:
            raise ParamError(
                f"augmenter 'resized_crop': scale_max={config['scale_max']} leaves no area; "
                "give scale_max > 0"
            )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``box``: left, top, width, height in pixels (left/top at the pixel edge, so the
        whole image is ``(-0.5, -0.5, W, H)``).

        Like torchvision: area fraction uniform in [scale_min, scale_max], log aspect ratio
        uniform; of :attr:`attempts` candidates the first that fits is kept, else the first is
        shrunk to fit. Position uniform over where the box fits.
        """
        n, _, h, w = shape
        cfg, k = self.config, self.attempts
        area = h * w * uniform(n * k, cfg["scale_min"], cfg["scale_max"], generator, device)
        log_ratio = uniform(
            n * k, math.log(cfg["ratio_min"]), math.log(cfg["ratio_max"]), generator, device
        )
        bw = (area * log_ratio.exp()).sqrt().view(n, k)
        bh = (area / log_ratio.exp()).sqrt().view(n, k)
        first = ((bw <= w) & (bh <= h)).int().argmax(1, keepdim=True)  # 0 when none fits
        bw = bw.gather(1, first).squeeze(1).clamp(1, w)
        bh = bh.gather(1, first).squeeze(1).clamp(1, h)
        where = torch.rand(n, 2, generator=generator, device=device)
        left = -0.5 + where[:, 0] * (w - bw)
        top = -0.5 + where[:, 1] * (h - bh)
        return {"box": torch.stack([left, top, bw, bh], 1)}

    def matrix(self, params: Mapping[str, Tensor], shape: torch.Size) -> Tensor:
        _, _, h, w = shape
        left, top, bw, bh = params["box"].unbind(1)
        matrix = torch.zeros(len(left), 3, 3, device=left.device)
        matrix[:, 0, 0] = (bw - 1) / max(w - 1, 1)
        matrix[:, 1, 1] = (bh - 1) / max(h - 1, 1)
        matrix[:, 0, 2] = left + 0.5
        matrix[:, 1, 2] = top + 0.5
        matrix[:, 2, 2] = 1
        return matrix


@hookimpl
def register_augmenters(register):
    for cls in (HorizontalFlip, VerticalFlip, Rot90, Rotation, Affine, Crop, ResizedCrop):
        register(cls)
