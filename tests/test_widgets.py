"""Controls are generated from declared parameters; explorers recompute on every change."""

import base64
import copy
import io
import math

import ipywidgets as w
import matplotlib.image
import pruneplug_plugins.geometric
import pruneplug_plugins.magnitude
import pruneplug_plugins.n_m
import pruneplug_plugins.structured
import pruneplug_plugins.unstructured
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import pruneplug
import pruneplug.registry
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


def test_the_gallery_starts_on_an_offered_augmenter_and_checks_its_columns(registry):
    images = torch.rand(4, 1, 8, 8)
    reg = pruneplug.get_registry()
    reg.register_plugin(pruneplug_plugins.geometric)
    gallery = widgets.AugmentationGallery(images, augmenters=["rotation"], columns=4)
    assert gallery.augmenter.dropdown.value == "rotation"
    with pytest.raises(ValueError, match="columns=0: give a whole number >= 1"):
        widgets.AugmentationGallery(images, augmenters=["rotation"], columns=0)
    with pytest.raises(ValueError, match="keep=0: give how many runs to overlay"):
        rate = Param("lr", float, 0.1, low=0.01, high=1.0)
        widgets.TrainingCurves(lambda lr: History(), [rate], keep=0)


def test_an_integer_with_more_values_than_a_slider_shows_gets_a_bounded_box():
    seed = Param("seed", int, 0, low=0, high=2**63 - 1, help="seed")
    wide = widgets.controls(type("Seeded", (), {"params": (seed,)}))["seed"]
    assert isinstance(wide, w.BoundedIntText) and (wide.min, wide.max) == (0, 2**63 - 1)
    wide.value = 12345
    assert wide.value == 12345


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
    # the process-wide registry: every widget module and get_scorer/get_pruner read it
    monkeypatch.setattr(pruneplug.registry, "_registry", reg)
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


def test_a_pruner_that_takes_no_amount_is_used_without_one(registry, digits, trained):
    reg = pruneplug.get_registry()
    reg.register_plugin(pruneplug_plugins.n_m)
    explorer = widgets.PruningExplorer(trained, digits.test, amount=0.5)
    explorer.pruner.dropdown.value = "n_m"  # 2:4 by its own parameters
    assert explorer.amount.disabled and explorer.result["sparsity fc1"] == 0.5
    explorer.pruner.dropdown.value = "unstructured"
    assert not explorer.amount.disabled
    viewer = widgets.SensitivityViewer(trained, digits.val, amounts=(0.5,))
    assert "n_m" in reg.names("pruner") and "n_m" not in viewer.pruner.dropdown.options


def test_sensitivity_viewer_sets_apart_the_layers_the_pruner_cannot_change(
    registry, digits, trained
):
    viewer = widgets.SensitivityViewer(
        trained, digits.val, pruners=["structured"], amounts=(0.5, 0.9)
    )
    assert list(viewer.curves) == ["fc1", "fc2"]  # the classifier keeps its 10 outputs
    assert viewer.result["left as they were"] == "fc3" and "max amount fc3" not in viewer.result


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


# ------------------------------------------------- every declared default survives a browser


def browser_shows(widget: w.Widget) -> object:
    """The value the browser's slider settles on (and syncs back) for a control's value."""
    if isinstance(widget, w.FloatLogSlider):
        exponent = math.log(widget.value) / math.log(widget.base)
        snapped = widgets.browser_snap(exponent, widget.min, widget.max, widget.step)
        return math.pow(widget.base, snapped)
    if isinstance(widget, (w.FloatSlider, w.IntSlider)):
        return widgets.browser_snap(widget.value, widget.min, widget.max, widget.step)
    if isinstance(widget, (w.FloatRangeSlider, w.IntRangeSlider)):  # each handle snaps alike
        return tuple(
            widgets.browser_snap(v, widget.min, widget.max, widget.step) for v in widget.value
        )
    return widget.value  # text boxes, dropdowns, checkboxes never rewrite what they show


def grid_position(widget: w.Widget) -> float:
    """Steps from the slider's min to its value (a whole number on the grid)."""
    at = widget.value
    if isinstance(widget, w.FloatLogSlider):
        at = math.log(widget.value) / math.log(widget.base)
    return (at - widget.min) / widget.step


def declared_plugins() -> list[tuple[str, str]]:
    registry = pruneplug.get_registry()
    return [(kind, e.name) for kind in KINDS for e in registry.entries(kind)]


KINDS = ("scorer", "pruner", "augmenter")


def test_every_installed_plugin_is_checked():
    names = {name for _, name in declared_plugins()}
    assert {"fpgm", "cutout", "mixup", "fgsm", "shot_noise", "unstructured"} <= names


@pytest.mark.parametrize(("kind", "name"), declared_plugins())
def test_every_control_shows_its_declared_default_exactly(kind, name):
    declared = {p.name: p for p in pruneplug.get_registry().entry(kind, name).cls.params}
    made = widgets.controls(name, kind=kind)
    assert widgets.values(made) == {pname: p.default for pname, p in declared.items()}
    for key, widget in made.items():
        names = key.split(widgets.RANGE_JOIN)
        defaults = tuple(declared[pname].default for pname in names)
        shown = browser_shows(widget)
        assert (shown,) == defaults or shown == defaults, f"{name}.{key}: the browser moves it"
        if isinstance(widget, (w.FloatRangeSlider, w.IntRangeSlider)):
            steps = [(v - widget.min) / widget.step for v in widget.value]
            assert all(abs(k - round(k)) <= 1e-12 * max(1.0, abs(k)) for k in steps), (name, key)
            low, high = declared[names[0]].low, declared[names[0]].high
            assert low <= widget.min <= defaults[0] <= defaults[1] <= widget.max <= high
        if isinstance(widget, (w.FloatSlider, w.FloatLogSlider, w.IntSlider)):
            k = grid_position(widget)
            assert abs(k - round(k)) <= 1e-12 * max(1.0, abs(k)), (name, key, k)
            low, high = widget.min, widget.max
            if isinstance(widget, w.FloatLogSlider):  # min and max are exponents
                low, high = widget.base**low, widget.base**high
            assert declared[key].low <= low <= widget.value <= high <= declared[key].high


def test_a_linear_min_max_pair_gets_one_range_slider():
    made = widgets.controls("gaussian_noise", kind="augmenter")
    sigma = made["sigma_min..sigma_max"]
    assert isinstance(sigma, w.FloatRangeSlider) and sigma.value == (0.02, 0.1)
    assert list(made) == ["sigma_min..sigma_max", "p"] and sigma.tooltip.count(";") == 1
    sigma.value = (0.05, 0.3)
    assert widgets.values(made) == {"sigma_min": 0.05, "sigma_max": 0.3, "p": 0.5}
    picker = widgets.PluginPicker("augmenter", ["gaussian_noise"], "gaussian_noise", print)
    picker.controls["sigma_min..sigma_max"].value = (0.2, 0.2)
    assert picker.create().config["sigma_min"] == picker.create().config["sigma_max"] == 0.2
    kernel = widgets.controls("box_blur", kind="augmenter")["kernel_min..kernel_max"]
    assert isinstance(kernel, w.IntRangeSlider) and (kernel.min, kernel.max) == (1, 31)
    # a log-scale pair keeps a log slider each; so does a pair whose bounds differ
    crop = widgets.controls("resized_crop", kind="augmenter")
    assert isinstance(crop["scale_min..scale_max"], w.FloatRangeSlider)
    assert isinstance(crop["ratio_min"], w.FloatLogSlider) and "ratio_max" in crop
    uneven = (Param("a", float, 0.1, low=0.0, high=1.0, at_most="b"), Param("b", float, 0.5))
    assert widgets.range_control(*uneven) is None and list(widgets.param_controls(uneven)) == [
        "a",
        "b",
    ]
    # a pair no decimal grid holds keeps two controls rather than moving a default
    odd = (
        Param("lo", float, 8 / 255, low=0.0, high=1.0, at_most="hi"),
        Param("hi", float, 0.5, low=0.0, high=1.0),
    )
    assert widgets.range_control(*odd) is None
    assert isinstance(widgets.param_controls(odd)["lo"], w.BoundedFloatText)


def test_the_snap_replays_what_the_browser_did_to_the_old_sliders():
    # step = range / 100 moved these defaults in JupyterLab + Chromium (issue 10)
    assert widgets.browser_snap(0.2, 1e-3, 100.0, (100.0 - 1e-3) / 100) == 0.001  # mixup alpha
    assert widgets.browser_snap(15.0, 0.0, 180.0, 1.8) == pytest.approx(14.4)  # rotation
    assert widgets.browser_snap(8 / 255, 0.0, 1.0, 0.01) == 0.03  # fgsm eps
    assert widgets.browser_snap(0.1, 0.01, 50.0, (50.0 - 0.01) / 100) == 0.01  # blur sigma_min


def test_how_the_moved_defaults_are_now_shown():
    def made(kind, name):
        return widgets.controls(name, kind=kind)

    alpha = made("augmenter", "mixup")["alpha"]
    assert isinstance(alpha, w.FloatLogSlider) and alpha.value == 0.2
    assert alpha.base**alpha.min >= 1e-3 and alpha.base**alpha.max <= 100.0
    assert 50 <= (alpha.max - alpha.min) / alpha.step <= 200
    eps = made("augmenter", "fgsm")["eps"]  # 8/255 is on no decimal grid
    assert isinstance(eps, w.BoundedFloatText) and eps.value == 8 / 255
    assert (eps.min, eps.max) == (0.0, 1.0)
    degrees = made("augmenter", "rotation")["degrees"]
    assert isinstance(degrees, w.FloatSlider) and (degrees.min, degrees.max) == (0.0, 180.0)
    assert degrees.step == 1.0 and degrees.value == 15.0
    ratio = made("augmenter", "resized_crop")
    assert isinstance(ratio["ratio_max"], w.FloatLogSlider) and ratio["ratio_max"].value == 4 / 3


def test_one_step_of_a_slider_is_one_grid_step():
    photons = widgets.control(Param("photons", float, 12.0, low=0.1, high=1000.0, log=True))
    exponent = math.log(12.0) / math.log(photons.base)
    nxt = widgets.browser_snap(exponent + photons.step, photons.min, photons.max, photons.step)
    assert photons.base**nxt == pytest.approx(12.0 * photons.base**photons.step, rel=1e-12)
    degrees = widgets.control(Param("deg", float, 15.0, low=0.0, high=180.0))
    assert widgets.browser_snap(15.0 + degrees.step, 0.0, 180.0, degrees.step) == 16.0


def test_grids_refuse_what_they_cannot_hold():
    assert widgets.linear_grid(8 / 255, 0.0, 1.0) is None  # -> a text box
    assert 1 / (1 / 0.9) != 0.9 and widgets.log_grid(0.9, 0.01, 10.0) is None  # no exact unit
    fallback = widgets.control(Param("scale", float, 0.9, low=0.01, high=10.0, log=True))
    assert isinstance(fallback, w.FloatSlider) and (fallback.min, fallback.step) == (0.05, 0.05)
    grid = widgets.log_grid(0.2, 1e-3, 100.0)
    assert grid is not None and grid.shown(0.2) == 0.2 and grid.base == 5.0


def test_explorer_sliders_hold_any_value():
    amount = widgets.value_slider("amount", 0.5, 0.0, 0.99, 0.01)
    assert amount.value == 0.5 and len(amount.options) == 100  # index-based: nothing to snap
    odd = widgets.value_slider("amount", 1 / 3, 0.0, 0.99, 0.01)
    assert odd.value == 1 / 3 and len(odd.options) == 101
    amount.value = 0.9
    assert amount.value == 0.9 and amount.index == 90


# --------------------------------------------------------------- pictures without a kernel


def test_explorer_leaves_a_static_picture(registry, digits, trained):
    explorer = widgets.PruningExplorer(trained, digits.test, amount=0.5)
    bundle = explorer._repr_mimebundle_()
    assert set(bundle) == {
        "text/plain",
        "image/png",
        "application/vnd.jupyter.widget-view+json",
    }
    png = base64.b64decode(bundle["image/png"])
    picture = matplotlib.image.imread(io.BytesIO(png), format="png")
    height, width = picture.shape[:2]
    assert width > 640 and height > 200  # the 8 x 3 in figure at 80 dpi plus the numbers


def test_mask_cells_are_square_and_counts_log_scaled(registry, digits, trained):
    explorer = widgets.PruningExplorer(trained, digits.test, amount=0.5)
    fig = Figure(figsize=(8, 3))
    explorer.draw(fig)
    assert fig.axes[0].get_yscale() == "log"
    explorer.view.value = "masks"
    fig = Figure(figsize=(8, 3))
    explorer.draw(fig)
    assert [ax.get_aspect() for ax in fig.axes] == [1.0, 1.0, 1.0]


def test_gallery_rows_are_labelled(digits):
    images = torch.stack([digits.test[i][0] for i in range(4)]).view(4, 1, 8, 8)
    gallery = widgets.AugmentationGallery(images, augmenters=["hflip"], columns=4)
    fig = Figure()
    gallery.draw(fig)
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels == ["original", "augmented"]


# ---------------------------------------------------------------- a model on the GPU


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
def test_every_explorer_works_with_a_model_on_the_gpu(registry, digits, trained):
    model = copy.deepcopy(trained).cuda()
    batches = [next(iter(torch.utils.data.DataLoader(digits.train, batch_size=64)))]
    explorer = widgets.PruningExplorer(model, digits.test, batches=batches, amount=0.5)
    assert explorer.result["dense accuracy"] == engine.evaluate(trained, digits.test)["accuracy"]
    explorer.view.value = "masks"
    explorer.pruner.dropdown.value = "structured"
    assert "error" not in explorer.result and explorer.image.value
    ranking = widgets.RankingExplorer(model, batches=batches, first="magnitude", second="negated")
    assert ranking.result["spearman"] == pytest.approx(-1.0)
    viewer = widgets.SensitivityViewer(model, digits.val, amounts=(0.0, 0.5))
    assert viewer.curves["fc1"][0] == viewer.dense_accuracy
    images = torch.stack([digits.test[i][0] for i in range(4)]).view(4, 1, 8, 8).cuda()
    gallery = widgets.AugmentationGallery(images, augmenters=["hflip"], columns=4)
    assert gallery.result["samples changed"] >= 1
    assert gallery._repr_mimebundle_()["image/png"]
    curves = widgets.TrainingCurves(
        lambda lr: engine.train(
            copy.deepcopy(model), digits.train, epochs=1, lr=lr, progress=False
        ),
        [Param("lr", float, 0.1, low=0.01, high=1.0)],
    )
    assert curves.result["lr"] == 0.1


def test_an_explorer_without_a_figure_still_leaves_a_static_picture_of_its_numbers():
    class Numbers(widgets.Explorer):
        """Shows its result as a table only (as chapter 11's text explorer shows HTML)."""

        def compute(self):
            return {"changed": 3}

    explorer = Numbers()
    explorer.result = explorer.compute()
    bundle = explorer._repr_mimebundle_()
    png = base64.b64decode(bundle["image/png"])
    assert (
        png.startswith(b"\x89PNG")
        and bundle["text/plain"] == "Numbers (interactive: run in Jupyter)"
    )
