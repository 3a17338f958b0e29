"""The README's code runs as written: the tour, the chapter checks and the plugin guide, which
also builds and installs as the distribution it describes."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pruneplug
from pruneplug.registry import Registry

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def guide() -> str:
    """The plugin guide's module (the block that starts with ``# my_plugins.py``)."""
    (module,) = [b for b in blocks("python") if b.startswith("# my_plugins.py")]
    return module


def test_readme_has_the_tour_and_the_guide():
    assert any("get_pruner" in b for b in blocks("python"))
    assert all(
        hook in guide() for hook in ("register_scorers", "register_pruners", "register_augmenters")
    )


def test_every_python_block_runs(capsys):
    namespace: dict = {}
    try:
        for block in blocks("python"):
            exec(compile(block, str(README), "exec"), namespace)
        out = capsys.readouterr().out
        assert "accuracy" in out and "sparsity" in out
        pruneplug.register(
            namespace["SquaredMagnitude"], namespace["TopKPerRow"], namespace["RandomGamma"]
        )
        assert pruneplug.get_scorer("squared", scale=2.0).config == {"scale": 2.0}
        assert pruneplug.get_pruner("top_k_per_row", k=2).takes_amount is False
        assert pruneplug.get_augmenter("random_gamma").config["p"] == 0.5
    finally:
        pruneplug.reload_plugins()


def test_the_guide_builds_a_distribution_that_pruneplug_finds(tmp_path, monkeypatch):
    source, site = tmp_path / "src", tmp_path / "site"
    source.mkdir()
    (source / "my_plugins.py").write_text(guide())
    (pyproject,) = [b for b in blocks("toml") if "[build-system]" in b]
    (source / "pyproject.toml").write_text(pyproject)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(source)],
        check=True,
    )
    (wheel,) = tmp_path.glob("pruneplug_my_plugins-0.1.0-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    try:
        registry = Registry()
        found = {
            (e.kind, e.name): e for e in registry.entries() if e.provider == "pruneplug-my-plugins"
        }
        assert set(found) == {
            ("scorer", "squared"),
            ("pruner", "top_k_per_row"),
            ("augmenter", "random_gamma"),
        }
        assert {e.version for e in found.values()} == {"0.1.0"}
        assert registry.entry("scorer", "my_plugins:squared").cls.__module__ == "my_plugins"
        assert not registry.failures
    finally:
        sys.modules.pop("my_plugins", None)


@pytest.mark.parametrize(
    "base, method",
    [
        ("LayerScorer", "score_layer"),
        ("LayerScorer", "score_units"),
        ("Scorer", "score"),
        ("Pruner", "prune"),
        ("ImageAugmenter", "apply"),
        ("ImageAugmenter", "generate_parameters"),
        ("MixingAugmenter", "mix"),
        ("AdversarialAugmenter", "attack"),
        ("TextAugmenter", "augment_one"),
    ],
)
def test_every_method_a_plugin_implements_is_documented_with_its_signature(base, method):
    import inspect

    function = getattr(getattr(pruneplug, base), method)
    parameters = [
        p.replace(annotation=inspect.Parameter.empty)
        for p in inspect.signature(function).parameters.values()
    ]
    signature = f"def {method}{inspect.Signature(parameters)}"
    assert signature in README.read_text(), f"README lacks `{signature}` ({base})"


@pytest.mark.parametrize("hook", ["register_scorers", "register_pruners", "register_augmenters"])
def test_every_hook_is_documented_with_its_signature(hook):
    import inspect

    from pruneplug import hookspecs

    arguments = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"{hook}({arguments})" in README.read_text()


def test_the_documented_methods_are_all_the_bases_offer():
    """A new overridable method on a base class must join the list above (and the README)."""
    documented = {
        "score_layer",
        "score_units",
        "score",
        "prune",
        "apply",
        "generate_parameters",
        "mix",
        "attack",
        "augment_one",
    }
    bases = [
        pruneplug.LayerScorer,
        pruneplug.Scorer,
        pruneplug.Pruner,
        pruneplug.ImageAugmenter,
        pruneplug.MixingAugmenter,
        pruneplug.AdversarialAugmenter,
        pruneplug.TextAugmenter,
    ]
    offered = {
        name
        for base in bases
        for name, value in vars(base).items()
        if callable(value)
        and not name.startswith("_")
        and name not in {"forward_parameters", "transform"}
    }
    assert offered == documented
