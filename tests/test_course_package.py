"""The course ships with ``pip install``: build the wheel, install it as a user does, run a chapter.

Slow (marked ``slow``; under a minute on an idle 2-core machine, most of it the chapter under
nbval): it builds a wheel from a copy of this checkout, installs it into a fresh virtual
environment, copies the course out of that install and runs one chapter there. A second test
checks that an editable install (``make lab``, ``make test``) still reads the checkout's course/.
Everything is offline: the fresh environments borrow this one's installed dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
#: the quickest chapter under nbval; it also reads the plugins' data files from the install
CHAPTER = "11-text-augmentation.ipynb"
#: what a build never needs (and what must not leak into it from a developer's checkout)
NOT_SOURCE = shutil.ignore_patterns(
    ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "pruneplug-course"
)

#: run inside the installed environment: where pruneplug comes from, and `pruneplug course`
#: (JupyterLab's launch replaced by a recorder) opening a copy of the installed chapters
OPEN_COURSE = """
import json, subprocess
from importlib.metadata import distributions, entry_points
import pruneplug
from pruneplug import cli

calls = []
subprocess.call = lambda command: calls.append(command) or 0
code = cli.main(["course"])
where = lambda dist: str(dist.locate_file("").resolve())
print(json.dumps({
    "code": code,
    "module": str(pruneplug.__file__),
    "course": str(cli.course_dir()),
    "dists": [where(d) for d in distributions() if d.name == "pruneplug"],
    "providers": sorted({where(e.dist) for e in entry_points(group="pruneplug")}),
    "command": calls,
}))
"""


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``command`` in ``cwd`` (never the checkout: its pruneplug/ would shadow the install)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    """A virtual environment seeing this one's dependencies but not its pruneplug.

    This environment's site-packages also holds the editable pruneplug (its dist-info and the
    ``.pth`` finder) and the editable example plugin: a ``.pth`` naming site-packages itself
    would let that dist-info register pruneplug's entry points a second time. So every other
    entry is linked into ``deps/``, which a ``.pth`` file puts on the new environment's path
    (after its own site-packages, so that the installed pruneplug comes first anyway).
    Returns the environment's python and its site-packages.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    deps = path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(("pruneplug", "__editable__")):
            (deps / entry.name).symlink_to(entry)
    python = path / "bin" / "python"
    query = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", query], cwd=path).stdout.strip())
    (site / "_pruneplug_test_deps.pth").write_text(f"{deps}\n")
    return python, site.resolve()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this checkout's sources: a build writes build/ and *.egg-info next to them."""
    folder = tmp_path_factory.mktemp("source") / "pruneplug"
    shutil.copytree(REPO, folder, ignore=NOT_SOURCE)
    return folder


@pytest.fixture(scope="module")
def wheel(source: Path) -> Path:
    """The wheel `pip install .` would build and install (offline: no index, no isolation)."""
    dist = source.parent / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--quiet", "--wheel-dir", str(dist), str(source)]
    _run(command, cwd=dist.parent)
    (built,) = dist.glob("pruneplug-*.whl")
    return built


def test_wheel_holds_every_chapter(wheel: Path, source: Path) -> None:
    chapters = sorted(p.name for p in (source / "course").glob("*.ipynb"))
    assert len(chapters) >= 14 and chapters == sorted(p.name for p in REPO.glob("course/*.ipynb"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.removeprefix("pruneplug/course/"): archive.read(name)
            for name in archive.namelist()
            if name.startswith("pruneplug/course/")
        }
    assert sorted(shipped) == chapters  # the chapters only: no sanitiser config, no checkpoints
    assert all(shipped[name] == (source / "course" / name).read_bytes() for name in chapters)


def test_installed_wheel_copies_opens_and_runs_the_course(wheel: Path, tmp_path: Path) -> None:
    python, site = _fresh_venv(tmp_path / "env")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    installed = site / "pruneplug" / "course"
    chapters = sorted(p.name for p in installed.glob("*.ipynb"))
    assert len(chapters) >= 14

    # `pruneplug course`: the wheel's pruneplug, registered once, opening a copy in the cwd
    work = tmp_path / "work"
    work.mkdir()
    found = json.loads(_run([str(python), "-c", OPEN_COURSE], cwd=work).stdout.splitlines()[-1])
    assert Path(found["module"]).resolve() == site / "pruneplug" / "__init__.py"
    assert found["dists"] == [str(site)] and found["providers"] == [str(site)]
    assert found["code"] == 0 and Path(found["course"]) == installed
    (command,) = found["command"]
    assert command[1:3] == ["-m", "jupyterlab"]
    assert f"--notebook-dir={work / 'pruneplug-course'}" in command
    assert sorted(p.name for p in (work / "pruneplug-course").iterdir()) == chapters
    assert sorted(p.name for p in installed.iterdir()) == chapters  # nothing written there

    # `pruneplug course --copy DIR` with the console script, then a chapter runs from the copy
    copy = tmp_path / "my-course"
    copied = _run([str(python.parent / "pruneplug"), "course", "--copy", str(copy)], cwd=work)
    assert f"copied {len(chapters)} chapters to {copy}" in copied.stdout
    assert sorted(p.name for p in copy.glob("*.ipynb")) == chapters
    nbval = [str(python), "-m", "pytest", "--nbval", "--nbval-current-env", str(copy / CHAPTER)]
    # one argument with "=": as two, pytest would take the path for a test path and pick up the
    # checkout's pyproject.toml as its configuration
    nbval.append(f"--nbval-sanitize-with={REPO / 'course' / 'nbval_sanitize.cfg'}")
    ran = _run([*nbval, "-p", "no:cacheprovider", "-o", "addopts=", "-q"], cwd=copy)
    assert " passed" in ran.stdout and "failed" not in ran.stdout


def test_editable_install_reads_the_checkout_course(source: Path, tmp_path: Path) -> None:
    python, _ = _fresh_venv(tmp_path / "env")
    install = [str(python), "-m", "pip", "install", "--no-deps", "--no-build-isolation"]
    _run([*install, "--no-index", "--quiet", "--editable", str(source)], cwd=tmp_path)
    query = "from pruneplug import cli; print(cli.__file__); print(cli.course_dir())"
    module, course = _run([str(python), "-c", query], cwd=tmp_path).stdout.split()
    assert Path(module).resolve() == (source / "pruneplug" / "cli.py").resolve()
    assert Path(course).resolve() == (source / "course").resolve()
    assert not (source / "pruneplug" / "course").exists()  # nothing copied into the checkout
