"""Recovery: L1 sparse training, distillation and attention transfer, by hand and in training."""

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from pruneplug import engine, recovery


def dataset(n: int = 96, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x, y)


def net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def conv_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def image_dataset(n: int = 48) -> TensorDataset:
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, (x[:, 0, :3].mean((1, 2)) > 0.5).long() + (x[:, 0, 0, 0] > 0.5).long())


# --------------------------------------------------------------------------- L1


def test_l1_penalty_by_hand_on_weights_masks_and_bn() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, -4.0]]))
        model[0].bias.fill_(100.0)  # biases are not penalised
        model[1].weight.copy_(torch.tensor([0.5, -1.5]))
    x = torch.zeros(2, 2)
    assert recovery.l1_penalty(0.1)(model, x, model(x)).item() == pytest.approx(1.0)
    assert recovery.l1_penalty(0.1, on="bn")(model, x, model(x)).item() == pytest.approx(0.2)
    prune.custom_from_mask(model[0], "weight", torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert recovery.l1_penalty(0.1)(model, x, model(x)).item() == pytest.approx(0.6)
    assert repr(recovery.l1_penalty(0.1)) == "l1_penalty(0.1, on='weights')"


def test_l1_penalty_bad_input() -> None:
    with pytest.raises(ValueError, match="on='gamma'"):
        recovery.l1_penalty(0.1, on="gamma")
    with pytest.raises(ValueError, match="strength=-1"):
        recovery.l1_penalty(-1)
    model = net()
    with pytest.raises(ValueError, match="no batch norm layer"):
        recovery.l1_penalty(0.1, on="bn")(model, torch.zeros(1, 8), torch.zeros(1, 3))


def test_l1_penalty_shrinks_weights_and_gammas_against_no_penalty() -> None:
    data = dataset()
    plain, sparse = net(), net()
    engine.train(plain, data, epochs=5, batch_size=16, progress=False)
    engine.train(
        sparse, data, epochs=5, batch_size=16, penalty=recovery.l1_penalty(1e-2), progress=False
    )
    l1 = [sum(m.weight.abs().sum().item() for m in (n[0], n[2])) for n in (plain, sparse)]
    assert l1[1] < 0.7 * l1[0]

    images = image_dataset()
    plain, slim = conv_net(), conv_net()
    engine.train(plain, images, epochs=5, batch_size=16, progress=False)
    penalty = recovery.l1_penalty(5e-2, on="bn")
    engine.train(slim, images, epochs=5, batch_size=16, penalty=penalty, progress=False)
    gammas = [n[1].weight.abs().sum().item() for n in (plain, slim)]
    assert gammas[1] < 0.7 * gammas[0]
    conv = [n[0].weight.abs().sum().item() for n in (plain, slim)]
    assert conv[1] == pytest.approx(conv[0], rel=0.3)  # only the gammas are targeted


# --------------------------------------------------------------------------- distillation


def fixed_logits(logits: list[float]) -> nn.Module:
    """A 'teacher' that ignores its input and returns ``logits`` for every sample."""
    teacher = nn.Linear(1, len(logits))
    with torch.no_grad():
        teacher.weight.zero_()
        teacher.bias.copy_(torch.tensor(logits))
    return teacher


def test_distillation_penalty_by_hand() -> None:
    teacher = fixed_logits([math.log(3.0), 0.0])
    penalty = recovery.distillation_penalty(teacher, temperature=2.0, weight=0.5)
    student_logits = torch.zeros(4, 2)  # uniform: (0.5, 0.5)
    # teacher at T=2: softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (sqrt 3 + 1)
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    got = penalty(nn.Identity(), torch.zeros(4, 1), student_logits)
    assert got.item() == pytest.approx(0.5 * 4 * kl, rel=1e-5)


def test_distillation_is_zero_for_the_teacher_itself_and_leaves_it_alone() -> None:
    teacher = net()
    teacher.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(5, 8)
    penalty = recovery.distillation_penalty(teacher)
    assert penalty(teacher, x, teacher(x)).item() == pytest.approx(0.0, abs=1e-6)
    student = net(seed=1)
    value = penalty(student, x, student(x))
    value.backward()
    assert value.item() > 0
    assert teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    assert student[0].weight.grad is not None


def test_distillation_refuses_mismatched_outputs() -> None:
    penalty = recovery.distillation_penalty(fixed_logits([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"shape \(2, 3\) but the student \(2, 4\)"):
        penalty(nn.Identity(), torch.zeros(2, 1), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature=0"):
        recovery.distillation_penalty(net(), temperature=0)
    with pytest.raises(TypeError, match="teacher must be a torch.nn.Module"):
        recovery.distillation_penalty("dense")


def agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x).argmax(1) == b(x).argmax(1)).float().mean().item()


def test_distill_pulls_the_student_towards_the_teacher() -> None:
    x = torch.randn(256, 8, generator=torch.Generator().manual_seed(3))
    teacher = net(seed=7)  # an untrained teacher: its outputs are unrelated to the labels
    data = TensorDataset(x, torch.zeros(256, dtype=torch.long))  # labels say "class 0"
    plain, student = net(), net()
    engine.train(plain, data, epochs=3, batch_size=32, lr=0.05, progress=False)
    history = recovery.distill(
        student,
        teacher,
        data,
        temperature=1.0,
        weight=20.0,
        epochs=3,
        batch_size=32,
        lr=0.05,
        progress=False,
    )
    assert len(history) == 3
    assert agreement(student, teacher, x) > agreement(plain, teacher, x) + 0.25  # 0.90 vs 0.56


# --------------------------------------------------------------------------- attention transfer


def test_attention_map_by_hand() -> None:
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # 1 x 2 channels x 1 x 2
    q = recovery.attention_map(a)  # mean over channels of a^2: (5, 2), unit norm
    assert q.shape == (1, 2)
    assert q[0].tolist() == pytest.approx([5 / math.sqrt(29), 2 / math.sqrt(29)])
    assert recovery.attention_map(-a).tolist() == q.tolist()  # |A|
    with pytest.raises(ValueError, match="N x C x H x W"):
        recovery.attention_map(torch.ones(2, 3))


def channel_gate(keep: list[float]) -> nn.Sequential:
    """A 1x1 convolution multiplying each channel by ``keep[c]`` (no bias)."""
    conv = nn.Conv2d(len(keep), len(keep), 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.diag(torch.tensor(keep)).view(len(keep), len(keep), 1, 1))
    return nn.Sequential(conv)


def test_attention_transfer_penalty_by_hand_and_hooks_removed() -> None:
    student, teacher = channel_gate([1.0, 1.0]), channel_gate([0.0, 1.0])
    x = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    with recovery.attention_transfer_penalty(teacher, student, [("0", "0")], beta=10.0) as at:
        assert len(student[0]._forward_hooks) == 1 and len(teacher[0]._forward_hooks) == 1
        out = student(x)
        value = at(student, x, out)
    # student map (5, 2) / sqrt 29; teacher keeps channel 1 only: map (9/2, 0) -> (1, 0)
    qs = [5 / math.sqrt(29), 2 / math.sqrt(29)]
    expected = 10.0 / 2 * ((qs[0] - 1) ** 2 + qs[1] ** 2) / 2
    assert value.item() == pytest.approx(expected, rel=1e-5)
    assert at.closed and not student[0]._forward_hooks and not teacher[0]._forward_hooks
    with pytest.raises(RuntimeError, match="closed"):
        at(student, x, out)
    assert recovery.attention_transfer_penalty(teacher, student, [("0", "0")])(
        student, x, student(x)
    ).item() == pytest.approx(expected / 10 * 1000, rel=1e-5)  # default beta 1000


def test_attention_transfer_hooks_go_away_when_training_fails() -> None:
    student, teacher = conv_net(), conv_net(seed=1)
    with pytest.raises(ValueError, match="lr=-1"):
        recovery.distill(student, teacher, image_dataset(), attention_pairs=[("3", "3")], lr=-1)
    assert all(not m._forward_hooks for m in (*student.modules(), *teacher.modules()))


def test_attention_transfer_bad_input() -> None:
    student, teacher = conv_net(), conv_net(seed=1)
    with pytest.raises(ValueError, match="the student has no layer 'block9'; its layers are: 0, 1"):
        recovery.attention_transfer_penalty(teacher, student, [("block9", "3")])
    with pytest.raises(ValueError, match="non-empty list of"):
        recovery.attention_transfer_penalty(teacher, student, [])
    x = image_dataset().tensors[0][:4]
    with recovery.attention_transfer_penalty(teacher, student, [("0", "7")]) as at:
        with pytest.raises(ValueError, match="N x C x H x W"):
            at(student, x, student(x))  # layer 7 of the teacher is the Linear classifier
    with recovery.attention_transfer_penalty(teacher, student, [("0", "0")]) as at:
        with pytest.raises(ValueError, match="not the student"):
            at(teacher, x, teacher(x))


def test_distill_with_attention_transfer_trains_and_cleans_up() -> None:
    teacher, student = conv_net(seed=1), conv_net()
    engine.train(teacher, image_dataset(), epochs=3, batch_size=16, progress=False)
    x = image_dataset().tensors[0]

    def gap() -> float:
        with recovery.attention_transfer_penalty(teacher, student, [("3", "3")]) as at:
            return at(student, x, student(x)).item()

    before = gap()
    recovery.distill(
        student,
        teacher,
        image_dataset(),
        attention_pairs=[("3", "3")],
        epochs=3,
        batch_size=16,
        lr=0.05,
        progress=False,
    )
    assert gap() < before
    assert all(not m._forward_hooks for m in (*student.modules(), *teacher.modules()))


def test_combine_adds_penalties_and_skips_none() -> None:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(-2.0)
    x = torch.zeros(1, 1)
    both = recovery.combine(recovery.l1_penalty(1.0), None, recovery.l1_penalty(0.5))
    assert both(model, x, model(x)).item() == pytest.approx(3.0)
    assert recovery.combine()(model, x, model(x)).item() == 0.0
