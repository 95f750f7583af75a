"""Plot the lap-rate curves of ``benchmarks/learning.py --json`` runs (one line per run).

    python benchmarks/learning.py --config race --seed 0 --json > race_s0.json   # and other seeds
    python benchmarks/plot_learning.py race_s*.json --out docs/learning_curve.png

Top: lap rate on the held-out tracks against env steps, with a dot where each run first reached
the target and a star at the driver its best checkpoint kept (evaluated the same way). Bottom: the
same runs against wall-clock seconds of training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path: Path) -> dict:
    """One run's summary (the last JSON line of the file, so stray log lines above it are fine)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"{path}: no JSON summary (make it with benchmarks/learning.py --json)")
    return json.loads(lines[-1])


def plot(runs: list[dict], out: Path) -> Path:
    """Draw the runs' curves into ``out`` (PNG) and return it."""
    fig, (ax_steps, ax_time) = plt.subplots(2, 1, figsize=(10, 7), constrained_layout=True)
    for run in runs:
        curve = run["curve"]
        steps = [p["env_steps"] for p in curve]
        laps = [p["lap_completion_rate"] for p in curve]
        label = f"seed {run['seed']}" + (f" ({', '.join(run['overrides'])})" if run.get("overrides") else "")
        (line,) = ax_steps.plot(steps, laps, marker=".", label=label)
        ax_time.plot([p["wall_s"] for p in curve], laps, marker=".", color=line.get_color(), label=label)
        if run.get("reached"):
            hit = run["reached"]
            ax_steps.plot(
                hit["env_steps"], hit["lap_completion_rate"], "o", ms=10, mfc="none", color=line.get_color()
            )
            ax_time.plot(
                hit["wall_s"], hit["lap_completion_rate"], "o", ms=10, mfc="none", color=line.get_color()
            )
        if run.get("best_checkpoint"):
            best = run["best_checkpoint"]
            ax_steps.plot(best["env_steps"], best["lap_completion_rate"], "*", ms=14, color=line.get_color())
    target = runs[0].get("target", 0.9)
    for ax in (ax_steps, ax_time):
        ax.axhline(target, ls="--", color="grey", lw=1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("lap rate (held-out tracks)")
        ax.grid(alpha=0.3)
    ax_time.axvline(180, ls=":", color="red", lw=1, label="3 minutes")
    ax_steps.set_xlabel("env steps  (circle: first at the target, star: the best checkpoint)")
    ax_time.set_xlabel("training wall time, s (evaluations excluded)")
    ax_steps.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax_time.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    config = runs[0].get("config", "?")
    fig.suptitle(f"{config} preset: lap rate on {len(runs)} run(s), evaluated every 100k env steps")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="files with learning.py --json output")
    parser.add_argument("--out", type=Path, default=Path("docs/learning_curve.png"))
    args = parser.parse_args(argv)
    path = plot([load(p) for p in args.summaries], args.out)
    print(path)
    return path


if __name__ == "__main__":
    main()
