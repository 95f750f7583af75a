"""The live lab in a real browser: JupyterLab + headless Chromium driven by Playwright.

Starts JupyterLab on a free localhost port over a temporary copy of ``notebooks/05_live_lab.ipynb``
(so nothing is written into the repository), runs all cells with ``CARLAB_FAST=1``, and then does
what a student does: Start, watch the canvas change and the step counter rise, move a slider, drive
in manual mode with the arrow keys, Pause. A screenshot goes to ``artifacts/lab.png``.

It skips only where ``/usr/bin/chromium`` does not exist; ``.ci/run`` installs Chromium and fails
the build if this test was skipped.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "05_live_lab.ipynb"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_TIMEOUT_S = 240  # building the run and the first compile, on a busy 2-core machine

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab_url(tmp_path):
    """A JupyterLab server over a temporary root holding the lab notebook; yields ``(url, token)``."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "models").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / "notebooks" / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "CARLAB_FAST": "1",
        "SDL_VIDEODRIVER": "dummy",
        "SDL_AUDIODRIVER": "dummy",
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
            f"--ServerApp.token={token}", f"--ServerApp.root_dir={tmp_path}",
            f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r,
            ):
                if r.status == 200:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"JupyterLab did not start:\n{(tmp_path / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()  # Jupyter shuts its kernels down on SIGTERM
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        print((tmp_path / "server.log").read_text()[-3000:])  # shown by pytest on failure


def _wait(predicate, timeout: float, what: str, poll: float = 0.25, detail=lambda: ""):
    """Poll ``predicate()`` until it returns a truthy value; fail with ``what`` (and ``detail()``,
    e.g. the dashboard's status and error lines) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{detail()}")
        time.sleep(poll)


_CANVAS_DIGEST = """(canvas) => {
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let digest = 0, lit = 0;
    for (let i = 0; i < data.length; i += 4) {
        digest = (Math.imul(digest, 31) + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) >>> 0;
        lit += data[i] + data[i + 1] + data[i + 2] > 0 ? 1 : 0;
    }
    return [digest, lit];
}"""


@pytest.mark.timeout(900)
def test_live_lab_in_chromium(lab_url):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (/usr/bin/chromium)")
    from playwright.sync_api import sync_playwright

    url, token = lab_url
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1800, "height": 1300})
        try:
            _drive_the_lab(page, url, token)
        finally:
            with contextlib.suppress(Exception):  # show the dashboard, not the notebook's intro
                page.locator(".jp-OutputArea-output").first.scroll_into_view_if_needed(timeout=2000)
            page.screenshot(path=str(ARTIFACTS / "lab.png"))
            browser.close()


def _drive_the_lab(page, url: str, token: str) -> None:
    page.goto(f"{url}/lab/tree/notebooks/{NOTEBOOK.name}?token={token}&reset")
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
    with contextlib.suppress(Exception):  # JupyterLab asks once whether to fetch news; say no
        page.get_by_role("button", name="No", exact=True).click(timeout=5000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
    page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()

    out = page.locator(".jp-OutputArea-output").first
    out.locator("button", has_text="Start").wait_for(timeout=120_000)
    status = out.locator(".widget-html-content", has_text="env steps")
    hyper = out.locator(".widget-html-content", has_text="in effect:")
    canvas = out.locator("canvas").first

    def status_text() -> str:
        return status.inner_text() if status.count() else ""

    def steps() -> int:
        match = re.search(r"([\d,]+) env steps", status_text())
        return int(match.group(1).replace(",", "")) if match else -1

    def car() -> tuple[float, float, float]:
        span = out.locator(".carlab-car")
        return tuple(float(span.get_attribute(f"data-{k}")) for k in ("x", "y", "speed"))

    def pixels() -> tuple[int, int]:
        return tuple(canvas.evaluate(_CANVAS_DIGEST))

    def shown() -> str:  # what a failure message quotes: the status line and any error line
        errors = out.locator(".widget-html-content", has_text="error")
        return f"status: {status_text()!r}; " + (
            errors.first.inner_text() if errors.count() else "no error shown"
        )

    def wait(predicate, timeout: float, what: str):
        return _wait(predicate, timeout, what, detail=shown)

    wait(lambda: status_text().startswith("paused"), READY_TIMEOUT_S, "the trainer to be built and compiled")
    assert pixels()[1] > 0, "the canvas shows nothing before training starts"

    # Start: the picture changes and the counter rises.
    out.locator("button", has_text="Start").click()
    wait(lambda: steps() > 0, 60, "env steps to rise after Start")
    first_pixels, first_steps = pixels(), steps()
    wait(lambda: steps() > first_steps, 30, "env steps to keep rising")
    wait(lambda: pixels() != first_pixels, 30, "the canvas to change while training")

    # A slider: the horizon goes up by one (arrow key on the focused handle) and the trainer uses it.
    horizon = int(re.search(r"horizon=(\d+)", hyper.inner_text()).group(1))
    slider = out.locator(".widget-slider", has=page.locator("label", has_text="horizon H"))
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    wait(lambda: f"horizon={horizon + 1}" in hyper.inner_text(), 30, "the trainer to report the new horizon")
    wait(lambda: status_text().startswith("running"), 180, "training to run again after the recompile")

    # Manual: stop the red car with the brake, then drive it forward with the up arrow.
    out.locator("button.widget-toggle-button", has_text="Manual").click()
    wait(lambda: status_text().startswith("manual"), 180, "manual driving to start")
    canvas.hover()
    page.keyboard.down("ArrowDown")
    wait(lambda: car()[2] < 0.05, 30, "the brake to stop the red car")
    page.keyboard.up("ArrowDown")
    x0, y0, _ = car()

    def moved() -> bool:
        x, y, _ = car()
        return abs(x - x0) + abs(y - y0) > 10.0  # px (a crash puts it back on the start line: moved too)

    page.keyboard.down("ArrowUp")
    wait(moved, 30, "the red car to move under the up arrow")
    page.keyboard.up("ArrowUp")

    # Pause: the counter stops.
    out.locator("button", has_text="Pause").click()
    wait(lambda: status_text().startswith("paused"), 30, "the trainer to pause")
    paused_steps = steps()
    time.sleep(1.5)
    assert steps() == paused_steps, "env steps kept rising after Pause"
