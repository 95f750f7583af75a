"""A set of seeds on disk: one run checkpoint per seed, and one figure of them all.

``carlab train --seeds 0-7 --out runs/x.safetensors`` trains the set with
:func:`carlab.learn.seeds.train_seeds` and writes, per seed, a normal run checkpoint
``runs/x-seed3.safetensors`` (:func:`carlab.learn.runs.seed_path`; ``carlab eval``, ``carlab play
--agent`` and the lab load it as any run), its ``-best`` sibling and metrics files, and for the set
``runs/x-seeds.png`` (:func:`plot_seeds`)::

    states, config, histories = load_seeds("runs/x.safetensors", range(8))   # resume the set
    states, more = train_seeds(config, range(8), 100_000, states=states)
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from carlab.learn import loop, runs
from carlab.learn.config import Config
from carlab.learn.loop import TrainState
from carlab.learn.seeds import check_seeds, seed_config, stack_states


def plot_seeds(histories: Sequence[list[dict]], seeds: Sequence[int], png_path, *, title: str | None = None):
    """Save a PNG of every run's validation lap rate and progress over env steps: one thin line per
    seed, the median thick, the min-max spread shaded (records from :func:`train_seeds`).

    Like :func:`carlab.learn.runs.plot_learning_curve` it draws on a bare Agg figure (never pyplot).
    Runs whose records fall at other env steps (resumed sets) meet on the union of those steps.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    seeds = check_seeds(seeds)
    if len(histories) != len(seeds) or not any(any("val/laps" in r for r in h) for h in histories):
        raise ValueError("plot_seeds: give one validated history (train_seeds records) per seed")
    steps = sorted({r["env_steps"] for h in histories for r in h if "val/laps" in r})
    column = {s: j for j, s in enumerate(steps)}
    fig = Figure(figsize=(11, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharex=True)
    for ax, key, label in zip(axes, ("val/laps", "val/progress"), ("lap rate", "mean progress (laps)")):
        values = np.full((len(seeds), len(steps)), np.nan)
        for i, history in enumerate(histories):
            for record in history:
                if key in record and record[key] is not None:
                    values[i, column[record["env_steps"]]] = record[key]
        for seed, row in zip(seeds, values):
            ok = np.isfinite(row)
            ax.plot(np.asarray(steps)[ok], row[ok], linewidth=0.8, alpha=0.6, label=f"seed {seed}")
        seen = np.isfinite(values).any(axis=0)
        x, kept = np.asarray(steps, float)[seen], values[:, seen]
        ax.fill_between(
            x, np.nanmin(kept, axis=0), np.nanmax(kept, axis=0), color="0.5", alpha=0.2, label="min-max"
        )
        ax.plot(x, np.nanmedian(kept, axis=0), color="black", linewidth=2.5, label="median")
        ax.set_ylim(0.0, 1.05)
        ax.set_xlabel("env steps (each run)")
        ax.set_title(f"validation {label}, {len(seeds)} seeds")
    axes[0].legend(fontsize="x-small", ncol=2 if len(seeds) > 8 else 1)
    fig.suptitle(title or f"{len(seeds)} seeds")
    fig.tight_layout()
    return runs.save_figure(fig, png_path)


def parse_seeds(text: str) -> list[int]:
    """``"0-7"``, ``"0,3,5"`` or ``"0-3,8"`` -> the seeds in that order (``ValueError``, one line, if bad)."""
    seeds: list[int] = []
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"--seeds {text!r}: {part.strip()!r} is not a seed or a range like 0-7")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"--seeds {text!r}: the range {first}-{last} runs backwards")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s, n in collections.Counter(seeds).items() if n > 1})
    if repeated:
        raise ValueError(f"--seeds {text!r}: seed {repeated[0]} appears twice")
    return seeds


def load_seeds(path, seeds: Sequence[int]) -> tuple[TrainState, Config, list[list[dict]]]:
    """The set of runs ``<path stem>-seed<S>.safetensors`` (:func:`carlab.learn.runs.seed_path`) of
    ``seeds``, to resume with :func:`train_seeds`: ``(stacked states, shared config, histories)``.

    Raises :class:`carlab.learn.checkpoint.CheckpointError` for an unreadable file, ``ValueError`` if a
    file holds another seed or the runs' configs differ (beyond their seeds).
    """
    states, histories, config, first = [], [], None, None
    for seed in check_seeds(seeds):
        file = runs.seed_path(path, seed)
        state, run_config, history, _ = runs.load_run(file)
        if run_config.train.seed != seed:
            raise ValueError(f"{file} is a run of seed {run_config.train.seed}, not {seed}")
        if config is None:
            config, first = loop.seedless(run_config), file
        elif loop.seedless(run_config) != config:
            raise ValueError(f"{file} and {first} have different configs; a set of seeds shares one")
        states.append(state)
        histories.append(history)
    return stack_states(states), config, histories


def save_seeds(
    out, states: Sequence[TrainState], config: Config, seeds: Sequence[int], histories, *, extras=None
) -> Path:
    """Save each seed's run as ``<out stem>-seed<S>.safetensors`` with its metrics files, and the set's
    figure ``<out stem>-seeds.png`` (:func:`plot_seeds`); returns the figure's path.

    ``states`` holds one plain TrainState per seed (:func:`seed_state`), ``histories`` each run's whole
    history, ``extras`` (optional) one dict of extra metadata per run (``{"eval": ...}``).
    """
    seeds = check_seeds(seeds)
    extras = [{}] * len(seeds) if extras is None else list(extras)
    for seed, state, history, extra in zip(seeds, states, histories, extras, strict=True):
        path = runs.seed_path(out, seed)
        runs.save_run(path, state, seed_config(config, seed), history, extra=extra)
        runs.write_metrics(history, runs.metrics_prefix(path))
    steps = int(states[0].env_steps)
    title = f"{runs.config_name(seed_config(config, seeds[0]))} config, {len(seeds)} seeds, {steps:,} env steps each"
    return plot_seeds(histories, seeds, runs.seeds_figure_path(out), title=title)


def format_summary(seeds: Sequence[int], paths, best: Sequence[tuple[float, float]], evals=None) -> str:
    """Lines for ``carlab train --seeds``: each seed's checkpoint, best validation lap rate and (with
    ``evals``, :func:`carlab.learn.evaluation.evaluate` results) held-out lap rate, then the median."""
    lines = []
    for i, (seed, path) in enumerate(zip(seeds, paths, strict=True)):
        line = f"seed {seed}: saved {path}; best validation {best[i][0]:.0%} laps"
        if evals is not None:
            line += (
                f"; eval {evals[i]['lap_completion_rate']:.0%} laps, progress {evals[i]['mean_progress']:.2f}"
            )
        lines.append(line)
    if evals is not None:
        laps = [e["lap_completion_rate"] for e in evals]
        lines.append(
            f"eval on {evals[0]['num_tracks']} held-out tracks, {len(seeds)} seeds: median "
            f"{float(np.median(laps)):.0%} laps, worst {min(laps):.0%}, best {max(laps):.0%}"
        )
    return "\n".join(lines)
