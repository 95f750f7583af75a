"""Two values of one knob over a handful of seeds: is it the knob or the seed? (notebook 6)

A learning-rate knob is traced in :func:`carlab.learn.seeds.train_seeds`, so seeds x values is one
call: :func:`knob_runs` lays the runs out, :func:`learning_rate_name` names the optimiser::

    run_seeds, run_values = knob_runs([0, 1, 2, 3], [3e-4, 1e-3])     # 8 runs
    states, histories = train_seeds(config, run_seeds, 100_000,
                                    learning_rates={learning_rate_name("agent.actor_lr"): run_values})
    low_runs, high_runs = by_value(histories, run_values, [3e-4, 1e-3])
    difference, low, high = median_difference_interval(scores(low_runs), scores(high_runs))

Nothing here imports Ray.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEARNING_RATES = {
    "world_model.learning_rate": "world_model",
    "agent.actor_lr": "actor",
    "agent.critic_lr": "critic",
}
"""Knobs that ``train_seeds`` can give each run its own value of (``learning_rates=`` names)."""


def learning_rate_name(knob: str) -> str:
    """The ``train_seeds(learning_rates=...)`` name of a learning-rate knob (``ValueError`` for another)."""
    if knob not in LEARNING_RATES:
        raise ValueError(f"{knob!r} is not a learning rate; choose one of {sorted(LEARNING_RATES)}")
    return LEARNING_RATES[knob]


def knob_runs(seeds: Sequence[int], values: Sequence) -> tuple[list[int], list]:
    """Every seed under every value, value by value: ``([0, 1, 0, 1], [a, a, b, b])``."""
    if not seeds or not values:
        raise ValueError("knob_runs: give at least one seed and one value")
    return [s for _ in values for s in seeds], [v for v in values for _ in seeds]


def by_value(
    histories: Sequence[list[dict]], run_values: Sequence, values: Sequence
) -> list[list[list[dict]]]:
    """The runs' histories grouped by knob value, in the order of ``values``."""
    if len(histories) != len(run_values):
        raise ValueError(f"by_value: {len(histories)} histories for {len(run_values)} run values")
    return [[h for h, v in zip(histories, run_values) if v == value] for value in values]


def curve(history: list[dict], key: str = "val/laps") -> tuple[np.ndarray, np.ndarray]:
    """(env steps, values) of the validated records of one run."""
    records = [r for r in history if key in r]
    return np.array([r["env_steps"] for r in records], float), np.array([r[key] for r in records], float)


def scores(histories: Sequence[list[dict]], *, key: str = "val/laps", last: int = 3) -> np.ndarray:
    """Each run's mean ``key`` (validation lap rate) over its ``last`` validated chunks: one number
    per seed, the end of a run, less noisy than its very last chunk."""
    out = []
    for history in histories:
        laps = curve(history, key)[1]
        if laps.size == 0:
            raise ValueError("scores: a run has no validated records (train_seeds with validate=True)")
        out.append(float(laps[-last:].mean()))
    return np.array(out)


def median_difference_interval(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(median(b) - median(a), low, high)``: the difference and its percentile bootstrap interval.

    Each bootstrap sample draws len(a) runs from ``a`` and len(b) from ``b`` with replacement (the
    seeds are the unit that varies) and takes the difference of their medians; ``low`` and ``high``
    are the (1 - level) / 2 and (1 + level) / 2 quantiles of those differences (Efron & Tibshirani,
    *An Introduction to the Bootstrap*, 1993, ch. 13). An interval that holds 0 says: these seeds
    cannot tell the two values apart.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size < 1 or b.size < 1 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("median_difference_interval: give at least one finite score per value")
    if not 0.0 < level < 1.0:
        raise ValueError(f"median_difference_interval: level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    draws_a = rng.choice(a, size=(resamples, a.size), replace=True)
    draws_b = rng.choice(b, size=(resamples, b.size), replace=True)
    differences = np.median(draws_b, axis=1) - np.median(draws_a, axis=1)
    low, high = np.quantile(differences, [(1 - level) / 2, (1 + level) / 2])
    return float(np.median(b) - np.median(a)), float(low), float(high)


def plot_curves(groups: Sequence[Sequence[list[dict]]], labels: Sequence[str], *, title: str = "", ax=None):
    """Every run's validation lap rate over env steps, one colour per group (thin: a seed; thick:
    the group's median); returns the figure (pyplot, for a notebook)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.5))
    for index, (runs, label) in enumerate(zip(groups, labels, strict=True)):
        colour = f"C{index}"
        curves = [curve(history) for history in runs]
        for x, y in curves:
            ax.plot(x, y, color=colour, linewidth=0.9, alpha=0.5)
        length = min(len(y) for _, y in curves)
        median = np.median([y[:length] for _, y in curves], axis=0)
        ax.plot(
            curves[0][0][:length], median, color=colour, linewidth=3, label=f"{label}: median of {len(runs)}"
        )
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("env steps (each run)")
    ax.set_ylabel("validation lap rate")
    ax.set_title(title or "every seed's curve, one colour per value")
    ax.legend(loc="upper left")
    return ax.figure
