r"""Adversarial augmentation: FGSM and PGD move each image uphill on the model's loss.

Both search the L-infinity ball of radius :math:`\varepsilon` around the input image :math:`x`
(intersected with the valid range [0, 1]) for an image that raises the loss
:math:`L(f(x'), y)` of the model :math:`f` on the true targets :math:`y`:

* **FGSM** (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015), one
  step to the ball's corner along the gradient sign:
  :math:`x' = \mathrm{clip}_{[0,1]}\big(x + \varepsilon\,\mathrm{sign}(\nabla_x L)\big)`.
* **PGD** (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR
  2018), projected gradient ascent from a random start
  :math:`x^0 = \mathrm{clip}_{[0,1]}(x + u),\ u \sim U[-\varepsilon, \varepsilon]^{C H W}`:
  :math:`x^{t+1} = \Pi\big(x^t + \alpha\,\mathrm{sign}(\nabla_x L(f(x^t), y))\big)`, where
  :math:`\Pi` clips to :math:`[x - \varepsilon, x + \varepsilon] \cap [0, 1]`.

The attack runs in evaluation mode (so dropout is off and batch-norm statistics are neither used
from the batch nor updated) and asks autograd for the gradient with respect to the images only,
so the model's parameters, their ``.grad`` and every module's training mode are exactly as before
the call. The random start is drawn from the augmenter's generator, so a seed repeats it. Targets
may be class indices or soft labels, whatever ``loss_fn`` (default: cross-entropy) accepts.
The attack runs where the model is (images, targets and the random start are moved there) and
the adversarial images come back on the images' device; the model is never moved.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from pruneplug import AdversarialAugmenter, LossFn, Param, hookimpl
from pruneplug.params import probability
from pruneplug.plumbing import scalar_loss


def input_gradient_sign(
    images: Tensor, targets: Tensor, model: nn.Module, loss_fn: LossFn
) -> Tensor:
    """:math:`\\mathrm{sign}(\\nabla_x L(f(x), y))`, without touching the parameters' ``.grad``.

    Gradients are taken even when the caller turned them off, by ``torch.no_grad`` or by
    ``torch.inference_mode`` (whose tensors are copied into normal ones for the attack).
    """
    with torch.inference_mode(False), torch.enable_grad():
        images = images.detach().clone().requires_grad_(True)
        loss = scalar_loss(loss_fn(model(images), targets.clone()))
        (grad,) = torch.autograd.grad(loss, images)
    return grad.sign()


_EPS = Param("eps", float, 8 / 255, low=0.0, high=1.0, help="radius of the L-inf ball")
_P = probability(1.0)


class FGSM(AdversarialAugmenter):
    name = "fgsm"
    description = "Fast gradient sign step of size eps up the loss (Goodfellow et al. 2015)"
    params = (_EPS, _P)

    def attack(
        self,
        images: Tensor,
        targets: Tensor,
        params: Mapping[str, Tensor],
        model: nn.Module,
        loss_fn: LossFn,
    ) -> Tensor:
        step = self.config["eps"] * input_gradient_sign(images, targets, model, loss_fn)
        return (images + step).clamp(0, 1)


class PGD(AdversarialAugmenter):
    name = "pgd"
    description = "Projected gradient ascent in the L-inf eps-ball (Madry et al. 2018)"
    params = (
        _EPS,
        Param("alpha", float, 2 / 255, low=0.0, high=1.0, help="step size of each iteration"),
        Param("steps", int, 10, low=1, high=1000, help="number of gradient steps"),
        Param("random_start", bool, True, help="start from a uniform point in the eps-ball"),
        _P,
    )

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """Draw each sample's random start offset, uniform in [-eps, eps] per pixel."""
        if not self.config["random_start"]:
            return {}
        u = torch.rand(shape, generator=generator, device=device)
        return {"start": (2 * u - 1) * self.config["eps"]}

    def attack(
        self,
        images: Tensor,
        targets: Tensor,
        params: Mapping[str, Tensor],
        model: nn.Module,
        loss_fn: LossFn,
    ) -> Tensor:
        eps, alpha = self.config["eps"], self.config["alpha"]
        low, high = (images - eps).clamp(min=0), (images + eps).clamp(max=1)
        x = images
        if "start" in params:
            x = torch.minimum(torch.maximum(images + params["start"].to(images), low), high)
        for _ in range(self.config["steps"]):
            x = x + alpha * input_gradient_sign(x, targets, model, loss_fn)
            x = torch.minimum(torch.maximum(x, low), high)
        return x


@hookimpl
def register_augmenters(register):
    register(FGSM)
    register(PGD)
