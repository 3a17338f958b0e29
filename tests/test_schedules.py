"""Schedules: AGP and round targets by hand, exact final sparsity, heuristic rollback, scans."""

import matplotlib
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import pruneplug
from pruneplug import metrics, schedules
from pruneplug.benchmarks import pruning_unstructured

matplotlib.use("Agg")


def dataset(n: int = 96, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()  # learnable labels in {0, 1, 2}
    return TensorDataset(x, y)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    )


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in after)


N_WEIGHTS = 8 * 16 + 16 * 16 + 16 * 3  # 432


# --------------------------------------------------------------------------- curves


def test_agp_sparsity_by_hand() -> None:
    assert schedules.agp_sparsity(0, 4, 0.8) == 0.0
    assert schedules.agp_sparsity(2, 4, 0.8) == pytest.approx(0.8 - 0.8 * 0.5**3)  # 0.7
    assert schedules.agp_sparsity(3, 4, 0.8) == pytest.approx(0.8 - 0.8 * 0.25**3)  # 0.7875
    assert schedules.agp_sparsity(4, 4, 0.8) == pytest.approx(0.8)
    assert schedules.agp_sparsity(1, 2, 0.9, initial=0.2) == pytest.approx(0.9 - 0.7 * 0.125)
    with pytest.raises(ValueError, match="step=5"):
        schedules.agp_sparsity(5, 4, 0.8)
    with pytest.raises(ValueError, match="final=1"):
        schedules.agp_sparsity(1, 4, 1.0)
    with pytest.raises(ValueError, match="initial=0.9"):
        schedules.agp_sparsity(1, 4, 0.5, initial=0.9)


def test_sparsity_targets_by_hand() -> None:
    geometric = schedules.sparsity_targets(0.9, 3, "geometric")
    assert geometric == pytest.approx([1 - 0.1 ** (1 / 3), 1 - 0.1 ** (2 / 3), 0.9])
    assert geometric[:2] == pytest.approx([0.53584, 0.78456], abs=1e-5)
    assert schedules.sparsity_targets(0.9, 3, "linear") == pytest.approx([0.3, 0.6, 0.9])
    cubic = schedules.sparsity_targets(0.9, 3, "cubic")
    assert cubic == pytest.approx([0.9 - 0.9 * (2 / 3) ** 3, 0.9 - 0.9 / 27, 0.9])
    with pytest.raises(ValueError, match="spacing='log'"):
        schedules.sparsity_targets(0.9, 3, "log")
    with pytest.raises(ValueError, match="rounds=0"):
        schedules.sparsity_targets(0.9, 0)


# --------------------------------------------------------------------------- schedules


def test_one_shot_prunes_a_copy_by_name_or_object() -> None:
    model = net()
    before = snapshot(model)
    by_name = schedules.one_shot(model, "magnitude", "unstructured", 0.5)
    scorer, pruner = pruneplug.get_scorer("magnitude"), pruneplug.get_pruner("unstructured")
    by_object = schedules.one_shot(model, scorer, pruner, 0.5)
    assert unchanged(model, before) and by_name is not model
    assert metrics.global_sparsity(by_name) == round(0.5 * N_WEIGHTS) / N_WEIGHTS
    assert unchanged(by_object, snapshot(by_name))


def test_schedules_copy_a_masked_model_in_the_middle_of_a_plain_training_loop() -> None:
    model = schedules.one_shot(net(), "magnitude", "unstructured", 0.5)
    x, y = dataset()[:8]
    nn.functional.cross_entropy(model(x), y).backward()  # masked weights: graph nodes now
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    before = snapshot(model)
    more = schedules.one_shot(model, "magnitude", "unstructured", 0.8)
    assert metrics.global_sparsity(more) == round(0.8 * N_WEIGHTS) / N_WEIGHTS
    assert unchanged(model, before)


def test_bad_arguments_are_refused_and_leave_the_model_alone() -> None:
    model = net()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"amount=1.0 is out of range"):
        schedules.one_shot(model, "magnitude", "unstructured", 1.0)
    with pytest.raises(pruneplug.UnknownPluginError, match="no scorer called 'magnitud'"):
        schedules.one_shot(model, "magnitud", "unstructured", 0.5)
    with pytest.raises(TypeError, match="scorer must be a Scorer or a scorer name"):
        schedules.one_shot(model, 3, "unstructured", 0.5)
    with pytest.raises(ValueError, match="scorer 'taylor' needs data"):
        schedules.one_shot(model, "taylor", "unstructured", 0.5)
    assert unchanged(model, before)


def test_iterative_reaches_the_exact_final_sparsity_and_is_deterministic() -> None:
    model, data = net(), dataset()
    before = snapshot(model)
    runs = [
        schedules.iterative(
            model,
            "magnitude",
            "unstructured",
            0.8,
            data=data,
            rounds=3,
            epochs_per_round=2,
            batch_size=32,
            progress=False,
        )
        for _ in range(2)
    ]
    pruned, history, sparsity = runs[0]
    assert metrics.global_sparsity(pruned) == round(0.8 * N_WEIGHTS) / N_WEIGHTS
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]
    assert sparsity == pytest.approx([0.4152, 0.4152, 0.6580, 0.6580, 0.8, 0.8], abs=1e-4)
    assert unchanged(runs[1].model, snapshot(pruned))  # same seed, same weights
    assert unchanged(model, before)


def test_iterative_with_a_structured_pruner_removes_the_units_in_rounds() -> None:
    pruned, _, _ = schedules.iterative(
        net(), "magnitude", "structured", 0.5, data=dataset(), rounds=2, progress=False
    )
    widths = [layer.out_features for layer in pruneplug.prunable_layers(pruned).values()]
    assert widths == [8, 8, 3]  # 16 -> 11 -> 8 hidden units each; the classes stay


def test_gradual_follows_agp_and_reaches_the_target() -> None:
    model, data = net(), dataset()
    seen: list[tuple[int, float]] = []  # the caller's hook runs before that epoch's prune
    pruned, history, sparsity = schedules.gradual(
        model,
        "magnitude",
        "unstructured",
        0.6,
        data=data,
        epochs=6,
        steps=3,
        every=2,
        batch_size=32,
        on_epoch_end=lambda epoch, m: seen.append((epoch, metrics.global_sparsity(m))),
        progress=False,
    )
    s1, s2 = schedules.agp_sparsity(1, 3, 0.6), schedules.agp_sparsity(2, 3, 0.6)
    assert sparsity == pytest.approx([s1, s1, s2, s2, 0.6, 0.6])
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6]
    assert [s for _, s in seen] == pytest.approx(sparsity, abs=1 / N_WEIGHTS)
    assert len(history) == 6
    assert metrics.global_sparsity(pruned) == round(0.6 * N_WEIGHTS) / N_WEIGHTS
    with pytest.raises(ValueError, match="leaves no epoch"):
        schedules.gradual(
            model, "magnitude", "unstructured", 0.6, data=data, epochs=4, steps=3, every=2
        )
    with pytest.raises(ValueError, match="needs a mask"):
        schedules.gradual(model, "magnitude", "structured", 0.5, data=data, epochs=2, steps=1)


def test_a_failure_during_training_leaves_the_input_model_alone() -> None:
    model = net()
    before = snapshot(model)

    def broken(model: nn.Module, inputs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        schedules.gradual(
            model,
            "magnitude",
            "unstructured",
            0.5,
            data=dataset(),
            epochs=2,
            steps=2,
            penalty=broken,
            progress=False,
        )
    assert unchanged(model, before)
    assert not hasattr(model[0], "weight_mask")


def classifier_with_known_breaking_step() -> tuple[nn.Module, TensorDataset]:
    """A 4 -> 2 linear classifier: six tiny weights that do not matter and two that do.

    Magnitudes sorted: 0, 0, 1e-3, 2e-3, 3e-3, 4e-3 (irrelevant), then 4 and 5. Pruning 1/8 of
    the weights per step removes the irrelevant ones at steps 1-6 (sparsity 0.75, accuracy
    unchanged); step 7 (0.875) removes the 4, which decides class 1.
    """
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[5.0, 0.0, 1e-3, 2e-3], [0.0, 4.0, 3e-3, 4e-3]]))
    x = torch.randn(400, 4, generator=torch.Generator().manual_seed(0))
    x = x[(5 * x[:, 0] - 4 * x[:, 1]).abs() > 0.5]  # a margin no tiny weight can cross
    return model, TensorDataset(x, model(x).argmax(1).detach())


def test_heuristic_stops_at_the_breaking_step_and_rolls_it_back() -> None:
    model, val = classifier_with_known_breaking_step()
    before = snapshot(model)
    result = schedules.heuristic(
        model,
        "magnitude",
        "unstructured",
        val_data=val,
        step=0.125,
        tolerance=0.05,
        progress=False,
    )
    assert result.dense_accuracy == 1.0
    assert result.amounts == pytest.approx([0.125 * k for k in range(1, 8)])
    assert result.accuracies[:6] == [1.0] * 6 and result.accuracies[6] < 0.95
    assert result.amount == 0.75
    assert "rolled back" in result.stopped_because
    assert result.model.weight_mask.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert unchanged(model, before)
    result.plot(tolerance=0.05)


def test_heuristic_reports_reaching_max_amount() -> None:
    model, val = classifier_with_known_breaking_step()
    result = schedules.heuristic(
        model,
        "magnitude",
        "unstructured",
        val_data=val,
        step=0.5,
        max_amount=0.75,
        progress=False,
    )
    assert result.amounts == [0.5, 0.75] and result.amount == 0.75
    assert result.stopped_because.startswith("reached max_amount=0.75")


def test_heuristic_prunes_on_from_the_last_accepted_model() -> None:
    result = schedules.heuristic(
        net(),
        "magnitude",
        "structured",
        val_data=dataset(),
        step=0.25,
        max_amount=0.75,
        tolerance=1.0,
        progress=False,
    )
    assert result.amounts == [0.25, 0.5, 0.75]
    widths = [layer.out_features for layer in pruneplug.prunable_layers(result.model).values()]
    assert widths == [4, 4, 3]  # 16 -> 12 -> 8 -> 4 hidden units


def test_sensitivity_scan_leaves_the_model_alone_and_gives_one_curve_per_layer() -> None:
    model, val = classifier_with_known_breaking_step()
    wide = nn.Sequential(model, nn.Linear(2, 2))
    with torch.no_grad():
        wide[1].weight.copy_(torch.eye(2))
        wide[1].bias.zero_()
    before = snapshot(wide)
    scan = schedules.sensitivity_scan(
        wide, amounts=(0.25, 0.5, 0.75, 0.875), data=val, progress=False
    )
    assert unchanged(wide, before)
    assert list(scan.accuracy) == ["0", "1"] and scan.amounts == [0.25, 0.5, 0.75, 0.875]
    assert scan.dense_accuracy == 1.0
    assert scan.accuracy["0"][:3] == [1.0] * 3 and scan.accuracy["0"][3] < 0.95
    assert scan.accuracy["1"][:2] == [1.0] * 2  # the identity's zeros go first
    assert scan.tolerable(0.01)["0"] == 0.75
    assert len(scan.plot().lines) == 3
    only = schedules.sensitivity_scan(wide, ["1"], (0.5,), data=val, progress=False)
    assert list(only.accuracy) == ["1"]
    with pytest.raises(ValueError, match=r"cannot scan layers \['2'\]"):
        schedules.sensitivity_scan(wide, ["2"], data=val)


# --------------------------------------------------------------------------- recipe and P1


def test_recipe_prunes_a_copy_to_the_target() -> None:
    model, data = net(), dataset()
    before = snapshot(model)
    pruned, history, sparsity = schedules.recipe_high_sparsity(
        model, 0.9, data=data, epochs=5, progress=False
    )
    assert unchanged(model, before)
    assert metrics.global_sparsity(pruned) == round(0.9 * N_WEIGHTS) / N_WEIGHTS
    assert len(history) == 5 and sparsity[-1] == 0.9
    assert history["lr"][-1] < history["lr"][0]  # cosine


def test_p1_quick_prints_the_table(capsys: pytest.CaptureFixture) -> None:
    pruning_unstructured.run(quick=True)
    out = capsys.readouterr().out
    assert out.startswith("P1  unstructured pruning")
    header = next(line for line in out.splitlines() if line.startswith("sparsity"))
    assert header.split() == [
        "sparsity",
        "anchor",
        "one-shot",
        "anchor",
        "AGP",
        "ours",
        "target",
        "met",
    ]
    rows = [line.split() for line in out.splitlines() if line.strip().endswith(("yes", "NO"))]
    assert [r[0] for r in rows] == ["90%", "95%", "98%", "99%"]
    assert all(0 <= float(v) <= 100 for r in rows for v in r[1:4])
    assert "train 1,200 / val 200 / test 397" in out
