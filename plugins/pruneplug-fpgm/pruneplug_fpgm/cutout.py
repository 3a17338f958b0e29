r"""Cutout: hide a square patch of each image.

DeVries & Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout", 2017.
Each image gets a square of side ``size`` filled with ``fill`` (0: black), centred at a pixel
drawn uniformly over the **whole** image, so the square may hang over the border and then
covers less (the paper's choice: it found this works better than keeping the square inside).
With centre :math:`(c_y, c_x)` the square covers rows :math:`c_y - \lfloor s/2 \rfloor \le y <
c_y - \lfloor s/2 \rfloor + s` (clipped to the image) and the same for columns, so an
unclipped square has exactly :math:`s \times s` pixels; every channel is filled. The paper
used :math:`s = 16` on 32 x 32 CIFAR-10; the default, 4, is half the side of the 8 x 8 digits.

The centres are drawn per sample from the generator (``centre_y``, ``centre_x``) and the squares
of the whole batch are cut with one broadcast mask, without a loop over samples.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pruneplug import ImageAugmenter, Param
from pruneplug.params import probability
from torch import Tensor


def square_mask(centre_y: Tensor, centre_x: Tensor, size: int, height: int, width: int) -> Tensor:
    """Bool mask ``N x 1 x H x W``: True inside each sample's square (clipped to the image)."""
    top = (centre_y - size // 2).view(-1, 1)
    left = (centre_x - size // 2).view(-1, 1)
    rows = torch.arange(height, device=centre_y.device)
    cols = torch.arange(width, device=centre_x.device)
    in_rows = (rows >= top) & (rows < top + size)  # N x H
    in_cols = (cols >= left) & (cols < left + size)  # N x W
    return (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)


class Cutout(ImageAugmenter):
    name = "cutout"
    description = "Fill a size x size square at a random centre of each image (DeVries & Taylor)"
    params = (
        Param("size", int, 4, low=1, high=4096, help="side of the square, in pixels"),
        Param("fill", float, 0.0, low=0.0, high=1.0, help="value written into the square"),
        probability(1.0, help="probability that an image is cut"),
    )

    def generate_parameters(
        self, shape: torch.Size, generator: torch.Generator, device: torch.device
    ) -> dict[str, Tensor]:
        """Each sample's square centre, uniform over all pixels."""
        n, height, width = shape[0], shape[-2], shape[-1]
        return {
            "centre_y": torch.randint(0, height, (n,), generator=generator, device=device),
            "centre_x": torch.randint(0, width, (n,), generator=generator, device=device),
        }

    def apply(self, images: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        height, width = images.shape[-2:]
        mask = square_mask(
            params["centre_y"], params["centre_x"], self.config["size"], height, width
        )
        return images.masked_fill(mask, self.config["fill"])
