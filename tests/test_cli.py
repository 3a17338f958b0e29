"""The ``pruneplug`` command, run as a user runs it."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from pruneplug import cli
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
    assert set(magnitude) == {
        "kind",
        "name",
        "request_name",
        "description",
        "provider",
        "version",
        "params",
    }
    assert magnitude["request_name"] == "magnitude"
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "augment", "--quick", "--device", "cud"], "argument --device: Expected one of"),
        (["bench", "augment", "--quick", "--size", "0"], "argument --size: 0 is below 1"),
        (["bench", "augment", "--batch", "many"], "argument --batch: 'many' is not a whole"),
        (["bench", "deploy", "--dtype", "float8"], "argument --dtype: invalid choice"),
        (["course", "--port", "70000"], "argument --port: 70000 is above 65535"),
        (["sweep", "sweep.toml", "--workers", "0"], "argument --workers: 0 is below 1"),
        (["sweep", "sweep.toml", "--max-retries", "-1"], "argument --max-retries: -1 is below 0"),
    ],
)
def test_bad_arguments_are_refused_by_the_parser(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_refusal_of_the_library_is_a_message_not_a_traceback(tmp_path):
    taken = tmp_path / "a-file"
    taken.write_text("")
    result = run("course", "--copy", str(taken))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("pruneplug: ") and "File exists" in result.stderr
    result = run("bench", "augment", "--quick", "--size", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "too large to reflect at the border of 1 x 1 images" in result.stderr


def test_course_copy(tmp_path, capsys):
    target = tmp_path / "my-course"
    assert main(["course", "--copy", str(target)]) == 0
    copied = sorted(p.name for p in target.glob("*.ipynb"))
    assert copied == sorted(p.name for p in course_dir().glob("*.ipynb"))
    assert f"copied {len(copied)} chapters" in capsys.readouterr().out


def test_course_copy_keeps_chapters_already_there(tmp_path, capsys):
    target = tmp_path / "my-course"
    target.mkdir()
    (target / "00-welcome.ipynb").write_text("my notes")
    assert main(["course", "--copy", str(target)]) == 0
    total = len(list(course_dir().glob("*.ipynb")))
    out = capsys.readouterr().out
    assert f"copied {total - 1} chapters to {target}; kept 1 already there" in out
    assert (target / "00-welcome.ipynb").read_text() == "my notes"
    assert len(list(target.glob("*.ipynb"))) == total


def test_course_dir_prefers_the_installed_copy(monkeypatch, tmp_path):
    assert course_dir() == cli.CHECKOUT_COURSE  # this checkout has no built pruneplug/course/
    (tmp_path / "00-a.ipynb").write_text("{}")
    monkeypatch.setattr(cli, "INSTALLED_COURSE", tmp_path)
    assert course_dir() == tmp_path


def test_course_dir_missing_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "INSTALLED_COURSE", tmp_path / "a")
    monkeypatch.setattr(cli, "CHECKOUT_COURSE", tmp_path / "b")
    with pytest.raises(SystemExit, match=r'pip install --force-reinstall "pruneplug\[course\]"'):
        course_dir()


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


def test_installed_course_opens_a_copy_in_the_current_folder(monkeypatch, tmp_path, capsys):
    installed = tmp_path / "site-packages" / "pruneplug" / "course"
    installed.mkdir(parents=True)
    for name in ("00-a.ipynb", "01-b.ipynb"):
        (installed / name).write_text(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(cli, "INSTALLED_COURSE", installed)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert main(["course"]) == 0
    copy = work / cli.WORKING_COPY
    assert f"--notebook-dir={copy}" in calls[0]
    assert sorted(p.name for p in copy.iterdir()) == ["00-a.ipynb", "01-b.ipynb"]
    assert f"copied 2 chapters to {copy}" in capsys.readouterr().out
    (copy / "00-a.ipynb").write_text("edited")
    assert main(["course"]) == 0  # the second time opens the same copy and keeps the edit
    assert calls[1] == calls[0] and (copy / "00-a.ipynb").read_text() == "edited"
    assert "copied 0 chapters" in capsys.readouterr().out


def test_course_without_jupyterlab_names_the_extra(monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "jupyterlab" else real_find_spec(name, *a),
    )
    monkeypatch.setattr(subprocess, "call", lambda command: pytest.fail(f"ran {command}"))
    assert main(["course"]) == 1
    assert 'pip install "pruneplug[course]"' in capsys.readouterr().err
