"""The n_m pruner: exactly n non-zeros in every group of m along the input dimension, PyTorch's
masks composed with earlier ones, layers without whole groups left dense, the conformance kit."""

import pytest
import torch
from pruneplug_plugins.n_m import NM
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import ParamError, Scores, effective_weight, prunable_layers
from pruneplug.sparse import LeftDenseWarning, is_nm_sparse
from pruneplug.testing import check_plugin

LEFT_DENSE = "ignore::pruneplug.sparse.LeftDenseWarning"


def conv_net() -> nn.Sequential:
    """Conv (8 input channels) and two Linear layers, every input dimension a multiple of 8."""
    return nn.Sequential(
        nn.Conv2d(8, 6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(96, 16),
        nn.ReLU(),
        nn.Linear(16, 8),
    )


def group_counts(weight: torch.Tensor, m: int) -> torch.Tensor:
    """Non-zeros in each run of m consecutive entries along dim 1 (input features/channels),
    written independently of the pruner: [out, in/m, m, *kernel] summed over the m axis."""
    return (weight.unflatten(1, (-1, m)) != 0).sum(2)


def random_scores(model: nn.Module) -> Scores:
    return Scores(weight={n: torch.rand_like(m.weight) for n, m in prunable_layers(model).items()})


def magnitude_scores(model: nn.Module) -> Scores:
    return pruneplug.get_scorer("magnitude")(model)


@pytest.mark.filterwarnings(LEFT_DENSE)
@pytest.mark.parametrize("params", [{}, {"n": 1, "m": 4}, {"n": 4, "m": 8}])
def test_follows_the_plugin_contract(params):
    check_plugin(NM, params=params)


def test_is_registered_with_its_defaults_and_takes_no_amount():
    pruner = pruneplug.get_pruner("n_m")
    assert isinstance(pruner, NM) and pruner.config == {"n": 2, "m": 4}
    assert not NM.takes_amount
    model = conv_net()
    with pytest.raises(ValueError, match="without amount="):
        pruner(model, random_scores(model), amount=0.5)
    assert not prune.is_pruned(model)


@pytest.mark.parametrize(("n", "m"), [(4, 4), (5, 4)])
def test_n_must_be_below_m(n, m):
    with pytest.raises(ParamError, match=rf"n={n} must be below m={m}"):
        NM(n=n, m=m)


@pytest.mark.parametrize("scores", [random_scores, magnitude_scores])
def test_two_of_every_four_along_the_input_dimension_linear_and_conv(scores):
    model = conv_net()
    given = scores(model)
    pruned = pruneplug.get_pruner("n_m")(model, given)
    assert pruned is model and prune.is_pruned(model)
    for name, layer in prunable_layers(model).items():
        weight = effective_weight(layer)
        assert (group_counts(weight, 4) == 2).all(), name  # conv: at every kernel position
        assert is_nm_sparse(weight, 2, 4)
        assert float((weight == 0).float().mean()) == 0.5
        # the two kept are the two best-scored of their group
        score = given.weight[name].unflatten(1, (-1, 4))
        keep = layer.weight_mask.bool().unflatten(1, (-1, 4))
        kept_worst = score.where(keep, torch.inf).amin(2)
        removed_best = score.where(~keep, -torch.inf).amax(2)
        assert (kept_worst > removed_best).all(), name


def test_conv_groups_are_input_channels_at_one_kernel_position():
    """Scores that rise along the kernel width but not the channels: a pruner grouping along
    the kernel would keep whole kernel columns; N:M keeps 2 channels of 4 at every position."""
    conv = nn.Conv2d(4, 2, (1, 4))
    channel = torch.tensor([3.0, 0.0, 2.0, 1.0]).view(1, 4, 1, 1)
    position = torch.arange(4.0).view(1, 1, 1, 4)
    pruneplug.get_pruner("n_m")(
        conv, Scores(weight={"": (channel + 10 * position).expand(2, -1, -1, -1)})
    )
    kept = conv.weight_mask[:, :, 0, :]  # out x channel x position
    assert torch.equal(kept, torch.tensor([1.0, 0, 1, 0]).view(1, 4, 1).expand(2, 4, 4))


@pytest.mark.parametrize("scores", [random_scores, magnitude_scores])
def test_composes_with_an_earlier_unstructured_prune(scores):
    model = conv_net()
    pruneplug.get_pruner("unstructured")(model, magnitude_scores(model), amount=0.6)
    before = {n: m.weight_mask.clone() for n, m in prunable_layers(model).items()}
    pruneplug.get_pruner("n_m")(model, scores(model))
    for name, layer in prunable_layers(model).items():
        mask = layer.weight_mask
        assert not (mask.bool() & ~before[name].bool()).any(), f"{name}: a pruned weight is back"
        alive = group_counts(before[name], 4)
        assert torch.equal(group_counts(mask, 4), alive.clamp(max=2)), name
        assert is_nm_sparse(effective_weight(layer))


def test_other_ratios_reach_one_minus_n_over_m():
    model = conv_net()
    pruneplug.get_pruner("n_m", n=2, m=8)(model, random_scores(model))
    for name, layer in prunable_layers(model).items():
        assert (group_counts(effective_weight(layer), 8) == 2).all(), name
        assert float((layer.weight_mask == 0).float().mean()) == 0.75


def test_a_layer_without_whole_groups_is_left_dense_and_named():
    model = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))
    prune.custom_from_mask(model[0], "weight", (torch.rand(8, 10) > 0.3).float())
    earlier = model[0].weight_mask.clone()
    with pytest.warns(
        LeftDenseWarning, match=r"left '0' \(input dimension 10\) dense.*multiple of 4"
    ):
        pruneplug.get_pruner("n_m")(model, random_scores(model))
    assert torch.equal(model[0].weight_mask, earlier)  # left as it was, still masked
    assert (group_counts(effective_weight(model[2]), 4) == 2).all()


def test_needs_per_weight_scores():
    model = conv_net()
    units = Scores(
        unit={n: torch.rand(m.weight.shape[0]) for n, m in prunable_layers(model).items()}
    )
    with pytest.raises(ValueError, match="per-weight scores"):
        pruneplug.get_pruner("n_m")(model, units)
    assert not prune.is_pruned(model)
