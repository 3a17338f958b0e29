"""The ``pruneplug`` command, run as a user runs it."""

import json
import os
import subprocess
import sys

import pytest

from pruneplug.cli import course_dir, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pruneplug.cli", *args], capture_output=True, text=True, check=False
    )


def test_help():
    result = run("--help")
    assert result.returncode == 0
    for command in ("plugins", "course", "bench"):
        assert command in result.stdout


def test_plugins_json_lists_every_kind_with_provider():
    result = run("plugins", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert {e["kind"] for e in entries} == {"scorer", "pruner", "augmenter"}
    magnitude = next(e for e in entries if e["name"] == "magnitude")
    assert magnitude["provider"] == "pruneplug" and magnitude["version"]
    assert set(magnitude) == {"kind", "name", "description", "provider", "version", "params"}
    assert magnitude["params"][0]["name"] == "p"


def test_plugins_table_and_kind_filter(capsys):
    assert main(["plugins", "--kind", "pruner"]) == 0
    out = capsys.readouterr().out
    assert "unstructured" in out and "magnitude" not in out
    assert out.splitlines()[0].split() == ["kind", "name", "description", "provider"]


def test_one_plugin_shows_parameters(capsys):
    assert main(["plugins", "unstructured"]) == 0
    out = capsys.readouterr().out
    assert "pruner 'unstructured'" in out and "one of 'local', 'global'" in out


def test_unknown_plugin_lists_available(capsys):
    assert main(["plugins", "nope", "--kind", "scorer"]) == 1
    assert "no scorer called 'nope'; available:" in capsys.readouterr().err


def test_course_copy(tmp_path, capsys):
    target = tmp_path / "my-course"
    assert main(["course", "--copy", str(target)]) == 0
    copied = sorted(p.name for p in target.glob("*.ipynb"))
    assert copied == sorted(p.name for p in course_dir().glob("*.ipynb"))
    assert f"copied {len(copied)} chapters" in capsys.readouterr().out


def test_bad_command_exits_with_usage():
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.parametrize("uid", [0, 1000])
def test_course_opens_jupyterlab_on_the_course(monkeypatch, uid):
    calls = []
    monkeypatch.setattr(os, "geteuid", lambda: uid)
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["course", "--port", "8899"]) == 0
    (command,) = calls
    assert command[1:3] == ["-m", "jupyterlab"]
    assert f"--notebook-dir={course_dir()}" in command and "--port=8899" in command
    assert ("--allow-root" in command) == (uid == 0)
