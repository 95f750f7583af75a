"""results.csv rows as trials finish, the best trial, the figure per knob."""

from __future__ import annotations

import csv

import pytest

from carlab.sweep import results


def _report(seeds, laps, best, env_steps=400, time_s=1.5):
    return {"seeds": seeds, "seed_laps": laps, "seed_best_laps": best, "seed_progress": [0.5] * len(seeds),
            "env_steps": env_steps, "time_s": time_s}  # fmt: skip


def test_rows_are_appended_one_trial_at_a_time_and_read_back(tmp_path):
    writer = results.ResultsWriter(tmp_path / "sweep", ["agent.actor_lr", "agent.actor_hidden"])
    path = writer.start()
    assert path.read_text().splitlines() == [
        ",".join(results.columns(["agent.actor_lr", "agent.actor_hidden"]))
    ]
    knobs = {"agent.actor_lr": 1e-4, "agent.actor_hidden": (64, 32)}
    writer.append(results.trial_rows("a", knobs, _report([0, 1], [0.25, 0.5], [0.5, 0.75]), status="done"))
    assert len(results.read_results(tmp_path / "sweep")) == 2  # on disk before the next trial
    knobs = {"agent.actor_lr": 3e-4, "agent.actor_hidden": (32,)}
    writer.append(
        results.trial_rows("b", knobs, _report([0, 1], [0.0, 1.0], [1.0, 1.0], 200), status="stopped")
    )
    rows = results.read_results(tmp_path / "sweep")
    assert [(r["trial"], r["seed"], r["final_laps"], r["best_laps"], r["status"]) for r in rows] == [
        ("a", 0, 0.25, 0.5, "done"), ("a", 1, 0.5, 0.75, "done"),
        ("b", 0, 0.0, 1.0, "stopped"), ("b", 1, 1.0, 1.0, "stopped"),
    ]  # fmt: skip
    assert rows[0]["agent.actor_lr"] == 1e-4 and rows[0]["agent.actor_hidden"] == "64x32"
    assert rows[2]["env_steps"] == 200 and rows[0]["wall_s"] == 1.5
    with open(path, newline="") as f:
        assert len(list(csv.reader(f))) == 5


def test_the_best_trial_has_the_best_median_then_the_best_final_median():
    rows = [
        {"trial": "a", "best_laps": 0.9, "final_laps": 0.1},
        {"trial": "a", "best_laps": 0.1, "final_laps": 0.1},
        {"trial": "a", "best_laps": 0.2, "final_laps": 0.1},  # median best 0.2
        {"trial": "b", "best_laps": 0.5, "final_laps": 0.0},
        {"trial": "b", "best_laps": 0.5, "final_laps": 0.0},  # median best 0.5, final 0
        {"trial": "c", "best_laps": 0.5, "final_laps": 0.4},
        {"trial": "c", "best_laps": 0.5, "final_laps": 0.2},  # median best 0.5, final 0.3
    ]
    assert results.medians(rows) == {"a": 0.2, "b": 0.5, "c": 0.5}
    assert results.best_trial(rows) == "c"
    assert results.best_trial([]) is None


def test_a_figure_per_knob(tmp_path):
    writer = results.ResultsWriter(tmp_path, ["agent.actor_lr"])
    writer.start()
    assert results.write_figures(tmp_path, ["agent.actor_lr"]) == []  # no rows yet: no figure
    for value, laps in ((1e-4, [0.1, 0.3]), (3e-4, [0.6, 0.9])):
        writer.append(
            results.trial_rows(
                f"lr={value}", {"agent.actor_lr": value}, _report([0, 1], laps, laps), status="done"
            )
        )
    (png,) = results.write_figures(tmp_path, ["agent.actor_lr"])
    assert png == results.figure_path(tmp_path, "agent.actor_lr") and png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no rows with the knob"):
        results.plot_knob(results.read_results(tmp_path), "agent.horizon", tmp_path / "x.png")
