"""The example third-party distribution ``plugins/pruneplug-fpgm``, installed for real.

The test command installs it (``pip install --no-deps -e plugins/pruneplug-fpgm``, see the
Makefile); these tests check that pruneplug finds it through its entry point, lists it with its
distribution name and version, and that its scorer and augmenter work in a structured pruning
run and in an augmentation pipeline used for training.
"""

import importlib.metadata

import pytest
import torch
from torch.utils.data import Subset

import pruneplug
from pruneplug import data, engine, models
from pruneplug.augment import Compose
from pruneplug.registry import Registry

DIST = "pruneplug-fpgm"


@pytest.fixture(scope="module")
def dist():
    try:
        return importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(
            f"the example plugin {DIST} is not installed: run "
            f"`.venv/bin/pip install --no-deps -e plugins/{DIST}` (make test does)"
        )


@pytest.fixture(scope="module")
def digits():
    return data.load_digits(seed=0)


def test_it_is_a_separate_distribution_with_its_own_entry_point(dist):
    assert (dist.metadata["Name"], dist.version) == (DIST, "0.1.0")
    assert dist.requires == ["pruneplug"]
    (ep,) = dist.entry_points.select(group="pruneplug")
    assert (ep.name, ep.value) == ("fpgm", "pruneplug_fpgm")
    builtins = importlib.metadata.distribution("pruneplug").entry_points.select(group="pruneplug")
    assert not [e for e in builtins if "fpgm" in e.value]


def test_discovered_and_listed_with_its_distribution_name_and_version(dist):
    registry = Registry()
    scorer, cutout = registry.entry("scorer", "fpgm"), registry.entry("augmenter", "cutout")
    for entry in scorer, cutout:
        assert (entry.provider, entry.version, entry.plugin) == (DIST, dist.version, "fpgm")
        assert entry.cls.__module__.startswith("pruneplug_fpgm.")
    assert cutout.to_json()["provider"] == DIST and cutout.to_json()["version"] == "0.1.0"
    assert [p["name"] for p in cutout.to_json()["params"]] == ["size", "fill", "p"]
    assert not [f for f in registry.failures if f.provider == DIST]


def test_disabled_by_its_distribution_name(dist):
    registry = Registry(disabled=[DIST])
    assert "fpgm" not in registry.names("scorer") and "cutout" not in registry.names("augmenter")


def test_fpgm_drives_a_structured_pruning_run(dist, digits):
    if "structured" not in pruneplug.get_registry().names("pruner"):
        pytest.skip("the built-in 'structured' pruner is not registered (plugins/structured/)")
    model = models.cnn(widths=(8, 16, 32))
    engine.train(model, digits.train, epochs=2, lr=0.05, progress=False)
    scores = pruneplug.get_scorer("fpgm")(model)
    assert set(scores.unit) == {"block1.conv", "block2.conv", "block3.conv", "classifier"}
    pruned = pruneplug.get_pruner("structured")(model, scores, amount=0.5)
    assert [pruned.get_submodule(f"block{i}.conv").out_channels for i in (1, 2, 3)] == [4, 8, 16]
    # the filters kept in the first block are the four farthest from the others (FPGM)
    kept = scores.unit["block1.conv"].topk(4).indices.sort().values
    assert torch.equal(pruned.block1.conv.weight, model.block1.conv.weight[kept])
    assert pruned.classifier.out_features == 10
    before = engine.evaluate(pruned, digits.val)["accuracy"]
    engine.fine_tune(pruned, digits.train, epochs=2, progress=False)
    assert engine.evaluate(pruned, digits.val)["accuracy"] > before


def test_cutout_in_an_augmentation_pipeline(dist, digits):
    flip, cutout = pruneplug.get_augmenter("hflip", p=1.0), pruneplug.get_augmenter("cutout")
    images = digits.train.tensors[0][:32]
    piped = Compose([flip, cutout])(images, generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(0)  # the stages one by one draw the same
    by_hand = cutout(flip(images, generator=generator), generator=generator)
    assert torch.equal(piped, by_hand)
    holes = (piped == 0) & (images.flip(-1) != 0)
    assert holes.flatten(1).sum(1).max() <= 16 and holes.any()
    model = models.mlp(hidden=(32,))
    history = engine.train(
        model,
        Subset(digits.train, range(256)),
        epochs=2,
        progress=False,
        augment=Compose([pruneplug.get_augmenter("cutout", size=3, p=0.5), flip]),
    )
    assert len(history["train_loss"]) == 2 and history["train_loss"][1] < history["train_loss"][0]
