r"""Noise augmentation: Gaussian, salt-and-pepper, shot (Poisson) and impulse noise.

Each sample draws its own severity; the noise itself is drawn in :meth:`generate_parameters`
from the augmenter's generator (so the same seed gives the same noise, and a widget can show
it). Results are clamped to [0, 1]. Gaussian, shot and salt-and-pepper noise are corruptions
of Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations", ICLR 2019 (ImageNet-C; its "impulse noise" is salt-and-pepper), where training
with noise is a baseline defence:

* Gaussian (sensor read-out) noise: :math:`y = x + \sigma z`, :math:`z \sim N(0, 1)` per value,
  :math:`\sigma` per sample;
* salt-and-pepper (fixed-valued impulse) noise: a fraction ``amount`` of the *pixels* is set to
  white (a fraction ``salt_ratio`` of them) or black, all channels together;
* shot (photon) noise: :math:`y = \mathrm{Poisson}(\lambda x) / \lambda`, with :math:`\lambda`
  the photons a white pixel collects (fewer = noisier; ImageNet-C uses 60 down to 3). The
  Poisson draw is exact, by inverting its CDF :math:`P(K \le k) = Q(k + 1, \lambda x)`
  (regularised upper incomplete gamma, ``torch.special.gammaincc``) at a uniform drawn per
  value (:func:`poisson_quantile`) - deterministic given the drawn uniforms. The counts are
  steps of :math:`x`, so for gradients the noise :math:`y - x` counts as a constant added to
  the image (a straight-through estimate, as for Gaussian noise);
* impulse (random-valued impulse) noise: a fraction ``amount`` of the *values* (each channel on
  its own) is replaced by a uniform random value - the harder case for median-type filters
  (e.g. Chan, Ho & Nikolova, "Salt-and-Pepper Noise Removal by Median-Type Noise Detectors
  and Detail-Preserving Regularization", IEEE TIP 2005, contrasts the two kinds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from pruneplug import ImageAugmenter, Param, hookimpl
from pruneplug.params import probability
from pruneplug.plumbing import uniform


def poisson_quantile(rate: Tensor, u: Tensor, max_count: int) -> Tensor:
    r"""The inverse CDF of the Poisson distribution, value by value: the smallest count
    :math:`k \in [0, \mathrm{max\_count}]` with :math:`P(K \le k) = Q(k + 1, \lambda) \ge u`
    for :math:`K \sim \mathrm{Poisson}(\lambda)`, ``rate`` :math:`\lambda` and ``u`` of one shape.

    :math:`Q` costs about 30 ns a value on a CPU core, so it is asked as few times as possible.
    Each value keeps the range its answer lies in, narrowed by every comparison
    :math:`Q(k + 1, \lambda) \ge u`: first at the Cornish-Fisher guess
    :math:`g = \lfloor \lambda + \sqrt\lambda\, z + (z^2 - 1) / 6 + 1/2 \rfloor`,
    :math:`z = \Phi^{-1}(u)`, then at :math:`g - 1` where :math:`g` reaches :math:`u` or at
    :math:`g + 1` where it does not, which settles about 99 % of values after two comparisons;
    the rest are bisected. Bisecting every value over the whole range, which the same
    comparisons decide, gives the same counts with :math:`\lceil \log_2(\mathrm{max\_count} +
    1) \rceil` evaluations of every value: 8 at the default 60 photons, against about 2 here.
    """
    shape = rate.shape
    rate, u = rate.reshape(-1), u.reshape(-1)
    low = torch.zeros_like(rate)
    high = torch.full_like(rate, float(max_count))

    def narrow(k: Tensor, where: Tensor | None = None) -> Tensor:
        """Compare at counts ``k`` (of the values ``where`` indexes) and narrow their ranges."""
        lam, q = (rate, u) if where is None else (rate[where], u[where])
        reaches = torch.special.gammaincc(k + 1, lam) >= q
        lo, hi = (low, high) if where is None else (low[where], high[where])
        lo = torch.where(reaches, lo, torch.maximum(lo, k + 1))
        hi = torch.where(reaches, torch.minimum(hi, k), hi)
        if where is None:
            low.copy_(lo), high.copy_(hi)
        else:
            low[where], high[where] = lo, hi
        return reaches

    z = torch.special.ndtri(u).clamp(-8.0, 8.0)  # finite where u is 0
    guess = torch.floor(rate + rate.sqrt() * z + (z * z - 1) / 6 + 0.5).clamp(0, max_count)
    reaches = narrow(guess)
    narrow(torch.where(reaches, guess - 1, guess + 1).clamp(0, max_count))
    unsettled = (low < high).nonzero().squeeze(1)
    for _ in range(math.ceil(math.log2(max_count + 1))):
        narrow(torch.floor((low[unsettled] + high[unsettled]) / 2), unsettled)
    return low.view(shape)


class GaussianNoise(ImageAugmenter):
    name = "gaussian_noise"
    description = "Add Gaussian noise with a standard deviation drawn per sample"
    params = (
        Param(
            "sigma_min",
            float,
            0.02,
            low=0.0,
            high=1.0,
            help="smallest standard deviation",
            at_most="sigma_max",
        ),
        Param("sigma_max", float, 0.1, low=0.0, high=1.0, help="largest standard deviation"),
        probability(0.5),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``sigma`` per sample and ``noise``, standard normal values shaped like the batch."""
        sigma = uniform(
            shape[0], self.config["sigma_min"], self.config["sigma_max"], generator, device
        )
        return {"sigma": sigma, "noise": torch.randn(shape, generator=generator, device=device)}

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        sigma = params["sigma"].to(images.dtype).view(-1, 1, 1, 1)
        return (images + sigma * params["noise"].to(images.dtype)).clamp_(0, 1)


class SaltAndPepper(ImageAugmenter):
    name = "salt_and_pepper"
    description = "Set a random fraction of pixels to white or black"
    params = (
        Param(
            "amount_min",
            float,
            0.01,
            low=0.0,
            high=1.0,
            help="smallest fraction of pixels",
            at_most="amount_max",
        ),
        Param("amount_max", float, 0.05, low=0.0, high=1.0, help="largest fraction of pixels"),
        Param("salt_ratio", float, 0.5, low=0.0, high=1.0, help="fraction of them set white"),
        probability(0.5),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``amount`` per sample and ``uniform``, one value in [0, 1) per pixel (N x 1 x H x W):
        a pixel is salt below ``amount * salt_ratio``, pepper below ``amount``."""
        n, _, h, w = shape
        amount = uniform(n, self.config["amount_min"], self.config["amount_max"], generator, device)
        hits = torch.rand(n, 1, h, w, generator=generator, device=device)
        return {"amount": amount, "uniform": hits}

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        amount = params["amount"].view(-1, 1, 1, 1)
        u = params["uniform"]
        salt = u < amount * self.config["salt_ratio"]
        pepper = ~salt & (u < amount)
        out = images.masked_fill(salt, 1.0)
        return out.masked_fill_(pepper, 0.0)


class ShotNoise(ImageAugmenter):
    name = "shot_noise"
    description = "Poisson (photon) noise; fewer photons per white pixel = noisier"
    params = (
        Param(
            "photons_min",
            float,
            12.0,
            low=0.1,
            high=1000.0,
            help="fewest photons (noisiest)",
            at_most="photons_max",
            log=True,
        ),
        Param(
            "photons_max",
            float,
            60.0,
            low=0.1,
            high=1000.0,
            help="most photons (cleanest)",
            log=True,
        ),
        probability(0.5),
    )

    def __init__(self, **params) -> None:
        super().__init__(**params)
        # counts above this have probability < 1e-12 even at the highest rate
        rate = self.config["photons_max"]
        self.max_count = math.ceil(rate + 8 * math.sqrt(rate) + 10)

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``photons`` per sample and ``uniform``, one value in [0, 1) per pixel and channel."""
        photons = uniform(
            shape[0], self.config["photons_min"], self.config["photons_max"], generator, device
        )
        return {
            "photons": photons,
            "uniform": torch.rand(shape, generator=generator, device=device),
        }

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        photons = params["photons"].view(-1, 1, 1, 1)
        rate = images.detach().float() * photons
        counts = poisson_quantile(rate, params["uniform"], self.max_count)
        noisy = (counts / photons).clamp_(0, 1).to(images.dtype)
        if images.requires_grad:  # the noise is a constant added to the image for gradients
            return (images + (noisy - images).detach()).clamp(0, 1)
        return noisy


class ImpulseNoise(ImageAugmenter):
    name = "impulse_noise"
    description = "Replace a random fraction of values by random values"
    params = (
        Param(
            "amount_min",
            float,
            0.01,
            low=0.0,
            high=1.0,
            help="smallest fraction of values",
            at_most="amount_max",
        ),
        Param("amount_max", float, 0.05, low=0.0, high=1.0, help="largest fraction of values"),
        probability(0.5),
    )

    def generate_parameters(self, shape, generator, device) -> dict[str, Tensor]:
        """``amount`` per sample; ``uniform`` (which values are hit: those below ``amount``)
        and ``values`` (their new values), both shaped like the batch."""
        amount = uniform(
            shape[0], self.config["amount_min"], self.config["amount_max"], generator, device
        )
        hits = torch.rand(shape, generator=generator, device=device)
        values = torch.rand(shape, generator=generator, device=device)
        return {"amount": amount, "uniform": hits, "values": values}

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        hit = params["uniform"] < params["amount"].view(-1, 1, 1, 1)
        return torch.where(hit, params["values"].to(images.dtype), images)


@hookimpl
def register_augmenters(register):
    for cls in (GaussianNoise, SaltAndPepper, ShotNoise, ImpulseNoise):
        register(cls)
