"""Lap rate against env steps for SB3 SAC, SB3 PPO and carlab: median and worst seed per learner.

    python benchmarks/plot_baselines.py benchmarks/results/sac.json benchmarks/results/ppo.json \\
        carlab_seed*.json --out docs/baselines.png [--table]

Each file is either a ``benchmarks/baselines.py --json`` output (one learner, its seeds under
``runs``) or one ``benchmarks/learning.py --json`` summary (one carlab seed; the seeds of one preset
are gathered as one learner). Per learner: the median seed (solid), the worst seed (dashed) and the
band between the worst and the best seed, on a log-scale env-step axis. ``--table`` also prints,
per learner, a Markdown table of the median and worst seed's lap rate at each evaluation.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def load(path: Path) -> tuple[str, list[dict]]:
    """``(learner, runs)`` of one file (its last JSON line, so stray log lines above it are fine)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    if "runs" in summary and "algo" in summary:
        return f"SB3 {summary['algo'].upper()}", summary["runs"]
    if "curve" in summary and "config" in summary:
        return f"carlab ({summary['config']})", [summary]
    raise SystemExit(f"{path}: no baselines.py or learning.py JSON summary in it")


def gather(paths: list[Path]) -> dict[str, list[dict]]:
    """The runs of every file, grouped by learner (in the order the files name them)."""
    learners: dict[str, list[dict]] = {}
    for path in paths:
        name, runs = load(path)
        learners.setdefault(name, []).extend(runs)
    return learners


def seed_stats(runs: list[dict]) -> dict[str, np.ndarray]:
    """Per evaluation (up to the shortest run): env steps and the median, worst and best lap rate."""
    length = min(len(run["curve"]) for run in runs)
    if length == 0:
        raise SystemExit("a run has no evaluations")
    steps = np.array([[p["env_steps"] for p in run["curve"][:length]] for run in runs])
    laps = np.array([[p["lap_completion_rate"] for p in run["curve"][:length]] for run in runs])
    return {
        "env_steps": np.median(steps, axis=0),  # the seeds of one learner evaluate at the same steps
        "median": np.median(laps, axis=0),
        "worst": laps.min(axis=0),
        "best": laps.max(axis=0),
    }


def plot(learners: dict[str, list[dict]], out: Path, *, target: float = 0.9) -> Path:
    """Draw every learner's median, worst seed and band into ``out`` (PNG) and return it."""
    fig, ax = plt.subplots(figsize=(13, 5.5), constrained_layout=True)
    for name, runs in learners.items():
        stats = seed_stats(runs)
        x = stats["env_steps"]
        (line,) = ax.plot(x, stats["median"], marker=".", label=f"{name}: median of {len(runs)} seed(s)")
        color = line.get_color()
        if len(runs) > 1:
            ax.plot(x, stats["worst"], ls="--", color=color, label=f"{name}: worst seed")
            ax.fill_between(x, stats["worst"], stats["best"], color=color, alpha=0.15, lw=0)
    ax.axhline(target, ls=":", color="grey", lw=1)
    for steps, label in ((25_000, "goal: median >= 90 % at 25k"), (50_000, "every seed at 50k")):
        ax.axvline(steps, ls=":", color="red", lw=1)
        ax.text(steps, 0.02, f" {label}", color="red", fontsize="small", rotation=90, va="bottom")
    ax.set_xscale("log")
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("env steps (log scale)")
    ax.set_ylabel("lap rate on held-out tracks")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the curves
    ax.set_title("Sample efficiency on carlab/Race-v0 (band: worst to best seed)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def table(name: str, runs: list[dict]) -> str:
    """A Markdown table of one learner: env steps, median and worst seed's lap rate, per evaluation."""
    stats = seed_stats(runs)
    lines = [
        f"{name}, {len(runs)} seed(s)",
        "",
        "| env steps | median lap rate | worst seed |",
        "|---:|---:|---:|",
    ]
    for steps, median, worst in zip(stats["env_steps"], stats["median"], stats["worst"], strict=True):
        lines.append(f"| {int(steps):,} | {median:.0%} | {worst:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="baselines.py / learning.py --json files")
    parser.add_argument("--out", type=Path, default=Path("docs/baselines.png"))
    parser.add_argument("--table", action="store_true", help="also print a Markdown table per learner")
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="LEARNER=LABEL",
        help="show a learner under another name, e.g. --name 'carlab (default)=carlab anchored'; repeatable",
    )
    args = parser.parse_args(argv)
    learners = gather(args.summaries)
    for item in args.name:
        old, _, new = item.partition("=")
        if old not in learners or not new:
            parser.error(f"--name wants LEARNER=LABEL with one of {sorted(learners)}, got {item!r}")
        learners = {new if k == old else k: v for k, v in learners.items()}
    path = plot(learners, args.out)
    if args.table:
        for name, runs in learners.items():
            print(table(name, runs) + "\n")
    print(path)
    return path


if __name__ == "__main__":
    main()
