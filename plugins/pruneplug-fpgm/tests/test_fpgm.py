"""The FPGM scorer: hand-computed distance sums, and the pruneplug conformance kit."""

import pytest
import torch
from pruneplug import ParamError, Scores
from pruneplug.testing import check_plugin
from torch import nn

from pruneplug_fpgm import FPGM
from pruneplug_fpgm.fpgm import distance_sums


def layer_with_filters(*rows: list[float]) -> nn.Linear:
    layer = nn.Linear(len(rows[0]), len(rows), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows))
    return layer


def test_follows_the_pruneplug_contract():
    check_plugin(FPGM)
    check_plugin(FPGM(distance="cosine"))


def test_scores_are_sums_of_euclidean_distances():
    # filters (0, 0), (3, 4), (6, 8): distances 5, 10, 5 -> sums 15, 10, 15
    scores = FPGM()(layer_with_filters([0, 0], [3, 4], [6, 8]))
    assert isinstance(scores, Scores) and not scores.weight
    torch.testing.assert_close(scores.unit[""], torch.tensor([15.0, 10.0, 15.0]))


def test_the_filter_nearest_the_geometric_median_scores_lowest():
    # four filters on a square's corners and one at its centre (the geometric median)
    scores = FPGM()(layer_with_filters([0, 0], [2, 0], [0, 2], [2, 2], [1, 1])).unit[""]
    assert scores.argmin().item() == 4
    torch.testing.assert_close(scores[4], torch.tensor(4 * 2**0.5))


def test_l1_and_cosine_distances():
    # L1: |(0,0)-(3,4)| = 7, |(0,0)-(6,8)| = 14, |(3,4)-(6,8)| = 7
    l1 = FPGM(distance="l1")(layer_with_filters([0, 0], [3, 4], [6, 8])).unit[""]
    torch.testing.assert_close(l1, torch.tensor([21.0, 14.0, 21.0]))
    # cosine: (1,0) and (0,1) are orthogonal (1), (1,1) is at 1 - 1/sqrt(2) from both
    cos = distance_sums(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), "cosine")
    d = 1 - 2**-0.5
    torch.testing.assert_close(cos, torch.tensor([1 + d, 1 + d, 2 * d]))


def test_conv_filters_are_flattened_per_output_channel():
    conv = nn.Conv2d(2, 3, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1].fill_(1.0)  # distance sqrt(18) from the two zero filters
    scores = FPGM()(nn.Sequential(conv)).unit["0"]
    r = 18**0.5
    torch.testing.assert_close(scores, torch.tensor([r, 2 * r, r]))


def test_scoring_leaves_the_model_unchanged():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = FPGM()(model)
    assert set(scores.unit) == {"0", "2"}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_unknown_distance_is_refused():
    with pytest.raises(ParamError, match="distance='cos'.*one of 'l2', 'l1', 'cosine'"):
        FPGM(distance="cos")
