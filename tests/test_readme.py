"""The README's code runs as written: the tour, and the plugin guide."""

import re
from pathlib import Path

import pruneplug

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_the_tour_and_the_guide():
    blocks = python_blocks()
    assert any("get_pruner" in b for b in blocks) and any("@hookimpl" in b for b in blocks)


def test_every_python_block_runs(capsys):
    namespace: dict = {}
    try:
        for block in python_blocks():
            exec(compile(block, str(README), "exec"), namespace)
        out = capsys.readouterr().out
        assert "accuracy" in out and "sparsity" in out
        guide = [b for b in python_blocks() if "@hookimpl" in b][0]
        assert "SquaredMagnitude" in guide
        pruneplug.register(namespace["SquaredMagnitude"], namespace["Invert"])
        assert pruneplug.get_scorer("squared", scale=2.0).config == {"scale": 2.0}
    finally:
        pruneplug.reload_plugins()
