"""Engine: seeded training, schedules, hooks (penalty, augment, epoch end), masks, evaluation."""

import copy
import math

import matplotlib
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune
from torch.utils.data import DataLoader, TensorDataset

from pruneplug import engine

matplotlib.use("Agg")


def dataset(n: int = 64, features: int = 8, classes: int = 3, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable labels in {0, 1, 2}
    return TensorDataset(x, y[:n] % classes)


def net(dropout: float = 0.0) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 3))


def states_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_same_seed_gives_bit_identical_weights_and_leaves_global_rng_alone() -> None:
    data = dataset()
    runs = []
    for seed in (3, 3, 4):
        model = net(dropout=0.3)  # dropout draws from the global RNG: the seed must cover it
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        engine.train(model, data, epochs=2, batch_size=16, seed=seed, progress=False)
        assert torch.equal(torch.random.get_rng_state(), before)
        runs.append(model)
    assert states_equal(runs[0], runs[1])
    assert not states_equal(runs[0], runs[2])


def test_training_learns_and_history_has_a_row_per_epoch() -> None:
    data = dataset()
    history = engine.train(
        net(), data, epochs=5, lr=0.1, val_data=dataset(seed=2), batch_size=16, progress=False
    )
    assert len(history) == 5
    assert history["epoch"] == [1, 2, 3, 4, 5]
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert history[0].keys() == set(engine.COLUMNS)
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    assert history["lr"] == [0.1] * 5
    with pytest.raises(KeyError, match="val_accuracy"):
        history["accuracy"]


def test_history_without_validation_and_its_repr_and_plot() -> None:
    history = engine.train(net(), dataset(), epochs=2, progress=False)
    assert history["val_loss"] == [None, None]
    text = repr(history)
    assert text.splitlines()[0] == "History(2 epochs)"
    assert text.splitlines()[1].split() == list(engine.COLUMNS)
    assert text.splitlines()[2].split()[0] == "1" and text.splitlines()[2].split()[3] == "-"
    ax = history.plot()
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss"]
    assert ax.get_xlabel() == "epoch"


@pytest.mark.parametrize(
    ("epochs", "decays"), [(1, []), (2, [1]), (4, [1, 3]), (5, [2, 3]), (10, [3, 7])]
)
def test_the_step_schedule_decays_twice_whatever_the_length(epochs: int, decays: list) -> None:
    history = engine.train(
        net(), dataset(n=8), epochs=epochs, lr=1.0, schedule="step", progress=False
    )
    lowered = [e for e in range(1, epochs) if history["lr"][e] < history["lr"][e - 1]]
    assert lowered == decays and min(history["lr"]) == pytest.approx(0.1 ** len(decays))


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("step", [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]),  # / 10 after each third of 6 epochs
        ("exponential", [0.1 * 0.9**e for e in range(6)]),
        ("cosine", [0.1 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(6)]),
        (None, [0.1] * 6),
    ],
)
def test_schedules_set_the_lr_of_each_epoch(schedule: str | None, expected: list[float]) -> None:
    data = dataset(n=8)
    history = engine.train(net(), data, epochs=6, lr=0.1, schedule=schedule, progress=False)
    assert history["lr"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule": "linear"}, "unknown schedule 'linear'; choose one of: step, exponential"),
        ({"optimizer": "rmsprop"}, "choose one of: sgd, adam"),
        ({"epochs": 0}, "epochs=0"),
        ({"lr": 0.0}, r"lr=0.0: give a finite number > 0"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"momentum": 5.0}, r"momentum=5.0: give a number in \[0, 1\)"),
        ({"seed": True}, r"seed=True: give a whole number in \[0, 2\*\*63\)"),
        ({"seed": 2**64}, "seed=18446744073709551616"),
    ],
)
def test_bad_arguments_fail_before_touching_the_model(kwargs: dict, message: str) -> None:
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with pytest.raises(ValueError, match=message):
        engine.train(model, dataset(), progress=False, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training


def test_a_loss_per_sample_is_named_before_any_step() -> None:
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    per_sample = torch.nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"loss_fn returned \(32,\), not a scalar tensor"):
        engine.train(model, dataset(), batch_size=32, loss_fn=per_sample, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_empty_or_wrong_data_is_refused() -> None:
    empty = TensorDataset(torch.zeros(0, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="data is empty"):
        engine.train(net(), empty, progress=False)
    with pytest.raises(ValueError, match="val_data is empty"):
        engine.train(net(), dataset(), val_data=empty, progress=False)
    with pytest.raises(TypeError, match="TensorDataset"):
        engine.train(net(), (torch.zeros(4, 8), torch.zeros(4)), progress=False)
    with pytest.raises(ValueError, match="data is empty"):
        engine.evaluate(net(), DataLoader(empty))


def test_progress_false_prints_nothing_and_true_shows_a_bar(capfd: pytest.CaptureFixture) -> None:
    engine.train(net(), dataset(n=8), epochs=2, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    engine.train(net(), dataset(n=8), epochs=2, progress=True)
    out, err = capfd.readouterr()
    assert "2/2" in out + err


def test_l1_penalty_shrinks_the_weights() -> None:
    data = dataset()
    seen = []

    def l1(model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        seen.append((inputs.shape, logits.shape))
        return 0.05 * sum(p.abs().sum() for p in model.parameters())

    plain, sparse = net(), net()
    engine.train(plain, data, epochs=5, batch_size=16, progress=False)
    engine.train(sparse, data, epochs=5, batch_size=16, penalty=l1, progress=False)
    assert seen[0] == (torch.Size([16, 8]), torch.Size([16, 3]))
    assert len(seen) == 5 * 4
    norm = [sum(p.abs().sum().item() for p in m.parameters()) for m in (plain, sparse)]
    assert norm[1] < 0.5 * norm[0]


def test_augment_runs_on_training_batches_only_and_may_give_soft_targets() -> None:
    calls = []

    def to_soft(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(inputs))
        return inputs, F.one_hot(targets, 3).float()

    loader = DataLoader(dataset(n=30), batch_size=10, shuffle=False)  # used as it is
    history = engine.train(
        net(), loader, epochs=2, augment=to_soft, val_data=dataset(n=20), progress=False
    )
    assert calls == [10, 10, 10] * 2
    assert 0 < history["train_accuracy"][-1] <= 1


def test_on_epoch_end_gets_each_epoch_and_the_model() -> None:
    model, calls = net(), []
    engine.train(
        model, dataset(), epochs=3, on_epoch_end=lambda e, m: calls.append((e, m)), progress=False
    )
    assert calls == [(1, model), (2, model), (3, model)]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_weights_stay_exactly_zero(optimizer: str) -> None:
    model = net()
    prune.random_unstructured(model[0], "weight", amount=0.5)
    mask = model[0].weight_mask.clone()
    orig = model[0].weight_orig.detach().clone()
    engine.train(
        model, dataset(), epochs=3, optimizer=optimizer, lr=0.01, weight_decay=0.01, progress=False
    )
    weight = model[0].weight
    assert torch.equal(weight[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert torch.equal(weight, model[0].weight_orig * mask)  # refreshed after the last step
    assert not torch.equal(model[0].weight_orig[mask == 1], orig[mask == 1])
    assert prune.is_pruned(model)


def test_a_trained_masked_model_can_be_deep_copied() -> None:
    model = net()
    prune.random_unstructured(model[0], "weight", amount=0.5)
    engine.train(model, dataset(), epochs=1, progress=False)
    twin = copy.deepcopy(model)  # a weight left inside an autograd graph would refuse this
    x = torch.randn(4, *dataset()[0][0].shape)
    assert torch.equal(twin(x), model(x)) and prune.is_pruned(twin)


def test_evaluate_hand_computed_and_restores_each_mode() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Dropout(0.9))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([0, 1, 1])
    model.train()
    model[1].eval()
    result = engine.evaluate(model, TensorDataset(x, y), batch_size=2)
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["loss"] == pytest.approx(F.cross_entropy(x, y).item())
    assert model.training and model[0].training and not model[1].training
    soft = F.one_hot(y, 2).float()
    assert engine.evaluate(model, TensorDataset(x, soft))["accuracy"] == pytest.approx(2 / 3)


def test_fine_tune_uses_its_defaults_and_accepts_overrides() -> None:
    history = engine.fine_tune(net(), dataset(n=8), progress=False)
    assert history["lr"] == [0.01] * 5
    assert len(engine.fine_tune(net(), dataset(n=8), epochs=2, progress=False)) == 2


def test_pick_device() -> None:
    assert engine.pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert engine.pick_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            engine.pick_device("cuda")


def test_derived_seeds_are_distinct_where_seed_plus_round_collides() -> None:
    seeds = {(s, r): engine.derived_seed(s, r) for s in range(20) for r in range(20)}
    assert len(set(seeds.values())) == 400  # seed 0 round 1 is not seed 1 round 0
    assert all(0 <= v < 2**63 for v in seeds.values())  # a valid torch.manual_seed
    assert engine.derived_seed(3, 1) == seeds[3, 1]  # a pure function of its arguments
    assert engine.derived_seed(3, 1) != engine.derived_seed(1, 3)  # the order matters
