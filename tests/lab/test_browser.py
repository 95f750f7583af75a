"""The lab's notebooks in a real browser: JupyterLab + headless Chromium driven by Playwright.

Each test starts JupyterLab (its default settings) on a free localhost port over a temporary copy of
one notebook (so nothing is written into the repository), runs all cells with ``CARLAB_FAST=1``, and
then does what a student does:

* ``05_live_lab``: at two laptop sizes (1366x768, 1400x900) with the file browser open, every control
  of the dashboard lies within the window's width; then Start, watch the canvas change, the step
  counter rise and the charts draw their curves, move a slider, drive in manual mode with the arrow
  keys, Pause, and Load with the model dropdown untouched (the pretrained run comes in). A
  screenshot goes to ``artifacts/lab.png``.
* ``03_dreaming``: hold the up arrow over the dream view and watch its canvas and its divergence
  meter change. A screenshot goes to ``artifacts/dream.png``.
* every other notebook (01, 02, 04, 06): it runs once at 1400x900; in 01 a student's first second of
  the up arrow on the drive view does not crash the car.

Every notebook ends without a cell error, read from the notebook JupyterLab saves (no error output,
every code cell ran, the last one's last line says ``ok``).

They skip only where ``/usr/bin/chromium`` does not exist; ``.ci/run`` installs Chromium and fails
the build if this test was skipped.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path

import pytest
from browser_support import (
    CHROMIUM,
    chromium,
    open_and_run_all,
    open_file_browser,
    scroll_to,
    serve_notebook,
    wait_until_run,
)

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "05_live_lab.ipynb"
DREAM_NOTEBOOK = ROOT / "notebooks" / "03_dreaming.ipynb"
PRETRAINED = ROOT / "models" / "agent.safetensors"  # notebook 03 dreams with its world model
ARTIFACTS = ROOT / "artifacts"
READY_TIMEOUT_S = 240  # building the run and the first compile, on a busy 2-core machine
STUDENT_VIEWPORT = {"width": 1400, "height": 900}  # a laptop's browser window
LAPTOP_VIEWPORTS = ({"width": 1366, "height": 768}, STUDENT_VIEWPORT)  # the dashboard must fit both

FAST = {"CARLAB_FAST": "1"}  # the notebooks' short settings

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def lab_url(tmp_path):
    """A JupyterLab server over a temporary root holding the lab notebook and, in ``models/``, the
    pretrained run (the fast lab starts fresh; Load brings it); yields ``(url, token)``."""
    with serve_notebook(tmp_path, NOTEBOOK, (PRETRAINED,), FAST) as served:
        yield served


@pytest.fixture
def dream_url(tmp_path):
    """A JupyterLab server over a temporary root holding notebook 03 and the pretrained model."""
    with serve_notebook(tmp_path, DREAM_NOTEBOOK, (PRETRAINED,), FAST) as served:
        yield served


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
    let digest = 0, lit = 0, red = 0;
    for (let i = 0; i < data.length; i += 4) {
        digest = (Math.imul(digest, 31) + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) >>> 0;
        lit += data[i] + data[i + 1] + data[i + 2] > 0 ? 1 : 0;
        red += data[i] === 220 && data[i + 1] === 40 && data[i + 2] === 40 ? 1 : 0;  // render.CAR
    }
    return [digest, lit, red];
}"""


# Chart curves with a drawn line (an SVG path of at least three points; an empty curve has none).
_DRAWN_PATHS = (
    "paths => paths.filter(p => ((p.getAttribute('d') || '').match(/[ML]/g) || []).length >= 3).length"
)


@pytest.mark.timeout(900)
def test_live_lab_in_chromium(lab_url, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (/usr/bin/chromium)")
    url, token = lab_url
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport=STUDENT_VIEWPORT)
        page_errors: list[str] = []  # uncaught JavaScript errors (a widget view that failed to build)
        page.on("pageerror", lambda error: page_errors.append(str(error)))
        try:
            _drive_the_lab(page, url, token)
            _assert_ran_without_errors(page, tmp_path / "notebooks" / NOTEBOOK.name)
            assert not page_errors, f"JavaScript errors in the page: {page_errors}"
        finally:
            with contextlib.suppress(Exception):  # show the dashboard, not the notebook's intro
                page.locator(".jp-OutputArea-output").first.scroll_into_view_if_needed(timeout=2000)
            page.screenshot(path=str(ARTIFACTS / "lab.png"))


def _drive_the_lab(page, url: str, token: str) -> None:
    open_and_run_all(page, url, token, f"notebooks/{NOTEBOOK.name}")

    out = page.locator(".jp-OutputArea-output").first
    # The first cells import JAX and compile the trainer: minutes on a loaded 2-core machine.
    out.locator("button", has_text="Start").wait_for(timeout=300_000)
    status = out.locator(".widget-html-content", has_text="env steps")
    hyper = out.locator(".widget-html-content", has_text="in effect:")
    canvas = out.locator("canvas").first

    def status_text() -> str:
        return status.text_content() if status.count() else ""  # (inner_text is empty off screen)

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
            errors.first.text_content() if errors.count() else "no error shown"
        )

    def wait(predicate, timeout: float, what: str):
        return _wait(predicate, timeout, what, detail=shown)

    wait(lambda: status_text().startswith("paused"), READY_TIMEOUT_S, "the trainer to be built and compiled")
    assert pixels()[1] > 0, "the canvas shows nothing before training starts"
    # The browser draws the cars itself (race_canvas.js): the red car's body is there, in its colour.
    assert pixels()[2] >= 20, f"no red car on the canvas: {pixels()[2]} pixels of its colour"
    _assert_fits_laptops(page, out)

    # Start: the picture changes and the counter rises.
    out.locator("button", has_text="Start").click()
    wait(lambda: steps() > 0, 60, "env steps to rise after Start")
    first_pixels, first_steps = pixels(), steps()
    wait(lambda: steps() > first_steps, 30, "env steps to keep rising")
    wait(lambda: pixels() != first_pixels, 30, "the canvas to change while training")
    # The browser draws the charts too (bqplot): the curves get points as training logs them.
    charts = out.locator(".bqplot path.line")
    wait(lambda: charts.evaluate_all(_DRAWN_PATHS) >= 4, 60, "the charts to draw their curves")

    # A slider: the horizon goes up by one (arrow key on the focused handle) and the trainer uses it.
    horizon = int(re.search(r"horizon=(\d+)", hyper.text_content()).group(1))
    slider = out.locator(".widget-slider", has=page.locator("label", has_text="horizon H"))
    slider.locator(".noUi-handle").focus()
    page.keyboard.press("ArrowRight")
    wait(
        lambda: f"horizon={horizon + 1}" in hyper.text_content(), 30, "the trainer to report the new horizon"
    )
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

    # Load with the model dropdown untouched: the newest model in models/ (the pretrained run) comes in.
    from carlab.learn.checkpoint import read_metadata

    pretrained_steps = read_metadata(PRETRAINED)["env_steps"]
    out.locator("button", has_text="Load").click()
    wait(lambda: steps() == pretrained_steps, READY_TIMEOUT_S, "Load to bring in the pretrained run")
    assert not out.locator(".widget-html-content", has_text="Error:").count(), shown()


def _assert_fits_laptops(page, out) -> None:
    """At each of :data:`LAPTOP_VIEWPORTS`, with the file browser open, no widget of the dashboard
    (buttons, sliders, canvas, charts, the boxes around them) reaches past the viewport's right edge
    or the output area's; ends at :data:`STUDENT_VIEWPORT`."""
    open_file_browser(page)
    for viewport in LAPTOP_VIEWPORTS:
        page.set_viewport_size(viewport)
        out.scroll_into_view_if_needed()
        time.sleep(1.5)  # JupyterLab lays its panels out again after a resize
        assert page.locator("#filebrowser").is_visible(), "the file browser closed"
        right = min(viewport["width"], _right_edge(out.bounding_box()))
        widgets = out.locator(".jupyter-widgets").all()
        assert len(widgets) > 20, f"only {len(widgets)} widgets found in the dashboard's output"
        outside = []
        for widget in widgets:
            box = widget.bounding_box()
            if box is not None and box["width"] > 0 and (_right_edge(box) > right + 1 or box["x"] < 0):
                name, text = widget.get_attribute("class").split()[-1], (widget.text_content() or "")[:20]
                outside.append(f"{name} {text.strip()!r} at x={box['x']:.0f}..{_right_edge(box):.0f}")
        size = f"{viewport['width']}x{viewport['height']}"
        assert not outside, f"at {size} these dashboard widgets reach past x={right:.0f}: {outside}"


def _right_edge(box: dict) -> float:
    return box["x"] + box["width"]


COURSE = sorted((ROOT / "notebooks").glob("*.ipynb"))
OTHER_NOTEBOOKS = [p for p in COURSE if p.name not in (NOTEBOOK.name, DREAM_NOTEBOOK.name)]


@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", OTHER_NOTEBOOKS, ids=[p.stem for p in OTHER_NOTEBOOKS])
def test_notebook_runs_in_chromium(notebook, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (/usr/bin/chromium)")
    with serve_notebook(tmp_path, notebook, (PRETRAINED,), FAST) as (url, token), chromium() as browser:
        page = browser.new_page(viewport=STUDENT_VIEWPORT)
        open_and_run_all(page, url, token, f"notebooks/{notebook.name}")
        wait_until_run(page, 2 * READY_TIMEOUT_S)
        if notebook.name.startswith("01"):
            _first_second_of_throttle(page)
        _assert_ran_without_errors(page, tmp_path / "notebooks" / notebook.name)


def _assert_ran_without_errors(page, saved: Path) -> None:
    """Save the notebook from JupyterLab's File menu and read what it holds: no error output, an
    execution count on every code cell, ``ok`` printed by the last one (the notebook's own check)."""
    import nbformat

    before = saved.stat().st_mtime_ns
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^File$")).click(timeout=10_000)
    page.locator(".lm-Menu-itemLabel").get_by_text("Save Notebook", exact=True).click(timeout=10_000)
    _wait(lambda: saved.stat().st_mtime_ns != before, 30, f"JupyterLab to save {saved.name}")
    time.sleep(0.5)  # the write is a rename, but give a slow disk a moment
    cells = [c for c in nbformat.read(saved, as_version=4).cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{saved.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    assert all(c.get("execution_count") for c in cells), f"{saved.name}: a code cell did not run"
    last = "".join(
        o.get("text", "") for o in cells[-1].get("outputs", []) if o.get("output_type") == "stream"
    )
    lines = last.strip().splitlines()
    assert lines and lines[-1].startswith("ok"), f"{saved.name}: the last cell printed {last!r}"


def _first_second_of_throttle(page) -> None:
    """Notebook 01's drive view: hold the up arrow for a second over it; the car moves, no crash."""
    view = scroll_to(page, page.locator(".carlab-drive-view"))
    status = view.locator(".carlab-car")
    crashes = lambda: int(re.search(r"(\d+) crashes", status.text_content()).group(1))
    x0 = float(status.get_attribute("data-x"))
    before = crashes()
    view.locator("canvas").first.hover()
    page.keyboard.down("ArrowUp")
    time.sleep(1.0)
    page.keyboard.up("ArrowUp")
    _wait(
        lambda: abs(float(status.get_attribute("data-x")) - x0) > 5, 10, "the car to move under the up arrow"
    )
    assert crashes() == before, "a second of the up arrow from the start crashed the car"


@pytest.mark.timeout(900)
def test_dream_view_in_chromium(dream_url, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium not installed (/usr/bin/chromium)")
    url, token = dream_url
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium() as browser:
        page = browser.new_page(viewport=STUDENT_VIEWPORT)
        try:
            _drive_in_the_dream(page, url, token)
            _assert_ran_without_errors(page, tmp_path / "notebooks" / DREAM_NOTEBOOK.name)
        finally:
            with contextlib.suppress(Exception):
                page.locator(".carlab-dream-view").first.scroll_into_view_if_needed(timeout=2000)
            page.screenshot(path=str(ARTIFACTS / "dream.png"))


def _drive_in_the_dream(page, url: str, token: str) -> None:
    open_and_run_all(page, url, token, f"notebooks/{DREAM_NOTEBOOK.name}")
    view = page.locator(".carlab-dream-view").first
    view.wait_for(timeout=READY_TIMEOUT_S * 1000)
    canvas = view.locator("canvas").first
    meter = view.locator(".carlab-divergence")

    def pixels() -> tuple[int, int]:
        return tuple(canvas.evaluate(_CANVAS_DIGEST))

    def dream_steps() -> int:
        return int(meter.get_attribute("data-steps")) if meter.count() else -1

    def shown() -> str:  # what a failure message quotes: the meter and the view's error line
        text = meter.text_content() if meter.count() else "no meter"
        errors = view.locator(".widget-html-content", has_text="error")
        return f"meter: {text!r}; " + (errors.first.text_content() if errors.count() else "no error shown")

    def wait(predicate, timeout: float, what: str):
        return _wait(predicate, timeout, what, detail=shown)

    # Every cell ran (the last one checks the scripted drive), so the kernel is free for the keys.
    wait_until_run(page, READY_TIMEOUT_S)
    done = page.locator(".jp-OutputArea-output", has_text="divergence after 1 step")
    assert done.count() == 1, "the notebook's final check did not print its result"
    wait(lambda: pixels()[1] > 0, 60, "the dream view's first frame")
    assert dream_steps() == 0, "the dream moved before anyone drove"
    still = pixels()
    time.sleep(1.0)
    assert pixels() == still, "the dream view changes with nobody at the keys"

    # The up arrow, held over the canvas: both worlds drive, the picture and the meter change.
    canvas.hover()
    page.keyboard.down("ArrowUp")
    try:
        wait(lambda: dream_steps() > 5, 30, "the dream to step under the up arrow")
        wait(lambda: pixels() != still, 30, "the dream view's canvas to change")
    finally:
        page.keyboard.up("ArrowUp")
