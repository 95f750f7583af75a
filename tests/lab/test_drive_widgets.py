"""Driving widgets without a browser: DriveView, DreamView / DreamDrive (its headless part, in
carlab.course.dream_drive) and LatentExplorer.

The world model is a freshly initialised one (its dreams are nonsense, which does not matter here:
these tests are about plumbing — the same actions reaching both worlds, the metric, the loop).
"""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lab_support import wait_for

from carlab.course import dream, latent
from carlab.course.dream_drive import DreamDrive, divergence
from carlab.lab import DreamView, DriveView, LatentExplorer
from carlab.learn.config import WorldModelConfig
from carlab.learn.world_model import make_world_model
from carlab.sim import DRIVE_TRACK, env

WM_CONFIG = WorldModelConfig()
JPEG = b"\xff\xd8\xff"
SEED = 3
VIEW_THREADS = ("carlab-drive-view", "carlab-dream-view")


def view_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name in VIEW_THREADS]


@pytest.fixture(scope="module")
def wm_params():
    return make_world_model(WM_CONFIG).init(jax.random.key(0))


@pytest.fixture
def drive_view():
    view = DriveView(track_seed=SEED, width=400, height=300)
    yield view
    view.close()
    assert not view.alive


@pytest.fixture
def dream_view(wm_params):
    view = DreamView(wm_params, WM_CONFIG, track_seed=SEED, height=240)
    yield view
    view.close()
    assert not view.alive


def start_pose(seed: int = SEED) -> np.ndarray:
    _, state = env.reset(None, env.EnvParams.from_seeds([seed]), 0)
    return np.asarray(state.car)


# ---------------------------------------------------------------------- DriveView
def test_drive_view_steps_move_the_car_and_change_the_frame(drive_view):
    first = drive_view.frame()
    assert first.shape == (300, 400, 3) and first.dtype == np.uint8
    np.testing.assert_allclose(drive_view.car, start_pose())
    observations = drive_view.drive([[0.0, 1.0]] * 15)
    assert len(observations) == 15 and observations[-1].shape == (6,)
    assert observations[-1][5] > observations[0][5] > 0.0, "full throttle did not speed the car up"
    assert np.hypot(*(drive_view.car[:2] - start_pose()[:2])) > 10.0
    assert not np.array_equal(drive_view.frame(), first)
    assert "speed" in drive_view.status() and drive_view.moving()

    with pytest.raises(ValueError, match="shape"):
        drive_view.step(1.0)
    drive_view.reset()
    np.testing.assert_allclose(drive_view.car, start_pose())
    assert drive_view.steps == 0 and not drive_view.moving()
    np.testing.assert_array_equal(drive_view.frame(), first)


def test_drive_view_crash_puts_the_car_back(drive_view):
    for _ in range(300):  # full throttle, hard right: off the road within a few seconds
        drive_view.step([1.0, 1.0])
        if drive_view.crashes:
            break
    assert drive_view.crashes == 1
    np.testing.assert_allclose(drive_view.car, start_pose())


@pytest.mark.parametrize("make", ["drive", "dream"])
def test_the_driving_views_open_on_a_straight(make, wm_params):
    # A student's first move is to hold ↑: the default track (sim.track.DRIVE_TRACK) keeps the car on
    # the road for the first 1.5 s of full throttle (45 steps at 30 per second), in both worlds' real car.
    if make == "drive":
        view = DriveView(width=200, height=150)
        step, crashes = view.step, lambda: view.crashes
    else:
        sim = DreamDrive(wm_params, WM_CONFIG)
        step, crashes = sim.step, lambda: sim.crashes
    for _ in range(45):
        step([0.0, 1.0])
    assert crashes() == 0
    if make == "drive":
        assert view.track_seed == DRIVE_TRACK
        view.close()
    # Track 0's start faces a bend: the same full throttle crashes there within the second.
    bend = DriveView(track_seed=0, width=200, height=150)
    for _ in range(30):
        bend.step([0.0, 1.0])
    assert bend.crashes == 1
    bend.close()


def test_keys_set_the_action():
    view = DriveView(track_seed=SEED, width=200, height=150)
    try:
        view.keys.handle({"type": "keydown", "key": "ArrowUp"})
        view.keys.handle({"type": "keydown", "key": "a"})
        np.testing.assert_array_equal(view.action(), [-1.0, 1.0])
        assert view.wants_step()
        view.keys.handle({"type": "keyup", "key": "A"})  # released with Shift held: still let go
        np.testing.assert_array_equal(view.action(), [0.0, 1.0])
        view.keys.handle({"type": "mouseleave"})  # keys only count over the canvas
        np.testing.assert_array_equal(view.action(), [0.0, 0.0])
        assert not view.wants_step()
        view.keys.handle({"type": "keydown", "key": "x"})  # not a driving key
        np.testing.assert_array_equal(view.action(), [0.0, 0.0])
    finally:
        view.close()


def test_loop_steps_while_a_key_is_held_then_idles(drive_view, sent_frames):
    drive_view.start()
    wait_for(lambda: sent_frames, 10, "the first frame")
    time.sleep(0.4)
    assert len(sent_frames) == 1 and drive_view.loop_steps == 0, "the loop worked with nothing to do"

    drive_view.keys.handle({"type": "keydown", "key": "ArrowUp"})
    wait_for(lambda: drive_view.loop_steps >= 10, 10, "the loop to drive")
    assert drive_view.car[2] > 0.0 and len(set(sent_frames)) > 5, "the canvas did not follow the car"
    drive_view.keys.handle({"type": "keyup", "key": "ArrowUp"})
    coasting = drive_view.loop_steps
    wait_for(lambda: drive_view.loop_steps > coasting + 3, 10, "the car to coast on with the key released")
    drive_view.keys.handle({"type": "keydown", "key": "ArrowDown"})
    wait_for(lambda: not drive_view.moving(), 10, "the brake to stop the car")
    drive_view.keys.handle({"type": "keyup", "key": "ArrowDown"})

    time.sleep(0.3)
    steps, frames, cpu = drive_view.loop_steps, len(sent_frames), time.process_time()
    time.sleep(1.5)  # idle: no steps, no frames (and the loop sleeps on an event, not a timer)
    assert (drive_view.loop_steps, len(sent_frames)) == (steps, frames)
    assert time.process_time() - cpu < 0.3, "an idle view burned CPU"
    assert drive_view.frames_sent == len(sent_frames) and drive_view.error_text is None

    # The rate is capped: 30 steps per second at most while driving.
    drive_view.keys.handle({"type": "keydown", "key": "ArrowUp"})
    began, before = time.monotonic(), drive_view.loop_steps
    time.sleep(1.0)
    assert drive_view.loop_steps - before <= 30 * (time.monotonic() - began) + 2
    drive_view.keys.handle({"type": "mouseleave"})


def test_loop_threads_start_once_and_stop_without_leaks(wm_params):
    before = len(view_threads())
    views = [
        DriveView(track_seed=0, width=200, height=150),
        DreamView(wm_params, WM_CONFIG, track_seed=0, height=120),
    ]
    for view in views:
        view.start()
        view.start()  # a second start is a no-op
    assert len(view_threads()) == before + 2
    for view in views:
        assert view.stop() and not view.alive
        view.start()  # restartable
        assert view.alive
        view.close()
        assert not view.alive
    wait_for(lambda: len(view_threads()) == before, 5, "the loop threads to end")


@pytest.mark.parametrize("kind", ["drive", "dream"])
def test_a_second_view_stops_the_first_views_loop(kind, wm_params, capsys):
    """Re-running a cell that makes and shows a view: the old view's loop ends, no thread is left over."""

    def make():
        if kind == "drive":
            return DriveView(track_seed=SEED, width=200, height=150)
        return DreamView(wm_params, WM_CONFIG, track_seed=SEED, height=120)

    before = {t.ident for t in view_threads()}
    first = make()
    first.show()  # the cell's first run
    first_thread = first._thread
    assert first.alive
    second = make()
    try:
        second.show()  # the same cell run again
        assert not first.alive and not first_thread.is_alive(), "the first view's loop still runs"
        assert second.alive
        extra = [t for t in view_threads() if t.ident not in before]
        assert extra == [second._thread], f"threads left over: {extra}"
        first.start()  # the first view, started again, takes the loop back in its turn
        assert first.alive and not second.alive
    finally:
        first.close()
        second.close()
    wait_for(lambda: {t.ident for t in view_threads()} <= before, 5, "the loop threads to end")
    capsys.readouterr()  # display() outside a kernel prints the widget's repr


def test_show_displays_and_starts_the_loop(drive_view, capsys):
    drive_view.show()
    assert drive_view.alive
    assert "VBox" in capsys.readouterr().out  # IPython's display falls back to the repr outside a kernel


def test_loop_errors_are_kept_and_shown(drive_view, monkeypatch):
    def broken(action):
        raise RuntimeError("the road is gone")

    monkeypatch.setattr(drive_view, "_step_locked", broken)
    drive_view.start()
    drive_view.keys.handle({"type": "keydown", "key": "ArrowUp"})
    wait_for(lambda: drive_view.error_text, 10, "the error")
    assert "the road is gone" in drive_view.error_text and "RuntimeError" in drive_view.error_text
    assert "the road is gone" in drive_view.error.value and "view error" in drive_view.error.value
    assert drive_view.alive, "the loop died with the error"


def test_button_errors_are_shown(drive_view, monkeypatch):
    def broken():
        raise ValueError("no start line")

    monkeypatch.setattr(drive_view, "_reset_locked", broken)
    drive_view.reset_button.click()
    assert "no start line" in drive_view.error.value
    monkeypatch.undo()
    drive_view.reset_button.click()
    assert drive_view.error.value == "", "the error stayed after a button worked"


# ---------------------------------------------------------------------- DreamDrive
def test_divergence_is_the_mean_absolute_difference():
    dream_obs = np.array([1.2, -0.1, 0.5, 0.25, 0.0, 0.9])
    real_obs = np.array([1.0, 0.0, 0.3, 0.5, 0.0, 0.6])
    manual = (0.0 + 0.0 + 0.2 + 0.25 + 0.0 + 0.3) / 6  # the dream's 1.2 and -0.1 clip to 1 and 0
    assert divergence(dream_obs, real_obs) == pytest.approx(manual)
    assert divergence(real_obs, real_obs) == 0.0
    batch = divergence(np.stack([dream_obs, real_obs]), np.stack([real_obs, real_obs]))
    np.testing.assert_allclose(batch, [manual, 0.0])


def test_both_worlds_receive_the_same_action(wm_params):
    sim = DreamDrive(wm_params, WM_CONFIG, track_seed=SEED)
    sim.step([0.0, 1.0])
    real_before, dream_before = sim._real, sim._dream
    action = np.array([-0.6, 0.8], np.float32)
    record = sim.step(action)
    np.testing.assert_array_equal(record["action"], action)
    np.testing.assert_array_equal(sim.last_action, action)
    # Each world, stepped on its own with the action, lands exactly where the joint step put it.
    real_obs, real_state, *_ = env.step_env(None, real_before, action, sim.env_params)
    dream_obs, dream_state, *_ = dream.step_env(None, dream_before, action, sim.dream_params)
    np.testing.assert_allclose(record["real_obs"], real_obs, atol=1e-6)
    np.testing.assert_allclose(record["dream_obs"], dream_obs, atol=1e-6)
    np.testing.assert_allclose(sim.real_car, real_state.car, atol=1e-5)
    np.testing.assert_allclose(sim.dream_car, dream_state.car, atol=1e-5)
    # Steering turns both cars by the same angle (the dream's heading is not learned).
    assert sim.real_car[3] == pytest.approx(sim.dream_car[3], abs=1e-6)
    # Out-of-range and NaN actions are sanitised once, for both.
    record = sim.step([np.nan, 3.0])
    np.testing.assert_array_equal(record["action"], [0.0, 1.0])
    with pytest.raises(ValueError, match="steering, throttle"):
        sim.step([1.0, 0.0, 0.0])


def test_divergence_of_a_drive_matches_a_manual_computation(wm_params):
    sim = DreamDrive(wm_params, WM_CONFIG, track_seed=SEED)
    records = sim.run(lambda obs: np.array([0.2, 0.6]), 12)
    assert records["divergence"].shape == (12,) and records["real_obs"].shape == (12, 6)
    dream_obs, real_obs = records["dream_obs"].astype(np.float64), records["real_obs"].astype(np.float64)
    manual = np.mean(np.abs(np.clip(dream_obs, 0.0, 1.0) - real_obs), axis=-1)
    np.testing.assert_allclose(records["divergence"], manual, rtol=1e-12)
    np.testing.assert_allclose(records["obs_error"].mean(axis=-1), manual, rtol=1e-12)
    assert sim.divergence == pytest.approx(manual[-1])
    np.testing.assert_array_equal(records["steps_since_sync"], np.arange(1, 13))
    gap = np.hypot(*(sim.dream_car[:2] - sim.real_car[:2]))
    assert sim.pose_gap == pytest.approx(gap) == pytest.approx(records["pose_gap"][-1])


def test_sync_and_reset(wm_params):
    sim = DreamDrive(wm_params, WM_CONFIG, track_seed=SEED)
    sim.run(lambda obs: np.array([0.3, 1.0]), 10)
    real_car = sim.real_car.copy()
    sim.sync()
    assert sim.steps_since_sync == 0
    np.testing.assert_array_equal(sim.dream_car, real_car)  # the dream starts where the car is
    np.testing.assert_array_equal(sim.real_car, real_car)  # and reality is untouched
    wm = make_world_model(WM_CONFIG)
    z = wm.encode(wm_params, jnp.asarray(sim.real_obs))
    np.testing.assert_allclose(sim._dream.latent, z, atol=1e-6)
    np.testing.assert_allclose(sim.dream_obs, wm.decode(wm_params, z), atol=1e-6)

    sim.reset()
    np.testing.assert_allclose(sim.real_car, start_pose())
    np.testing.assert_allclose(sim.dream_car, start_pose())
    assert sim.steps_since_sync == 0 and sim.crashes == 0


def test_a_real_crash_restarts_both_worlds(wm_params):
    sim = DreamDrive(wm_params, WM_CONFIG, track_seed=SEED)
    for _ in range(300):
        record = sim.step([1.0, 1.0])
        if record["crashed"]:
            break
    assert record["crashed"] and sim.crashes == 1
    assert sim.last_crash["steps"] == record["steps_since_sync"] > 0
    assert 0.0 <= sim.last_crash["dream_crash_prob"] <= 1.0
    assert sim.steps_since_sync == 0
    np.testing.assert_allclose(sim.real_car, start_pose())
    np.testing.assert_allclose(sim.dream_car, start_pose())


# ---------------------------------------------------------------------- DreamView
def test_dream_view_keys_drive_both_panels(dream_view, sent_frames):
    first = dream_view.frame()
    assert first.shape == (240, 480, 3)  # a 320x240 track panel beside a 160x240 car's-eye panel
    dream_view.keys.handle({"type": "keydown", "key": "ArrowUp"})
    dream_view.keys.handle({"type": "keydown", "key": "ArrowLeft"})
    for _ in range(8):
        assert dream_view.tick()  # what the loop does each tick: a key is held, so it steps and draws
    np.testing.assert_array_equal(dream_view.sim.last_action, [-1.0, 1.0])
    assert dream_view.sim.steps_since_sync == 8 and len(sent_frames) == 8
    frame = dream_view.frame()
    assert not np.array_equal(frame[:, :320], first[:, :320]), "the track panel did not change"
    assert not np.array_equal(frame[:, 320:], first[:, 320:]), "the car's-eye panel did not change"
    assert dream_view.meter.value == pytest.approx(min(dream_view.sim.divergence, dream_view.meter.max))
    assert "8 steps since sync" in dream_view.meter_label.value

    dream_view.keys.handle({"type": "mouseleave"})
    dream_view.throttle.value = 0.5  # sliders act when no key is held
    np.testing.assert_array_equal(dream_view.action(), [0.0, 0.5])
    dream_view.keys.handle({"type": "keydown", "key": "d"})  # held keys win over the sliders
    np.testing.assert_array_equal(dream_view.action(), [1.0, 0.0])


def test_dream_view_loop_drives_with_keys(dream_view, sent_frames):
    dream_view.start()
    wait_for(lambda: sent_frames, 10, "the first frame")
    dream_view.keys.handle({"type": "keydown", "key": "w"})
    wait_for(lambda: dream_view.sim.steps_since_sync >= 5, 10, "the dream to be driven")
    dream_view.keys.handle({"type": "keyup", "key": "w"})
    assert len(set(sent_frames)) > 3 and dream_view.error_text is None


def test_dream_view_buttons(dream_view):
    dream_view.drive([[0.5, 1.0]] * 6)
    dream_view.sync_button.click()
    assert dream_view.sim.steps_since_sync == 0
    np.testing.assert_array_equal(dream_view.sim.dream_car, dream_view.sim.real_car)
    assert dream_view._redraw.is_set(), "the sync was not redrawn"

    dream_view.throttle.value = 0.7
    dream_view.drive([[0.0, 1.0]] * 3)
    dream_view.reset_button.click()
    np.testing.assert_allclose(dream_view.sim.real_car, start_pose())
    assert dream_view.throttle.value == 0.0 and not dream_view.wants_step()
    assert dream_view.error.value == ""


def test_dream_view_errors_are_kept_and_shown(dream_view, monkeypatch):
    def broken():
        raise RuntimeError("the dream is over")

    monkeypatch.setattr(dream_view.sim, "sync", broken)
    dream_view.sync_button.click()
    assert "the dream is over" in dream_view.error.value

    def broken_step(action):
        raise FloatingPointError("nan in the latent")

    monkeypatch.setattr(dream_view.sim, "step", broken_step)
    dream_view.start()
    dream_view.throttle.value = 1.0
    wait_for(lambda: dream_view.error_text, 10, "the loop's error")
    assert "nan in the latent" in dream_view.error.value and dream_view.alive


# ---------------------------------------------------------------------- LatentExplorer
@pytest.fixture
def explorer(wm_params):
    observations = jax.random.uniform(jax.random.key(1), (64, 6))
    return LatentExplorer.from_observations(wm_params, WM_CONFIG, observations, num_components=3, size=120)


def test_latent_explorer_sliders_decode_and_draw(explorer, wm_params):
    assert len(explorer.sliders) == 3 and explorer.image.value[:4] == b"\x89PNG"
    coords = np.array([1.5, -0.5, 0.0])
    z = latent.latent_at(explorer.pca, coords)
    np.testing.assert_allclose(
        explorer.obs_at(coords), make_world_model(WM_CONFIG).decode(wm_params, z), atol=1e-6
    )

    first_png, first_readout = explorer.image.value, explorer.readout.value
    explorer.sliders[0].value = 2.0
    assert explorer.image.value != first_png and explorer.readout.value != first_readout
    np.testing.assert_array_equal(explorer.coords, [2.0, 0.0, 0.0])
    assert explorer.error.value == ""

    grid = explorer.grid([-2.0, 0.0, 2.0])
    assert grid.shape == (3, 3, 120, 120, 3)
    np.testing.assert_array_equal(grid[1, 1], explorer.frame([0.0, 0.0, 0.0]))
    assert not np.array_equal(grid[0, 0], grid[2, 2])


def test_latent_explorer_errors_are_shown(explorer, monkeypatch):
    def broken(coords):
        raise ValueError("off the map")

    monkeypatch.setattr(explorer, "frame", broken)
    explorer.sliders[1].value = 1.0
    assert "off the map" in explorer.error.value
