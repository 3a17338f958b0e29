"""torchvision v2 transforms as seeded, per-sample augmenters (:func:`from_torchvision`).

The module is not named ``torchvision``, so that inside this package ``import torchvision``
keeps meaning the torchvision distribution.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor

from ..contracts import ImageAugmenter
from ..params import probability


class TorchvisionAugmenter(ImageAugmenter):
    """A torchvision v2 transform (or any ``C x H x W -> C x H x W`` callable) as an augmenter.

    torchvision draws one set of random parameters per call, from torch's global RNG; this
    adapter calls the transform **once per selected image** (a Python loop: slow, use it for
    ops pruneplug lacks), each time seeding torch's RNG from a seed drawn per sample from the
    augmenter's generator, inside ``torch.random.fork_rng`` so the caller's global RNG state is
    left as it was. Same generator seed, same output. The transform must keep the image's shape;
    its output is clamped to [0, 1].
    """

    name = "torchvision"
    description = "A torchvision v2 transform applied to each image separately (slower)"
    params = (probability(1.0),)

    def __init__(self, transform: Callable[[Tensor], Tensor], *, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not callable(transform):
            raise TypeError(f"from_torchvision needs a callable transform, got {transform!r}")
        self.wrapped = transform

    def __repr__(self) -> str:
        return f"from_torchvision({self.wrapped!r}, p={self.config['p']!r})"

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """``seed``: one seed per sample for torch's RNG while the transform runs on it."""
        return {"seed": torch.randint(0, 2**62, (shape[0],), generator=generator, device=device)}

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        out = images.clone()
        applied = params.get("applied", torch.ones(len(images), dtype=torch.bool))
        seeds = params["seed"].tolist()
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            for i in applied.nonzero().squeeze(1).tolist():
                torch.manual_seed(seeds[i])
                result = self.wrapped(out[i])  # a view of the copy: in-place transforms are fine
                if not isinstance(result, Tensor) or result.shape != images[i].shape:
                    got = tuple(result.shape) if isinstance(result, Tensor) else type(result)
                    raise ValueError(
                        f"from_torchvision: {self.wrapped!r} turned a {tuple(images[i].shape)} "
                        f"image into {got}; augmenters keep the shape (resize or crop to the "
                        "input size inside the transform)"
                    )
                if not result.is_floating_point():
                    raise ValueError(
                        f"from_torchvision: {self.wrapped!r} returned a {result.dtype} image; "
                        "augmenters work on floats in [0, 1] (leave dtype conversion, such as "
                        "v2.ToDtype, out of the wrapped transform)"
                    )
                out[i] = result
        return out.clamp_(0, 1)


def from_torchvision(
    transform: Callable[[Tensor], Tensor], *, p: float = 1.0
) -> TorchvisionAugmenter:
    """Wrap a torchvision v2 transform as a seeded, per-sample augmenter.

    For ops pruneplug lacks, e.g. ``from_torchvision(v2.RandomErasing(p=1.0), p=0.25)``; it
    runs the transform once per selected image (see :class:`TorchvisionAugmenter`), so it is
    much slower than the batched built-ins.
    """
    return TorchvisionAugmenter(transform, p=p)
