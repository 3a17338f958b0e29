r"""Mixing augmentation: mixup and CutMix blend pairs of samples and their labels.

Each sample :math:`i` of a batch is paired with sample :math:`\pi(i)`, where :math:`\pi` is a
random permutation of the batch, and gets its own mixing weight
:math:`\lambda_i \sim \mathrm{Beta}(\alpha, \alpha)`:

* **mixup** (Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018):
  :math:`\tilde x_i = \lambda_i x_i + (1 - \lambda_i) x_{\pi(i)}`.
* **CutMix** (Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with
  Localizable Features", ICCV 2019): a box of area :math:`(1 - \lambda_i) H W` (sides
  :math:`\sqrt{1 - \lambda_i}\,H` and :math:`\sqrt{1 - \lambda_i}\,W`), centred at a uniformly
  drawn pixel and clipped to the image, is cut from :math:`x_{\pi(i)}` and pasted into
  :math:`x_i`. :math:`\lambda_i` is then set to the exact kept fraction
  :math:`1 - |\mathrm{box}_i| / (H W)`, so the label matches the pixels even when the box was
  clipped or rounded.

Both mix the labels with the same weight: :math:`\tilde y_i = \lambda_i y_i + (1 - \lambda_i)
y_{\pi(i)}`.

**Targets.** In: class indices (an ``int64`` tensor of shape ``N``; pass ``num_classes``) or soft
labels (a float tensor ``N x num_classes`` with non-negative rows summing to 1). Out: always soft
labels, ``N x num_classes``, rows summing to 1 (dtype of the images for class indices, of the
targets for soft labels), ready for ``torch.nn.functional.cross_entropy``. A sample paired with
itself is unchanged; with ``p < 1`` the samples not selected keep their image and their
(one-hot) label.

**Drawing** :math:`\lambda` **from the generator.** ``torch.distributions.Beta`` cannot take a
``torch.Generator``; :func:`beta` uses the kernel it is built on, ``torch._sample_dirichlet``
(a Beta(a, b) draw is the first coordinate of a Dirichlet(a, b) draw), which does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneplug import MixingAugmenter, Param, hookimpl
from pruneplug.params import probability


def beta(alpha: float, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """``n`` independent draws from Beta(alpha, alpha), taken from ``generator``."""
    concentration = torch.full((n, 2), float(alpha), device=device)
    return torch._sample_dirichlet(concentration, generator=generator)[:, 0]


def soft_targets(targets: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """Check ``targets`` and return them as soft labels ``N x classes`` (rows summing to 1)."""
    if targets.is_floating_point():
        if targets.dim() != 2:
            raise ValueError(
                f"soft targets must have shape N x classes, got {tuple(targets.shape)}: give "
                "class indices (int64, shape N) with num_classes=, or one row of class "
                "probabilities per image"
            )
        if num_classes and targets.shape[1] != num_classes:
            raise ValueError(
                f"soft targets have {targets.shape[1]} classes but num_classes={num_classes}: "
                "make them agree (or leave num_classes=0 for soft targets)"
            )
        if (targets < 0).any() or not torch.allclose(
            targets.sum(1), torch.ones_like(targets[:, 0]), atol=1e-3
        ):
            raise ValueError(
                "soft targets must be class probabilities (non-negative rows summing to 1): "
                "apply softmax, or give class indices with num_classes="
            )
        return targets
    if targets.dtype != torch.int64 or targets.dim() != 1:
        raise ValueError(
            f"class-index targets must be a 1-D int64 tensor, got dtype {targets.dtype} and "
            f"shape {tuple(targets.shape)}: convert them with targets.long()"
        )
    if not num_classes:
        raise ValueError(
            "targets are class indices, so the number of classes is needed to build the "
            "mixed soft labels: pass num_classes=<number of classes>"
        )
    low, high = torch.stack(torch.aminmax(targets)).tolist()  # one wait for a GPU, not two
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"class indices must be in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got values in [{low}, {high}]: check num_classes"
        )
    return nn.functional.one_hot(targets, num_classes).to(dtype)


class _Mixing(MixingAugmenter):
    """Shared part of mixup and CutMix: the pairing, the weights and the label mixing."""

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        n = shape[0]
        return {
            "lam": beta(self.config["alpha"], n, generator, device),
            "perm": torch.randperm(n, generator=generator, device=device),
        }

    def mix(
        self, images: Tensor, targets: Tensor, params: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        soft = soft_targets(targets, self.config["num_classes"], images.dtype)
        perm, lam = params["perm"], params["lam"]
        mixed = torch.lerp(soft[perm], soft, lam.to(soft).unsqueeze(1))
        return self.mix_images(images, params), mixed

    def mix_images(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Blend each image with its partner ``images[params["perm"]]``."""
        raise NotImplementedError


def _alpha(default: float) -> Param:
    return Param(
        "alpha",
        float,
        default,
        low=1e-3,
        high=100.0,
        help="Beta(alpha, alpha) of the weights",
        log=True,
    )


_NUM_CLASSES = Param(
    "num_classes",
    int,
    0,
    low=0,
    help="number of classes, needed for class-index targets (0: targets are soft labels)",
)
_P = probability(1.0)


class Mixup(_Mixing):
    name = "mixup"
    description = "Blend each image and its label with another sample's (Zhang et al. 2018)"
    params = (_alpha(0.2), _NUM_CLASSES, _P)

    def mix_images(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        lam = params["lam"].to(images).view(-1, 1, 1, 1)
        return torch.lerp(images[params["perm"]], images, lam).clamp_(0, 1)


class CutMix(_Mixing):
    name = "cutmix"
    description = "Paste a box from another sample, label by area (Yun et al. 2019)"
    params = (_alpha(1.0), _NUM_CLASSES, _P)

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """Draw pairs and weights, then each sample's box (rows y0:y1, columns x0:x1)."""
        params = super().generate_parameters(shape, generator, device)
        n, (h, w) = shape[0], shape[-2:]
        side = (1 - params["lam"]).sqrt()
        corners = []
        for size in (h, w):
            cut = (side * size).round().long()
            centre = torch.randint(size, (n,), generator=generator, device=device)
            start = centre - cut // 2
            corners += [start.clamp(0, size), (start + cut).clamp(0, size)]
        y0, y1, x0, x1 = corners
        params["box"] = torch.stack(corners, 1)
        params["lam"] = 1 - ((y1 - y0) * (x1 - x0)).float() / (h * w)
        return params

    def mix_images(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        y0, y1, x0, x1 = params["box"].unbind(1)
        rows = torch.arange(images.shape[-2], device=images.device)
        cols = torch.arange(images.shape[-1], device=images.device)
        in_rows = (rows >= y0[:, None]) & (rows < y1[:, None])
        in_cols = (cols >= x0[:, None]) & (cols < x1[:, None])
        inside = in_rows[:, None, :, None] & in_cols[:, None, None, :]
        return torch.where(inside, images[params["perm"]], images)


@hookimpl
def register_augmenters(register):
    register(Mixup)
    register(CutMix)
