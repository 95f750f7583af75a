"""Live-lab speed: frames/s sent to the canvas while training, training speed with and without the
live view, and the process's memory.

Prints, in one run:
  * env steps/s of the trainer thread *headless* (no view) and *with the live view* (render loop
    drawing every new snapshot, JPEG to the canvas, charts at 1 Hz, status at 5 Hz), and their ratio
    (target >= 70 %);
  * frames/s the render loop sent to the ipycanvas canvas while training (target >= 30);
  * the resident memory (RSS) of this process, which plays the kernel (target <= 1.5 GB).

The windows alternate (headless, view, headless, view, ...) and each figure is the median over its
windows, because this machine is shared and its load drifts. No browser is involved: "sent" means
encoded and handed to the widget's comm, which is where the kernel's work ends (the browser test
checks that frames arrive). Run: ``python benchmarks/lab_speed.py [--preset tiny] [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

from ipycanvas.canvas import _CANVAS_MANAGER

from carlab.lab import Dashboard, Trainer
from carlab.learn import config as config_lib


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB (Linux /proc)."""
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    kb = lambda name: float(fields.get(name, "0 kB").split()[0])
    return kb("VmRSS") / 1024, kb("VmHWM") / 1024


class FrameCounter:
    """Counts the JPEG images that go out through ipycanvas's shared manager widget."""

    def __init__(self):
        self.count = 0
        self._send = _CANVAS_MANAGER.send
        _CANVAS_MANAGER.send = self._counting_send

    def _counting_send(self, content, buffers=None):
        self.count += sum(1 for b in buffers or () if bytes(b[:3]) == b"\xff\xd8\xff")
        return self._send(content, buffers)


def measure(trainer: Trainer, frames: FrameCounter, seconds: float) -> tuple[float, float, float]:
    """(env steps/s, frames/s, snapshots/s) over ``seconds`` of training. A frame is drawn only for
    a new snapshot (the cars moved), so the snapshot rate bounds the frame rate."""
    a, f0, t0 = trainer.snapshot(), frames.count, time.perf_counter()
    time.sleep(seconds)
    b, f1, t1 = trainer.snapshot(), frames.count, time.perf_counter()
    dt = t1 - t0
    return (b["env_steps"] - a["env_steps"]) / dt, (f1 - f0) / dt, (b["frame"] - a["frame"]) / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--fps", type=float, default=40.0, help="the live view cap (the dashboard default)")
    args = parser.parse_args()
    window, pairs = (2.0, 1) if args.quick else (6.0, 3)

    frames = FrameCounter()
    trainer = Trainer(config_lib.preset(args.preset))
    started = time.perf_counter()
    trainer.wait_ready(600)
    build_s = time.perf_counter() - started
    dashboard = Dashboard(trainer, models_dir="/nonexistent-carlab-models", max_fps=args.fps)
    trainer.start()
    trainer.wait_until(lambda s: s["status"] == "running" and s["updates"] > 0, 600)
    time.sleep(window / 2)  # let the rounds per call settle

    headless, live, fps, snapshots = [], [], [], []
    for _ in range(pairs):
        headless.append(measure(trainer, frames, window)[0])
        dashboard.view.start()
        time.sleep(0.5)
        steps, rate, published = measure(trainer, frames, window)
        live.append(steps)
        fps.append(rate)
        snapshots.append(published)
        dashboard.view.stop()
    current, peak = rss_mb()
    snap, view = trainer.snapshot(), dashboard.view
    dashboard.close()

    figures = {
        "preset": args.preset,
        "cars": snap["config"].train.num_cars,
        "build_and_compile_s": round(build_s, 1),
        "rounds_per_call": snap["rounds_per_call"],
        "headless_env_steps_per_s": round(statistics.median(headless)),
        "live_view_env_steps_per_s": round(statistics.median(live)),
        "live_over_headless": round(statistics.median(live) / statistics.median(headless), 3),
        "canvas_fps": round(statistics.median(fps), 1),
        "snapshots_per_s": round(statistics.median(snapshots), 1),
        "fps_cap": args.fps,
        "render_cpu_ms_per_frame": round(1000 * view.frame_cpu_s / max(view.frames_sent, 1), 2),
        "chart_cpu_ms_per_refresh": round(1000 * view.chart_cpu_s / max(view.charts_sent, 1), 1),
        "rss_mb": round(current),
        "peak_rss_mb": round(peak),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(
        f"lab speed, preset {args.preset} ({figures['cars']} cars), {pairs} x {window:.0f} s windows each way"
    )
    print(f"  build + first compile          {build_s:8.1f} s")
    print(f"  training, headless             {figures['headless_env_steps_per_s']:8,} env steps/s")
    print(f"  training, live view on         {figures['live_view_env_steps_per_s']:8,} env steps/s"
          f"  ({figures['live_over_headless']:.0%} of headless; target >= 70%)")  # fmt: skip
    print(f"  frames sent to the canvas      {figures['canvas_fps']:8.1f} /s (cap {args.fps:g}; target >= 30),"
          f" of {figures['snapshots_per_s']:.1f} new snapshots/s")  # fmt: skip
    print(f"  CPU per frame (render + JPEG)  {figures['render_cpu_ms_per_frame']:8.2f} ms;"
          f" per chart refresh {figures['chart_cpu_ms_per_refresh']:.0f} ms")  # fmt: skip
    print(f"  process RSS                    {current:8.0f} MB (peak {peak:.0f} MB; target <= 1536)")
    print(f"  load average {figures['load_average']} on {figures['cpus']} CPUs")


if __name__ == "__main__":
    main()
