r"""Colour augmentation: brightness, contrast, saturation, hue, colour jitter and grayscale.

Every op is a per-sample affine map of each pixel's colour :math:`c` (a channel vector),
:math:`c \mapsto A c + t`, so a pipeline fuses a run of them into one map and one pass
(:func:`pruneplug.augment.colour_pass`). With grey weights :math:`w = (0.299, 0.587, 0.114)`
(ITU-R BT.601; torchvision's ``rgb_to_grayscale`` rounds red to 0.2989, a difference of at most
1e-4 in a grey value), :math:`g(c) = w \cdot c`, factors drawn per sample:

* brightness :math:`b \in [1 - \beta, 1 + \beta]`: :math:`c \mapsto b c`;
* contrast :math:`k \in [1 - \kappa, 1 + \kappa]`: :math:`c \mapsto k c + (1 - k) \bar g`, with
  :math:`\bar g` the image's mean grey (torchvision's definition);
* saturation :math:`s \in [1 - \sigma, 1 + \sigma]`: :math:`c \mapsto s c + (1 - s) g(c)\,1`;
* hue :math:`h \in [-\eta, \eta]` (turns, as torchvision's ``hue_factor``): a rotation by
  :math:`2 \pi h` of the chroma plane of the YIQ colour space, :math:`c \mapsto T^{-1}
  R_{2\pi h} T c` (the linear hue rotation of NVIDIA DALI's ``hsv`` operator and of the CSS
  ``hue-rotate()`` filter). It keeps every pixel's grey value and greys exactly; torchvision's
  HSV hue shift keeps the largest channel instead, so colours differ - the linear form is what
  lets hue fuse with the other ops (HSV costs as much as the whole pipeline). Measured in HSV
  on the bundled photos (``data.load_photos``), a rotation by :math:`h` moves hues by a median
  of about 0.8 :math:`h` and raises saturation by 0.07-0.11 (for :math:`h` from 0.05 to
  0.25); on uniformly random colours the median hue change is :math:`h` and saturation
  unchanged. Use it as a hue *perturbation*, not as an exact HSV shift;
* grayscale: :math:`c \mapsto g(c)\,1` (keeps the channel count);
* colour jitter: brightness, contrast, saturation and hue together, as one map
  :math:`c \mapsto b k\, S_s H_h\, c + (1 - k)\, b\, \bar g\, 1`. torchvision's ``ColorJitter``
  applies the four in a random order; here the order would change nothing. The four matrices
  commute: :math:`b I` and :math:`k I` scale every channel, and saturation (which scales the
  YIQ chroma plane) and hue (which turns it) both keep each pixel's grey value and map greys
  to themselves. Contrast's offset comes out as :math:`(1 - k)\, b\, \bar g` either way: a
  brightness step before it scales the mean grey it blends towards, a brightness step after it
  scales the offset, and saturation and hue change neither. In torchvision the order matters
  only through the clamp after each step and its HSV hue.

Values are clamped to [0, 1] once, after the map; torchvision clamps after each step of a
jitter, which differs only where an intermediate step leaves [0, 1]. Colour jitter was
popularised by Krizhevsky et al. (NeurIPS 2012, PCA colour noise), Howard, "Some Improvements
on Deep Convolutional Neural Network Based Image Classification" (ICLR 2014, brightness,
contrast, colour) and SimCLR (Chen et al., ICML 2020).

**Channels.** Brightness works on any number of channels, contrast on 1 or 3 (the grey of one
channel is the channel). Saturation and hue need RGB and raise a ``ValueError`` on other images;
grayscale of a 1-channel image is a documented no-op.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from pruneplug import Param, hookimpl
from pruneplug.augment import ColourAugmenter
from pruneplug.params import probability
from pruneplug.plumbing import constant

GREY = (0.299, 0.587, 0.114)
#: RGB -> YIQ (FCC NTSC); the I and Q rows sum to 0, so greys have no chroma.
YIQ = ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112))


def _strength(name: str, default: float, what: str, high: float = 1.0) -> Param:
    return Param(name, float, default, low=0.0, high=high, help=what)


def _factor(strength: float, n: int, generator, device) -> Tensor:
    """Factors uniform in [max(0, 1 - strength), 1 + strength] (torchvision's ranges)."""
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _require_rgb(name: str, shape: torch.Size, fix: str) -> None:
    if shape[1] != 3:
        raise ValueError(f"{name} needs RGB images (3 channels), got {shape[1]}: {fix}")


def _grey_weights(channels: int, device) -> Tensor:
    if channels == 3:
        return constant(GREY, device)
    if channels == 1:
        return constant((1.0,), device)
    raise ValueError(
        f"colour augmenters take 1 (grey) or 3 (RGB) channels, got {channels}: select the "
        "channels to augment first"
    )


def _eye(n: int, c: int, device) -> Tensor:
    return torch.eye(c, device=device).expand(n, c, c)


def brightness_map(factor: Tensor, channels: int) -> tuple[Tensor, Tensor]:
    """:math:`c \\mapsto b c`."""
    n = len(factor)
    return factor.view(n, 1, 1) * _eye(n, channels, factor.device), factor.new_zeros(n, channels)


def contrast_map(factor: Tensor, mean: Tensor) -> tuple[Tensor, Tensor]:
    """:math:`c \\mapsto k c + (1 - k) \\bar g`, with :math:`\\bar g = w \\cdot` ``mean``."""
    n, channels = mean.shape
    return factor.view(n, 1, 1) * _eye(n, channels, factor.device), contrast_offset(factor, mean)


def contrast_offset(factor: Tensor, mean: Tensor) -> Tensor:
    """Contrast's offset :math:`(1 - k) \\bar g` in every channel (``N x C``); its matrix,
    :math:`k I`, does not depend on the image."""
    grey = mean.float() @ _grey_weights(mean.shape[1], mean.device)
    return ((1 - factor) * grey)[:, None].expand(mean.shape)


def saturation_map(factor: Tensor) -> tuple[Tensor, Tensor]:
    """:math:`c \\mapsto s c + (1 - s) (w \\cdot c) 1` (RGB)."""
    n = len(factor)
    grey = constant(GREY, factor.device).expand(3, 3)  # every row is w
    s = factor.view(n, 1, 1)
    return s * _eye(n, 3, factor.device) + (1 - s) * grey, factor.new_zeros(n, 3)


def _hue_basis() -> tuple[tuple[tuple[float, ...], ...], ...]:
    """``3 x 3 x 3`` ``B`` (float64 values): the YIQ hue rotation by ``theta`` in RGB is
    :math:`B_0 + \\cos\\theta\\, B_1 + \\sin\\theta\\, B_2` (``from_yiq @ R @ to_yiq`` expanded)."""
    to_yiq = torch.tensor(YIQ, dtype=torch.float64)
    from_yiq = torch.linalg.inv(to_yiq)

    def outer(i: int, j: int) -> Tensor:
        return torch.outer(from_yiq[:, i], to_yiq[j])

    basis = torch.stack([outer(0, 0), outer(1, 1) + outer(2, 2), outer(1, 2) - outer(2, 1)])
    return tuple(tuple(map(tuple, b)) for b in basis.tolist())


HUE_BASIS = _hue_basis()


def hue_map(turns: Tensor) -> tuple[Tensor, Tensor]:
    """Rotation of the YIQ chroma plane by ``2 pi turns`` (RGB); positive turns move red
    towards yellow and green, as a positive HSV hue shift does. Computed in float64 where the
    turns are, with no copy to or from the host."""
    angle = (2 * math.pi) * turns.double()
    basis = constant(HUE_BASIS, turns.device, torch.float64)
    a = basis[0] + angle.cos()[:, None, None] * basis[1] + angle.sin()[:, None, None] * basis[2]
    return a.float(), turns.new_zeros(len(turns), 3)


def grayscale_map(n: int, channels: int, device) -> tuple[Tensor, Tensor]:
    """:math:`c \\mapsto (w \\cdot c) 1`; the identity on one channel."""
    a = _grey_weights(channels, device).expand(channels, channels).expand(n, -1, -1)
    return a, torch.zeros(n, channels, device=device)


class Brightness(ColourAugmenter):
    name = "brightness"
    description = "Scale intensities by a factor in [1 - brightness, 1 + brightness]"
    params = (_strength("brightness", 0.2, "largest relative change"), probability(1.0))

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``factor`` per sample."""
        return {"factor": _factor(self.config["brightness"], shape[0], generator, device)}

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        return brightness_map(params["factor"], mean.shape[1])


class Contrast(ColourAugmenter):
    name = "contrast"
    description = "Blend with the mean grey by a factor in [1 - contrast, 1 + contrast]"
    params = (_strength("contrast", 0.2, "largest relative change"), probability(1.0))

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``factor`` per sample."""
        _grey_weights(shape[1], device)
        return {"factor": _factor(self.config["contrast"], shape[0], generator, device)}

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        return contrast_map(params["factor"], mean)


class Saturation(ColourAugmenter):
    name = "saturation"
    description = "Blend with the pixel's grey by a factor in [1 - saturation, 1 + saturation]"
    params = (_strength("saturation", 0.2, "largest relative change"), probability(1.0))

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``factor`` per sample."""
        _require_rgb("saturation", shape, "grey images have no saturation to change")
        return {"factor": _factor(self.config["saturation"], shape[0], generator, device)}

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        return saturation_map(params["factor"])


class Hue(ColourAugmenter):
    name = "hue"
    description = "Rotate hues by a fraction of a turn in [-hue, hue]"
    params = (
        _strength("hue", 0.05, "largest shift, in turns (0.5 = half the colour wheel)", 0.5),
        probability(1.0),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``turns`` per sample."""
        _require_rgb("hue", shape, "grey images have no hue to change")
        h = self.config["hue"]
        return {"turns": -h + 2 * h * torch.rand(shape[0], generator=generator, device=device)}

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        return hue_map(params["turns"])


class Grayscale(ColourAugmenter):
    name = "grayscale"
    description = "Replace colours by their grey value (keeps the channel count)"
    params = (probability(0.1),)

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        return grayscale_map(mean.shape[0], mean.shape[1], mean.device)


class ColourJitter(ColourAugmenter):
    name = "colour_jitter"
    description = "Brightness, contrast, saturation and hue at once, as one colour map"
    params = (
        _strength("brightness", 0.2, "largest relative brightness change"),
        _strength("contrast", 0.2, "largest relative contrast change"),
        _strength("saturation", 0.2, "largest relative saturation change (RGB only)"),
        _strength("hue", 0.05, "largest hue shift in turns (RGB only)", 0.5),
        probability(1.0),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``brightness``, ``contrast``, ``saturation`` factors and ``hue`` turns."""
        n, channels = shape[0], shape[1]
        cfg = self.config
        _grey_weights(channels, device)
        if channels != 3 and (cfg["saturation"] > 0 or cfg["hue"] > 0):
            _require_rgb("colour_jitter", shape, "set saturation=0 and hue=0 for grey images")
        return {
            "brightness": _factor(cfg["brightness"], n, generator, device),
            "contrast": _factor(cfg["contrast"], n, generator, device),
            "saturation": _factor(cfg["saturation"], n, generator, device),
            "hue": -cfg["hue"] + 2 * cfg["hue"] * torch.rand(n, generator=generator, device=device),
        }

    def affine(self, params: Mapping[str, Tensor], mean: Tensor) -> tuple[Tensor, Tensor]:
        """The four maps in one, whatever their order (see the module docstring). Saturation
        and hue are the identity on grey images (``generate_parameters`` made sure their
        strengths are 0 there)."""
        n, channels = mean.shape
        b, k = params["brightness"], params["contrast"]
        a = (b * k).view(n, 1, 1) * _eye(n, channels, mean.device)
        if channels == 3:
            a = a @ saturation_map(params["saturation"])[0] @ hue_map(params["hue"])[0]
        return a, b[:, None] * contrast_offset(k, mean)


@hookimpl
def register_augmenters(register):
    for cls in (Brightness, Contrast, Saturation, Hue, ColourJitter, Grayscale):
        register(cls)
