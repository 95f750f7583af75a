"""The learning benchmark and its plot run end to end (tiny preset, a few thousand env steps); the
model-free baselines' scoring, track rotation and plot, without Stable-Baselines3."""

import json
import runpy
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def summary_text(tmp_path_factory):
    module = runpy.run_path(str(BENCHMARKS / "learning.py"), run_name="not_main")
    argv = ["--config", "tiny", "--steps", "2000", "--eval-every", "1000", "--tracks", "2", "--json"]
    argv += ["--set", "agent.discount=0.98", "--target", "0.0"]
    summary = module["main"](argv)
    return json.dumps(summary)


def test_learning_benchmark_summary(summary_text):
    summary = json.loads(summary_text)
    assert summary["config"] == "tiny" and summary["overrides"] == ["agent.discount=0.98"]
    # tiny chunks are 400 env steps: it evaluates after the first chunk at or past each 1000
    assert [p["env_steps"] for p in summary["curve"]] == [1200, 2000]
    for point in summary["curve"]:
        assert 0.0 <= point["lap_completion_rate"] <= 1.0 and point["wall_s"] > 0
    # A target of 0 is met at the first evaluation.
    assert summary["reached"] == summary["curve"][0] and summary["final"] == summary["curve"][-1]
    best = summary["best_checkpoint"]
    # the untrained car already creeps forward a little on the validation tracks
    assert 0 < best["env_steps"] <= 2000 and best["val_progress"] > 0
    assert summary["world_model_update_ms"] > 0 and summary["imagination_update_ms"] > 0


def test_learning_benchmark_rejects_a_bad_override():
    module = runpy.run_path(str(BENCHMARKS / "learning.py"), run_name="not_main")
    with pytest.raises(SystemExit):
        module["main"](["--config", "tiny", "--set", "agent.discount"])


def test_plot_learning_draws_the_curves(summary_text, tmp_path):
    first = tmp_path / "s0.json"
    first.write_text("a log line\n" + summary_text + "\n")
    second = json.loads(summary_text)
    second["seed"], second["best_checkpoint"] = 1, None
    (tmp_path / "s1.json").write_text(json.dumps(second))
    module = runpy.run_path(str(BENCHMARKS / "plot_learning.py"), run_name="not_main")
    out = module["main"]([str(first), str(tmp_path / "s1.json"), "--out", str(tmp_path / "curve.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    (tmp_path / "log.txt").write_text("no summary here\n")
    with pytest.raises(SystemExit, match="no JSON summary"):
        module["main"]([str(tmp_path / "log.txt"), "--out", str(tmp_path / "x.png")])


def test_seeds_speed_smoke():
    module = runpy.run_path(str(BENCHMARKS / "seeds_speed.py"), run_name="not_main")
    summary = module["main"](["--quick", "--json"])
    assert summary["config"] == "tiny" and summary["single_steps_per_s"] > 0
    (row,) = summary["rows"]
    assert row["seeds"] == 2 and row["steps_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert summary["ratio_2_seeds"] == pytest.approx(row["steps_per_s"] / summary["single_steps_per_s"])
    # two runs in one call carry exactly twice the arrays of one run: memory is linear in S
    assert row["state_mb"] == pytest.approx(2 * summary["single_state_mb"])
    assert "target_met" not in summary  # the target is about 8 seeds


# --- benchmarks/baselines.py: what runs without Stable-Baselines3 ------------------------------------


@pytest.fixture(scope="module")
def baselines():
    return runpy.run_path(str(BENCHMARKS / "baselines.py"), run_name="not_main")


def _wall_follower(obs):
    """Steer towards the side with more room at a fixed throttle: laps some tracks, crashes on others."""
    import jax.numpy as jnp

    steer = obs[..., 3] + obs[..., 4] - obs[..., 0] - obs[..., 1]
    throttle = jnp.where(obs[..., 2] > 0.4, 0.5, -0.5)
    return jnp.stack([jnp.clip(steer, -1.0, 1.0), throttle], axis=-1)


def test_baselines_score_like_carlab_evaluate(baselines):
    from carlab.learn import evaluation, policies

    ours = baselines["score"](_wall_follower, num_tracks=10)
    theirs = evaluation.evaluate(policies.from_function(_wall_follower), num_tracks=10)
    # the driver laps some tracks, crashes on some and runs out of time on others
    assert 0 < sum(ours["lapped"]) and 0 < sum(ours["crashed"]) and 1000 in ours["steps"]
    for key in ("lapped", "crashed", "steps", "num_tracks", "first_seed", "max_steps"):
        assert ours[key] == theirs[key], key
    for key in ("progress", "return", "lap_completion_rate", "mean_progress", "crash_rate", "mean_steps"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6), key


def test_baselines_rotate_training_tracks(baselines):
    import gymnasium

    env = baselines["TrackRotation"](gymnasium.make("carlab/Race-v0"), tracks=(3, 5, 7), start=1)
    seen = [env.reset(options={"track_seed": 99})[1]["track_seed"] for _ in range(4)]
    assert seen == [5, 7, 3, 5] and env.unwrapped.track_seed == 5
    _, _, _, _, info = env.step(env.action_space.sample())
    assert info["track_seed"] == 5
    # PPO's 8 envs start an eighth of the 64 training tracks apart
    assert baselines["make_env"](2, 8).reset()[1]["track_seed"] == 16
    with pytest.raises(ValueError, match="empty"):
        baselines["TrackRotation"](env, tracks=())


def test_baselines_evaluation_schedule(baselines):
    evaluator = baselines["Evaluator"](every=1000, num_tracks=2, max_steps=20)
    calls = [evaluator(steps, _wall_follower) for steps in (500, 1000, 1500, 2600)]
    assert [p is None for p in calls] == [True, False, True, False]
    assert evaluator.next_eval == 3000
    assert evaluator.finish(2600, _wall_follower) is None  # already scored there
    assert evaluator.finish(2700, _wall_follower)["env_steps"] == 2700
    assert [p["env_steps"] for p in evaluator.curve] == [1000, 2600, 2700]
    assert all(p["mean_steps"] == 20 and p["wall_s"] >= 0 for p in evaluator.curve)


def test_baselines_help_and_errors_without_sb3(baselines, monkeypatch, capsys):
    # None in sys.modules makes `import` raise ImportError: as if the bench extra were not installed
    monkeypatch.setitem(sys.modules, "stable_baselines3", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    module = runpy.run_path(str(BENCHMARKS / "baselines.py"), run_name="not_main")
    with pytest.raises(SystemExit) as exit_info:
        module["main"](["--help"])
    assert exit_info.value.code == 0 and "--eval-every" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        module["main"](["--algo", "sac", "--steps", "10"])
    assert exit_info.value.code == 2 and "pip install -e '.[bench]'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module["main"](["--algo", "sac", "--seeds", "2-1"])
    assert "runs backwards" in capsys.readouterr().err


def _fake_run(config, seed, laps):
    curve = [
        {"env_steps": 5000 * (i + 1), "wall_s": i + 1.0, "lap_completion_rate": v} for i, v in enumerate(laps)
    ]
    return {"config": config, "seed": seed, "curve": curve}


def test_plot_baselines_median_worst_and_figure(summary_text, tmp_path, capsys):
    sac = {
        "algo": "sac",
        "runs": [
            _fake_run("sac", s, laps) for s, laps in enumerate(([0, 0.5, 1], [0, 0.2], [0.1, 0.9, 0.9]))
        ],
    }
    (tmp_path / "sac.json").write_text(json.dumps(sac))
    (tmp_path / "carlab0.json").write_text("a log line\n" + summary_text + "\n")
    module = runpy.run_path(str(BENCHMARKS / "plot_baselines.py"), run_name="not_main")
    files = [str(tmp_path / "sac.json"), str(tmp_path / "carlab0.json")]
    out = module["main"]([*files, "--out", str(tmp_path / "b.png"), "--table"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    stats = module["seed_stats"](sac["runs"])  # up to the shortest run: two evaluations
    assert stats["median"].tolist() == [0.0, 0.5] and stats["worst"].tolist() == [0.0, 0.2]
    assert stats["best"].tolist() == [0.1, 0.9] and stats["env_steps"].tolist() == [5000, 10000]
    text = capsys.readouterr().out
    assert "SB3 SAC, 3 seed(s)" in text and "| 10,000 | 50% | 20% |" in text and "carlab (tiny)" in text
    (tmp_path / "log.txt").write_text("no summary here\n")
    with pytest.raises(SystemExit, match="no baselines.py or learning.py JSON"):
        module["main"]([str(tmp_path / "log.txt")])


def test_resume_benchmark_keeps_evaluating_a_resumed_run(tmp_path):
    """benchmarks/resume.py on a tiny saved run: one evaluation before, one after each stretch."""
    from carlab.learn import config as config_lib
    from carlab.learn import loop, runs

    config = config_lib.tiny()
    state, history = loop.train(config, 400, progress=False)
    path = tmp_path / "tiny.safetensors"
    runs.save_run(path, state, config, history)
    module = runpy.run_path(str(BENCHMARKS / "resume.py"), run_name="not_main")
    argv = ["--run", str(path), "--minutes", "0.001", "--eval-every", "400", "--tracks", "2", "--json"]
    summary = module["main"](argv)
    steps = [p["env_steps"] for p in summary["curve"]]
    assert steps[0] == int(state.env_steps) and len(steps) >= 2 and steps[1] == steps[0] + 400
    laps = [p["lap_completion_rate"] for p in summary["curve"]]
    assert summary["lowest"] == min(laps) and summary["final"] == laps[-1]
    assert summary["share_at_floor"] == sum(x >= 0.85 for x in laps) / len(laps)


def test_notebook_times_runs_a_notebook_and_refuses_unknown_ones(capsys):
    module = runpy.run_path(str(BENCHMARKS / "notebook_times.py"), run_name="not_main")
    summary = module["main"](["01", "--fast", "--json"])
    assert list(summary["seconds"]) == ["01_car_and_senses.ipynb"] and summary["fast"] is True
    assert summary["seconds"]["01_car_and_senses.ipynb"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    with pytest.raises(SystemExit) as exit_info:
        module["main"](["99"])
    assert exit_info.value.code == 2 and "no notebook starts with '99'" in capsys.readouterr().err


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lab_browser_fps_counts_the_frames_chromium_shows(capsys):
    from pathlib import Path as _Path

    if not _Path("/usr/bin/chromium").exists():
        pytest.skip("chromium not installed (/usr/bin/chromium)")
    module = runpy.run_path(str(BENCHMARKS / "lab_browser_fps.py"), run_name="not_main")
    figures = module["main"](["--fast", "--seconds", "2", "--settle", "1", "--json"])
    assert figures["preset"] == "tiny" and figures["seconds"] >= 2.0
    # Training moves the cars, so the canvas changes; never more often than the page animates.
    assert 0 < figures["browser_fps"] <= figures["animation_frames_per_s"]
    assert figures["env_steps_per_s"] > 0 and figures["rounds_per_s"] > 0
    assert figures["headless_env_steps_per_s"] > 0 and figures["watched_over_headless"] > 0
    # Headless is measured before and after the watched run; the faster of the two counts.
    assert figures["headless_env_steps_per_s"] == max(figures["headless_before_after"])
    # Training is also timed while the frames were counted (the digest's window), as a ratio too.
    assert figures["counting_env_steps_per_s"] > 0
    assert figures["counting_over_headless"] == pytest.approx(
        figures["counting_env_steps_per_s"] / figures["headless_env_steps_per_s"], abs=0.01
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures


def test_stability_scores_the_rule_per_seed_and_over_steps_and_time(tmp_path, capsys):
    """Issue 13's rule: after the first >= 90 %, every later evaluation >= 85 %, the last >= 90 %."""
    runs = {
        0: [0.0, 0.95, 0.86, 0.99],  # holds
        1: [0.0, 0.92, 0.84, 0.97],  # dips to 0.84: does not hold
        2: [0.0, 0.5, 0.89, 0.89],  # never reaches 90 %: does not hold
    }
    paths = []
    for seed, laps in runs.items():
        path = tmp_path / f"s{seed}.json"
        path.write_text("a log line\n" + json.dumps(_fake_run("default", seed, laps)) + "\n")
        paths.append(str(path))
    module = runpy.run_path(str(BENCHMARKS / "stability.py"), run_name="not_main")
    out = module["main"]([*paths, "--every-s", "2", "--json"])
    assert out["holds"] == 1 and out["seeds"] == 3
    first, dipped, never = out["per_seed"]
    assert first["holds"] and first["first_env_steps"] == 10000 and first["lowest_after"] == 0.86
    assert first["kept"] == 2 and first["later"] == 2 and first["final"] == 0.99
    assert not dipped["holds"] and dipped["lowest_after"] == 0.84 and dipped["kept"] == 1
    assert not never["holds"] and never["first_env_steps"] is None and never["lowest_after"] is None
    assert [r["median"] for r in out["over_env_steps"]] == [0.0, 0.92, 0.86, 0.97]
    assert [r["worst"] for r in out["over_env_steps"]] == [0.0, 0.5, 0.84, 0.89]
    # wall times 1, 2, 3, 4 s: at 2 s and 4 s each seed shows its second and fourth evaluation
    assert [(r["wall_s"], r["median"], r["worst"]) for r in out["over_wall_time"]] == [
        (2.0, 0.92, 0.5),
        (4.0, 0.97, 0.89),
    ]
    capsys.readouterr()
    module["main"](paths)
    text = capsys.readouterr().out
    assert "1 of 3 seeds hold" in text and "| 1 | 10,000 | 2 s | 0.84 | 1/2 | 0.97 | **no** |" in text
    with pytest.raises(SystemExit):
        module["main"]([*paths, "--floor", "0.95"])  # a floor above the target
    (tmp_path / "log.txt").write_text("no summary here\n")
    with pytest.raises(SystemExit, match="no benchmarks/learning.py --json summary"):
        module["main"]([str(tmp_path / "log.txt")])


# --- benchmarks/planning_diagnostic.py and checkpoint_diagnostic.py: issue 13's diagnostics ---------


def test_planner_with_one_noise_free_candidate_drives_as_the_actor():
    """Candidate 0 is the actor's own plan, so a planner with only it applies the actor's action."""
    import jax.numpy as jnp

    from carlab.learn import config as config_lib
    from carlab.learn import evaluation, loop, policies

    module = runpy.run_path(str(BENCHMARKS / "planning_diagnostic.py"), run_name="not_main")
    config = config_lib.tiny()
    state, _ = loop.train(config, 400, progress=False)
    actor = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
    obs = state.obs
    alone = module["planner"](state.params, config, 3, 1, 0.0)
    assert jnp.allclose(alone(obs, 0), actor(obs, 0), atol=1e-6)
    noisy = module["planner"](state.params, config, 3, 8, 0.5)(obs, 0)
    assert noisy.shape == obs.shape[:1] + (2,) and bool(jnp.all(jnp.abs(noisy) <= 1.0))
    assert not jnp.allclose(noisy, actor(obs, 0))  # some noisy candidate scores better somewhere
    a = evaluation.evaluate(alone, num_tracks=2)
    b = evaluation.evaluate(actor, num_tracks=2)
    assert a["progress"] == b["progress"]
    with pytest.raises(ValueError, match="anchored"):
        module["planner"](state.params, config_lib.tiny("dream"), 3, 1, 0.0)


def test_planning_diagnostic_runs_and_refuses_a_bad_plan(capsys):
    module = runpy.run_path(str(BENCHMARKS / "planning_diagnostic.py"), run_name="not_main")
    summary = module["main"](
        ["--config", "tiny", "--steps", "400", "--tracks", "2", "--plan", "2,4,0.3", "--json"]
    )
    assert summary["plans"] == ["plan_2_4_0.3"] and summary["curve"]
    point = summary["curve"][-1]
    assert 0.0 <= point["actor"] <= 1.0 and 0.0 <= point["plan_2_4_0.3"] <= 1.0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["seed"] == 0
    with pytest.raises(SystemExit):
        module["main"](["--plan", "5,32"])
    assert "--plan wants H,K,SIGMA" in capsys.readouterr().err


def _checkpoint_rows(tmp_path):
    held = [0.0, 0.95, 0.5, 1.0, 0.6]
    lapped = [[0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 1]]
    rows = [
        {
            "seed": 3,
            "env_steps": 1000 * (i + 1),
            "wall_s": 10.0 * (i + 1),
            "held": h,
            "train_lapped": lap,
            "train_steps": [10, 10, 10, 10],
        }
        for i, (h, lap) in enumerate(zip(held, lapped))
    ]
    path = tmp_path / "ck_seed3.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows, path


def test_checkpoint_rule_against_a_hand_computed_reference(tmp_path):
    module = runpy.run_path(str(BENCHMARKS / "checkpoint_diagnostic.py"), run_name="not_main")
    rows, path = _checkpoint_rows(tmp_path)
    # Every chunk on all 4 tracks: chunk 1 (3 laps) keeps the lead over chunk 2 (1), chunk 3 (4) over 4 (3).
    held, costs = module["checkpointed"](rows, 4, 1)
    assert held == [0.0, 0.95, 0.95, 1.0, 1.0] and costs == [40, 80, 120, 160, 200]
    # Every second chunk on 2 tracks: no checkpoint before chunk 1, then chunk 1 (2 laps), chunk 3 (2 >= 2).
    held, costs = module["checkpointed"](rows, 2, 2)
    assert held == [0.0, 0.95, 0.95, 1.0, 1.0] and costs == [0, 20, 20, 40, 40]
    # Sequential, 2 tracks then 2 more only when both lap: scores 0, 3, 1, 4, 3 at a cost of 20, 40,
    # 20, 40, 40 steps; chunk 1 (3) leads until chunk 3 (4), which chunk 4 (3) does not displace.
    held, costs = module["checkpointed"](rows, 2, 1, more=2)
    assert held == [0.0, 0.95, 0.95, 1.0, 1.0] and costs == [20, 60, 80, 120, 160]
    # A tie below a full score: chunks 0, 1, 4 on all 4 tracks score 0, 3, 3. By default the newer
    # (chunk 4, 0.6) takes over; with ties kept chunk 1 (0.95) stays. A full score (2 of 2 tracks:
    # chunks 1, 3, 4) replaces even when ties are kept: leads 0, 1, 1, 3, 4.
    tie = [rows[0], rows[1], rows[4]]
    assert module["checkpointed"](tie, 4, 1)[0] == [0.0, 0.95, 0.6]
    assert module["checkpointed"](tie, 4, 1, keep_ties=True)[0] == [0.0, 0.95, 0.95]
    assert module["checkpointed"](rows, 2, 1, keep_ties=True)[0] == [0.0, 0.95, 0.95, 1.0, 0.6]
    assert module["parse_rule"]("8+8:2") == (8, 8, 2, False) and module["parse_rule"]("16:2") == (
        16,
        0,
        2,
        False,
    )
    assert module["parse_rule"]("6+10:2:keep") == (6, 10, 2, True)
    out = module["score"]([str(path), "--rule", "4:1", "--json"])
    newest, ckpt = out["rules"]
    assert (newest["holds"], newest["lowest_after"], newest["worst_final"]) == (0, 0.5, 0.6)
    assert (ckpt["holds"], ckpt["lowest_after"], ckpt["worst_final"]) == (1, 0.95, 1.0)
    assert ckpt["first_worst"] == 2000 + 80 and ckpt["test_cost"] == 0.04  # 200 test steps over 5000


def test_checkpoint_diagnostic_refuses_bad_input(tmp_path, capsys):
    module = runpy.run_path(str(BENCHMARKS / "checkpoint_diagnostic.py"), run_name="not_main")
    _, path = _checkpoint_rows(tmp_path)
    with pytest.raises(SystemExit):
        module["score"]([str(path), "--rule", "65:1"])
    assert "N + M <= 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module["score"]([str(path), "--rule", "8+x:2"])
    assert "--rule wants N:EVERY or N+M:EVERY" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        module["score"]([str(path), "--rule", "8+8:2:maybe"])
    assert "optionally :keep" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text('{"curve": []}\n')
    with pytest.raises(SystemExit, match="no checkpoint_diagnostic.py run lines"):
        module["score"]([str(other)])
    with pytest.raises(SystemExit, match="usage"):
        module["main"](["train"])


def test_checkpoint_diagnostic_run_records_every_training_track(tmp_path, capsys):
    module = runpy.run_path(str(BENCHMARKS / "checkpoint_diagnostic.py"), run_name="not_main")
    module["main"](["run", "--config", "tiny", "--steps", "400", "--tracks", "2", "--seed", "2"])
    lines = capsys.readouterr().out.splitlines()
    row = json.loads(lines[-1])
    assert row["seed"] == 2 and row["env_steps"] >= 400 and 0.0 <= row["held"] <= 1.0
    assert len(row["train_lapped"]) == len(row["train_steps"]) == 64
    assert all(1 <= s <= 1000 for s in row["train_steps"])
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert module["score"]([str(path), "--rule", "16:1", "--json"])["rules"][1]["seeds"] == 1
