"""Live-lab speed in the kernel: training speed with and without the live view, the pose updates
sent to the canvas, and the process's memory.

Prints, in one run:
  * env steps/s of the trainer thread *headless* (no view) and *with the live view* (the render loop
    sending every new snapshot's car poses to the race canvas, charts at 1 Hz, status at 5 Hz), and
    their ratio (target >= 70 %);
  * pose updates/s the render loop sent to the canvas while training, their size and their CPU cost
    (the browser draws the frames in between: ``benchmarks/lab_browser_fps.py`` counts those);
  * the resident memory (RSS) of this process, which plays the kernel (target <= 1.5 GB).

The windows alternate (headless, view, headless, view, ...) and each figure is the median over its
windows, because this machine is shared and its load drifts. No browser is involved: "sent" means
handed to the widget's comm, which is where the kernel's work ends.
Run: ``python benchmarks/lab_speed.py [--preset tiny] [--quick] [--json]``.
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


def measure(trainer: Trainer, view, seconds: float) -> tuple[float, float, float]:
    """(env steps/s, pose updates/s, snapshots/s) over ``seconds`` of training. Poses are sent only
    for a new snapshot (the cars moved), so the snapshot rate bounds the update rate."""
    a, f0, t0 = trainer.snapshot(), view.frames_sent, time.perf_counter()
    time.sleep(seconds)
    b, f1, t1 = trainer.snapshot(), view.frames_sent, time.perf_counter()
    dt = t1 - t0
    return (b["env_steps"] - a["env_steps"]) / dt, (f1 - f0) / dt, (b["frame"] - a["frame"]) / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--quick", action="store_true", help="short windows (a smoke run)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument(
        "--fps", type=float, default=40.0, help="the live view's update cap (the dashboard default)"
    )
    args = parser.parse_args()
    window, pairs = (2.0, 1) if args.quick else (6.0, 3)

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
        headless.append(measure(trainer, dashboard.view, window)[0])
        dashboard.view.start()
        time.sleep(0.5)
        steps, rate, published = measure(trainer, dashboard.view, window)
        live.append(steps)
        fps.append(rate)
        snapshots.append(published)
        dashboard.view.stop()
    current, peak = rss_mb()
    snap, view = trainer.snapshot(), dashboard.view
    figures_canvas = len(dashboard.canvas.poses)
    dashboard.close()

    figures = {
        "preset": args.preset,
        "cars": snap["config"].train.num_cars,
        "build_and_compile_s": round(build_s, 1),
        "rounds_per_call": snap["rounds_per_call"],
        "headless_env_steps_per_s": round(statistics.median(headless)),
        "live_view_env_steps_per_s": round(statistics.median(live)),
        "live_over_headless": round(statistics.median(live) / statistics.median(headless), 3),
        "pose_updates_per_s": round(statistics.median(fps), 1),
        "snapshots_per_s": round(statistics.median(snapshots), 1),
        "update_cap": args.fps,
        "bytes_per_update": figures_canvas,
        "cpu_ms_per_update": round(1000 * view.frame_cpu_s / max(view.frames_sent, 1), 3),
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
    print(f"  pose updates sent to canvas    {figures['pose_updates_per_s']:8.1f} /s (cap {args.fps:g}),"
          f" of {figures['snapshots_per_s']:.1f} new snapshots/s, {figures['bytes_per_update']} bytes each")  # fmt: skip
    print(f"  CPU per pose update            {figures['cpu_ms_per_update']:8.3f} ms;"
          f" per chart refresh {figures['chart_cpu_ms_per_refresh']:.0f} ms")  # fmt: skip
    print(f"  process RSS                    {current:8.0f} MB (peak {peak:.0f} MB; target <= 1536)")
    print(f"  load average {figures['load_average']} on {figures['cpus']} CPUs")


if __name__ == "__main__":
    main()
