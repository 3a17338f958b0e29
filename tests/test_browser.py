"""A real browser: JupyterLab serves notebooks, headless Chromium runs them and moves sliders.

* a chapter runs and a slider redraws its image;
* every installed plugin's controls, displayed by JupyterLab, leave the kernel's values at the
  declared defaults (a browser snaps a value off a slider's grid and syncs it back), and one
  key press moves a slider by exactly one step.

Needs Debian's ``chromium`` (Playwright drives it; ``playwright install`` cannot download here).
Without it the test is skipped with the reason, except when ``PRUNEPLUG_REQUIRE_BROWSER=1``
(set by ``.ci/run``), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pruneplug.cli import course_dir

CHAPTER = "08-geometric-augmentation.ipynb"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BUILD = Path(__file__).resolve().parent.parent / "build" / "browser"
SCREENSHOT = BUILD / "chapter.png"  # what a passing run saw
FAILURE = BUILD / "failure.png"  # what a failing run saw
LOG = BUILD / "jupyterlab.log"
#: The status bar once the notebook's kernel is connected and waiting.
KERNEL_IDLE = re.compile(r"Python 3 \(ipykernel\) \| Idle")
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: A notebook that displays the controls of every installed plugin; a button (clicked in the
#: browser) writes the kernel-side values, with the declared defaults, to a JSON file.
PROBE = "controls.ipynb"
PROBE_CODE = """\
import json
from pathlib import Path

import ipywidgets as w
import pruneplug
from pruneplug import widgets

registry = pruneplug.get_registry()
shown, made, declared = {}, {}, {}
for kind in ("scorer", "pruner", "augmenter"):
    for entry in registry.entries(kind):
        made[f"{kind}/{entry.name}"] = controls = widgets.controls(entry.name, kind=kind)
        for name, control in controls.items():
            shown[f"{kind}/{entry.name}/{name}"] = control
        for param in entry.cls.params:
            declared[f"{kind}/{entry.name}/{param.name}"] = param.default
# first the sliders the test steps with the keyboard: a linear, a log-scale and a range one
stepped = [
    "augmenter/rotation/degrees",
    "augmenter/mixup/alpha",
    "augmenter/gaussian_noise/sigma_min..sigma_max",
]
dumps = []


def dump(button):
    path = Path(f"values-{len(dumps)}.json")
    path.write_text(json.dumps({
        "values": {  # range sliders read back as their min and max parameters
            f"{plugin}/{name}": value
            for plugin, controls in made.items()
            for name, value in widgets.values(controls).items()
        },
        "declared": declared,
        "steps": {key: [shown[key].step, getattr(shown[key], "base", None)] for key in stepped},
    }))
    dumps.append(path)


button = w.Button(description="dump values")
button.on_click(dump)
others = [control for key, control in shown.items() if key not in stepped]
w.VBox([*(shown[key] for key in stepped), button, w.VBox(others)])
"""


def probe_notebook(path: Path) -> None:
    """Write the probe notebook (one code cell) to ``path``."""
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(PROBE_CODE)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)"}
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free port serving a copy of a chapter and the probe notebook.

    Yields ``(url of a notebook by name, the served folder)``; autosave never touches ours.
    """
    reason = _missing()
    if reason:
        if os.environ.get("PRUNEPLUG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here: {reason}")
        pytest.skip(reason)
    tmp_path = tmp_path_factory.mktemp("lab")
    shutil.copy(course_dir() / CHAPTER, tmp_path)
    probe_notebook(tmp_path / PROBE)
    port, token = _free_port(), "pruneplug-test"
    BUILD.mkdir(parents=True, exist_ok=True)
    log = LOG.open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            f"--port={port}",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={tmp_path}",
            "--ServerApp.ip=127.0.0.1",
            "--allow-root",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")

        # each notebook in a fresh workspace of its own: JupyterLab would otherwise restore the
        # previous test's tab, whose (hidden) widgets the selectors could find first
        def url(notebook: str) -> str:
            workspace = Path(notebook).stem
            return f"{base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={token}"

        yield url, tmp_path
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def run_all_until_slider(page, attempts: int = 2):
    """Run every cell once the kernel is connected and idle; return the first slider's handle.

    A second attempt (after a screenshot of the first) covers a Run All that a just-started
    kernel missed; it re-runs the chapter, which is deterministic.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, attempts + 1):
        page.get_by_text(KERNEL_IDLE).wait_for(timeout=90_000)
        page.keyboard.press("Escape")  # command mode: the menu below acts on the notebook
        page.click("text=Run", timeout=10_000)
        page.click("text=Run All Cells", timeout=10_000)
        try:
            return page.wait_for_selector(".widget-slider .noUi-handle", timeout=90_000)
        except PlaywrightTimeout:
            page.screenshot(path=str(BUILD / f"attempt-{attempt}.png"), full_page=False)
            if attempt == attempts:
                raise


@contextmanager
def notebook_page(address: str) -> Iterator:
    """Chromium showing the notebook at ``address``; on failure, a screenshot and the log."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(address)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
            yield page
        except Exception:
            page.screenshot(path=str(FAILURE), full_page=False)
            print("JupyterLab's log, last lines:", *LOG.read_text().splitlines()[-40:], sep="\n")
            raise
        finally:
            browser.close()


def test_chapter_runs_and_slider_redraws_image(lab):
    url, _ = lab
    with notebook_page(url(CHAPTER)) as page:
        slider = run_all_until_slider(page)
        image = page.wait_for_selector(".jupyter-widgets img", timeout=60_000)
        page.wait_for_function("img => img.src.startsWith('blob:')", arg=image, timeout=60_000)
        before = image.get_attribute("src")
        slider.scroll_into_view_if_needed()
        slider.focus()
        for _ in range(40):
            page.keyboard.press("ArrowRight")
        page.wait_for_function(
            "([img, old]) => img.src !== old", arg=[image, before], timeout=60_000
        )
        page.screenshot(path=str(SCREENSHOT), full_page=False)
    assert SCREENSHOT.stat().st_size > 10_000


def read_dump(folder: Path, number: int, page) -> dict:
    """Click the probe's button and read the values the kernel then writes."""
    page.click("button:has-text('dump values')")
    path = folder / f"values-{number}.json"
    for _ in range(120):
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.25)
    raise AssertionError(f"the kernel wrote no {path.name} within 30 s of the click")


def test_displayed_controls_keep_every_declared_default(lab):
    """JupyterLab renders every plugin's controls; the kernel's values stay the defaults."""
    url, folder = lab
    with notebook_page(url(PROBE)) as page:
        run_all_until_slider(page)
        page.wait_for_selector("button:has-text('dump values')", timeout=60_000)
        handles = page.locator(".widget-slider .noUi-handle")
        page.wait_for_function(
            "n => document.querySelectorAll('.widget-slider .noUi-handle').length >= n",
            arg=20,
            timeout=60_000,
        )
        before = read_dump(folder, 0, page)
        # one step right each: rotation degrees, mixup alpha, the upper handle of gaussian
        # noise's sigma range (handles 2 and 3 are that slider's lower and upper ones)
        for index in (0, 1, 3):
            handles.nth(index).focus()
            page.keyboard.press("ArrowRight")
        time.sleep(1.0)  # the key press's sync reaches the kernel before the click
        after = read_dump(folder, 1, page)
        page.screenshot(path=str(BUILD / "controls.png"), full_page=False)
    changed = {
        key: (default, before["values"][key])
        for key, default in before["declared"].items()
        if before["values"][key] != default
    }
    assert not changed, f"the browser changed these declared defaults (default, now): {changed}"
    assert len(before["values"]) == len(before["declared"]) > 100
    degrees, alpha = "augmenter/rotation/degrees", "augmenter/mixup/alpha"
    step, _ = after["steps"][degrees]
    assert after["values"][degrees] - before["values"][degrees] == pytest.approx(step, rel=1e-12)
    step, base = after["steps"][alpha]
    ratio = after["values"][alpha] / before["values"][alpha]
    assert ratio == pytest.approx(base**step, rel=1e-12)  # one step of a log-scale slider
    step, _ = after["steps"]["augmenter/gaussian_noise/sigma_min..sigma_max"]
    high = "augmenter/gaussian_noise/sigma_max"  # the range read back as two parameters
    assert after["values"][high] - before["values"][high] == pytest.approx(step, rel=1e-12)
    moved = (degrees, alpha, high)
    unchanged = {k: v for k, v in after["values"].items() if k not in moved}
    assert unchanged == {k: before["values"][k] for k in unchanged}
