"""Lottery tickets: sparsity per round, exact rewinds, nested masks, the random-reinit control."""

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

import pruneplug
from pruneplug import data as datasets
from pruneplug import metrics, models, schedules
from pruneplug.engine import derived_seed, train
from pruneplug.schedules import lottery

EPOCHS, REWIND = 3, 1


@pytest.fixture(scope="module")
def digits() -> tuple[TensorDataset, TensorDataset]:
    splits = datasets.load_digits()
    images, labels = splits.train.tensors
    return TensorDataset(images[:480], labels[:480]), splits.val


def small_mlp(seed: int = 0) -> nn.Sequential:
    return models.mlp(hidden=(32,), seed=seed)  # 64*32 + 32*10 = 2368 weights


N_WEIGHTS = 64 * 32 + 32 * 10


def find(model: nn.Module, train_data: TensorDataset, **kwargs: Any) -> schedules.Ticket:
    settings = dict(data=train_data, rounds=3, rate=0.5, epochs=EPOCHS, progress=False)
    return schedules.lottery_ticket(model, **{**settings, **kwargs})


def host_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def ticket(digits: tuple[TensorDataset, TensorDataset]) -> schedules.Ticket:
    train_data, val_data = digits
    return find(small_mlp(), train_data, val_data=val_data, rewind_epoch=REWIND)


# --------------------------------------------------------------------------- the procedure


def test_sparsity_after_each_round_is_one_minus_one_minus_p_to_the_r(
    ticket: schedules.Ticket, digits: tuple[TensorDataset, TensorDataset]
) -> None:
    expected = [round((1 - 0.5**r) * N_WEIGHTS) / N_WEIGHTS for r in range(4)]
    assert ticket.sparsity == expected  # 0, 50, 75, 87.5 %
    assert metrics.global_sparsity(ticket.model) == ticket.sparsity[-1]
    assert [len(h) for h in ticket.histories] == [EPOCHS] + [EPOCHS - REWIND] * 3
    assert all(isinstance(a, float) for a in ticket.accuracy)
    assert repr(ticket).splitlines()[:2] == [
        "Ticket(rewind_epoch=1, 3 rounds)",
        "round  sparsity  val_accuracy",
    ]
    # a pruner object: local scope prunes every layer by the same rate
    local = pruneplug.get_pruner("unstructured", scope="local")
    by_layer = find(small_mlp(), digits[0], rounds=2, rate=0.2, epochs=1, pruner=local)
    for name, sparsity in metrics.layer_sparsity(by_layer.model).items():
        n = by_layer.mask[name].numel()
        assert sparsity == round(0.36 * n) / n, name


@pytest.mark.parametrize("rewind_epoch", [0, 2])
def test_every_round_retrains_the_survivors_from_exactly_their_epoch_k_weights(
    digits: tuple[TensorDataset, TensorDataset],
    monkeypatch: pytest.MonkeyPatch,
    rewind_epoch: int,
) -> None:
    model = small_mlp()
    at_start: list[dict[str, torch.Tensor]] = []  # what each train() run starts from

    def spy(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        at_start.append(host_state(model))
        return train(model, *args, **kwargs)

    monkeypatch.setattr(lottery, "train", spy)
    at_epoch: dict[int, dict[str, torch.Tensor]] = {}  # the caller's hook sees the dense run
    result = find(
        model,
        digits[0],
        rewind_epoch=rewind_epoch,
        on_epoch_end=lambda epoch, m: at_epoch.setdefault(epoch, host_state(m)),
    )
    theta_k = host_state(model) if rewind_epoch == 0 else at_epoch[rewind_epoch]
    assert equal_states(result.rewind_state, theta_k)
    assert len(at_start) == 4 and equal_states(at_start[0], host_state(model))
    for r, start in enumerate(at_start[1:], start=1):
        for name in ("fc1", "fc2"):
            mask = result.masks[r][name]
            assert torch.equal(start[f"{name}.weight_mask"].bool(), mask)
            assert torch.equal(start[f"{name}.weight_orig"], theta_k[f"{name}.weight"])
            assert torch.equal(start[f"{name}.bias"], theta_k[f"{name}.bias"])
    rewound = result.rewound()  # the untrained ticket, m * theta_k
    assert equal_states(host_state(rewound), at_start[-1])
    assert torch.equal(rewound.fc1.weight, theta_k["fc1.weight"] * result.mask["fc1"])


def test_masks_are_nested_so_a_pruned_weight_never_returns(ticket: schedules.Ticket) -> None:
    assert all(bool(m.all()) for m in ticket.masks[0].values())
    for before, after in zip(ticket.masks, ticket.masks[1:], strict=False):
        for name in after:
            assert not (after[name] & ~before[name]).any(), name
            assert (before[name] & ~after[name]).any(), name  # and every round prunes more
    for name, layer in pruneplug.prunable_layers(ticket.model).items():
        assert prune.is_pruned(layer)
        assert torch.equal(layer.weight_mask.bool(), ticket.mask[name])
        assert not layer.weight[~ticket.mask[name]].any()


def test_random_reinit_trains_the_same_mask_from_other_values(
    ticket: schedules.Ticket, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = torch.get_rng_state()
    fresh, again, other = (ticket.reinitialised(s) for s in (7, 7, 8))
    assert torch.equal(torch.get_rng_state(), rng)  # drawn without touching the caller's RNG
    assert equal_states(host_state(fresh), host_state(again))
    assert not torch.equal(fresh.fc1.weight_orig, other.fc1.weight_orig)
    rewound = ticket.rewound()
    for name in ("fc1", "fc2"):
        assert torch.equal(getattr(fresh, name).weight_mask, getattr(rewound, name).weight_mask)
        kept = ticket.mask[name]
        same = getattr(fresh, name).weight[kept] == getattr(rewound, name).weight[kept]
        assert same.float().mean() < 0.01, name

    calls: list[dict[str, Any]] = []

    def spy(model: nn.Module, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return train(model, **kwargs)

    monkeypatch.setattr(lottery, "train", spy)
    control = schedules.random_reinit(ticket, seed=7, progress=False)
    assert calls == [{**ticket.retrain_kwargs, "progress": False}]  # the same budget
    assert ticket.retrain_kwargs["epochs"] == EPOCHS - REWIND
    assert ticket.retrain_kwargs["seed"] == derived_seed(0, 3)  # the last round's data order
    assert len(control.history) == EPOCHS - REWIND
    assert control.sparsity == [ticket.sparsity[-1]] * (EPOCHS - REWIND)
    masks = {
        n: layer.weight_mask.bool() for n, layer in pruneplug.prunable_layers(control.model).items()
    }
    assert masks.keys() == ticket.mask.keys()
    assert all(torch.equal(masks[n], ticket.mask[n]) for n in masks)


def test_same_seed_same_ticket_and_the_callers_model_is_untouched(
    digits: tuple[TensorDataset, TensorDataset],
) -> None:
    model = small_mlp()
    before, rng = host_state(model), torch.get_rng_state()
    first, second = (find(model, digits[0], rounds=2, epochs=2) for _ in range(2))
    assert equal_states(host_state(model), before) and not prune.is_pruned(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert equal_states(host_state(first.model), host_state(second.model))
    assert all(torch.equal(first.mask[n], second.mask[n]) for n in first.mask)
    other = find(model, digits[0], rounds=2, epochs=2, seed=1)
    assert not equal_states(host_state(first.model), host_state(other.model))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rounds": 0}, ValueError, r"rounds=0: give a whole number >= 1"),
        ({"rate": 0}, ValueError, r"rate=0 is out of range: .* in \(0, 1\)"),
        ({"rate": 1.0}, ValueError, r"rate=1.0 is out of range"),
        ({"rate": -0.2}, ValueError, r"rate=-0.2 is out of range"),
        ({"rate": True}, ValueError, r"rate=True is out of range"),
        ({"epochs": 0}, ValueError, r"epochs=0: give a whole number >= 1"),
        ({"rewind_epoch": 3}, ValueError, r"rewind_epoch=3 is outside .* \[0, 2\]"),
        ({"rewind_epoch": -1}, ValueError, r"rewind_epoch=-1 is outside"),
        ({"pruner": "structured"}, ValueError, r"needs a mask \(unstructured\) pruner"),
        ({"scorer": "taylor", "data": None}, ValueError, r"scorer 'taylor' needs data"),
        ({"lr": 1e12}, FloatingPointError, r"training diverged"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(
    digits: tuple[TensorDataset, TensorDataset],
    kwargs: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    model = small_mlp()
    before = host_state(model)
    with pytest.raises(error, match=message):
        find(model, digits[0], **kwargs)
    assert equal_states(host_state(model), before)


def test_models_that_cannot_make_a_ticket_or_a_control_are_refused(
    ticket: schedules.Ticket, digits: tuple[TensorDataset, TensorDataset]
) -> None:
    pruned = schedules.one_shot(small_mlp(), "magnitude", "unstructured", 0.5)
    with pytest.raises(ValueError, match=r"already pruned .* pass the unpruned model"):
        find(pruned, digits[0])
    from_init = find(small_mlp(seed=5), digits[0], rounds=1, epochs=1)
    with pytest.raises(ValueError, match=r"seed=5 draws exactly the ticket's own init"):
        from_init.reinitialised(5)

    class Scaled(nn.Module):  # a parameter without reset_parameters()
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)
            self.scale = nn.Parameter(torch.ones(10))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) * self.scale

    scaled = find(Scaled(), digits[0], rounds=1, epochs=1)
    with pytest.raises(ValueError, match=r"module 'Scaled' holds parameters but has no reset_"):
        scaled.reinitialised(1)


@pytest.mark.cuda
def test_a_ticket_found_on_cuda_leaves_the_model_on_the_cpu_and_draws_the_same_control(
    digits: tuple[TensorDataset, TensorDataset],
) -> None:
    model = small_mlp()
    on_gpu = find(model, digits[0], rounds=2, epochs=2, device="cuda")
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert on_gpu.model.fc1.weight.device.type == "cuda"
    assert all(m.device.type == "cpu" for m in on_gpu.mask.values())
    control = schedules.random_reinit(on_gpu, seed=7, progress=False)
    assert control.model.fc1.weight.device.type == "cuda"
    on_cpu = find(model, digits[0], rounds=2, epochs=2)
    assert torch.equal(
        on_gpu.reinitialised(7).fc1.weight_orig.cpu(), on_cpu.reinitialised(7).fc1.weight_orig
    )
