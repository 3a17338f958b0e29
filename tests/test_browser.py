"""A real browser: JupyterLab serves a chapter, headless Chromium runs it and moves a slider.

Needs Debian's ``chromium`` (Playwright drives it; ``playwright install`` cannot download here).
Without it the test is skipped with the reason, except when ``PRUNEPLUG_REQUIRE_BROWSER=1``
(set by ``.ci/run``), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
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


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on a free port, serving a copy of the course (autosave never touches ours)."""
    reason = _missing()
    if reason:
        if os.environ.get("PRUNEPLUG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here: {reason}")
        pytest.skip(reason)
    shutil.copy(course_dir() / CHAPTER, tmp_path)
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
        yield f"{base}/lab/tree/{CHAPTER}?token={token}"
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


def test_chapter_runs_and_slider_redraws_image(lab):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(lab)
            page.wait_for_selector(".jp-Notebook", timeout=60_000)
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
        except Exception:
            page.screenshot(path=str(FAILURE), full_page=False)
            print("JupyterLab's log, last lines:", *LOG.read_text().splitlines()[-40:], sep="\n")
            raise
        finally:
            browser.close()
    assert SCREENSHOT.stat().st_size > 10_000
