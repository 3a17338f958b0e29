"""The registry: built-ins through entry points, lookup errors, live registration."""

import pytest
import torch
from torch import nn

import pruneplug
from pruneplug import Param, Scorer, Scores, UnknownPluginError
from pruneplug.registry import Registry


class Ones(Scorer):
    name = "ones"
    description = "every weight scores 1"
    params = (Param("value", float, 1.0, low=0, high=10, help="the score"),)

    def score(self, model, batches, loss_fn):
        layers = pruneplug.prunable_layers(model)
        return Scores(
            weight={n: torch.full_like(m.weight, self.config["value"]) for n, m in layers.items()}
        )


@pytest.fixture
def fresh_registry():
    yield pruneplug.reload_plugins()
    pruneplug.reload_plugins()


def test_builtins_come_from_the_pruneplug_distribution():
    entries = {(e.kind, e.name): e for e in Registry().entries()}
    for key in [("scorer", "magnitude"), ("pruner", "unstructured"), ("augmenter", "hflip")]:
        assert entries[key].provider == "pruneplug"
        assert entries[key].version == pruneplug.__version__


def test_unknown_name_lists_available_names():
    with pytest.raises(
        UnknownPluginError, match="no scorer called 'tayler'; available: .*magnitude"
    ):
        pruneplug.get_scorer("tayler")


def test_unknown_kind_is_named():
    with pytest.raises(
        ValueError, match="unknown plugin kind 'scorers'; kinds are: scorer, pruner"
    ):
        Registry(entry_points=False).names("scorers")


def test_live_registration_and_rebuild(fresh_registry):
    pruneplug.register(Ones)
    scorer = pruneplug.get_scorer("ones", value=2)
    model = nn.Linear(3, 2)
    assert scorer(model).weight[""].eq(2).all()
    assert pruneplug.get_registry().entry("scorer", "ones").provider == "live"
    pruneplug.reload_plugins()
    with pytest.raises(UnknownPluginError):
        pruneplug.get_scorer("ones")


def test_registering_a_name_again_from_the_same_provider_replaces_it(fresh_registry):
    pruneplug.register(Ones)
    Twos = type("Ones", (Ones,), {"description": "replaced"})
    pruneplug.register(Twos)
    assert pruneplug.get_registry().entry("scorer", "ones").cls is Twos


def test_register_refuses_non_plugins(fresh_registry):
    with pytest.raises(TypeError, match="cannot register"):
        pruneplug.register(int)
    Nameless = type("Nameless", (Ones,), {"name": ""})
    with pytest.raises(TypeError, match="identifier-like"):
        pruneplug.register(Nameless)


def test_disabled_by_registered_name():
    assert "magnitude" not in Registry(disabled=["magnitude"]).names("scorer")
