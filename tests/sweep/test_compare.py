"""Notebook 6's helpers: runs laid out seeds x values, scores, the bootstrap interval, the curves."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from carlab.sweep import compare


def test_runs_are_every_seed_under_every_value():
    assert compare.knob_runs([0, 1], [1e-4, 3e-4]) == ([0, 1, 0, 1], [1e-4, 1e-4, 3e-4, 3e-4])
    assert compare.learning_rate_name("agent.actor_lr") == "actor"
    assert compare.learning_rate_name("world_model.learning_rate") == "world_model"
    with pytest.raises(ValueError, match="not a learning rate"):
        compare.learning_rate_name("agent.horizon")
    with pytest.raises(ValueError, match="at least one seed"):
        compare.knob_runs([], [1e-4])


def _history(laps):
    return [{"env_steps": 400 * (i + 1), "val/laps": v, "val/progress": v} for i, v in enumerate(laps)]


def test_scores_are_the_mean_of_the_last_validated_chunks():
    runs = [_history([0.0, 0.2, 0.4, 0.6]), _history([1.0])]
    assert compare.scores(runs).tolist() == pytest.approx([0.4, 1.0])
    assert compare.scores(runs, last=1).tolist() == pytest.approx([0.6, 1.0])
    groups = compare.by_value(runs, [1, 2], [2, 1])
    assert groups == [[runs[1]], [runs[0]]]
    with pytest.raises(ValueError, match="no validated records"):
        compare.scores([[{"env_steps": 1}]])


def test_the_bootstrap_interval_against_a_hand_computed_case():
    # Identical single scores: every resample gives the same difference.
    assert compare.median_difference_interval([0.2], [0.5]) == pytest.approx((0.3, 0.3, 0.3))
    # Groups far apart: the interval leaves out 0 and holds the observed difference.
    a, b = [0.0, 0.05, 0.1, 0.1], [0.8, 0.9, 0.9, 1.0]
    difference, low, high = compare.median_difference_interval(a, b)
    assert difference == pytest.approx(0.9 - 0.075) and 0 < low <= difference <= high
    # Two draws of one spread: the interval holds 0.
    rng = np.random.default_rng(1)
    _, low, high = compare.median_difference_interval(rng.uniform(size=5), rng.uniform(size=5))
    assert low < 0 < high


def test_the_bootstrap_is_reproducible_and_refuses_bad_input():
    a, b = np.linspace(0, 0.6, 7), np.linspace(0.2, 1.0, 9)
    first = compare.median_difference_interval(a, b, resamples=30, seed=3)
    assert first == compare.median_difference_interval(a, b, resamples=30, seed=3)
    assert first[1:] != compare.median_difference_interval(a, b, resamples=30, seed=4)[1:]
    with pytest.raises(ValueError, match="at least one finite score"):
        compare.median_difference_interval([], [0.1])
    with pytest.raises(ValueError, match="at least one finite score"):
        compare.median_difference_interval([np.nan], [0.1])
    with pytest.raises(ValueError, match="level"):
        compare.median_difference_interval([0.1], [0.2], level=1.0)


def test_the_curves_figure_has_a_line_per_run_and_a_median_per_value():
    groups = [
        [_history([0.1, 0.2]), _history([0.0, 0.4])],
        [_history([0.5, 0.7]), _history([0.3, 0.9]), _history([1, 1])],
    ]
    fig = compare.plot_curves(groups, ["a", "b"])
    (ax,) = fig.axes
    assert len(ax.lines) == 5 + 2
    assert ax.lines[2].get_ydata().tolist() == pytest.approx([0.05, 0.3])  # group a's median
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a: median of 2", "b: median of 3"]
