"""Run I/O: exact save/load and resume, bit-identical reruns, metrics files, learning-curve PNG, policy."""

import csv
import dataclasses
import json
import math
import struct

import jax
import numpy as np
import pytest
import safetensors

from carlab.learn import config as config_lib
from carlab.learn import loop, policies, runs
from carlab.learn.checkpoint import CheckpointError, save_checkpoint
from carlab.learn.evaluation import evaluate

CONFIG = config_lib.tiny()
# tiny: 4 cars x 5 steps = 20 env steps per round, 20 rounds per chunk -> S = 2 chunks = 40 rounds,
# past the 100-transition warm-up, so the networks and optimisers really change.
S = 800
assert S % (CONFIG.train.num_cars * CONFIG.train.train_every * CONFIG.train.chunk_rounds) == 0


def _leaves(tree):
    return [
        (jax.tree_util.keystr(path), np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def assert_trees_identical(a, b):
    """Every leaf equal bit for bit, with the same dtype and shape (NaN == NaN)."""
    la, lb = _leaves(a), _leaves(b)
    assert [name for name, _ in la] == [name for name, _ in lb]
    for (name, x), (_, y) in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"leaf {name} differs"


def same_record(a: dict, b: dict, skip=("time_s",)) -> bool:
    keys = set(a) | set(b)
    return all(
        k in a
        and k in b
        and (a[k] == b[k] or (isinstance(a[k], float) and math.isnan(a[k]) and math.isnan(b[k])))
        for k in keys - set(skip)
    )


@pytest.fixture(scope="module")
def trained():
    return loop.train(CONFIG, S, progress=False)


def test_trained_state_moved(trained):
    state, history = trained
    fresh = loop.init_state(CONFIG)
    assert int(state.env_steps) == S and int(state.updates) > 0 and len(history) == 2
    assert any(
        not np.array_equal(x, y) for (_, x), (_, y) in zip(_leaves(state.params), _leaves(fresh.params))
    )


def test_save_load_round_trip_is_bit_exact(trained, tmp_path):
    state, history = trained
    path = runs.save_run(tmp_path / "runs.safetensors", state, CONFIG, history, extra={"note": "hi"})
    loaded, config, loaded_history, metadata = runs.load_run(path)
    assert_trees_identical(state, loaded)
    assert config == CONFIG
    assert len(loaded_history) == len(history)
    assert all(same_record(a, b, skip=()) for a, b in zip(history, loaded_history))
    assert metadata["env_steps"] == S and metadata["updates"] == int(state.updates)
    assert metadata["episodes"] == int(state.episodes) and metadata["note"] == "hi"
    assert metadata["explore_prob"] == float(state.explore_prob)
    assert metadata["best_progress"] == float(state.best_progress)
    assert metadata["config_name"] == "tiny" and metadata["carlab_version"]


def test_resume_is_exact(trained, tmp_path):
    """train(2S) == train(S) -> save -> load -> train(S), bit for bit, and the last chunk's metrics too."""
    state, _ = trained
    straight, straight_history = loop.train(CONFIG, 2 * S, progress=False)
    path = runs.save_run(tmp_path / "half.safetensors", state, CONFIG, [])
    loaded, config, _, _ = runs.load_run(path)
    resumed, resumed_history = loop.train(config, S, state=loaded, progress=False)
    assert_trees_identical(straight, resumed)
    assert int(resumed.env_steps) == 2 * S
    assert same_record(straight_history[-1], resumed_history[-1])


def test_reruns_are_identical_and_seeds_differ(trained):
    state, history = trained
    again, again_history = loop.train(CONFIG, S, progress=False)
    assert_trees_identical(state.params, again.params)
    assert all(same_record(a, b) for a, b in zip(history, again_history))
    other_config = config_lib.with_overrides(CONFIG, train={"seed": 1})
    other, _ = loop.train(other_config, S, progress=False)
    differ = [
        not np.array_equal(x, y) for (_, x), (_, y) in zip(_leaves(state.params), _leaves(other.params))
    ]
    assert all(differ)


def _without_hold_key(path, tmp_path):
    """The run at ``path`` as a carlab before TrainState.hold_key saved it: the same file, that leaf gone."""
    state, _, _, metadata = runs.load_run(path)
    old = tmp_path / f"old-{path.name}"
    return save_checkpoint(old, dataclasses.replace(state, hold_key=None), metadata=metadata)


def test_a_run_saved_without_a_hold_key_loads_and_resumes_exactly(tmp_path):
    """Old checkpoints lack hold_key: load_run fills in PRNGKey(seed), the key the old code derived
    its held draws from, so the old run loads equal to a fresh save of it and resumes bit for bit."""
    config = config_lib.with_overrides(CONFIG, train={"seed": 4}, agent={"explore_hold": 4})
    state, history = loop.train(config, S // 2, progress=False)
    path = runs.save_run(tmp_path / "new.safetensors", state, config, history)
    old = _without_hold_key(path, tmp_path)
    with safetensors.safe_open(old, "np") as f:
        assert ".hold_key" not in set(f.keys()) and ".key" in set(f.keys())
    loaded, loaded_config, loaded_history, _ = runs.load_run(old)
    assert_trees_identical(loaded, runs.load_run(path)[0])
    assert loaded_config == config and len(loaded_history) == len(history)
    assert np.array_equal(loaded.hold_key, jax.random.PRNGKey(4))
    resumed, _ = loop.train(config, S // 2, state=loaded, progress=False)
    straight, _ = loop.train(config, S // 2, state=state, progress=False)
    assert_trees_identical(resumed, straight)


def test_a_run_saved_before_hold_key_loads_with_its_seeds_key(trained, tmp_path):
    """A checkpoint written before TrainState had ``hold_key`` (the first pretrained agent was one)
    loads with the key its held draws came from, ``PRNGKey(seed)``, and resumes exactly."""
    state, history = trained
    old = runs.save_run(
        tmp_path / "old.safetensors", dataclasses.replace(state, hold_key=None), CONFIG, history
    )
    with safetensors.safe_open(old, "np") as f:
        assert ".hold_key" not in set(f.keys())
    loaded, config, _, _ = runs.load_run(old)
    assert np.array_equal(loaded.hold_key, jax.random.PRNGKey(config.train.seed))


def test_a_misfit_is_named_not_hidden_by_the_old_checkpoint_fallback(trained, tmp_path):
    """The fallback for old checkpoints does not hide a real misfit behind a hold_key complaint."""
    state, history = trained
    bigger = config_lib.with_overrides(CONFIG, replay={"capacity": 4_000})
    path = runs.save_run(tmp_path / "lying.safetensors", state, bigger, history)
    with pytest.raises(CheckpointError, match="does not fit the template at .buffer"):
        runs.load_run(path)


def test_load_run_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        runs.load_run(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        runs.load_run(garbage)
    foreign = save_checkpoint(tmp_path / "foreign.safetensors", {"w": np.zeros(3)}, {"step": 1})
    with pytest.raises(CheckpointError, match="not a training run"):
        runs.load_run(foreign)
    bad_config = save_checkpoint(
        tmp_path / "bad.safetensors", {"w": np.zeros(3)}, {"config": {"train": {"speed": 1}}}
    )
    with pytest.raises(CheckpointError, match="config"):
        runs.load_run(bad_config)


def test_load_run_refuses_a_state_of_other_sizes(trained, tmp_path):
    state, history = trained
    bigger = config_lib.with_overrides(CONFIG, replay={"capacity": 4_000})
    path = runs.save_run(
        tmp_path / "lying.safetensors", state, bigger, history
    )  # config does not match arrays
    with pytest.raises(CheckpointError, match="does not fit"):
        runs.load_run(path)


def test_write_metrics_files_parse(trained, tmp_path):
    _, history = trained
    records = [*history, {"env_steps": 999_999, "extra/only_here": 1.5, "wm/loss": math.nan}]
    jsonl, csv_path = runs.write_metrics(records, tmp_path / "sub" / "agent")
    assert jsonl.name == "agent.metrics.jsonl" and csv_path.name == "agent.metrics.csv"

    def no_nan(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    rows = [json.loads(line, parse_constant=no_nan) for line in jsonl.read_text().splitlines()]
    assert len(rows) == len(records)
    assert rows[0]["env_steps"] == history[0]["env_steps"] and rows[-1]["wm/loss"] is None
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        table = list(reader)
    assert reader.fieldnames[0] == "env_steps"
    assert set(reader.fieldnames) == set().union(*records)
    assert len(table) == len(records)
    assert float(table[0]["wm/loss"]) == pytest.approx(history[0]["wm/loss"])
    assert table[0]["extra/only_here"] == "" and table[-1]["extra/only_here"] == "1.5"
    assert table[-1]["wm/loss"] == ""


def test_learning_curve_png(trained, tmp_path):
    _, history = trained
    eval_result = {"mean_progress": 0.1, "lap_completion_rate": 0.0, "num_tracks": 3}
    path = runs.plot_learning_curve(history, tmp_path / "curve.png", eval_result=eval_result, title="tiny")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1100, 700)
    assert 20_000 < len(data) < 2_000_000
    with pytest.raises(ValueError, match="empty"):
        runs.plot_learning_curve([], tmp_path / "empty.png")


def test_load_policy(trained, tmp_path):
    state, history = trained
    path = runs.save_run(tmp_path / "agent.safetensors", state, CONFIG, history)
    act = runs.load_policy(path)
    for obs in (np.zeros(6), np.ones(6), np.linspace(0.0, 1.0, 6)):
        action = act(obs)
        assert action.shape == (2,) and np.all(np.abs(action) <= 1.0)
    obs = np.linspace(0.0, 1.0, 6, dtype=np.float32)
    expected = np.asarray(
        policies.actor_action(
            state.params, obs, world_model_config=CONFIG.world_model, agent_config=CONFIG.agent
        )
    )
    assert np.array_equal(act(np.linspace(0.0, 1.0, 6)), expected)


def test_validate_drives_the_validation_tracks(trained):
    state, _ = trained
    assert CONFIG.train.train_first_seed + CONFIG.train.num_train_tracks <= config_lib.VALIDATION_FIRST_SEED
    assert config_lib.VALIDATION_FIRST_SEED + runs.VALIDATION_TRACKS <= config_lib.EVAL_FIRST_SEED
    scores = runs.validate(state.params, CONFIG, num_tracks=3)
    driver = policies.actor(state.params, world_model_config=CONFIG.world_model, agent_config=CONFIG.agent)
    expected = evaluate(driver, num_tracks=3, first_seed=config_lib.VALIDATION_FIRST_SEED)
    assert scores == {"val/laps": expected["lap_completion_rate"], "val/progress": expected["mean_progress"]}
    assert scores["val/progress"] != evaluate(driver, num_tracks=3)["mean_progress"]


def scripted_validation(monkeypatch, scores):
    """Make runs.validate return ``scores`` ((laps, progress) pairs) in turn; return the calls seen."""
    calls, queue = [], list(scores)

    def fake(params, config):
        calls.append(params)
        laps, progress = queue.pop(0)
        return {"val/laps": laps, "val/progress": progress}

    monkeypatch.setattr(runs, "validate", fake)
    return calls


def test_best_saver_saves_when_validation_laps_improve(trained, tmp_path, monkeypatch):
    state, _ = trained
    path = tmp_path / "agent-best.safetensors"
    earlier = [{"env_steps": 0, "time_s": 2.0, "val/laps": 0.5, "val/progress": 0.7}]
    # lower laps / same laps, lower progress / same laps, more progress / more laps, less progress
    calls = scripted_validation(monkeypatch, [(0.25, 0.9), (0.5, 0.6), (0.5, 0.8), (0.75, 0.1)])
    saver = runs.BestSaver(path, CONFIG, history=earlier)
    assert saver.best == (0.5, 0.7)  # the best of the earlier history
    record = {"env_steps": S, "time_s": 1.0}
    saver(state, record)
    saver(state, record)
    assert not path.exists() and saver.saves == 0 and saver.best_state is None
    saver(state, record)  # a tie on laps is broken by progress
    assert path.exists() and saver.saves == 1 and saver.best == (0.5, 0.8)
    _, _, saved_history, metadata = runs.load_run(path)
    assert metadata["best_of_run"] is True and metadata["val/laps"] == 0.5
    assert len(saved_history) == 4 and saved_history[-1]["val/progress"] == 0.8
    # time continues from the earlier history's clock; the caller's record is left alone
    assert saved_history[-1]["time_s"] == pytest.approx(earlier[0]["time_s"] + 1.0)
    assert record == {"env_steps": S, "time_s": 1.0}
    saver(state, record)  # more laps beat more progress
    assert saver.saves == 2 and saver.best == (0.75, 0.1) and saver.best_state is state
    assert len(calls) == 4 and len(saver.history) == 5


def test_best_saver_in_memory(trained, monkeypatch):
    state, _ = trained
    calls = scripted_validation(monkeypatch, [(0.0, 0.2), (0.0, 0.1)])
    saver = runs.BestSaver(None, CONFIG)  # no path: keep the best state only
    for _ in range(2):
        saver(state, {"env_steps": S, "time_s": 1.0})
    assert len(calls) == 2 and saver.saves == 0 and saver.best == (0.0, 0.2) and saver.best_state is state
    assert all("val/laps" in r for r in saver.history)
