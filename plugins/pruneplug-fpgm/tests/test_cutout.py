"""The Cutout augmenter: hand-checked squares, batching, and the pruneplug conformance kit."""

import pytest
import torch
from pruneplug import ParamError
from pruneplug.testing import check_plugin

from pruneplug_fpgm import Cutout
from pruneplug_fpgm.cutout import square_mask


def test_follows_the_pruneplug_contract():
    check_plugin(Cutout)
    check_plugin(Cutout(size=3, fill=0.5, p=0.5))


def test_square_of_even_and_odd_side_around_its_centre():
    images = torch.ones(1, 1, 8, 8)
    params = {"centre_y": torch.tensor([4]), "centre_x": torch.tensor([3])}
    out = Cutout(size=4).apply(images, params)
    expected = torch.ones(8, 8)
    expected[2:6, 1:5] = 0  # rows 4-2 .. 4+1, columns 3-2 .. 3+1
    assert torch.equal(out[0, 0], expected)
    odd = square_mask(torch.tensor([4]), torch.tensor([3]), 3, 8, 8)[0, 0]
    assert odd.sum() == 9 and odd[3:6, 2:5].all()


def test_square_is_clipped_at_the_border():
    mask = square_mask(torch.tensor([0]), torch.tensor([7]), 4, 8, 8)[0, 0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0:2, 5:8] = True  # rows -2..1 and columns 5..8 inside the 8 x 8 image
    assert torch.equal(mask, expected)


def test_each_sample_gets_its_own_square_on_every_channel():
    images = torch.rand(64, 3, 10, 10) * 0.5 + 0.5  # no zero pixel before cutout
    out = Cutout(size=4)(images, generator=torch.Generator().manual_seed(0))
    holes = out == 0
    assert torch.equal(holes[:, 0], holes[:, 1]) and torch.equal(holes[:, 0], holes[:, 2])
    per_sample = holes[:, 0].flatten(1)
    assert per_sample.sum(1).max() == 16 and per_sample.sum(1).min() >= 4  # clipped corner: 2x2
    assert len({tuple(h.nonzero().flatten().tolist()) for h in per_sample}) > 30
    assert torch.equal(out[~holes], images[~holes])


def test_centres_cover_the_whole_image_uniformly():
    params = Cutout().generate_parameters(
        torch.Size([8000, 1, 8, 8]), torch.Generator().manual_seed(0), torch.device("cpu")
    )
    counts = torch.bincount(params["centre_y"], minlength=8)
    assert counts.min() > 850 and counts.max() < 1150  # 1000 expected per row


def test_same_seed_same_squares():
    images = torch.rand(4, 1, 8, 8)
    first = Cutout()(images, generator=torch.Generator().manual_seed(3))
    again = Cutout()(images, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


def test_size_out_of_range_is_refused():
    with pytest.raises(ParamError, match="size=0 is out of range"):
        Cutout(size=0)
