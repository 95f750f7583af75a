"""A sweep on disk: ``DIR/results.csv`` (one row per trial and seed), a figure per swept knob, and
the best trial's checkpoints.

Rows are appended as each trial finishes (the file is flushed and synced each time), so an
interrupted sweep keeps the finished trials' rows. Columns: ``trial``, one per knob, ``seed``,
``final_laps`` and ``best_laps`` (validation lap rate at the trial's last chunk and its best over
the run), ``final_progress``, ``env_steps`` (each run's), ``wall_s`` (the trial's training time)
and ``status`` (``done``; ``stopped`` when the scheduler stopped it early; ``error``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

RESULTS_NAME = "results.csv"
"""The results file in a sweep's folder."""
ROW_KEYS = ("seed", "final_laps", "best_laps", "final_progress", "env_steps", "wall_s", "status")
"""The columns after ``trial`` and the knobs."""


def columns(knobs: Sequence[str]) -> list[str]:
    """The header of ``results.csv`` for a sweep of ``knobs``."""
    return ["trial", *knobs, *ROW_KEYS]


def trial_rows(name: str, knobs: dict, report: dict, *, status: str) -> list[dict]:
    """One row per seed of a trial, from the trial's last report (:func:`carlab.sweep.tune.report_of`)."""
    return [
        {
            "trial": name,
            **{k: _cell(v) for k, v in knobs.items()},
            "seed": seed,
            "final_laps": laps,
            "best_laps": best,
            "final_progress": progress,
            "env_steps": report["env_steps"],
            "wall_s": round(report["time_s"], 2),
            "status": status,
        }
        for seed, laps, best, progress in zip(
            report["seeds"],
            report["seed_laps"],
            report["seed_best_laps"],
            report["seed_progress"],
            strict=True,
        )
    ]


def _cell(value):
    return "x".join(map(str, value)) if isinstance(value, (list, tuple)) else value


class ResultsWriter:
    """Appends rows to ``DIR/results.csv`` as trials finish (picklable: it keeps only the path)."""

    def __init__(self, folder, knobs: Sequence[str]):
        self.path = Path(folder) / RESULTS_NAME
        self.columns = columns(knobs)

    def start(self) -> Path:
        """Create the folder and a file holding only the header (an earlier sweep's rows are replaced)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, lineterminator="\n").writerow(self.columns)
        return self.path

    def append(self, rows: Sequence[dict]) -> None:
        """Add ``rows`` at the end, on disk before it returns (a Ctrl-C after it keeps them)."""
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n").writerows(rows)
            f.flush()
            os.fsync(f.fileno())


def read_results(folder) -> list[dict]:
    """The rows of ``DIR/results.csv``, numbers as numbers (knob cells stay text when not numeric)."""
    with open(Path(folder) / RESULTS_NAME, newline="", encoding="utf-8") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def medians(rows: Sequence[dict], key: str = "best_laps") -> dict[str, float]:
    """Trial name -> the median over its seeds of ``key``."""
    trials: dict[str, list[float]] = {}
    for row in rows:
        trials.setdefault(row["trial"], []).append(float(row[key]))
    return {name: float(np.median(values)) for name, values in trials.items()}


def best_trial(rows: Sequence[dict]) -> str | None:
    """The trial with the highest median best lap rate, ties broken by the median final lap rate."""
    best, final = medians(rows, "best_laps"), medians(rows, "final_laps")
    return max(best, key=lambda name: (best[name], final[name]), default=None)


def figure_path(folder, knob: str) -> Path:
    """``DIR/laps-by-agent.actor_lr.png``: the figure of one swept knob."""
    return Path(folder) / f"laps-by-{knob}.png"


def plot_knob(rows: Sequence[dict], knob: str, png_path) -> Path:
    """Save a PNG of the lap rate by ``knob``'s value: one point per run (seed), the median of each
    value marked by a bar; final and best validation lap rate side by side. Rows of other knobs'
    values are pooled under this knob's value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from carlab.learn import runs  # imported late: it pulls in JAX

    if not rows or knob not in rows[0]:
        raise ValueError(f"plot_knob: no rows with the knob {knob!r}")
    values = sorted({row[knob] for row in rows}, key=_sort_key)
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    jitter = np.random.default_rng(0)  # fixed: the same rows give the same picture
    for ax, key, label in zip(axes, ("final_laps", "best_laps"), ("final", "best")):
        for x, value in enumerate(values):
            laps = np.array([float(r[key]) for r in rows if r[knob] == value])
            ax.scatter(x + jitter.uniform(-0.12, 0.12, laps.size), laps, s=28, alpha=0.7, color=f"C{x}")
            median = float(np.median(laps))
            ax.hlines(median, x - 0.25, x + 0.25, color="black", linewidth=2.5)
            ax.annotate(f"median {median:.0%}", (x, median + 0.03), fontsize="small", ha="center")
        ax.set_xticks(range(len(values)), [str(v) for v in values])
        ax.set_xlim(-0.6, len(values) - 0.1)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(knob)
        ax.set_title(f"{label} validation lap rate, one point per seed")
    axes[0].set_ylabel("lap rate (validation tracks)")
    fig.suptitle(f"{knob}: {len(rows)} runs")
    fig.tight_layout()
    return runs.save_figure(fig, png_path)


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def write_figures(folder, knobs: Sequence[str]) -> list[Path]:
    """One :func:`plot_knob` figure per knob from ``DIR/results.csv`` (none when it has no rows)."""
    rows = read_results(folder)
    return [plot_knob(rows, knob, figure_path(folder, knob)) for knob in knobs] if rows else []
