"""Controls are generated from declared parameters; explorers recompute on every change."""

import copy

import ipywidgets as w
import pruneplug_plugins.magnitude
import pruneplug_plugins.structured
import pruneplug_plugins.unstructured
import pytest
import torch
from torch import nn

from pruneplug import (
    Param,
    Scorer,
    Scores,
    data,
    engine,
    hookimpl,
    models,
    prunable_layers,
    widgets,
)
from pruneplug.engine import History
from pruneplug.registry import Registry


class Declared:
    params = (
        Param("amount", float, 0.25, low=0.0, high=0.5, help="fraction"),
        Param("k", int, 3, low=1, high=9),
        Param("mode", str, "a", choices=("a", "b")),
        Param("fast", bool, True),
        Param("scale", float, 1.5),
        Param("label", str, "x"),
    )


def test_controls_follow_declarations():
    made = widgets.controls(Declared)
    assert isinstance(made["amount"], w.FloatSlider)
    assert (made["amount"].min, made["amount"].max, made["amount"].value) == (0.0, 0.5, 0.25)
    assert made["amount"].tooltip == "fraction"
    assert isinstance(made["k"], w.IntSlider) and made["k"].max == 9
    assert isinstance(made["mode"], w.Dropdown) and made["mode"].options == ("a", "b")
    assert isinstance(made["fast"], w.Checkbox) and made["fast"].value is True
    assert isinstance(made["scale"], w.FloatText) and isinstance(made["label"], w.Text)
    made["k"].value = 7
    assert widgets.values(made) == {
        "amount": 0.25,
        "k": 7,
        "mode": "a",
        "fast": True,
        "scale": 1.5,
        "label": "x",
    }


def test_float_sliders_show_the_digits_their_step_changes():
    tiny = widgets.control(Param("lam", float, 3e-4, low=0.0, high=2e-3, help="L1 strength"))
    assert tiny.readout_format == ".5f"  # 0.00030, not 0.00
    assert widgets.control(Param("deg", float, 15.0, low=0.0, high=180.0)).readout_format == ".2f"


def test_controls_by_registered_name():
    made = widgets.controls("unstructured", kind="pruner")
    assert made["scope"].options == ("local", "global") and made["scope"].value == "global"
    with pytest.raises(ValueError, match="give kind="):
        widgets.controls("unstructured")


# --------------------------------------------------------------------------- explorers


class Negated(Scorer):
    """-|w|: ranks every weight in the opposite order to magnitude."""

    name = "negated"
    description = "minus the magnitude"

    def score(self, model, batches, loss_fn):
        layers = prunable_layers(model)
        return Scores(weight={n: -m.weight.detach().abs() for n, m in layers.items()})


@pytest.fixture
def registry(monkeypatch):
    """A registry with exactly the plugins these tests use (no entry points)."""
    reg = Registry(entry_points=False)
    for module in (
        pruneplug_plugins.magnitude,
        pruneplug_plugins.unstructured,
        pruneplug_plugins.structured,
    ):
        reg.register_plugin(module)
    reg.register_plugin(type("P", (), {"register_scorers": _hook(Negated)})(), name="negated")
    monkeypatch.setattr(widgets, "get_registry", lambda: reg)
    return reg


def _hook(cls):
    @hookimpl
    def register_scorers(register):
        register(cls)

    return staticmethod(register_scorers)


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


@pytest.fixture(scope="module")
def trained(digits):
    model = models.mlp()
    engine.train(model, digits.train, epochs=3, lr=0.1, progress=False)
    return model


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


def test_pruning_explorer_amount_and_scope(registry, digits, trained):
    before = weights(trained)
    explorer = widgets.PruningExplorer(trained, digits.test, amount=0.5)
    assert explorer.result["dense accuracy"] == engine.evaluate(trained, digits.test)["accuracy"]
    explorer.pruner.controls["scope"].value = "local"
    assert [explorer.result[f"sparsity {n}"] for n in ("fc1", "fc2", "fc3")] == [0.5] * 3
    image = explorer.image.value
    explorer.amount.value = 0.9
    sizes = {"fc1": 64 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    removed = sum(round(0.9 * n) for n in sizes.values())
    assert explorer.result["non-zero"] == 50_610 - removed
    assert explorer.result["MACs"] == explorer.result["dense MACs"] == 50_200  # zeros still cost
    assert explorer.result["accuracy"] == engine.evaluate(explorer.pruned, digits.test)["accuracy"]
    assert explorer.image.value != image and "0.9" in explorer.table.value
    assert all(torch.equal(a, b) for a, b in zip(before, weights(trained), strict=True))
    assert not hasattr(trained.fc1, "weight_mask")


def test_pruning_explorer_structured_and_masks_view(registry, digits, trained):
    explorer = widgets.PruningExplorer(trained, digits.test, amount=0.5)
    explorer.pruner.dropdown.value = "structured"
    result = explorer.result
    # 300 -> 150 and 100 -> 50 neurons; the classifier keeps its 10 outputs
    assert result["MACs"] == 64 * 150 + 150 * 50 + 50 * 10
    assert result["parameters"] == (64 + 1) * 150 + (150 + 1) * 50 + (50 + 1) * 10
    assert (result["sparsity fc1"], result["sparsity fc2"], result["sparsity fc3"]) == (
        0.5,
        0.75,
        0.5,
    )
    image = explorer.image.value
    explorer.view.value = "masks"
    assert explorer.result == result and explorer.image.value != image


def test_pruning_explorer_scores_once_per_scorer(registry, digits, trained):
    calls = []

    class Counting(Negated):
        name = "counting"

        def score(self, model, batches, loss_fn):
            calls.append(1)
            return super().score(model, batches, loss_fn)

    reg_hook = type("C", (), {"register_scorers": _hook(Counting)})()
    registry.register_plugin(reg_hook, name="counting")
    explorer = widgets.PruningExplorer(trained, digits.test, scorer="counting")
    for amount in (0.2, 0.4, 0.6):
        explorer.amount.value = amount
    assert len(calls) == 1
    explorer.scorer.dropdown.value = "magnitude"
    explorer.scorer.dropdown.value = "counting"
    assert len(calls) == 1


def test_picker_refuses_a_name_not_offered(registry, digits, trained):
    with pytest.raises(ValueError, match="'taylor' is not among those offered: magnitude"):
        widgets.PruningExplorer(trained, digits.test, scorers=["magnitude"], scorer="taylor")


def test_ranking_explorer_agreement(registry, trained):
    explorer = widgets.RankingExplorer(trained, first="magnitude", second="negated", amount=0.5)
    assert explorer.result["items"] == 64 * 300
    assert explorer.result["spearman"] == pytest.approx(-1.0)
    assert explorer.result["kendall"] == pytest.approx(-1.0)
    assert explorer.result["pruned-set overlap"] == 0.0
    explorer.second.dropdown.value = "magnitude"
    assert explorer.result["spearman"] == pytest.approx(1.0)
    assert explorer.result["pruned-set overlap"] == 1.0
    explorer.layer.value = "fc2"
    assert (explorer.result["layer"], explorer.result["items"]) == ("fc2", 300 * 100)
    explorer.granularity.value = "unit"
    assert (explorer.result["compared"], explorer.result["items"]) == ("unit", 100)


def test_pruned_overlap_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([1.0, 4.0, 2.0, 3.0])
    assert widgets.pruned_overlap(a, b, 0.5) == 0.5  # lowest two: {0, 1} and {0, 2}


def test_sensitivity_viewer_tolerance(registry, digits, trained):
    viewer = widgets.SensitivityViewer(trained, digits.val, amounts=(0.0, 0.5, 0.99), tolerance=0.0)
    dense = viewer.dense_accuracy
    assert all(curve[0] == dense for curve in viewer.curves.values())
    hand = copy.deepcopy(trained)
    nn.utils.prune.l1_unstructured(hand.fc1, "weight", amount=0.99)
    assert viewer.curves["fc1"][2] == engine.evaluate(hand, digits.val)["accuracy"]
    strict = viewer.result
    viewer.tolerance.value = 20.0
    loose = viewer.result
    for name in ("fc1", "fc2", "fc3"):
        key = f"max amount {name}"
        ok = [
            a
            for a, acc in zip((0.0, 0.5, 0.99), viewer.curves[name], strict=True)
            if acc >= dense - 0.2
        ]
        assert loose[key] == max(ok) >= strict[key]


def test_training_curves_train_once_per_setting():
    calls = []

    def run(lr, optimizer):
        calls.append((lr, optimizer))
        rows = [
            {
                "epoch": e,
                "train_loss": 1 / (e * lr),
                "train_accuracy": 0.5,
                "val_loss": None,
                "val_accuracy": min(1.0, e * lr),
                "lr": lr,
            }
            for e in (1, 2, 3)
        ]
        return History(rows), {"sparsity": 0.5}

    curves = widgets.TrainingCurves(
        run,
        [
            Param("lr", float, 0.1, low=0.1, high=0.3),
            Param("optimizer", str, "sgd", choices=("sgd", "adam")),
        ],
    )
    assert curves.result == {
        "lr": 0.1,
        "optimizer": "sgd",
        "final val_accuracy": pytest.approx(0.3),
        "sparsity": 0.5,
    }
    assert curves.controls["lr"].continuous_update is False
    curves.controls["lr"].value = 0.3
    assert curves.result["final val_accuracy"] == pytest.approx(0.9)
    curves.controls["lr"].value = 0.1
    assert calls == [(0.1, "sgd"), (0.3, "sgd")]
    assert curves.history["val_accuracy"] == [0.1, 0.2, pytest.approx(0.3)]


def test_explorer_text_repr_is_stable(registry, digits, trained):
    explorer = widgets.PruningExplorer(trained, digits.test)
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == "PruningExplorer (interactive: run in Jupyter)"
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert explorer.rounded(1)["dense accuracy"] == round(explorer.result["dense accuracy"], 1)


def test_refused_choice_is_shown_not_raised(registry, digits, trained):
    class UnitsOnly(Negated):
        name = "units_only"

        def score(self, model, batches, loss_fn):
            return Scores(
                unit={n: m.weight.detach().abs().sum(1) for n, m in prunable_layers(model).items()}
            )

    registry.register_plugin(type("U", (), {"register_scorers": _hook(UnitsOnly)})(), name="u")
    explorer = widgets.PruningExplorer(trained, digits.test)
    image = explorer.image.value
    explorer.scorer.dropdown.value = "units_only"
    assert "needs per-weight scores" in explorer.result["error"]
    assert "needs per-weight scores" in explorer.table.value and explorer.image.value == image
    explorer.pruner.dropdown.value = "structured"
    assert "error" not in explorer.result and explorer.result["MACs"] < 50_200
