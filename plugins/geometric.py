r"""Geometric augmentation: flips.

A horizontal flip maps pixel :math:`(i, j)` of a :math:`W`-wide image to :math:`(i, W-1-j)`;
label-preserving for most natural images (Krizhevsky et al., "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012, section 4.1). Each sample is flipped with
probability ``p``, drawn per sample.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from pruneplug import ImageAugmenter, Param, hookimpl


class HorizontalFlip(ImageAugmenter):
    name = "hflip"
    description = "Mirror each image left-right with probability p"
    params = (Param("p", float, 0.5, low=0.0, high=1.0, help="probability per sample"),)

    def apply(self, images: Tensor, params: Mapping[str, Tensor], **context) -> tuple[Tensor, None]:
        return images.flip(-1), None


@hookimpl
def register_augmenters(register):
    register(HorizontalFlip)
