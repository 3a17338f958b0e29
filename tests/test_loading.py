"""Robust plugin loading, with real (broken) distributions installed into a temporary directory.

Each test writes ``<name>-<version>.dist-info/{METADATA, entry_points.txt}`` and the plugin
modules into ``tmp_path``, puts it on ``sys.path`` and builds a :class:`Registry` from the
installed entry points - the built-ins included - exactly as ``import pruneplug`` does.
"""

import importlib
import json
import sys
import textwrap
import warnings

import pytest
from torch import nn

import pruneplug
import pruneplug.registry
from pruneplug import PluginLoadWarning, UnknownPluginError, cli
from pruneplug.registry import Registry

SCORER = """
import torch
from pruneplug import Param, Scorer, Scores, hookimpl, prunable_layers


class {cls}(Scorer):
    name = "{name}"
    description = "every weight scores {value}"
    params = (Param("value", float, {value}, low=0, high=10, help="the score"),)

    def score(self, model, batches, loss_fn):
        v = self.config["value"]
        return Scores(weight={{n: torch.full_like(m.weight, v)
                               for n, m in prunable_layers(model).items()}})
"""

HOOK = """

@hookimpl
def register_scorers(register):
    register({cls})
"""


def scorer_module(name, value=1.0, cls="Constant", hook=True):
    """Source of a module defining a constant scorer ``name`` (and its hook)."""
    code = SCORER.format(cls=cls, name=name, value=value)
    return code + (HOOK.format(cls=cls) if hook else "")


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(dist, version, {entry point: target}, {module: source})`` writes a real
    distribution onto ``sys.path``. The process-wide registry is swapped for a fresh one for the
    test and restored afterwards; the test's modules are dropped from ``sys.modules``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(pruneplug.registry, "_registry", None)
    monkeypatch.delenv(pruneplug.registry.DISABLE_ENV, raising=False)

    def write(dist, version, entry_points, modules):
        info = tmp_path / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
        (info / "entry_points.txt").write_text(f"[pruneplug]\n{lines}")
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        importlib.invalidate_caches()

    yield write
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", "")).startswith(str(tmp_path)):
            del sys.modules[name]


def load(match):
    """Build a Registry; return it and the PluginLoadWarnings whose message contains ``match``."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        registry = Registry()
    warned = [w for w in record if issubclass(w.category, PluginLoadWarning)]
    return registry, [str(w.message) for w in warned if match in str(w.message)]


def usable(registry, name, value):
    """The scorer ``name`` works and gives every weight ``value``."""
    scores = registry.create("scorer", name)(nn.Linear(2, 2))
    return bool(scores.weight[""].eq(value).all())


# --------------------------------------------------------------------------- (a) import fails


@pytest.mark.parametrize(
    "target, source, reason",
    [
        ("broken_mod", "import a_module_nobody_installed\n", "ModuleNotFoundError"),
        ("broken_mod", "raise RuntimeError('no GPU found')\n", "RuntimeError: no GPU found"),
        ("broken_mod", "def broken(:\n", "SyntaxError"),
        ("broken_mod:missing", "x = 1\n", "AttributeError"),
        (
            "broken_mod",
            "from pruneplug import Param\nP = Param('p', float, 2.0, low=0, high=1)\n",
            "ValueError: Param 'p': its default 2.0 is out of range",
        ),
        (
            "broken_mod",
            "from pruneplug import hookimpl\n@hookimpl\ndef register_scorers(reg):\n    pass\n",
            "{'reg'} are declared in the hookimpl but can not be found in the hookspec; a hook "
            "takes one argument, named register: def register_scorers(register)",
        ),
    ],
    ids=[
        "missing-dependency",
        "raises",
        "syntax-error",
        "missing-attribute",
        "bad-param",
        "argument-name",
    ],
)
def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(
    install, target, source, reason
):
    install("brokenpkg", "1.2", {"broken": target}, {"broken_mod": source})
    install("goodpkg", "0.3", {"good": "good_mod"}, {"good_mod": scorer_module("good_one", 2.0)})
    registry, warned = load("brokenpkg")
    assert len(warned) == 1
    assert warned[0].startswith("pruneplug plugin 'broken' from brokenpkg 1.2 was skipped: ")
    assert reason in warned[0] and "PRUNEPLUG_DISABLE=broken" in warned[0]
    (failure,) = [f for f in registry.failures if f.provider == "brokenpkg"]
    assert (failure.plugin, failure.version) == ("broken", "1.2") and reason in failure.reason
    assert usable(registry, "good_one", 2.0)
    assert registry.entry("scorer", "good_one").provider == "goodpkg"
    assert registry.entry("scorer", "magnitude").provider == "pruneplug"


# --------------------------------------------------------------------------- (b) a hook raises


def test_a_hook_that_raises_is_reported_and_the_plugins_other_hooks_still_work(install):
    source = scorer_module("half_done", hook=False) + textwrap.dedent(
        """
        from pruneplug import ImageAugmenter


        class Same(ImageAugmenter):
            name = "same"
            description = "returns the images"

            def apply(self, images, params):
                return images.clone()


        @hookimpl
        def register_scorers(register):
            register(Constant)
            raise RuntimeError("boom")


        @hookimpl
        def register_augmenters(register):
            register(Same)
        """
    )
    install("hookpkg", "2.0", {"hooky": "hooky_mod"}, {"hooky_mod": source})
    registry, warned = load("hookpkg")
    assert warned == [
        "pruneplug plugin 'hooky' from hookpkg 2.0 was skipped: hook register_scorers raised "
        "RuntimeError: boom. Fix or uninstall it, or set PRUNEPLUG_DISABLE=hooky to silence this."
    ]
    assert "half_done" not in registry.names("scorer")  # nothing half-registered
    assert registry.entry("augmenter", "same").provider == "hookpkg"
    assert [f.reason for f in registry.failures if f.provider == "hookpkg"] == [
        "hook register_scorers raised RuntimeError: boom"
    ]


# --------------------------------------------------------------------------- (c) junk, (d) returns


def test_junk_registrations_are_reported_one_by_one_and_valid_ones_kept(install):
    source = scorer_module("valid", hook=False) + textwrap.dedent(
        """
        from pruneplug import ImageAugmenter


        class Nameless(Constant):
            name = ""


        class Undescribed(Constant):
            name = "undescribed"
            description = ""


        class Flip(ImageAugmenter):
            name = "flip"
            description = "an augmenter registered as a scorer"


        @hookimpl
        def register_scorers(register):
            register(42)
            register(Constant())
            register(Nameless)
            register(Undescribed)
            register(Flip)
            register(Constant)
        """
    )
    install("junkpkg", "0.1", {"junk": "junk_mod"}, {"junk_mod": source})
    registry, warned = load("junkpkg")
    reasons = [f.reason for f in registry.failures if f.provider == "junkpkg"]
    assert len(warned) == len(reasons) == 5
    assert all(
        w.startswith("pruneplug plugin 'junk' from junkpkg 0.1 loaded, but one of its "
                     "registrations was skipped: hook register_scorers: ")
        for w in warned
    )  # fmt: skip
    assert reasons[0] == "hook register_scorers: registered 42, which is not a subclass of Scorer"
    assert "registered Constant(value=1.0), which is not a subclass of Scorer" in reasons[1]
    assert "Nameless.name='' must be an identifier-like string" in reasons[2]
    assert "Undescribed needs a one-line description" in reasons[3]
    assert "registered <class 'junk_mod.Flip'>, which is not a subclass of Scorer" in reasons[4]
    assert usable(registry, "valid", 1.0)
    assert "flip" not in registry.names("augmenter")


def test_a_hook_that_returns_a_value_is_reported(install):
    source = scorer_module("returned", hook=False) + textwrap.dedent(
        """
        @hookimpl
        def register_scorers(register):
            return [Constant]
        """
    )
    install("returnpkg", "1.0", {"returner": "return_mod"}, {"return_mod": source})
    registry, warned = load("returnpkg")
    assert len(warned) == 1
    assert (
        "hook register_scorers returned [<class 'return_mod.Constant'>]; call register() "
        in (warned[0])
    )
    assert "returned" not in registry.names("scorer")


# --------------------------------------------------------------------------- (e) duplicates


def test_duplicate_names_from_two_distributions_are_both_kept_qualified(install):
    install("alpha-plugins", "1.0", {"alpha": "alpha_mod"}, {"alpha_mod": scorer_module("dup", 1)})
    install("beta-plugins", "2.0", {"beta": "beta_mod"}, {"beta_mod": scorer_module("dup", 2)})
    registry = Registry()
    assert {"alpha-plugins:dup", "beta-plugins:dup"} <= set(registry.names("scorer"))
    assert "dup" not in registry.names("scorer")
    with pytest.raises(UnknownPluginError) as error:
        registry.entry("scorer", "dup")
    assert str(error.value) == (
        "scorer 'dup' is registered by several providers; ask for 'alpha-plugins:dup' or "
        "'beta-plugins:dup', or disable one with PRUNEPLUG_DISABLE"
    )
    assert usable(registry, "alpha-plugins:dup", 1.0)
    assert usable(registry, "beta-plugins:dup", 2.0)
    assert registry.entry("scorer", "beta-plugins:dup").version == "2.0"


def test_the_command_lists_and_describes_shared_names_as_they_are_asked_for(install, capsys):
    install("alpha-plugins", "1.0", {"alpha": "alpha_mod"}, {"alpha_mod": scorer_module("dup", 1)})
    install("beta-plugins", "2.0", {"beta": "beta_mod"}, {"beta_mod": scorer_module("dup", 2)})
    assert cli.main(["plugins", "--kind", "scorer"]) == 0
    names = [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert {"alpha-plugins:dup", "beta-plugins:dup"} <= set(names) and "dup" not in names
    assert cli.main(["plugins", "dup"]) == 0  # ambiguous: every provider's is described
    out = capsys.readouterr().out
    assert "scorer 'alpha-plugins:dup'" in out and "scorer 'beta-plugins:dup'" in out
    assert cli.main(["plugins", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {e["request_name"] for e in listed if e["name"] == "dup"} == {
        "alpha-plugins:dup",
        "beta-plugins:dup",
    }


def test_two_distributions_may_use_the_same_entry_point_name(install, monkeypatch):
    install("alpha-plugins", "1.0", {"plugin": "alpha_mod"}, {"alpha_mod": scorer_module("a", 1)})
    install("beta-plugins", "2.0", {"plugin": "beta_mod"}, {"beta_mod": "import nothing_here\n"})
    registry, warned = load("beta-plugins")
    assert registry.entry("scorer", "a").provider == "alpha-plugins"
    assert len(warned) == 1 and "from beta-plugins 2.0 was skipped" in warned[0]
    (failure,) = [f for f in registry.failures if f.provider == "beta-plugins"]
    assert failure.plugin in ("plugin", "beta-plugins:plugin")  # the later one is qualified
    monkeypatch.setenv("PRUNEPLUG_DISABLE", failure.plugin)  # as the warning advises
    assert load("beta-plugins")[1] == []
    monkeypatch.delenv("PRUNEPLUG_DISABLE")
    install("gamma-plugins", "3.0", {"plugin": "gamma_mod"}, {"gamma_mod": scorer_module("c", 3)})
    registry, _ = load("beta-plugins")
    assert registry.entry("scorer", "a").provider == "alpha-plugins"
    assert registry.entry("scorer", "c").provider == "gamma-plugins"


def test_a_third_party_cannot_change_what_a_built_in_name_means(install):
    install("shadow", "1.0", {"shadow": "shadow_mod"}, {"shadow_mod": scorer_module("magnitude")})
    registry, warned = load("built-in name")
    assert len(warned) == 1 and "ask for 'shadow:magnitude'" in warned[0]
    assert registry.entry("scorer", "magnitude").provider == "pruneplug"
    assert registry.entry("scorer", "pruneplug:magnitude").provider == "pruneplug"
    assert usable(registry, "shadow:magnitude", 1.0)
    names = registry.names("scorer")
    assert "magnitude" in names and "shadow:magnitude" in names
    assert "pruneplug:magnitude" not in names
    # pruneplug's own defaults keep working: the recipe's and the explorers' "magnitude"
    pruneplug.registry._registry = registry
    model = nn.Sequential(nn.Linear(4, 3))
    assert pruneplug.get_scorer("magnitude")(model).weight["0"].equal(model[0].weight.abs())


# --------------------------------------------------------------------------- (f) disabling


@pytest.mark.parametrize(
    "disable",
    ["broken", "brokenpkg", "other, broken ,"],
    ids=["entry-point", "distribution", "list"],
)
def test_a_disabled_broken_plugin_is_neither_loaded_nor_reported(install, monkeypatch, disable):
    install("brokenpkg", "1.2", {"broken": "broken_mod"}, {"broken_mod": "import nothing_here\n"})
    monkeypatch.setenv("PRUNEPLUG_DISABLE", disable)
    registry, warned = load("brokenpkg")
    assert warned == []
    assert not [f for f in registry.failures if f.provider == "brokenpkg"]
    assert "broken_mod" not in sys.modules


def test_disabling_by_registered_name_keeps_the_plugins_other_classes(install, monkeypatch):
    source = scorer_module("kept", cls="Kept", hook=False) + textwrap.dedent(
        """
        class Dropped(Kept):
            name = "dropped"


        @hookimpl
        def register_scorers(register):
            register(Kept)
            register(Dropped)
        """
    )
    install("twopkg", "1.0", {"two": "two_mod"}, {"two_mod": source})
    monkeypatch.setenv("PRUNEPLUG_DISABLE", "dropped")
    registry = Registry()
    assert "kept" in registry.names("scorer") and "dropped" not in registry.names("scorer")
    monkeypatch.setenv("PRUNEPLUG_DISABLE", "magnitude")
    assert "magnitude" not in Registry().names("scorer")


def test_disabling_resolves_a_duplicate(install, monkeypatch):
    install("alpha-plugins", "1.0", {"alpha": "alpha_mod"}, {"alpha_mod": scorer_module("dup", 1)})
    install("beta-plugins", "2.0", {"beta": "beta_mod"}, {"beta_mod": scorer_module("dup", 2)})
    monkeypatch.setenv("PRUNEPLUG_DISABLE", "beta-plugins")
    assert usable(Registry(), "dup", 1.0)


# --------------------------------------------------------------------------- (g) live registration


def constant_class(name, value, description="live"):
    namespace = {}
    exec(SCORER.format(cls="Live", name=name, value=value), namespace)
    cls = namespace["Live"]
    cls.description = description
    return cls


def test_live_registration_replaces_and_survives_only_until_a_rebuild(install):
    first, second = constant_class("live_one", 1.0), constant_class("live_one", 3.0, "again")
    pruneplug.register(first)
    assert pruneplug.get_registry().entry("scorer", "live_one").provider == "live"
    pruneplug.register(second)  # re-running the notebook cell with an edited class
    assert [e.cls for e in pruneplug.get_registry().entries("scorer") if e.name == "live_one"] == [
        second
    ]
    assert bool(pruneplug.get_scorer("live_one")(nn.Linear(2, 2)).weight[""].eq(3).all())
    pruneplug.reload_plugins()
    with pytest.raises(UnknownPluginError):
        pruneplug.get_scorer("live_one")


def test_a_live_class_with_an_installed_name_does_not_silently_override(install):
    install("alpha-plugins", "1.0", {"alpha": "alpha_mod"}, {"alpha_mod": scorer_module("dup", 1)})
    pruneplug.register(constant_class("dup", 5.0))
    with pytest.raises(UnknownPluginError, match="'alpha-plugins:dup' or 'live:dup'"):
        pruneplug.get_scorer("dup")
    assert bool(pruneplug.get_scorer("live:dup")(nn.Linear(2, 2)).weight[""].eq(5).all())


def test_reload_finds_a_distribution_installed_after_the_first_build(install):
    assert "late" not in pruneplug.get_registry().names("scorer")
    install("latepkg", "0.9", {"late": "late_mod"}, {"late_mod": scorer_module("late", 4.0)})
    assert "late" not in pruneplug.get_registry().names("scorer")
    pruneplug.reload_plugins()
    assert usable(pruneplug.get_registry(), "late", 4.0)


# --------------------------------------------------------------------------- (h) unknown names


def test_an_unknown_name_lists_the_available_ones_third_party_included(install):
    install("goodpkg", "0.3", {"good": "good_mod"}, {"good_mod": scorer_module("good_one", 2.0)})
    registry = Registry()
    with pytest.raises(UnknownPluginError) as error:
        registry.entry("scorer", "good_on")
    message = str(error.value)
    assert message.startswith("no scorer called 'good_on'; available: ")
    assert set(message.split("available: ")[1].split(", ")) == set(registry.names("scorer"))
    assert {"good_one", "magnitude"} <= set(registry.names("scorer"))


# --------------------------------------------------------------------------- (i) names, spelled


def test_provider_may_be_the_distribution_or_entry_point_name_spelled_either_way(install):
    install("alpha-plugins", "1.0", {"alpha": "alpha_mod"}, {"alpha_mod": scorer_module("dup", 1)})
    install("beta-plugins", "2.0", {"beta": "beta_mod"}, {"beta_mod": scorer_module("dup", 2)})
    registry = Registry()
    for name in ("alpha-plugins:dup", "Alpha_Plugins:dup", "alpha.plugins:dup", "alpha:dup"):
        assert usable(registry, name, 1.0), name
    assert usable(registry, "beta:dup", 2.0)
    with pytest.raises(TypeError, match="named by a string such as 'magnitude'; got None"):
        registry.entry("scorer", None)
    with pytest.raises(TypeError, match="got 123"):
        pruneplug.get_scorer(123)


@pytest.mark.parametrize("disable", ["Beta_Plugins", "beta:dup", "BETA-plugins:dup"])
def test_disabling_takes_normalised_and_qualified_names(install, monkeypatch, disable):
    install("alpha-plugins", "1.0", {"alpha": "alpha_mod"}, {"alpha_mod": scorer_module("dup", 1)})
    install("beta-plugins", "2.0", {"beta": "beta_mod"}, {"beta_mod": scorer_module("dup", 2)})
    monkeypatch.setenv("PRUNEPLUG_DISABLE", disable)
    registry, warned = load("PRUNEPLUG_DISABLE")
    assert warned == []
    assert usable(registry, "dup", 1.0)


def test_a_disabled_name_that_matches_nothing_is_warned_about(install, monkeypatch):
    monkeypatch.setenv("PRUNEPLUG_DISABLE", "magnitude,magnitdue")
    registry, warned = load("PRUNEPLUG_DISABLE")
    assert "magnitude" not in registry.names("scorer")
    assert len(warned) == 1 and "'magnitdue'" in warned[0] and "'magnitude'" not in warned[0]


def test_a_misspelled_hook_is_reported_with_the_plugin_and_the_real_hook(install):
    source = scorer_module("typo", hook=False) + textwrap.dedent(
        """
        @hookimpl
        def register_scorer(register):
            register(Constant)
        """
    )
    install("typopkg", "1.0", {"typo": "typo_mod"}, {"typo_mod": source})
    registry, warned = load("typopkg")
    assert "typo" not in registry.names("scorer")
    assert len(warned) == 1
    assert "'register_scorer' is not a pruneplug hook" in warned[0]
    assert "did you mean 'register_scorers'?" in warned[0]
    assert [f.plugin for f in registry.failures if f.provider == "typopkg"] == ["typo"]
