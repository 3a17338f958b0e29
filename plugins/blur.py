r"""Blur augmentation: box (mean) and Gaussian filters with a kernel drawn per sample.

A blur replaces each pixel by a weighted mean of its :math:`k \times k` neighbourhood,
:math:`y = K * x`, with weights summing to 1:

* box (mean) filter: :math:`K_{ij} = 1 / k^2`, ``k`` an odd size drawn per sample from
  [kernel_min, kernel_max];
* Gaussian filter: :math:`K_{ij} \propto \exp(-(i^2 + j^2) / 2\sigma^2)` on a fixed odd
  ``kernel_size``, :math:`\sigma` drawn per sample from [sigma_min, sigma_max] (torchvision's
  ``GaussianBlur`` recipe; used as an augmentation in SimCLR, Chen et al., "A Simple Framework
  for Contrastive Learning of Visual Representations", ICML 2020).

Blurs make a model robust to defocus and low resolution (Hendrycks & Dietterich, "Benchmarking
Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019). Borders are
padded by reflection (as torchvision) or by repeating the edge pixel.

**Batched.** Every sample's kernel is zero-padded to the largest size and the batch is filtered
in one grouped convolution: the ``N x C`` images become the channels of a single image and each
gets its own kernel (``groups = N * C``). On CPU one 2-D grouped convolution beats two 1-D
passes for the small kernels used in augmentation (oneDNN's depthwise kernels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from pruneplug import ImageAugmenter, Param, ParamError, hookimpl
from pruneplug.params import probability
from pruneplug.plumbing import uniform

BORDER = Param(
    "border",
    str,
    "reflect",
    choices=("reflect", "replicate"),
    help="how the image is extended at its edges",
)


def _check_odd(owner: str, config: Mapping[str, Any], *names: str) -> None:
    for name in names:
        if config[name] % 2 == 0:
            raise ParamError(
                f"augmenter {owner!r}: {name}={config[name]} must be odd so the kernel has a "
                f"centre; use {config[name] + 1}"
            )


def check_reflect(k: int, border: str, shape: Sequence[int]) -> None:
    """Refuse a ``k x k`` kernel that reflection cannot pad for images of ``shape`` (``F.pad``'s
    "reflect" needs the padding below the image size)."""
    h, w = shape[-2:]
    if border == "reflect" and k // 2 >= min(h, w):
        raise ValueError(
            f"a {k} x {k} kernel is too large to reflect at the border of {h} x {w} images: "
            f"use a kernel of at most {2 * min(h, w) - 1} or border='replicate'"
        )


def filter_images(images: Tensor, kernels: Tensor, border: str) -> Tensor:
    """Filter each image with its own ``k x k`` kernel (``kernels``: ``N x k x k``, k odd).

    One grouped convolution over the whole batch; returns a new tensor in [0, 1].
    """
    n, c, h, w = images.shape
    k = kernels.shape[-1]
    half = k // 2
    check_reflect(k, border, images.shape)
    weight = kernels.to(images.dtype).repeat_interleave(c, 0).unsqueeze(1)  # N*C x 1 x k x k
    padded = F.pad(images.reshape(1, n * c, h, w), (half, half, half, half), mode=border)
    out = F.conv2d(padded, weight, groups=n * c).view(n, c, h, w)
    return out.clamp_(0, 1)  # weights sum to 1; the clamp only removes rounding


def _identity(kernels: Tensor, params: Mapping[str, Tensor]) -> Tensor:
    """Replace the kernels of unselected samples by a unit impulse (no work is wasted on
    choosing, and the base class restores those samples exactly anyway)."""
    applied = params.get("applied")
    if applied is None:
        return kernels
    k = kernels.shape[-1]
    impulse = torch.zeros(k, k, dtype=kernels.dtype, device=kernels.device)
    impulse[k // 2, k // 2] = 1
    return torch.where(applied.view(-1, 1, 1), kernels, impulse)


class BoxBlur(ImageAugmenter):
    name = "box_blur"
    description = "Mean filter with an odd kernel size drawn per sample"
    params = (
        Param(
            "kernel_min",
            int,
            3,
            low=1,
            high=31,
            help="smallest kernel size (odd)",
            at_most="kernel_max",
        ),
        Param("kernel_max", int, 5, low=1, high=31, help="largest kernel size (odd)"),
        BORDER,
        probability(0.5),
    )

    def check_config(self, config: Mapping[str, Any]) -> None:
        _check_odd(self.name, config, "kernel_min", "kernel_max")

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``size``: the odd kernel size of each sample."""
        check_reflect(self.config["kernel_max"], self.config["border"], shape)
        low, high = self.config["kernel_min"] // 2, self.config["kernel_max"] // 2
        half = torch.randint(low, high + 1, (shape[0],), generator=generator, device=device)
        return {"size": 2 * half + 1}

    def kernels(self, params: Mapping[str, Tensor]) -> Tensor:
        """``N x kmax x kmax``: ``1 / size^2`` on the central ``size x size`` block."""
        size = params["size"]
        k = self.config["kernel_max"]
        distance = (torch.arange(k, device=size.device) - k // 2).abs()
        inside = (2 * distance + 1)[None, :] <= size[:, None]  # N x k
        box = (inside[:, :, None] & inside[:, None, :]).float()
        return box / (size.float() ** 2).view(-1, 1, 1)

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        kernels = _identity(self.kernels(params), params)
        return filter_images(images, kernels, self.config["border"])


class GaussianBlur(ImageAugmenter):
    name = "gaussian_blur"
    description = "Gaussian filter with sigma drawn per sample"
    params = (
        Param("kernel_size", int, 3, low=1, high=31, help="kernel size (odd)"),
        Param(
            "sigma_min",
            float,
            0.1,
            low=0.01,
            high=50.0,
            help="smallest sigma (pixels)",
            log=True,
            at_most="sigma_max",
        ),
        Param(
            "sigma_max", float, 2.0, low=0.01, high=50.0, help="largest sigma (pixels)", log=True
        ),
        BORDER,
        probability(0.5),
    )

    def check_config(self, config: Mapping[str, Any]) -> None:
        _check_odd(self.name, config, "kernel_size")

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``sigma``: the standard deviation of each sample's kernel, in pixels."""
        check_reflect(self.config["kernel_size"], self.config["border"], shape)
        low, high = self.config["sigma_min"], self.config["sigma_max"]
        return {"sigma": uniform(shape[0], low, high, generator, device)}

    def kernels(self, params: Mapping[str, Tensor]) -> Tensor:
        """``N x k x k`` normalised Gaussians (outer products of the 1-D ones)."""
        sigma = params["sigma"]
        k = self.config["kernel_size"]
        x = torch.arange(k, device=sigma.device, dtype=sigma.dtype) - k // 2
        g = torch.exp(-(x**2)[None, :] / (2 * sigma[:, None] ** 2))
        g = g / g.sum(1, keepdim=True)
        return g[:, :, None] * g[:, None, :]

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        kernels = _identity(self.kernels(params), params)
        return filter_images(images, kernels, self.config["border"])


@hookimpl
def register_augmenters(register):
    register(BoxBlur)
    register(GaussianBlur)
