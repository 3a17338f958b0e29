"""The augmenter contracts: image augmenters (plain, mixing, adversarial) and text ones.

The bases check the input, draw per-sample parameters from an explicit ``torch.Generator``,
decide per sample whether to apply, and put unselected samples back, so a plugin implements
only ``apply``, ``mix``, ``attack`` or ``augment_one``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, overload

import torch
from torch import Tensor, nn

from ..plumbing import LossFn, evaluation_mode, model_device
from .base import Plugin


def default_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from torch's global RNG, so ``torch.manual_seed`` makes runs repeat."""
    seed = int(torch.randint(0, 2**62, (1,)).item())
    return torch.Generator(device=device).manual_seed(seed)


def check_generator(generator: Any) -> torch.Generator:
    """``generator`` itself when it is a ``torch.Generator``; a clear error otherwise."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}: e.g. "
            "torch.Generator().manual_seed(0)"
        )
    return generator


def check_images(images: Tensor) -> Tensor:
    """Check the image contract and return a 4-D batch view (``N x C x H x W``).

    NaN counts as out of range (it would spread through every later step).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be float in [0, 1], got dtype {images.dtype}: convert with "
            "images.float() / 255"
        )
    if images.dim() not in (3, 4):
        raise ValueError(
            f"images must be N x C x H x W (or one C x H x W image), got shape "
            f"{tuple(images.shape)}"
        )
    if images.numel() == 0:
        raise ValueError("the batch of images is empty: give at least one image")
    low, high = images.aminmax()
    if not bool((low >= 0) & (high <= 1)):  # also false for NaN; one wait for a GPU, not two
        raise ValueError(
            f"image values must be in [0, 1], got [{low.item():.3g}, {high.item():.3g}]: "
            "scale them (e.g. x / 255) before augmenting"
        )
    return images if images.dim() == 4 else images.unsqueeze(0)


class ImageAugmenter(Plugin):
    """Image augmenter on batches ``N x C x H x W`` of floats in [0, 1].

    Follows kornia's split between drawing random parameters and applying them, with an
    explicit ``torch.Generator``:

    * :meth:`generate_parameters` draws **per-sample** parameters (a dict of tensors whose first
      dimension is ``N``) from the generator it is given;
    * :meth:`apply` applies them to the whole batch at once (no Python loop over samples).

    The base class validates the images and decides per sample whether to apply: declare a
    ``p`` parameter to expose the probability (without one every sample is transformed). The
    decision is part of the drawn parameters, ``params["applied"]`` (see
    :meth:`forward_parameters`), so :meth:`apply` may skip work for unselected samples and a
    widget can show which samples changed. Unselected samples are returned unchanged whatever
    :meth:`apply` does to them; the input is never modified in place.

    Augmenters that also transform targets (mixup, CutMix) derive from
    :class:`MixingAugmenter` and implement ``mix``; adversarial ones derive from
    :class:`AdversarialAugmenter` and implement ``attack``. The flags below say which family an
    augmenter (or a pipeline of them) belongs to.

    **Devices.** The generator may be on any device, whatever device the images are on:
    parameters are drawn on the generator's device and then moved to the images' device (as
    kornia does), so a CPU generator with a given seed draws the same parameters for CPU and
    CUDA images. Without a generator, one on the images' device is seeded from torch's global
    RNG. :meth:`generate_parameters` therefore receives the generator's device.
    """

    kind = "augmenter"
    modality: ClassVar[str] = "image"
    #: needs targets and returns soft ones (set by :class:`MixingAugmenter`, or by a pipeline)
    mixes_targets: bool = False
    #: needs ``model=`` (set by :class:`AdversarialAugmenter`, or by a pipeline)
    needs_model: bool = False

    # typed per call form: without targets the images come back, with them (images, targets)
    @overload
    def __call__(
        self,
        images: Tensor,
        targets: None = None,
        *,
        generator: torch.Generator | None = None,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
    ) -> Tensor: ...

    @overload
    def __call__(
        self,
        images: Tensor,
        targets: Tensor,
        *,
        generator: torch.Generator | None = None,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
    ) -> tuple[Tensor, Tensor]: ...

    def __call__(
        self,
        images: Tensor,
        targets: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Augment ``images``; returns ``images`` or, when targets are given, ``(images, targets)``.

        ``generator`` (on any device) makes the draw repeatable (default: one on the images'
        device, seeded from torch's global RNG). The result is always a new tensor, on the
        images' device, even when no sample was selected; targets come back on that device too.
        """
        batch = check_images(images)
        if self.mixes_targets and targets is None:
            raise ValueError(
                f"augmenter {self.name!r} mixes targets: call it as aug(images, targets)"
            )
        if targets is not None and not isinstance(targets, Tensor):
            raise TypeError(
                f"targets must be a tensor (class indices or soft labels), got "
                f"{type(targets).__name__}: convert them with torch.as_tensor(targets)"
            )
        if targets is not None and len(targets) != len(batch):
            raise ValueError(
                f"got {len(batch)} images but {len(targets)} targets: give one target per image"
            )
        if targets is not None:
            targets = targets.to(batch.device)
        if self.needs_model and model is None:
            raise ValueError(
                f"augmenter {self.name!r} needs the model: call it as aug(images, targets, "
                "model=model)"
            )
        if generator is None:
            generator = default_generator(batch.device)
        params = self.forward_parameters(batch.shape, check_generator(generator), batch.device)
        if self._probability() < 1:
            out, new_targets = self.transform(
                batch, params, targets=targets, model=model, loss_fn=loss_fn
            )
        else:  # every sample was drawn as applied: no count to wait for, nothing to put back
            out, new_targets = self._apply(batch, params, targets, model, loss_fn)
        if out.untyped_storage().data_ptr() == batch.untyped_storage().data_ptr():
            out = out.clone()  # apply may return its input untouched; the caller gets a copy
        out = out.reshape(images.shape)
        if targets is None:
            return out
        return out, (targets if new_targets is None else new_targets)

    def forward_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """:meth:`generate_parameters` plus ``"applied"``: which samples get transformed.

        ``applied`` is a bool tensor of length ``N``, drawn after the augmenter's own parameters
        as ``rand(N) < p``; without a ``p`` parameter, or with ``p = 1``, it is all true and
        nothing more is drawn. Pipelines (:class:`pruneplug.augment.Compose`) call this for each
        stage in order, so a pipeline draws exactly what calling the stages one by one would.

        Everything is drawn on ``generator.device`` (the only device a generator can draw on)
        and returned on ``device``, the images' device; the same generator state gives the same
        parameters whatever ``device`` is.
        """
        draw_on = generator.device
        params = dict(self.generate_parameters(shape, generator, draw_on))
        p = self._probability()
        if p < 1:
            params["applied"] = torch.rand(shape[0], generator=generator, device=draw_on) < p
        else:
            params["applied"] = torch.ones(shape[0], dtype=torch.bool, device=draw_on)
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in params.items()}

    def _probability(self) -> float:
        """The ``p`` parameter's value: the chance that a sample is transformed (1 without)."""
        return next((self.config[q.name] for q in self.params if q.probability), 1.0)

    def transform(
        self,
        images: Tensor,
        params: Mapping[str, Tensor],
        *,
        targets: Tensor | None = None,
        model: nn.Module | None = None,
        loss_fn: LossFn | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Apply drawn ``params`` to a checked 4-D batch; unselected samples stay unchanged.

        :meth:`apply` is skipped when no sample is selected (except for augmenters that mix
        targets, whose targets must come out in the same form every time). Where only some
        samples are selected, the others get their input image and target back (a hard target
        as one-hot when the selected ones came out soft).
        """
        applied = params.get("applied")
        # one count answers both "none?" and "all?": one wait for a GPU instead of two
        chosen = len(images) if applied is None else int(applied.sum())
        if chosen == 0 and not self.mixes_targets:
            return images.clone(), None
        out, new_targets = self._apply(images, params, targets, model, loss_fn)
        if applied is not None and chosen < len(applied):
            out = torch.where(applied.view(-1, 1, 1, 1), out, images)
            if new_targets is not None and targets is not None:
                if new_targets.shape == targets.shape:
                    old = targets
                else:
                    classes = new_targets.shape[1]
                    old = nn.functional.one_hot(targets.long(), classes).to(new_targets)
                mask = applied.view(-1, *[1] * (new_targets.dim() - 1))
                new_targets = torch.where(mask, new_targets, old)
        return out, new_targets

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """Draw this augmenter's random parameters for each of the ``shape[0]`` samples.

        ``device`` is the generator's device: draw there (``torch.rand(..., generator=generator,
        device=device)``); :meth:`forward_parameters` moves the result to the images' device.
        """
        return {}

    def _apply(
        self,
        images: Tensor,
        params: Mapping[str, Tensor],
        targets: Tensor | None,
        model: nn.Module | None,
        loss_fn: LossFn | None,
    ) -> tuple[Tensor, Tensor | None]:
        """Call the family's method with the arguments it takes; ``(images, new targets)``.

        The family bases (and pipelines, which take everything) override this; plugins do not.
        """
        out = self.apply(images, params)
        if not isinstance(out, Tensor):
            raise TypeError(
                f"augmenter {self.name!r}: apply returned a {type(out).__name__}, not the "
                "images: apply(images, params) returns only the augmented images (to change "
                "targets too, derive from MixingAugmenter and implement mix)"
            )
        return self._same_shape(out, images, "apply"), None

    def _same_shape(self, out: Tensor, images: Tensor, method: str) -> Tensor:
        """``out``, refused unless it has the shape of the batch ``images`` it was made from (a
        batch reshaped back would scramble its pixels, and a pipeline needs the shape kept)."""
        if out.shape != images.shape:
            raise ValueError(
                f"augmenter {self.name!r}: {method} returned images of shape "
                f"{tuple(out.shape)} for a batch of shape {tuple(images.shape)}: return a "
                "batch of the same N x C x H x W shape (an augmenter that changes the size "
                "or the layout resamples back, as ResizedCrop does)"
            )
        return out

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """Apply ``params`` to every sample of ``images`` (``N x C x H x W``) and return them.

        ``params["applied"]`` marks the selected samples; computing the others is allowed but
        wasted, since the base class restores them. Return a new tensor (or ``images`` itself
        untouched); never modify ``images`` in place.
        """
        raise NotImplementedError


class MixingAugmenter(ImageAugmenter):
    """An augmenter that blends samples and their labels (mixup, CutMix).

    Implement :meth:`mix`. Calls must give targets (class indices or soft labels) and get
    ``(images, soft_targets)`` back; for samples not selected by ``p`` the base class returns
    the input image and its target as a one-hot row.
    """

    mixes_targets = True

    def _apply(
        self,
        images: Tensor,
        params: Mapping[str, Tensor],
        targets: Tensor | None,
        model: nn.Module | None,
        loss_fn: LossFn | None,
    ) -> tuple[Tensor, Tensor | None]:
        assert targets is not None  # __call__ refuses a mixing call without targets
        mixed, soft = self.mix(images, targets, params)
        return self._same_shape(mixed, images, "mix"), soft

    def mix(
        self, images: Tensor, targets: Tensor, params: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Return the mixed images and their soft targets (``N x classes``, rows sum to 1)."""
        raise NotImplementedError


class AdversarialAugmenter(ImageAugmenter):
    """An augmenter that perturbs images to raise a model's loss on their true labels.

    Implement :meth:`attack`. Calls must give targets and ``model=``; the base class runs the
    attack where the model is (images, targets and parameters moved there; the model is never
    moved), in eval mode (each module's mode restored afterwards), with ``loss_fn`` defaulting
    to cross-entropy, and returns the images detached, on their own device.
    """

    needs_model = True

    def _apply(
        self,
        images: Tensor,
        params: Mapping[str, Tensor],
        targets: Tensor | None,
        model: nn.Module | None,
        loss_fn: LossFn | None,
    ) -> tuple[Tensor, Tensor | None]:
        if targets is None:
            raise ValueError(
                f"augmenter {self.name!r} attacks the loss on the true labels: call it as "
                "aug(images, targets, model=model)"
            )
        assert model is not None  # __call__ refuses a call without a model
        device = model_device(model, default=images.device)  # attack where the model is
        moved = {key: value.to(device) for key, value in params.items()}
        with evaluation_mode(model):
            adversarial = self.attack(
                images.to(device),
                targets.to(device),
                moved,
                model,
                loss_fn or nn.functional.cross_entropy,
            )
        return self._same_shape(adversarial.detach().to(images.device), images, "attack"), None

    def attack(
        self,
        images: Tensor,
        targets: Tensor,
        params: Mapping[str, Tensor],
        model: nn.Module,
        loss_fn: LossFn,
    ) -> Tensor:
        """Return adversarial images (within the attack's budget and inside [0, 1])."""
        raise NotImplementedError


class TextAugmenter(Plugin):
    """Text augmenter: a list of strings in, a list of strings of the same length out.

    Implement :meth:`augment_one`, which receives one text and a CPU ``torch.Generator`` to draw
    its randomness from (same seed, same output). The base class checks the input. Text has no
    device; a generator on another device (CUDA) seeds a CPU generator with one draw from it.
    """

    kind = "augmenter"
    modality: ClassVar[str] = "text"

    def __call__(
        self, texts: Sequence[str], *, generator: torch.Generator | None = None
    ) -> list[str]:
        """Augment each text; returns a new list (the input is not modified)."""
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise TypeError("texts must be a list of strings, e.g. aug(['a sentence'])")
        if not texts:
            raise ValueError("the list of texts is empty: give at least one string")
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(
                f"texts[{bad[0]}] is empty or not a string: give non-empty strings "
                "(drop empty lines first)"
            )
        if generator is None:
            generator = default_generator()
        elif check_generator(generator).device.type != "cpu":
            seed = torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)
            generator = torch.Generator().manual_seed(int(seed.item()))
        return [self.augment_one(text, generator) for text in texts]

    def augment_one(self, text: str, generator: torch.Generator) -> str:
        """Return an augmented copy of one non-empty ``text``."""
        raise NotImplementedError
