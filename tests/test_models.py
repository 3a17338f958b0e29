"""Reference models: sizes against hand counts, seeded builds, rebuild specs, errors."""

import json

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pruneplug import models


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mlp_is_lenet_300_100():
    model = models.mlp()
    assert [n for n, _ in model.named_children()] == [
        "flatten", "fc1", "act1", "fc2", "act2", "fc3"
    ]  # fmt: skip
    assert n_params(model) == (64 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)  # 50,610
    assert model(torch.rand(5, 1, 8, 8)).shape == (5, 10)


def test_mlp_widths_and_activation():
    model = models.mlp(in_features=784, hidden=[32], num_classes=3, activation="tanh")
    assert isinstance(model.act1, nn.Tanh) and model.fc2.out_features == 3
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert len(models.mlp(hidden=())) == 2  # flatten + one Linear: logistic regression
    with pytest.raises(ValueError, match="unknown activation 'swish'; choose one of relu"):
        models.mlp(activation="swish")
    with pytest.raises(ValueError, match=r"mlp: hidden must be positive int\(s\), got \(300, 0\)"):
        models.mlp(hidden=(300, 0))


def test_cnn_sizes_against_hand_counts():
    model = models.cnn()
    convs = (1 * 32 + 32 * 64 + 64 * 128) * 9
    assert n_params(model) == convs + 2 * (32 + 64 + 128) + (128 * 10 + 10)  # 94,186
    # multiply-accumulates per 8x8 image: two blocks at 8x8, the last at 4x4, the classifier
    macs = 64 * 32 * 9 + 64 * 64 * 32 * 9 + 16 * 128 * 64 * 9 + 128 * 10
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 1, 8, 8))
    assert counter.get_total_flops() == 2 * macs == 2 * 2_379_008


def test_cnn_runs_on_any_image_size_and_channel_count():
    assert models.cnn()(torch.rand(4, 1, 8, 8)).shape == (4, 10)
    model = models.cnn(in_channels=3, num_classes=100, widths=(8, 16))
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 100)
    assert [n for n, _ in model.named_children()] == [
        "block1", "pool", "block2", "gap", "flatten", "classifier"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one block width"):
        models.cnn(widths=())


def test_cnn_channels_can_be_removed_by_torch_pruning():
    model = models.cnn().eval()
    example = torch.rand(2, 1, 8, 8)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    group = graph.get_pruning_group(model.block2.conv, tp.prune_conv_out_channels, idxs=range(32))
    group.prune()
    assert model.block2.bn.num_features == 32 and model.block3.conv.in_channels == 32
    assert model(example).shape == (2, 10)


def test_resnet18_from_torchvision_on_cifar_sized_input():
    model = models.torchvision_model("resnet18", num_classes=10)
    assert model.fc.out_features == 10
    assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_same_seed_same_weights_and_global_rng_untouched():
    state = torch.get_rng_state()
    assert same_weights(models.cnn(seed=1), models.cnn(seed=1))
    assert not same_weights(models.cnn(seed=1), models.cnn(seed=2))
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_none_draws_from_the_global_rng():
    torch.manual_seed(5)
    a = models.mlp(seed=None)
    torch.manual_seed(5)
    assert same_weights(a, models.mlp(seed=None))
    assert not same_weights(a, models.mlp(seed=None))  # the global RNG moved on
    with pytest.raises(TypeError, match="seed must be an int or None, got 1.5"):
        models.mlp(seed=1.5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: models.mlp(hidden=(20, 10), seed=4),
        lambda: models.cnn(in_channels=3, widths=(4, 8)),
        lambda: models.build("resnet18", num_classes=7, seed=2),
    ],
)
def test_spec_rebuilds_the_same_model(make):
    model = make()
    spec = json.loads(json.dumps(model.pruneplug_spec))  # as stored on disk
    assert same_weights(models.build(spec["builder"], **spec["kwargs"]), model)


def test_spec_contents():
    assert models.mlp(hidden=(20,)).pruneplug_spec == {
        "builder": "mlp",
        "kwargs": {
            "in_features": 64,
            "hidden": [20],
            "num_classes": 10,
            "activation": "relu",
            "seed": 0,
        },
    }
    assert models.torchvision_model("resnet18", seed=None).pruneplug_spec == {
        "builder": "resnet18",
        "kwargs": {"num_classes": 10, "seed": None},
    }


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match=r"unknown torchvision classification model 'resnet19'.*"):
        models.torchvision_model("resnet19")
    with pytest.raises(ValueError, match=r"unknown model 'lenet'; choose mlp, cnn or .*resnet18"):
        models.build("lenet")
    assert "mobilenet_v2" in models.torchvision_classifiers()
    assert "fasterrcnn_resnet50_fpn" not in models.torchvision_classifiers()  # detection


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda: models.mlp(hidden=300), TypeError, r"hidden is one size per layer.*\(300,\)"),
        (lambda: models.cnn(widths=32), TypeError, r"widths is one size per layer.*\(32,\)"),
        (
            lambda: models.lstm_classifier(50, bidirectional="no"),
            TypeError,
            "bidirectional must be True or False, got 'no'",
        ),
        (lambda: models.lstm_classifier(50, padding_idx=True), ValueError, "got True"),
    ],
)
def test_arguments_of_the_wrong_kind_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_arguments_that_cannot_be_saved_are_refused():
    with pytest.raises(TypeError, match="resnet18: every argument must be a JSON value"):
        models.torchvision_model("resnet18", norm_layer=nn.Identity)
