"""Wanda scorer: |W_ij| * ||X_j||_2 by hand on Linear and (grouped) Conv layers; the contract."""

import pytest
import torch
from pruneplug_plugins.wanda import Wanda
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug.testing import check_plugin


def wanda(**params):
    return pruneplug.get_scorer("wanda", **params)


def batches(shape: tuple[int, ...], classes: int, n: int = 2, size: int = 4):
    generator = torch.Generator().manual_seed(0)
    return [
        (torch.randn(size, *shape, generator=generator), torch.randint(0, classes, (size,)))
        for _ in range(n)
    ]


def test_linear_scores_are_weight_magnitude_times_input_feature_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Flatten(), nn.Linear(20, 2))  # tokens: N x 5 x 3
    data = batches((5, 3), 2)
    scores = wanda()(model, data)
    tokens = torch.cat([x.reshape(-1, 3) for x, _ in data])  # every sample and position
    first = model[0].weight.abs() * tokens.norm(dim=0)
    assert torch.allclose(scores.weight["0"], first)
    hidden = torch.cat([model[1](model[0](x)) for x, _ in data]).detach()
    assert torch.allclose(scores.weight["2"], model[2].weight.abs() * hidden.norm(dim=0))
    assert torch.allclose(scores.unit["0"], first.sum(1))  # per unit: the row's sum


def test_conv_scores_broadcast_channel_norms_over_the_kernel_and_follow_groups():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, groups=2), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )  # fmt: skip
    data = batches((2, 6, 6), 3)
    scores = wanda()(model, data)
    x = torch.cat([x for x, _ in data])
    norms = x.transpose(0, 1).reshape(2, -1).norm(dim=1)  # per input channel
    # grouped: outputs 0, 1 read channel 0 and outputs 2, 3 channel 1
    expected = model[0].weight.abs() * norms[torch.tensor([0, 0, 1, 1])].view(4, 1, 1, 1)
    assert torch.allclose(scores.weight["0"], expected)
    h = model[1](model[0](x)).detach()
    norms = h.transpose(0, 1).reshape(4, -1).norm(dim=1)
    assert torch.allclose(scores.weight["2"], model[2].weight.abs() * norms.view(1, 4, 1, 1))


def test_only_the_first_max_batches_count_and_a_pruned_weight_scores_zero():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    data = batches((3,), 2, n=3)
    one = wanda(max_batches=1)(model, data)
    assert torch.allclose(one.weight["0"], model[0].weight.abs() * data[0][0].norm(dim=0))
    mask = torch.ones(4, 3)
    mask[0, 1] = 0
    prune.custom_from_mask(model[0], "weight", mask)
    assert wanda()(model, data).weight["0"][0, 1] == 0


def test_the_model_is_left_as_it_was_even_when_a_batch_does_not_fit():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).train()
    with pytest.raises(ValueError, match="batch 1 .* does not fit the model"):
        wanda()(model, [batches((3,), 2)[0], (torch.randn(4, 5), torch.zeros(4).long())])
    assert model.training and all(not m._forward_pre_hooks for m in model)
    with pytest.raises(ValueError, match="needs data"):
        wanda()(model)


def test_wanda_follows_the_contract():
    check_plugin(Wanda)
    check_plugin(Wanda, params={"max_batches": 1})
