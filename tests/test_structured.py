"""Structured pruner: exact counts, coupled layers, torchvision models, bad input; BN folding."""

import warnings

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import ParamError, Scores, models
from pruneplug.deploy import deploy, fold_batchnorm
from pruneplug.metrics import macs


def structured(**params):
    return pruneplug.get_pruner("structured", **params)


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 10), nn.ReLU(), nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))


def ranked(model: nn.Module, offsets: dict[str, float] | None = None) -> Scores:
    """Unit scores 0, 1, 2, ... per layer (plus an offset), so the removed units are known."""
    offsets = offsets or {}
    return Scores(
        unit={
            name: torch.arange(layer.weight.shape[0], dtype=torch.float) + offsets.get(name, 0.0)
            for name, layer in pruneplug.prunable_layers(model).items()
        }
    )


def widths(model: nn.Module) -> list[int]:
    return [layer.weight.shape[0] for layer in pruneplug.prunable_layers(model).values()]


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- exact semantics


def test_local_rate_removes_the_lowest_units_of_each_layer_and_keeps_the_rest_intact():
    model = mlp()
    pruned = structured(scope="local")(model, ranked(model), amount=0.5)
    assert widths(pruned) == [5, 3, 3]  # the classifier's outputs are never removed
    # units 5..9 of layer 0 survive: their rows, and the matching columns of layer 2
    assert pruned[0].weight.equal(model[0].weight[5:]) and pruned[0].bias.equal(model[0].bias[5:])
    assert pruned[2].weight.equal(model[2].weight[3:, 5:])
    assert pruned[4].weight.equal(model[4].weight[:, 3:])
    assert pruned is not model and widths(model) == [10, 6, 3]


def test_local_rate_never_empties_a_layer():
    model = mlp()
    pruned = structured()(model, ranked(model), amount=0.99)
    assert widths(pruned) == [1, 1, 3]
    assert pruned[0].weight.equal(model[0].weight[9:])  # the best unit is the one kept


def test_global_rate_ranks_all_units_together():
    model = mlp()
    scores = ranked(model, offsets={"2": 100.0})  # layer 2 scores far above layer 0
    pruned = structured(scope="global")(model, scores, amount=0.5)  # 8 of 16 units
    assert widths(pruned) == [2, 6, 3]
    # 12 of 16: 10 from layer 0, which keeps its best unit, and the 2 lowest of layer 2
    pruned = structured(scope="global")(model, scores, amount=0.75)
    assert widths(pruned) == [1, 4, 3]
    assert pruned[2].weight.equal(model[2].weight[2:, 9:])


def test_threshold_removes_units_scored_below_it_and_refuses_to_empty_a_layer():
    model = mlp()
    scores = ranked(model, offsets={"2": 100.0})
    pruned = structured()(model, scores, threshold=3.5)
    assert widths(pruned) == [6, 6, 3]
    assert pruned[0].weight.equal(model[0].weight[4:])
    with pytest.raises(ValueError, match="remove every unit of layer '0'.*highest score is 9"):
        structured()(model, scores, threshold=50.0)


def test_round_to_rounds_kept_widths_up_and_leaves_amount_zero_alone():
    model = mlp()
    assert widths(structured(round_to=4)(model, ranked(model), amount=0.5)) == [8, 4, 3]
    assert widths(structured(round_to=4)(model, ranked(model), amount=0.0)) == [10, 6, 3]
    assert widths(structured(round_to=8)(model, ranked(model), amount=0.5)) == [8, 6, 3]


def test_protected_layers_keep_their_units():
    model = mlp()
    pruned = structured(protect="2")(model, ranked(model), amount=0.5)
    assert widths(pruned) == [5, 6, 3]
    assert pruned[2].weight.equal(model[2].weight[:, 5:])  # only its inputs shrank
    with pytest.raises(ValueError, match="protect names 'fc'.*does not have"):
        structured(protect="fc")(model, ranked(model), amount=0.5)


def test_unscored_layers_are_left_alone():
    model = mlp()
    scores = Scores(unit={"2": torch.arange(6.0)})
    assert widths(structured()(model, scores, amount=0.5)) == [10, 3, 3]


class Residual(nn.Module):
    """a -> relu -> b, plus a skip from a: a and b must lose the same units."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.c(self.b(h.relu()) + h)


def test_coupled_units_are_scored_by_the_reduction_of_their_layers():
    model = Residual()
    scores = Scores(unit={"a": torch.tensor([0.0, 6, 4, 5]), "b": torch.tensor([1.0, 0, 4, 5])})
    # mean per unit: 0.5, 3, 4, 5 -> units 0, 1 go; max: 1, 6, 4, 5 -> units 0, 2 go
    for reduction, kept in (("mean", [2, 3]), ("max", [1, 3])):
        pruned = structured(reduction=reduction)(model, scores, amount=0.5)
        assert pruned.a.weight.equal(model.a.weight[kept])
        assert pruned.b.weight.equal(model.b.weight[kept][:, kept])
        assert pruned.c.weight.equal(model.c.weight[:, kept])


class ResidualThenLinear(Residual):
    """The residual pair {a, b}, then a lone layer d: two groups of 4 units."""

    def __init__(self) -> None:
        super().__init__()
        self.d = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.c(self.d(self.b(h.relu()) + h).relu())


def test_global_sum_counts_every_coupled_layer_and_mean_does_not():
    model = ResidualThenLinear()
    scores = Scores(unit={"a": torch.ones(4), "b": torch.ones(4), "d": torch.full((4,), 1.5)})
    # 4 of 8 units go. mean: {a, b} scores 1 < 1.5, so it loses 3 (keeping one); sum: 2 > 1.5
    pruned = structured(scope="global", reduction="mean")(model, scores, amount=0.5)
    assert (pruned.a.out_features, pruned.d.out_features) == (1, 4)
    pruned = structured(scope="global", reduction="sum")(model, scores, amount=0.5)
    assert (pruned.a.out_features, pruned.d.out_features) == (4, 1)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 4), nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(torch.cat([self.a(x), self.b(x)], 1).relu())


def test_concatenated_layers_shrink_the_reader_consistently():
    model = Concat()
    pruned = structured()(model, ranked(model), amount=0.5)
    assert (pruned.a.out_features, pruned.b.out_features, pruned.c.in_features) == (3, 2, 5)
    columns = [3, 4, 5, 6 + 2, 6 + 3]
    assert pruned.c.weight.equal(model.c.weight[:, columns])
    x = torch.randn(3, 4)
    h = torch.cat([model.a(x)[:, 3:], model.b(x)[:, 2:]], 1).relu()
    assert torch.allclose(
        pruned(x), nn.functional.linear(h, model.c.weight[:, columns], model.c.bias)
    )


def test_grouped_convolutions_shrink_evenly_per_group():
    model = nn.Sequential(
        nn.Conv2d(2, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=4), nn.Flatten(), nn.Linear(288, 3)
    )
    pruned = structured(example_shape="2x8x8")(model, ranked(model), amount=0.5)
    assert widths(pruned) == [4, 4, 3] and pruned[2].groups == 4


def test_group_norm_keeps_equal_groups_and_matches_torch_pruning_widths():
    tp = pytest.importorskip("torch_pruning")
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 4, 3))
    for amount, kept in [(0.3, 12), (0.5, 8), (0.7, 4)]:
        pruned = structured(example_shape="3x8x8")(model, ranked(model), amount=amount)
        assert (pruned[0].out_channels, pruned[1].num_channels, pruned[1].num_groups) == (
            kept,
            kept,
            4,
        )
        # unit p is channel p of every group: the lowest-ranked positions go from each group
        assert torch.equal(
            pruned[0].weight, model[0].weight.view(4, 4, 3, 3, 3)[:, 4 - kept // 4 :].flatten(0, 1)
        )
        assert pruned(torch.randn(2, 3, 8, 8)).shape == (2, 4, 4, 4)
    theirs = nn.Sequential(nn.Conv2d(3, 16, 3), nn.GroupNorm(4, 16), nn.ReLU(), nn.Conv2d(16, 4, 3))
    tp.pruner.MetaPruner(
        theirs,
        torch.randn(1, 3, 8, 8),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[theirs[3]],
    ).step()
    assert theirs[1].num_channels == 8


def test_a_tied_weight_stays_tied_and_the_rest_is_pruned():
    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.mid = nn.Embedding(20, 8), nn.Linear(8, 8)
            self.ffn = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 8))
            self.dec = nn.Linear(8, 20, bias=False)
            self.dec.weight = self.emb.weight  # weight tying (Press & Wolf 2017)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.mid(self.emb(x)))
            return self.dec(h + self.ffn(h)).mean(1)

    model = TiedLM()
    with pytest.warns(UserWarning, match="would untie emb.weight = dec.weight"):
        pruned = structured(example_shape="int64:6")(model, ranked(model), amount=0.5)
    assert pruned.dec.weight is pruned.emb.weight and pruned.emb.weight.shape == (20, 8)
    assert pruned.ffn[0].out_features == 16  # the FFN's hidden width touches no tied weight
    assert model.ffn[0].out_features == 32 and model.dec.weight is model.emb.weight


@pytest.mark.parametrize("pruner", ["unstructured", "n_m", "structured"])
@pytest.mark.parametrize("norm", ["parametrize", "hook"])
def test_a_parametrized_weight_is_refused_before_any_layer_changes(pruner, norm):
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the hook-based weight_norm is deprecated
        if norm == "parametrize":
            nn.utils.parametrizations.weight_norm(model[2])
        else:
            nn.utils.weight_norm(model[2])
    before = state(model)
    fix = "remove_parametrizations" if norm == "parametrize" else "remove_weight_norm"
    amount = {} if pruner == "n_m" else {"amount": 0.5}
    with pytest.raises(ValueError, match=f"'2': its 'weight' .*{fix}"):
        pruneplug.get_pruner(pruner)(model, pruneplug.get_scorer("magnitude")(model), **amount)
    assert not prune.is_pruned(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- real models


@pytest.mark.parametrize(
    "build, kept", [(models.mlp, [150, 50, 10]), (models.cnn, [16, 32, 64, 10])], ids=["mlp", "cnn"]
)
def test_reference_models_shrink_and_keep_their_outputs_at_amount_zero(build, kept):
    model = build().eval()
    x = torch.rand(4, 1, 8, 8)  # the example input is inferred: 64 features, or 1x8x8
    scores = pruneplug.get_scorer("magnitude")(model)
    same = structured()(model, scores, amount=0.0).eval()
    with torch.no_grad():
        assert torch.allclose(same(x), model(x))
    pruned = structured()(model, scores, amount=0.5).eval()
    assert widths(pruned) == kept
    with torch.no_grad():
        assert pruned(x).shape == (4, 10)
    assert macs(pruned, x) < 0.55 * macs(model, x)


def small_vgg11_bn() -> nn.Module:
    """vgg11_bn with a narrow classifier (the stock 25088 x 4096 one costs 400 MB to copy)."""
    model = torchvision.models.vgg11_bn(num_classes=10)
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 32), nn.ReLU(), nn.Linear(32, 10))
    return model


@pytest.mark.parametrize(
    "build",
    [
        lambda: torchvision.models.resnet18(num_classes=10),
        lambda: torchvision.models.mobilenet_v2(num_classes=10),
        small_vgg11_bn,
    ],
    ids=["resnet18", "mobilenet_v2", "vgg11_bn"],
)
def test_torchvision_models_stay_consistent_and_shrink(build):
    model = build().eval()
    x = torch.randn(2, 3, 32, 32)
    scores = pruneplug.get_scorer("magnitude")(model)
    same = structured()(model, scores, amount=0.0)
    with torch.no_grad():
        assert torch.allclose(same(x), model(x), atol=1e-6)
    pruned = structured()(model, scores, amount=0.5).eval()
    with torch.no_grad():
        assert pruned(x).shape == (2, 10)
    assert macs(pruned, x) < 0.4 * macs(model, x)
    layers = dict(pruned.named_modules())
    if "layer1.0.conv2" in layers:  # resnet: the residual stage shares its channels
        assert layers["conv1"].out_channels == layers["layer1.0.conv2"].out_channels == 32
        assert layers["layer1.1.conv2"].out_channels == layers["bn1"].num_features == 32
    if "features.1.conv.0.0" in layers:  # mobilenet: the depthwise conv follows its input
        dw = layers["features.1.conv.0.0"]
        assert dw.groups == dw.in_channels == dw.out_channels == layers["features.0.0"].out_channels
    if "classifier.0" in layers and "features.25" in layers:  # vgg: flatten feeds the classifier
        assert layers["classifier.0"].in_features == layers["features.25"].out_channels * 49


# --------------------------------------------------------------------------- bad input


def test_the_core_checks_amount_and_score_shapes():
    model = mlp()
    with pytest.raises(ValueError, match="out of range"):
        structured()(model, ranked(model), amount=1.0)
    with pytest.raises(ValueError, match="layer '0' have shape \\(9,\\), expected \\(10,\\)"):
        structured()(model, Scores(unit={"0": torch.ones(9)}), amount=0.5)


class HardCodedWidth(nn.Module):
    """Its forward folds layer a's 8 units into 2 x 4 by hand: the graph cannot see why."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).view(-1, 2, 4).sum(1))


class NoGradLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = self.a(x)
        return self.b(h.relu())


def test_a_model_the_graph_gets_wrong_is_refused_and_left_untouched():
    model = HardCodedWidth()
    before = state(model)
    with pytest.raises(ValueError, match="broke HardCodedWidth.*protect the layers"):
        structured()(model, ranked(model), amount=0.5)
    assert all(before[k].equal(v) for k, v in model.state_dict().items())
    assert model.a.out_features == 8 and model.training
    assert widths(structured(protect="a")(model, ranked(model), amount=0.5)) == [8, 3]


def test_a_scored_layer_outside_the_traced_graph_is_named():
    model = NoGradLayer()
    with pytest.raises(ValueError, match="layer 'a' \\(Linear\\) is not in the traced graph"):
        structured()(model, ranked(model), amount=0.5)


def test_example_shape_is_parsed_inferred_or_asked_for():
    with pytest.raises(ParamError, match="example_shape='3 by 32'"):
        structured(example_shape="3 by 32")
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))  # 7x7 only
    with pytest.raises(ValueError, match="shape 1x8x8, 1x32x32.*example_shape="):
        structured()(model, ranked(model), amount=0.5)
    pruned = structured(example_shape="1x7x7")(model, ranked(model), amount=0.5)
    assert pruned(torch.randn(2, 1, 7, 7)).shape == (2, 2) and widths(pruned) == [2, 2]


def test_masked_models_are_refused():
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(ValueError, match="prune.remove"):
        structured()(model, ranked(model), amount=0.5)


def test_training_mode_and_frozen_parameters_are_kept():
    model = mlp().train()
    model[0].weight.requires_grad_(False)
    model[2].eval()
    pruned = structured()(model, ranked(model), amount=0.5)
    assert pruned.training and not pruned[2].training
    assert not pruned[0].weight.requires_grad and pruned[2].weight.requires_grad
    assert model.training and not model[2].training


# --------------------------------------------------------------------------- deployment


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 12),
        nn.BatchNorm1d(12),
        nn.Linear(12, 10),
    )


def test_fold_batchnorm_keeps_outputs_and_removes_every_foldable_bn():
    model = small_cnn()
    with torch.no_grad():  # give the batch norms statistics far from the identity
        for _ in range(3):
            model(torch.randn(16, 1, 8, 8) * 3 + 1)
    x = torch.randn(5, 1, 8, 8)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    assert model.training and isinstance(model[1], nn.BatchNorm2d)  # input untouched
    model.eval()
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-5)
        fast = deploy(model, channels_last=True)
        assert torch.allclose(fast(x.to(memory_format=torch.channels_last)), model(x), atol=1e-5)


def test_deploy_compiled_matches_the_model_and_leaves_it_alone():
    model = small_cnn().eval()
    x = torch.randn(5, 1, 8, 8)
    compiled = deploy(model, compiled=True)
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), atol=1e-5)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_deploy_makes_masks_permanent_also_mid_training():
    model = small_cnn()
    pruneplug.get_pruner("unstructured")(
        model, pruneplug.get_scorer("magnitude")(model), amount=0.5
    )
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(8, 1, 8, 8)).sum().backward()  # a plain training step: weight is no leaf
    optimiser.step()
    model.eval()
    x = torch.randn(5, 1, 8, 8)
    for fold_bn in (True, False):
        fast = deploy(model, fold_bn=fold_bn)
        assert not prune.is_pruned(fast) and prune.is_pruned(model)
        with torch.no_grad():
            assert torch.allclose(fast(x), model(x), atol=1e-5)
    assert torch.equal(fast[0].weight != 0, model[0].weight_mask.bool())  # plain zeros


def test_fold_batchnorm_names_an_untraceable_model():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="fold batch norm in Branchy: torch.fx"):
        fold_batchnorm(Branchy())


def test_pruned_then_folded_resnet_matches_the_pruned_model():
    model = torchvision.models.resnet18(num_classes=10)
    pruned = structured()(model, pruneplug.get_scorer("magnitude")(model), amount=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fold_batchnorm(pruned)(x), pruned(x), atol=1e-4)


# --------------------------------------------------------------------------- benchmark


def test_quick_benchmark_prints_both_tables(capsys):
    from pruneplug.benchmarks import pruning_structured

    pruning_structured.run(quick=True)
    out = capsys.readouterr().out
    assert "P2  structured pruning" in out and "P3  structured pruning" in out
    assert "train 1,200 / val 200 / test 397" in out
    p2_rows = [
        line.split() for line in out.splitlines() if line.split()[:1] in (["50%"], ["75%"], ["90%"])
    ]
    assert [row[0] for row in p2_rows] == ["50%", "75%", "90%", "50%", "75%"]
    assert [row[1] for row in p2_rows[:3]] == ["150-50", "75-25", "30-10"]
    assert all(row[-1] in ("yes", "NO") for row in p2_rows[:3])
    for row in p2_rows[3:]:  # P3: the headline is pruning's own speed-up, beside its MACs cut
        reduction, speedup, ratio = float(row[2][:-1]), float(row[3][:-1]), float(row[4])
        assert ratio == pytest.approx(speedup / reduction, abs=0.06) and row[7] in ("yes", "NO")
    assert "deployment: TP as is" in out
