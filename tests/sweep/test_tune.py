"""Sweeps end to end on one local Ray (started once for this module: Ray starts slowly), the tiny
preset, very few steps: the rows, the figure, the best trial's runs, ASHA, and an interrupted sweep."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import ray  # the sweep extra, which `make test` installs

from carlab.cli import main
from carlab.learn import runs
from carlab.sweep import grid, results
from carlab.sweep import tune as sweep_tune

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    started = sweep_tune.start_ray()
    yield
    if started:
        ray.shutdown()


def test_a_sweep_of_2_values_x_2_seeds_on_a_local_ray(tmp_path, capsys):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--config",
        "tiny",
        "--set",
        "agent.actor_lr=1e-4,3e-4",
        "--seeds",
        "0-1",
        "--steps",
        "800",
    ]
    assert main([*args, "--scheduler", "asha", "--out", str(out), "--no-progress"]) == 0
    rows = results.read_results(out)
    assert len(rows) == 4
    assert sorted((r["agent.actor_lr"], r["seed"]) for r in rows) == [
        (1e-4, 0),
        (1e-4, 1),
        (3e-4, 0),
        (3e-4, 1),
    ]
    for row in rows:
        assert row["status"] in ("done", "stopped")  # ASHA may stop one after its first chunk
        assert row["env_steps"] == (800 if row["status"] == "done" else 400)
        assert 0 <= row["final_laps"] <= row["best_laps"] <= 1  # best: the most laps of any chunk
        assert row["wall_s"] > 0 and row["trial"] == f"actor_lr={row['agent.actor_lr']:g}"
    figure = results.figure_path(out, "agent.actor_lr")
    assert figure.read_bytes()[:4] == b"\x89PNG"
    # The best trial's runs: one normal run checkpoint per seed, of that trial's config and seed.
    best = results.best_trial([r for r in rows if r["status"] == "done"])
    for seed in (0, 1):
        _, config, history, metadata = runs.load_run(out / f"best-seed{seed}.safetensors")
        assert config.train.seed == seed and metadata["best_of_run"]
        assert grid.trial_name({"agent.actor_lr": config.agent.actor_lr}) == best
        assert history and "val/laps" in history[-1]
    printed = capsys.readouterr().out
    assert "sweep: 2 trials x 2 seeds" in printed and f"best trial {best}" in printed
    # Every chunk's report says the trial's XLA threads were pinned to the one core Ray gave it.
    reports = [
        json.loads(line) for f in (out / "tune").rglob("result.json") for line in f.read_text().splitlines()
    ]
    assert reports and {r["cpus"] for r in reports} == {1}


def test_an_interrupted_sweep_keeps_the_finished_trials_rows(tmp_path):
    out = tmp_path / "sweep"
    sweep = grid.make_sweep(
        knobs={"agent.actor_lr": [1e-4, 3e-4, 1e-3]}, seeds=[0, 1], steps=400, preset="tiny"
    )
    finished = threading.Event()

    def press_ctrl_c_after_the_first_trial():
        path = out / results.RESULTS_NAME
        while not finished.is_set():
            if path.exists() and len(path.read_text().splitlines()) > 1:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends: Tune stops the sweep
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=press_ctrl_c_after_the_first_trial, daemon=True)
    watcher.start()
    try:
        # All the cores per trial: one trial at a time, so two are left when the first one ends.
        outcome = sweep_tune.run_sweep(sweep, out, cpus_per_trial=os.cpu_count(), progress=False)
    finally:
        finished.set()
        watcher.join()
    assert outcome.interrupted and 1 <= outcome.finished < 3 and not outcome.errors
    rows = results.read_results(out)
    assert len({r["trial"] for r in rows}) == outcome.finished and len(rows) == 2 * outcome.finished
    assert all(r["status"] == "done" and r["env_steps"] == 400 for r in rows)
    assert outcome.best_trial in {r["trial"] for r in rows} and len(outcome.best_files) == 2
