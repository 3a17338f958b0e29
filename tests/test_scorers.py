"""The importance scorers against hand-computed cases: random, gradient, taylor, hessian,
ablation, bn_scale and lamp; plus determinism, no side effects and registration."""

import copy
import math
from collections import OrderedDict

import pytest
import torch
from pruneplug_plugins.ablation import Ablation
from pruneplug_plugins.bn_scale import BNScale, batchnorm_after
from pruneplug_plugins.gradient import Gradient, Hessian, Taylor
from pruneplug_plugins.head_importance import HeadImportance
from pruneplug_plugins.lamp import LAMP, lamp_scores
from pruneplug_plugins.random_importance import RandomImportance
from pruneplug_plugins.wanda import Wanda
from torch import nn
from torch.nn.utils import prune

import pruneplug
from pruneplug import Scores, models
from pruneplug.registry import Registry
from pruneplug.testing import tiny_cnn

OURS = (
    "random",
    "gradient",
    "taylor",
    "hessian",
    "ablation",
    "bn_scale",
    "lamp",
    "wanda",
    "head_importance",
)
DATA_SCORERS = (Gradient, Taylor, Hessian, Ablation, Wanda, HeadImportance)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def linear(weight) -> nn.Sequential:
    """A Sequential holding one bias-free Linear layer (named "0") with the given weights."""
    weight = torch.tensor(weight, dtype=torch.float32)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return nn.Sequential(layer)


def mse(out, target):
    return ((out - target) ** 2).mean()


# --------------------------------------------------------------------------- registration


def test_every_scorer_is_registered_through_the_entry_points():
    registry = Registry()
    assert set(OURS) <= set(registry.names("scorer"))
    modules = ("random_importance", "gradient", "ablation", "bn_scale", "lamp")
    assert not [f for f in registry.failures if f.plugin in modules]
    assert registry.entry("scorer", "taylor").cls is Taylor


# --------------------------------------------------------------------------- gradient family

# Linear(2, 2) without bias, W = [[1, 2], [3, 4]], one sample x = (1, 2) of class 0:
# logits z = W x = (5, 11), dL/dz = softmax(z) - onehot = (-s, s) with s = sigmoid(6),
# dL/dW = outer(dL/dz, x) = [[-s, -2s], [s, 2s]].
S6 = sigmoid(6)
ONE_BATCH = [(torch.tensor([[1.0, 2.0]]), torch.tensor([0]))]


def test_gradient_is_the_absolute_gradient_and_sums_per_unit():
    scores = Gradient()(linear([[1, 2], [3, 4]]), ONE_BATCH)
    expected = torch.tensor([[S6, 2 * S6], [S6, 2 * S6]])
    torch.testing.assert_close(scores.weight["0"], expected)
    torch.testing.assert_close(scores.unit["0"], torch.tensor([3 * S6, 3 * S6]))


def test_taylor_is_weight_times_gradient_and_the_group_sum_per_unit():
    with torch.no_grad():  # gradients are taken even when the caller disabled them
        scores = Taylor()(linear([[1, 2], [3, 4]]), ONE_BATCH)
    torch.testing.assert_close(scores.weight["0"], torch.tensor([[S6, 4 * S6], [3 * S6, 8 * S6]]))
    # per unit |sum_s w_s g_s| = |dL/dz_k * z_k|: |-s * 5| and |s * 11|
    torch.testing.assert_close(scores.unit["0"], torch.tensor([5 * S6, 11 * S6]))


def test_taylor_group_score_is_not_the_sum_of_weight_scores():
    # weights of opposite sign whose effects cancel: removing the whole unit changes nothing
    scores = Taylor()(linear([[1, -1], [1, 1]]), [(torch.tensor([[1.0, 1.0]]), torch.tensor([0]))])
    assert scores.unit["0"][0].item() == 0
    assert scores.weight["0"][0].sum().item() > 0


def test_hessian_is_half_squared_gradient_times_squared_weight():
    scores = Hessian()(linear([[1, 2], [3, 4]]), ONE_BATCH)
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    g2 = torch.tensor([[1.0, 4.0], [1.0, 4.0]]) * S6**2
    torch.testing.assert_close(scores.weight["0"], 0.5 * g2 * w**2)
    torch.testing.assert_close(scores.unit["0"], (0.5 * g2 * w**2).sum(1))


def test_batches_are_averaged_per_batch_weighted_by_size_with_the_callers_loss():
    # Linear(1, 1), w = 2, loss (wx - y)^2, dL/dw = 2 (wx - y) x.
    # batch A: one sample x=1, y=0 -> g = 4.  batch B: three samples x=1, y=3 -> g = -2.
    # E|g| = (1 * 4 + 3 * 2) / 4 = 2.5 (the accumulated gradient would give |4 - 6| / 4 = 0.5)
    batches = [
        (torch.ones(1, 1), torch.zeros(1, 1)),
        (torch.ones(3, 1), torch.full((3, 1), 3.0)),
    ]
    model = linear([[2.0]])
    assert Gradient()(model, batches, mse).weight["0"].item() == pytest.approx(2.5)
    assert Taylor()(model, batches, mse).weight["0"].item() == pytest.approx(5.0)
    # 1/2 w^2 E[g^2] = 0.5 * 4 * (16 + 3 * 4) / 4
    assert Hessian()(model, batches, mse).weight["0"].item() == pytest.approx(14.0)


def test_max_batches_takes_the_first_batches_of_a_one_shot_iterator():
    batches = [
        (torch.ones(1, 1), torch.zeros(1, 1)),  # g = 4
        (torch.ones(1, 1), torch.full((1, 1), 3.0)),  # g = -2
    ]
    scores = Gradient(max_batches=1)(linear([[2.0]]), iter(batches), mse)
    assert scores.weight["0"].item() == pytest.approx(4.0)


def test_pruned_layers_are_scored_at_their_effective_weight():
    model = linear([[1, 2], [3, 4]])
    keep = Scores(weight={"0": torch.tensor([[1.0, 0.0], [1.0, 1.0]])})
    pruneplug.get_pruner("unstructured")(model, keep, threshold=0.5)  # removes w[0, 1]
    # effective W = [[1, 0], [3, 4]]: z = (1, 11), dL/dz = (-t, t) with t = sigmoid(10)
    t = sigmoid(10)
    gradient = Gradient()(model, ONE_BATCH).weight["0"]
    taylor = Taylor()(model, ONE_BATCH)
    torch.testing.assert_close(gradient, torch.tensor([[t, 2 * t], [t, 2 * t]]))
    torch.testing.assert_close(taylor.weight["0"], torch.tensor([[t, 0], [3 * t, 8 * t]]))
    torch.testing.assert_close(taylor.unit["0"], torch.tensor([t, 11 * t]))
    assert prune.is_pruned(model) and model[0].weight_orig.grad is None


# --------------------------------------------------------------------------- ablation


def three_hidden_units() -> nn.Sequential:
    """x = (1, 1) -> hidden h = (1, 2, 3) -> ReLU -> outputs (h0 + h1 + h2, 0) = (6, 0)."""
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(2, 3, bias=False), relu=nn.ReLU(), fc2=nn.Linear(3, 2))
    )
    with torch.no_grad():
        model.fc1.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 2.0]]))
        model.fc2.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        model.fc2.bias.zero_()
    return model


@pytest.mark.parametrize("units_per_pass", [1, 2, 16])
def test_ablation_is_the_loss_increase_when_each_unit_is_removed(units_per_pass):
    # target (6, 0): intact loss 0; without h_k the first output drops by h_k, loss h_k^2 / 2;
    # without output 0 the loss is 36 / 2, output 1 is already 0
    batches = [(torch.ones(1, 2), torch.tensor([[6.0, 0.0]]))] * 2
    scores = Ablation(units_per_pass=units_per_pass)(three_hidden_units(), batches, mse)
    assert scores.unit["fc1"].tolist() == pytest.approx([0.5, 2.0, 4.5])
    assert scores.unit["fc2"].tolist() == pytest.approx([18.0, 0.0])
    assert not scores.weight


def test_ablation_removes_a_channel_after_its_batch_norm():
    # Linear = identity, then BN (mean 0, var + eps = 1, gamma 1, beta (1, 2)): outputs (2, 3).
    # Removing unit 0 removes its BN channel too: outputs (0, 3), so -sum rises by 2 (zeroing
    # before the BN would leave beta_0 and give 1). eps keeps its default: CUDA refuses eps=0.
    bn = nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.bias.copy_(torch.tensor([1.0, 2.0]))
        bn.running_var.fill_(1 - bn.eps)  # (1 - 1e-5) + 1e-5 is exactly 1 in float32
    model = nn.Sequential(linear([[1, 0], [0, 1]])[0], bn)
    scores = Ablation()(model, [(torch.ones(4, 2), torch.zeros(4))], lambda out, y: -out.sum())
    assert scores.unit["0"].tolist() == pytest.approx([8.0, 12.0])  # 4 samples x (2, 3)


def test_ablation_is_silent_by_default_and_shows_progress_on_request(capsys):
    batches = [(torch.ones(1, 2), torch.tensor([[6.0, 0.0]]))]
    Ablation()(three_hidden_units(), batches, mse)
    assert capsys.readouterr().err == ""
    Ablation(progress=True, units_per_pass=2)(three_hidden_units(), batches, mse)
    assert "ablation" in capsys.readouterr().err  # 2 + 1 passes for fc1 and fc2


# --------------------------------------------------------------------------- bn_scale


def conv_bn(gammas) -> nn.Sequential:
    model = nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, len(gammas), 3),
            bn=nn.BatchNorm2d(len(gammas)),
            relu=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(len(gammas), 2),  # for 1 x 3 x 3 inputs
        )
    )
    with torch.no_grad():
        model.bn.weight.copy_(torch.tensor(gammas))
    return model


def test_bn_scale_is_the_absolute_gamma_of_the_following_batch_norm():
    scores = BNScale()(conv_bn([-2.0, 0.5, 1.0]))
    assert scores.unit["conv"].tolist() == [2.0, 0.5, 1.0]
    assert list(scores.unit) == ["conv"] and not scores.weight  # fc has no batch norm after it


class DefinedOutOfOrder(nn.Module):
    """The batch norms are defined before the layers, and bn_in normalises the input."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm1d(4)
        self.bn = nn.BatchNorm1d(3)
        self.fc1 = nn.Linear(4, 3)
        self.fc2 = nn.Linear(3, 4)
        with torch.no_grad():
            self.bn.weight.copy_(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(self.bn_in(x)))))


class Untraceable(nn.Sequential):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor value: torch.fx cannot trace this
            x = x * 2
        return super().forward(x)


def test_batch_norms_are_paired_by_data_flow_or_else_by_definition_order():
    assert batchnorm_after(DefinedOutOfOrder()) == {"fc1": "bn"}
    scores = BNScale()(DefinedOutOfOrder())
    torch.testing.assert_close(scores.unit["fc1"], torch.tensor([0.1, 0.2, 0.3]))
    model = Untraceable(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))
    assert batchnorm_after(model) == {"0": "1"}


def test_bn_scale_refuses_a_model_without_a_batch_norm_after_a_layer():
    with pytest.raises(ValueError, match="no affine batch norm directly after a prunable layer"):
        BNScale()(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)))
    no_gamma = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, affine=False))
    with pytest.raises(ValueError, match="bn_scale has no gamma"):
        BNScale()(no_gamma)


# --------------------------------------------------------------------------- lamp


def test_lamp_of_a_known_vector():
    # squares 1, 4, 0, 9, 4 sorted: 0, 1, 4, 4, 9 (sum 18); ties share the denominator 4+4+9
    scores = lamp_scores(torch.tensor([1.0, -2.0, 0.0, 3.0, 2.0]))
    torch.testing.assert_close(scores, torch.tensor([1 / 18, 4 / 17, 0.0, 1.0, 4 / 17]))
    assert lamp_scores(torch.zeros(2, 3)).tolist() == [[0.0] * 3] * 2


def test_lamp_scores_every_layer_and_ignores_pruned_weights():
    model = nn.Sequential(linear([[1, -2], [0.5, 3]])[0], linear([[10, 20]])[0])
    prune.custom_from_mask(model[0], "weight", torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    scores = LAMP()(model)
    # effective weights 1, -2, 0, 3 -> squares 1, 4, 0, 9 (sum 14): 1/14, 4/13, 0, 1
    torch.testing.assert_close(scores.weight["0"], torch.tensor([[1 / 14, 4 / 13], [0.0, 1.0]]))
    torch.testing.assert_close(scores.weight["1"], torch.tensor([[100 / 500, 1.0]]))
    assert not scores.unit


# --------------------------------------------------------------------------- random


def test_random_scores_are_uniform_and_fixed_by_their_seed():
    model = tiny_cnn()
    first = RandomImportance(seed=3)(model)
    torch.manual_seed(123)  # the global random state plays no part
    again = RandomImportance(seed=3)(model)
    other = RandomImportance(seed=4)(model)
    for name, score in first.weight.items():
        assert score.shape == model.get_submodule(name).weight.shape
        assert score.min() >= 0 and score.max() < 1
        assert torch.equal(score, again.weight[name]) and not torch.equal(score, other.weight[name])
        assert torch.equal(first.unit[name], again.unit[name])
    assert list(first.unit) == ["conv1", "conv2", "fc"]


# --------------------------------------------------------------------------- common contract


def sample_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        (
            torch.rand(6, 1, 8, 8, generator=generator),
            torch.randint(0, 10, (6,), generator=generator),
        )
        for _ in range(2)
    ]


def fingerprint(model: nn.Module) -> dict:
    """Modes, requires_grad flags, grads and hooks: what a scorer must leave alone."""
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad": [p.grad for p in model.parameters()],
        "hooks": {
            n: {**m._forward_pre_hooks, **m._forward_hooks} for n, m in model.named_modules()
        },
    }


@pytest.mark.parametrize("name", OURS)
def test_scoring_leaves_a_pruned_training_model_untouched_and_is_deterministic(name):
    model = tiny_cnn().train()
    model.conv1.bias.requires_grad_(False)
    prune.random_unstructured(model.conv2, "weight", amount=0.5)
    prune.l1_unstructured(model.fc, "weight", amount=0.3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = fingerprint(model)
    masked = [(m, m.__dict__["weight"]) for m in (model.conv2, model.fc)]  # set by prune's hook
    batches = sample_batches()
    scorer = pruneplug.get_scorer(name)
    first, second = scorer(model, batches), scorer(model, batches)
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key  # incl. batch-norm statistics
    assert fingerprint(model) == before
    assert all(m.__dict__["weight"] is weight for m, weight in masked)
    for table, again in ((first.weight, second.weight), (first.unit, second.unit)):
        assert table.keys() == again.keys()
        assert all(torch.equal(table[n], again[n]) and not table[n].requires_grad for n in table)
    assert all(torch.equal(b[0], x) for b, (x, _) in zip(batches, sample_batches(), strict=True))


@pytest.mark.parametrize(
    "name, build",
    [
        ("taylor", models.lstm_classifier),
        ("hessian", models.lstm_classifier),
        ("gradient", models.transformer_classifier),
        ("head_importance", models.transformer_classifier),
    ],
)
def test_scoring_keeps_the_masked_tensors_of_recurrent_and_attention_layers(name, build):
    """The masks of weight_ih_l0, in_proj_weight... are recomputed by prune's hooks during the
    scorer's forward passes; the model must get back the tensors it had, not graph nodes."""
    model = build(50)
    pruneplug.get_pruner("unstructured")(
        model, pruneplug.get_scorer("magnitude")(model), amount=0.5
    )
    masked = {
        (module, hook._tensor_name): module.__dict__[hook._tensor_name]
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    }
    assert any(attribute != "weight" for _, attribute in masked)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(2, 50, (8, 12), generator=generator), torch.randint(0, 2, (8,)))]
    pruneplug.get_scorer(name)(model, batches)
    assert all(module.__dict__[a] is tensor for (module, a), tensor in masked.items())
    copy.deepcopy(model)  # refused for tensors of an autograd graph


@pytest.mark.parametrize("cls", DATA_SCORERS)
def test_data_scorers_refuse_to_run_without_usable_data(cls):
    model = linear([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=f"scorer '{cls.name}' needs data"):
        cls()(model)
    with pytest.raises(ValueError, match="batches yielded nothing"):
        cls()(model, [])
    with pytest.raises(ValueError, match="not an \\(inputs, targets\\) pair"):
        cls()(model, [torch.ones(1, 2)])
    with pytest.raises(ValueError, match="at least one sample"):
        cls()(model, [(torch.ones(0, 2), torch.zeros(0, dtype=torch.long))])


@pytest.mark.parametrize("cls", DATA_SCORERS)
def test_data_scorers_ask_for_a_scalar_loss(cls):
    batches = [(torch.ones(2, 2), torch.zeros(2, dtype=torch.long))]
    per_sample = lambda out, y: nn.functional.cross_entropy(out, y, reduction="none")  # noqa: E731
    with pytest.raises(ValueError, match=r"loss_fn returned \(2,\), not a scalar"):
        cls()(linear([[1, 2], [3, 4]]), batches, per_sample)
