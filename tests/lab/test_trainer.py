"""The live trainer: thread semantics, live hyperparameters, errors, manual driving, save/load.

Every test uses the ``tiny`` config; the compiled programs are shared by all trainers in the process,
so only the first test pays for compiling.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import CancelledError, wait

import jax
import numpy as np
import pytest

from carlab.lab.trainer import Trainer
from carlab.learn import config as config_lib
from carlab.learn import loop, optim, runs
from carlab.learn.checkpoint import CheckpointError
from carlab.sim import env

CONFIG = config_lib.tiny()
PER_ROUND = CONFIG.train.num_cars * CONFIG.train.train_every  # env steps in one training round
READY_S = 180  # first build + compile on a busy 2-core machine


def carlab_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("carlab-")]


def wait_no_threads(timeout: float = 120.0) -> None:
    """Wait for helpers still compiling after a stop (they end by themselves)."""
    deadline = time.monotonic() + timeout
    while carlab_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not carlab_threads(), carlab_threads()


@pytest.fixture
def trainer():
    """A tiny trainer, built and compiled; stopped (and its helpers finished) afterwards."""
    t = Trainer(CONFIG)
    t.wait_ready(READY_S)
    yield t
    assert t.stop(), "the worker did not stop within 1 s"
    wait_no_threads()


def steps(t: Trainer) -> int:
    return t.snapshot()["env_steps"]


def test_start_pause_step_resume_stop(trainer):
    snap = trainer.snapshot()
    assert snap["status"] == "paused" and snap["env_steps"] == 0 and snap["error"] is None
    assert snap["cars"].shape == (CONFIG.train.num_cars, 4) and snap["track"] is not None

    trainer.start()
    trainer.wait_until(lambda s: s["env_steps"] >= 5 * PER_ROUND and s["status"] == "running", 60)

    trainer.pause()
    trainer.wait_until(lambda s: s["status"] == "paused", 5)
    paused = steps(trainer)
    time.sleep(0.3)
    assert steps(trainer) == paused, "training went on after pause()"

    stepped = trainer.step(3).result(30)  # the snapshot right after the 3 rounds
    assert stepped["env_steps"] == paused + 3 * PER_ROUND and stepped["status"] == "paused"
    time.sleep(0.3)
    assert steps(trainer) == paused + 3 * PER_ROUND, "step(3) ran more than 3 rounds"
    assert trainer.snapshot()["status"] == "paused"

    trainer.resume()
    trainer.wait_until(lambda s: s["env_steps"] > paused + 3 * PER_ROUND, 30)

    began = time.monotonic()
    assert trainer.stop()
    assert time.monotonic() - began < 1.0
    assert not trainer.alive and trainer.snapshot()["status"] == "stopped"
    stopped_at = steps(trainer)

    trainer.start()  # a stopped trainer carries on where it was
    trainer.wait_until(lambda s: s["env_steps"] > stopped_at and s["status"] == "running", 30)
    assert trainer.snapshot()["history"], "no metric records while training"


def test_step_returns_a_future_of_the_snapshot_after_its_rounds(trainer, monkeypatch):
    paused = steps(trainer)
    first, second = trainer.step(2), trainer.step(3)  # queued in order, each resolved after its own rounds
    assert first.result(READY_S)["env_steps"] == paused + 2 * PER_ROUND  # the first compiles
    after = second.result(30)
    assert after["env_steps"] == paused + 5 * PER_ROUND and after["status"] == "paused"
    assert after["state"] is not None and int(after["state"].env_steps) == after["env_steps"]
    assert trainer.state is trainer.snapshot()["state"]

    endless = trainer.step(1_000_000)
    trainer.pause()  # drops the rounds not yet run: the future is cancelled
    with pytest.raises(CancelledError):
        endless.result(10)
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match="step"):
            trainer.step(bad)

    def broken(*args):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(loop, "train_rounds", broken)
    with pytest.raises(RuntimeError, match="injected failure"):  # the worker's error stops the rounds
        trainer.step(1).result(10)
    assert trainer.alive and trainer.wait_until(lambda s: s["status"] == "paused", 5)


def test_200_rapid_start_stop_cycles_leak_no_threads(trainer):
    before = threading.active_count()
    for cycle in range(220):
        trainer.start()
        if cycle % 20 == 0:
            time.sleep(0.05)  # now and then let it really train between start and stop
        began = time.monotonic()
        assert trainer.stop(timeout=1.0), f"cycle {cycle}: stop() did not join within 1 s"
        assert time.monotonic() - began < 1.0
        assert not trainer.alive
    # A helper compiling ahead (the manual step, once training ran) ends by itself: not a leak.
    deadline = time.monotonic() + READY_S
    while trainer.helpers_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before - 1  # the fixture's worker is gone too
    assert not carlab_threads()
    trainer.start()  # and it still trains afterwards
    trainer.wait_until(lambda s: s["env_steps"] > 0 and s["status"] == "running", 60)


def test_many_trainers_in_one_process():
    trainers = [Trainer(CONFIG) for _ in range(3)]
    try:
        for t in trainers:
            t.start()
        for t in trainers:
            t.wait_until(lambda s: s["env_steps"] >= 10 * PER_ROUND, READY_S)
        assert len({t.name for t in trainers}) == 3
    finally:
        assert all(t.stop() for t in trainers)
    wait_no_threads()


def test_learning_rates_reach_the_optimiser_without_recompiling(trainer):
    warm = trainer.step(10).result(30)  # past the warm-up, so updates run
    assert warm["updates"] > 0 and warm["status"] == "paused"
    trainer.set_hyperparameters(world_model_lr=2e-3, actor_lr=5e-5, critic_lr=7e-4)
    snap = trainer.step(1).result(10)  # operations run in order: the new rates are in this round's update
    assert snap["updates"] > warm["updates"] and snap["status"] == "paused"
    assert snap["hyper"]["world_model_lr"] == pytest.approx(2e-3)
    opt = trainer.state.opt_state
    assert optim.learning_rate(opt["world_model"]) == pytest.approx(2e-3)
    assert optim.learning_rate(opt["actor"]) == pytest.approx(5e-5)
    assert optim.learning_rate(opt["critic"]) == pytest.approx(7e-4)

    # The step size really drives the update: Adam moves each weight by about lr per update, so a
    # 1000x smaller rate moves the weights far less.
    def weight_change(lr: float) -> float:
        trainer.set_hyperparameters(world_model_lr=lr)
        before = trainer.wait_until(
            lambda s: math.isclose(s["hyper"]["world_model_lr"], lr, rel_tol=1e-5), 10
        )
        after = trainer.step(2).result(10)
        assert after["updates"] >= before["updates"] + 2 and after["status"] == "paused"
        old, new = (jax.tree.leaves(s["state"].params["world_model"]) for s in (before, after))
        return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(old, new))

    assert weight_change(1e-6) * 100 < weight_change(1e-3)


def test_a_compile_says_what_for_and_since_when(trainer, monkeypatch):
    from carlab.lab import jobs

    new = config_lib.with_overrides(CONFIG, agent={"horizon": 3, "target_entropy": -1.0})
    assert jobs.compile_detail(loop.train_rounds, new, CONFIG) == (
        "the training step for horizon=3, target_entropy=-1"
    )
    assert jobs.compile_detail(loop.train_rounds, CONFIG, CONFIG) == "the training step"
    from carlab.lab import manual

    assert jobs.compile_detail(manual.manual_step, CONFIG, CONFIG) == "the manual-driving step"
    # While the helper compiles, the snapshot says what for and since when.
    seen = []
    real = jobs.compile_job

    def slow_compile(*args, **kwargs):
        job = real(*args, **kwargs)
        return lambda: (time.sleep(1.0), job())[1]

    monkeypatch.setattr(jobs, "compile_job", slow_compile)
    trainer.set_hyperparameters(horizon=2)
    future = trainer.step(1)
    trainer.wait_until(lambda s: s["status"] == "compiling" and seen.append(s) is None, 30)
    future.result(READY_S)
    assert seen[0]["busy_detail"] == "the training step for horizon=2"
    assert 0 <= time.monotonic() - seen[0]["busy_since"] < 30
    assert trainer.snapshot()["busy_since"] is None  # nothing at work any more


def test_the_manual_step_compiles_ahead_while_training():
    # A config no other test runs, so nothing has compiled its manual step yet.
    config = config_lib.with_overrides(CONFIG, train={"max_episode_steps": 299})
    t = Trainer(config)
    try:
        t.wait_ready(READY_S)
        t.start()
        t.wait_until(lambda s: s["status"] == "running" and s["env_steps"] > 0, 60)
        deadline = time.monotonic() + READY_S
        while t.helpers_alive() and time.monotonic() < deadline:  # the compile ahead, in a helper
            time.sleep(0.1)
        t.set_mode("manual")
        statuses = set()
        t.wait_until(lambda s: statuses.add(s["status"]) or s["status"] == "manual", 30)
        assert "compiling" not in statuses, "Manual had to wait for a compile"
    finally:
        assert t.stop()
        wait_no_threads()


def test_static_hyperparameters_apply_at_the_next_round(trainer, monkeypatch):
    used = []
    real = loop.train_rounds
    monkeypatch.setattr(loop, "train_rounds", lambda s, k, p, c: used.append(c) or real(s, k, p, c))
    trainer.set_hyperparameters(horizon=3, batch_size=16, train_every=4, explore_noise=0.5)
    assert trainer.snapshot()["config"].agent.horizon == CONFIG.agent.horizon  # not yet: next round
    snap = trainer.step(2).result(READY_S)  # compiles the new config first
    assert snap["config"].agent.horizon == 3 and snap["status"] == "paused"
    config = used[-1]
    assert (config.agent.horizon, config.replay.batch_size, config.train.train_every) == (3, 16, 4)
    assert config.agent.explore_noise == 0.5
    assert snap["hyper"]["horizon"] == 3 and snap["env_steps"] == 2 * CONFIG.train.num_cars * 4


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"horizon": -1}, "horizon must be in [0, 100]"),
        ({"horizon": 101}, "horizon must be in [0, 100]"),
        ({"horizon": 2.5}, "whole number"),
        ({"horizon": "7"}, "must be a number"),
        ({"train_every": True}, "must be a number"),
        ({"batch_size": CONFIG.replay.capacity + 1}, f"[1, {CONFIG.replay.capacity}]"),
        ({"world_model_lr": 0.0}, "world_model_lr must be in [1e-06, 1]"),
        ({"actor_lr": float("inf")}, "finite"),
        ({"critic_lr": float("nan")}, "finite"),
        ({"explore_prob": 1.5}, "explore_prob must be in [0, 1]"),
        ({"explore_noise": -0.1}, "explore_noise must be in [0, 2]"),
        ({"gamma": 0.9}, "unknown hyperparameter 'gamma'"),
    ],
)
def test_invalid_hyperparameters_are_refused_at_the_call(values, message):
    t = Trainer(CONFIG)
    try:
        with pytest.raises(ValueError) as error:
            t.set_hyperparameters(**values)
        assert message in str(error.value)
    finally:
        t.stop()


def test_exception_in_the_thread_is_shown_and_the_trainer_restarts(trainer, monkeypatch):
    def broken(*args):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(loop, "train_rounds", broken)
    trainer.start()
    snap = trainer.wait_until(lambda s: s["error"] is not None, 10)
    assert snap["error"].startswith("RuntimeError: injected failure")
    assert "Traceback" in snap["error"] and "broken" in snap["error"]
    assert trainer.wait_until(lambda s: s["status"] == "paused", 5)
    assert trainer.alive, "the worker died instead of pausing"

    monkeypatch.undo()
    trainer.start()
    snap = trainer.wait_until(lambda s: s["env_steps"] > 0, 30)
    assert snap["error"] is None and snap["status"] == "running"


def test_manual_mode_drives_car_0_and_its_experience_is_replayed(trainer):
    trainer.set_mode("manual")
    trainer.set_manual_action([0.0, 1.0])  # full throttle, straight
    trainer.start()
    trainer.wait_until(lambda s: s["status"] == "manual", READY_S)
    start = trainer.wait_until(lambda s: s["env_steps"] > 0, 10)
    time.sleep(1.0)
    trainer.pause()
    snap = trainer.wait_until(lambda s: s["status"] == "paused", 5)
    steps_per_car = (snap["env_steps"] - start["env_steps"]) / CONFIG.train.num_cars
    assert 8 <= steps_per_car <= 45, f"manual mode ran {steps_per_car} steps in ~1 s, not ~30"

    buffer = snap["state"].buffer
    n, size = CONFIG.train.num_cars, int(buffer.size)
    newest = (int(buffer.position) - n) % buffer.capacity  # car 0's slot of the last step
    assert size >= n and np.array_equal(np.asarray(buffer.action[newest]), [0.0, 1.0])
    # Car 0 sped up under full throttle (judged on its stored steps, not its speed at the pause: on a
    # loaded machine it may have driven far enough to hit a wall and restart).
    manual_steps = min(int(steps_per_car), size // n)
    car0 = (newest - n * np.arange(manual_steps)) % buffer.capacity
    top_speed = float(np.max(np.asarray(buffer.next_obs)[car0, 5])) * env.EnvParams.max_speed
    assert top_speed > 0.5, f"car 0 did not speed up under full throttle (top speed {top_speed})"
    assert trainer.snapshot()["manual_action"] == (0.0, 1.0)
    with pytest.raises(ValueError):
        trainer.set_manual_action([0.0, 2.0])
    with pytest.raises(ValueError):
        trainer.set_mode("autopilot")


def test_save_and_load_restore_everything(trainer, tmp_path):
    stepped = trainer.step(8).result(30)
    assert stepped["env_steps"] == 8 * PER_ROUND and stepped["status"] == "paused"
    path = trainer.save(tmp_path / "lab.safetensors").result(30)
    assert path.exists()
    saved = trainer.snapshot()
    _, config, history, metadata = runs.load_run(path)
    assert config == CONFIG and metadata["env_steps"] == saved["env_steps"] and history

    assert trainer.step(5).result(30)["env_steps"] == 13 * PER_ROUND
    assert trainer.load(path).result(60) == path
    loaded = trainer.wait_until(lambda s: s["status"] == "paused" and s["message"].startswith("loaded"), 30)
    for key in ("env_steps", "updates", "episodes", "explore_prob", "best_progress", "buffer_size"):
        assert loaded[key] == saved[key], key
    assert len(loaded["history"]) == len(history)
    np.testing.assert_array_equal(loaded["cars"], saved["cars"])

    with pytest.raises(CheckpointError):
        trainer.load(tmp_path / "missing.safetensors").result(30)
    snap = trainer.wait_until(lambda s: s["error"] is not None, 5)
    assert "missing.safetensors" in snap["error"]
    trainer.start()  # still works
    trainer.wait_until(lambda s: s["env_steps"] > saved["env_steps"], 30)

    fresh = Trainer(checkpoint_path=path)  # a new trainer from the file
    try:
        assert fresh.wait_ready(60)["env_steps"] == saved["env_steps"]
    finally:
        fresh.stop()


def test_reset_new_track_and_auto_save(tmp_path):
    best = tmp_path / "best.safetensors"
    t = Trainer(CONFIG, auto_save=best)
    try:
        t.wait_ready(READY_S)
        t.set_hyperparameters(world_model_lr=4e-3)
        t.start()
        t.wait_until(lambda s: best.exists(), 120)  # validated after 10 s of training (wall clock)
        _, _, history, metadata = runs.load_run(best)
        assert metadata["best_of_run"] is True and metadata["val/progress"] > 0
        assert (history[-1]["val/laps"], history[-1]["val/progress"]) == (
            metadata["val/laps"],
            metadata["val/progress"],
        )

        seed = int(t.snapshot()["track"].seed)
        t.new_track()
        snap = t.wait_until(lambda s: s["message"].startswith("new track"), 60)
        assert int(snap["track"].seed) != seed
        t.wait_until(lambda s: s["env_steps"] > snap["env_steps"], 30)  # still training

        t.reset()
        snap = t.wait_until(lambda s: s["message"].startswith("reset"), 60)
        assert snap["env_steps"] == 0 and snap["history"] == () and snap["status"] == "paused"
        assert snap["hyper"]["world_model_lr"] == pytest.approx(4e-3)  # kept across the reset
    finally:
        t.stop()
    wait_no_threads()


def _hammer(t: Trainer, seconds: float, paths: tuple, seed: int) -> tuple[list, int]:
    """Random calls from 4 threads for ``seconds``; returns every future made and the refusals."""
    futures, refused, lock = [], [0], threading.Lock()

    def caller(k):
        rng = np.random.default_rng([seed, k])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            made = None
            try:
                match int(rng.integers(8)):
                    case 0:
                        made = t.step(int(rng.integers(1, 4)))
                    case 1:
                        made = t.save(paths[0].with_name(f"save{k}.safetensors"))
                    case 2:
                        made = t.load(paths[int(rng.integers(len(paths)))])  # a good file, or a missing one
                    case 3:
                        t.reset()
                    case 4:
                        t.pause()
                    case 5:
                        t.start()
                    case 6:
                        t.set_hyperparameters(explore_prob=float(rng.uniform(0.1, 0.9)))
                    case _:
                        t.snapshot()
            except RuntimeError as error:
                assert str(error).startswith("trainer busy: "), error
                refused[0] += 1
            if made is not None:
                with lock:
                    futures.append(made)
            time.sleep(float(rng.uniform(0, 0.004)))

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return futures, refused[0]


def _outcomes(futures) -> dict:
    counts = {"done": 0, "failed": 0, "cancelled": 0}
    for future in futures:
        if future.cancelled():
            counts["cancelled"] += 1
        elif future.exception() is not None:
            counts["failed"] += 1
        else:
            counts["done"] += 1
    return counts


def test_hammering_from_4_threads_loses_no_future(trainer, tmp_path):
    good = trainer.save(tmp_path / "good.safetensors").result(30)
    paths = (good, tmp_path / "missing.safetensors")
    futures, _ = _hammer(trainer, 3.0, paths, seed=0)
    assert len(futures) > 20
    # Running on, the trainer resolves every one of them in bounded time (the queue is bounded).
    _, not_done = wait(futures, timeout=240)
    assert not not_done, f"{len(not_done)} of {len(futures)} futures still pending"
    counts = _outcomes(futures)
    assert counts["done"] > 0 and counts["failed"] > 0, counts  # loads of the missing file fail

    # Hammered again, then stopped at once: when stop() returns, nothing is left pending.
    futures, _ = _hammer(trainer, 2.0, paths, seed=1)
    ended = trainer.stop(timeout=30)
    assert ended and all(f.done() for f in futures), _outcomes(futures)
    trainer.start()  # and it carries on
    trainer.wait_ready(120)
    assert trainer.step(2).result(120)["status"] in ("paused", "stepping")


def test_a_full_queue_refuses_new_work_at_once_and_everything_queued_resolves(trainer, tmp_path, monkeypatch):
    from carlab.lab import jobs
    from carlab.lab.session import Session

    release = threading.Event()
    real_reset_job = Session.reset_job

    def slow_reset_job(self):
        job = real_reset_job(self)
        return lambda: release.wait(120) and job()

    monkeypatch.setattr(Session, "reset_job", slow_reset_job)
    trainer.reset()
    trainer.wait_until(lambda s: s["status"] == "resetting", 30)  # busy: what comes now is deferred
    saves = [trainer.save(tmp_path / f"s{i}.safetensors") for i in range(jobs.QUEUE_SIZE)]
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=rf"^trainer busy: {jobs.QUEUE_SIZE} commands queued"):
        trainer.save(tmp_path / "one_too_many.safetensors")
    with pytest.raises(RuntimeError, match="trainer busy"):
        trainer.step(1)
    assert time.monotonic() - start < 5  # refused, not blocked
    trainer.pause()  # a pause is never refused
    assert not any(f.done() for f in saves)
    release.set()
    for i, future in enumerate(saves):
        assert future.result(120) == tmp_path / f"s{i}.safetensors"
    assert trainer.save(tmp_path / "again.safetensors").result(30).exists()  # room again


def test_stop_cancels_what_was_not_carried_out(trainer, tmp_path, monkeypatch):
    from carlab.lab.session import Session

    release = threading.Event()
    real_load_job = Session.load_job

    def slow_load_job(self, path):
        job = real_load_job(self, path)
        return lambda: release.wait(120) and job()

    good = trainer.save(tmp_path / "good.safetensors").result(30)
    before = trainer.step(3).result(60)["env_steps"]
    monkeypatch.setattr(Session, "load_job", slow_load_job)
    loading = trainer.load(good)  # being read by a helper when the trainer stops
    trainer.wait_until(lambda s: s["status"] == "loading", 30)
    waiting = [trainer.save(tmp_path / "never.safetensors"), trainer.step(2), trainer.load(good)]
    assert trainer.stop()
    assert all(f.cancelled() for f in waiting)
    with pytest.raises(RuntimeError, match="stopped before this load was done"):
        loading.result(0)
    assert not wait([loading, *waiting], timeout=0).not_done  # wait() hears of cancelled futures too
    release.set()
    snap = trainer.step(1).result(120)  # restarts the worker, which drops the stopped load's result
    assert snap["env_steps"] == before + PER_ROUND and not snap["message"].startswith("loaded")  # as it was
    assert not (tmp_path / "never.safetensors").exists()
