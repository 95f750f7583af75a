"""The live lab's frame rate as the browser shows it: distinct pictures per second on the dashboard's
canvas in Chromium while the trainer trains, and the env steps/s the status line reports meanwhile.

``benchmarks/lab_speed.py`` counts the frames the kernel *sends*; this counts the frames a student
*sees*. It starts JupyterLab (its default settings) over a temporary copy of ``notebooks/05_live_lab.ipynb``
and the pretrained agent, runs all cells at full size (the default preset, as a student gets it), presses
Start, and samples the canvas at every animation frame of the page for ``--seconds``: a frame counts
when the canvas's pixels differ from the previous sample. Needs Debian's ``/usr/bin/chromium`` and
Playwright (the dev extra).

    python benchmarks/lab_browser_fps.py [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "lab"))
from browser_support import chromium, open_and_run_all, serve_notebook

# Counts changes of the canvas at each requestAnimationFrame: the canvas is drawn into a 100x75 copy
# first (a full-size getImageData on every animation frame would itself eat the CPU being measured),
# and a frame counts when the copy's pixels differ from the previous sample's.
_COUNT_FRAMES = """async (canvas, ms) => {
    const small = document.createElement('canvas');
    small.width = 100; small.height = 75;
    const ctx = small.getContext('2d', {willReadFrequently: true});
    const digest = () => {
        ctx.drawImage(canvas, 0, 0, small.width, small.height);
        const data = ctx.getImageData(0, 0, small.width, small.height).data;
        let h = 0;
        for (let i = 0; i < data.length; i += 4) h = (Math.imul(h, 31) + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) >>> 0;
        return h;
    };
    let last = digest(), changes = 0, samples = 0;
    const start = performance.now();
    while (performance.now() - start < ms) {
        await new Promise(requestAnimationFrame);
        const now = digest();
        samples += 1;
        if (now !== last) { changes += 1; last = now; }
    }
    return [changes, samples, (performance.now() - start) / 1000];
}"""


def main(argv: list[str] | None = None) -> dict:
    """Measure; print a summary (or ``--json``) and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to watch the canvas")
    parser.add_argument("--fast", action="store_true", help="CARLAB_FAST=1 (the tiny preset; a smoke run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    notebook = ROOT / "notebooks" / "05_live_lab.ipynb"
    with tempfile.TemporaryDirectory(prefix="carlab-fps-") as tmp:
        models = (ROOT / "models" / "agent.safetensors",)
        extra = {"CARLAB_FAST": "1"} if args.fast else {}
        served = serve_notebook(Path(tmp), notebook, models, extra)
        with served as (url, token), chromium() as browser:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            open_and_run_all(page, url, token, f"notebooks/{notebook.name}")
            out = page.locator(".jp-OutputArea-output").first
            out.locator("button", has_text="Start").wait_for(timeout=600_000)
            status = out.locator(".widget-html-content", has_text="env steps")

            def status_text() -> str:
                return status.text_content() if status.count() else ""

            def steps() -> int:
                match = re.search(r"([\d,]+) env steps", status_text())
                return int(match.group(1).replace(",", "")) if match else -1

            deadline = time.monotonic() + 600
            while not status_text().startswith("paused") and time.monotonic() < deadline:
                time.sleep(0.5)  # the notebook's own step(n) cell, then idle
            out.locator("button", has_text="Start").click()
            while not status_text().startswith("running") and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(3.0)  # let the rounds per call settle
            canvas = out.locator("canvas").first
            canvas.scroll_into_view_if_needed()
            steps_before, t0 = steps(), time.monotonic()
            changes, samples, seconds = canvas.evaluate(_COUNT_FRAMES, int(args.seconds * 1000))
            steps_after, t1 = steps(), time.monotonic()
            out.locator("button", has_text="Pause").click()
    figures = {
        "preset": "tiny" if args.fast else "default",
        "browser_fps": round(changes / seconds, 1),
        "animation_frames_per_s": round(samples / seconds, 1),
        "env_steps_per_s": round((steps_after - steps_before) / (t1 - t0)),
        "seconds": round(seconds, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"lab in Chromium, preset {figures['preset']}, {seconds:.1f} s watched while training:")
        print(f"  distinct canvas frames  {figures['browser_fps']:7.1f} /s (target >= 30)")
        print(
            f"  page animation frames   {figures['animation_frames_per_s']:7.1f} /s (the most it could show)"
        )
        print(f"  training (status line)  {figures['env_steps_per_s']:7,} env steps/s")
        print(f"  load average {figures['load_average']} on {figures['cpus']} CPUs")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
