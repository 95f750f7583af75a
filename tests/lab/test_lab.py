"""The lab widgets without a browser: buttons, sliders, keys, and the poses the canvas is sent."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from lab_support import wait_for

from carlab.lab import Charts, Dashboard, LiveView, Trainer, open_lab
from carlab.lab.widgets.keys import KeyDriver, key_action
from carlab.lab.widgets.race_canvas import decode_poses
from carlab.learn import config as config_lib
from carlab.sim import render

CONFIG = config_lib.tiny()
PER_ROUND = CONFIG.train.num_cars * CONFIG.train.train_every
PNG = b"\x89PNG"


@pytest.fixture
def dashboard(tmp_path):
    """A dashboard over a built tiny trainer, saving into ``tmp_path``; closed afterwards."""
    trainer = Trainer(CONFIG)
    trainer.wait_ready(180)
    board = Dashboard(trainer, models_dir=tmp_path)
    yield board
    board.close()
    assert not board.view.alive and not trainer.alive
    wait_for(
        lambda: not [t for t in threading.enumerate() if t.name.startswith("carlab-")], 120, "threads to end"
    )


def test_buttons_post_to_the_trainer(dashboard):
    trainer = dashboard.trainer
    dashboard.start.click()
    trainer.wait_until(lambda s: s["status"] == "running" and s["env_steps"] > 0, 60)
    dashboard.pause.click()
    paused = trainer.wait_until(lambda s: s["status"] == "paused", 5)["env_steps"]

    dashboard.step_rounds.value = 2
    dashboard.step.click()
    trainer.wait_until(lambda s: s["env_steps"] == paused + 2 * PER_ROUND and s["status"] == "paused", 30)

    dashboard.mode.value = "manual"
    assert trainer.snapshot()["mode"] == "manual"
    dashboard.keys.handle({"type": "keydown", "key": "ArrowUp"})
    dashboard.keys.handle({"type": "keydown", "key": "a"})
    assert trainer.snapshot()["manual_action"] == (-1.0, 1.0)
    dashboard.keys.handle({"type": "keyup", "key": "a"})
    assert trainer.snapshot()["manual_action"] == (0.0, 1.0)
    dashboard.mode.value = "ai"  # hands the wheel back and lets go of the keys
    assert trainer.snapshot()["manual_action"] == (0.0, 0.0) and not dashboard.keys.held

    seed = int(trainer.snapshot()["track"].seed)
    dashboard.new_track.click()
    trainer.wait_until(lambda s: int(s["track"].seed) != seed, 60)
    dashboard.reset.click()
    trainer.wait_until(lambda s: s["message"].startswith("reset") and s["env_steps"] == 0, 60)


def test_sliders_set_live_hyperparameters_and_follow_the_trainer(dashboard):
    trainer = dashboard.trainer
    dashboard.sliders["world_model_lr"].value = 3e-3
    dashboard.sliders["horizon"].value = 8
    snap = trainer.wait_until(lambda s: s["hyper"]["horizon"] == 8, 10)
    assert snap["hyper"]["world_model_lr"] == pytest.approx(3e-3)
    snap = trainer.step(1).result(180)  # the new horizon compiles once, then is the config in use
    assert snap["config"].agent.horizon == 8 and snap["status"] == "paused"

    # A load or reset changes what the trainer uses; the status tick shows it on the sliders
    # without posting it back as a change.
    trainer.set_hyperparameters(horizon=5, explore_prob=0.4)
    snap = trainer.wait_until(lambda s: s["hyper"]["horizon"] == 5, 10)
    message = snap["message"]
    dashboard._on_status(snap)
    assert dashboard.sliders["horizon"].value == 5
    assert dashboard.sliders["explore_prob"].value == pytest.approx(0.4, abs=0.01)
    time.sleep(0.2)
    assert trainer.snapshot()["message"] == message, "syncing a slider posted a change"
    assert "horizon=5" in dashboard.hyper_line.value and "env steps" in dashboard.status.value


def test_the_entropy_slider_is_live_for_the_anchored_learner_only(dashboard, monkeypatch):
    trainer = dashboard.trainer
    assert trainer.config.agent.learner == "anchored"
    slider = dashboard.sliders["target_entropy"]
    assert slider.description == "entropy" and slider.step == 0.5
    dashboard._on_status(trainer.snapshot())
    assert not slider.disabled
    slider.value = -3.0
    trainer.wait_until(lambda s: s["hyper"]["target_entropy"] == -3.0, 10)
    assert trainer.step(1).result(180)["config"].agent.target_entropy == -3.0
    # A dream-learner run (a loaded one, say) has no temperature to tune: the slider greys out.
    dream = config_lib.with_overrides(trainer.config, agent={"learner": "dream", "horizon": 5})
    monkeypatch.setattr(type(trainer), "config", property(lambda self: dream))
    dashboard._on_status(trainer.snapshot())
    assert slider.disabled


def test_status_line_says_what_is_compiling_and_for_how_long():
    from carlab.lab.snapshot import empty_snapshot
    from carlab.lab.widgets.dashboard import format_status

    snap = empty_snapshot(config_lib.tiny())
    snap.update(status="compiling", busy_detail="the training step for horizon=3", busy_since=100.0)
    line = format_status(snap, now=107.2)
    assert line.startswith("<b>compiling</b> the training step for horizon=3 ⏳ 7 s · ")
    snap.update(status="paused", busy_detail="", busy_since=None)
    assert format_status(snap, now=107.2).startswith("<b>paused</b> · ")


def test_status_line_names_the_driver_when_the_run_keeps_policy_checkpoints():
    from carlab.lab.snapshot import empty_snapshot
    from carlab.lab.widgets.dashboard import format_status
    from carlab.learn import loop

    config = config_lib.with_overrides(
        config_lib.tiny(),
        train={"checkpoint_tracks": 2, "checkpoint_more_tracks": 1, "checkpoint_every": 100},
    )
    _, history = loop.train(config, 200, progress=False)  # tests at 100 and 200 env steps
    snap = empty_snapshot(config)
    assert "driver:" not in format_status(snap)  # no record yet
    snap["history"] = tuple(history)
    last = history[-1]
    line = format_status(snap)
    assert (
        f"driver: the actor of {last['driver/env_steps']:,} env steps ({last['driver/laps']}/3 test laps)"
        in line
    )
    assert f"newest actor {last['driver/newest_laps']}/3 test laps" in line
    assert f"{last['test_steps']:,} test steps" in line and last["test_steps"] > 0
    snap["history"] = tuple(loop.train(config_lib.tiny(), 200, progress=False)[1])  # checkpoints off
    assert "driver:" not in format_status(snap)


def test_save_and_load_buttons(dashboard, tmp_path):
    trainer = dashboard.trainer
    dashboard.save_name.value = "../outside"
    dashboard.save.click()
    assert "save name" in dashboard.error.value and not list(tmp_path.glob("*.safetensors"))

    saved = trainer.step(6).result(30)
    assert saved["env_steps"] == 6 * PER_ROUND and saved["status"] == "paused"
    dashboard.save_name.value = "unit"
    dashboard.save.click()
    path = wait_for(
        lambda: (tmp_path / "unit.safetensors").exists() and tmp_path / "unit.safetensors", 30, "save"
    )
    dashboard._refresh_checkpoints(force=True)
    assert str(path) in [value for _, value in dashboard.checkpoints.options]

    stepped = trainer.step(4).result(30)
    assert stepped["env_steps"] == 10 * PER_ROUND and stepped["status"] == "paused"
    dashboard.checkpoints.value = str(path)
    dashboard.load.click()
    loaded = trainer.wait_until(lambda s: s["message"].startswith("loaded") and s["status"] == "paused", 60)
    for key in ("env_steps", "updates", "episodes", "explore_prob", "best_progress"):
        assert loaded[key] == saved[key], key


def test_load_with_the_dropdown_untouched_loads_the_newest_model(dashboard, tmp_path):
    trainer = dashboard.trainer
    dashboard.load.click()  # nothing saved yet: a message that says so, and nothing happens
    assert "nothing to load" in dashboard.error.value and str(tmp_path) in dashboard.error.value
    older = trainer.step(2).result(30)
    trainer.save(tmp_path / "older.safetensors").result(30)
    time.sleep(0.05)  # distinct modification times
    newer = trainer.step(3).result(30)
    trainer.save(tmp_path / "newer.safetensors").result(30)
    dashboard._refresh_checkpoints(force=True)
    assert dashboard.checkpoints.value == str(tmp_path / "newer.safetensors")  # preselected
    assert older["env_steps"] < newer["env_steps"]
    trainer.step(2).result(30)
    dashboard.load.click()
    loaded = trainer.wait_until(lambda s: s["message"].startswith("loaded") and s["status"] == "paused", 60)
    assert loaded["env_steps"] == newer["env_steps"]
    assert dashboard.error.value == ""  # the complaint about the first Load is gone


def test_an_error_clears_on_the_next_action_that_works(dashboard):
    dashboard.save_name.value = "no/slashes"
    dashboard.save.click()
    assert "save name" in dashboard.error.value
    dashboard.pause.click()
    assert dashboard.error.value == ""


def test_reset_says_what_it_kept_and_charts_the_fresh_run_at_once(dashboard):
    trainer, view = dashboard.trainer, dashboard.view
    dashboard.mode.value = "manual"
    dashboard.sliders["actor_lr"].value = 2e-3
    kept = trainer.wait_until(lambda s: s["hyper"]["actor_lr"] == pytest.approx(2e-3, rel=0.05), 10)["hyper"]
    for _ in range(3):  # a record at each pause: a line of three points to chart
        trained = trainer.step(2).result(180)
    assert len(trained["history"]) >= 2, "the steps left no history to chart"
    view.chart_period = 60.0  # the loop's own chart tick: the first one now, the next in a minute
    drawn = []  # the histories the view hands the charts
    show = view.charts.show
    view.charts.show = lambda history, **kw: (drawn.append(history), show(history, **kw))
    view.start()
    wait_for(lambda: view.charts_sent >= 1, 60, "the trained run's charts")
    assert len(drawn) == 1 and len(drawn[0]) >= 2
    assert dashboard.charts.lines["env/return"].x.size or dashboard.charts.lines["wm/loss"].x.size

    dashboard.reset.click()
    snap = trainer.wait_until(lambda s: s["message"].startswith("reset") and s["env_steps"] == 0, 60)
    # The fresh run's (empty) charts arrive long before the next chart tick would bring them.
    wait_for(lambda: view.charts_sent >= 2, 20, "the fresh run's charts")
    assert [len(history) for history in drawn] == [len(drawn[0]), 0]
    assert all(line.x.size == 0 for line in dashboard.charts.lines.values()), "the old run's curves stayed"
    message = snap["message"]
    for name in ("actor_lr", "world_model_lr", "horizon", "batch_size"):
        assert f"{name}={kept[name]:g}" in message, (name, message)
    assert snap["hyper"]["actor_lr"] == pytest.approx(kept["actor_lr"])  # what it says is what it uses
    assert "paused" in message and "mode stays Manual" in message and snap["mode"] == "manual"
    assert f"explore restarts at {snap['hyper']['explore_prob']:.2f}" in message
    wait_for(lambda: "mode stays Manual" in dashboard.status.value, 10, "the status line to say it")


def test_live_view_sends_only_new_poses_at_a_capped_rate(dashboard):
    trainer, view, canvas = dashboard.trainer, dashboard.view, dashboard.canvas
    sent, tracks = [], []  # each change of a synced trait is one message to the browser
    canvas.observe(lambda change: sent.append(change["new"]), "poses")
    canvas.observe(lambda change: tracks.append(change["new"]), "background")
    view.period = 1.0 / 20.0  # a 20 updates/s cap for this test
    view.start()
    wait_for(lambda: sent, 10, "the first poses")
    assert view.frames_sent == len(sent) and tracks and tracks[-1][:4] == PNG
    time.sleep(0.5)
    assert len(sent) == 1, "poses were sent while nothing moved"
    snap = trainer.snapshot()
    np.testing.assert_allclose(decode_poses(sent[0])[:, :4], snap["cars"], rtol=1e-6)
    np.testing.assert_allclose(decode_poses(sent[0])[:, 4:], snap["rays"], rtol=1e-6)
    assert canvas.highlight == snap["shown_car"] and canvas.hud[0] == "mode: AI"
    assert canvas.track_key == render.track_key(snap["track"])

    dashboard.start.click()
    trainer.wait_until(lambda s: s["status"] == "running", 60)
    before, began = len(sent), time.monotonic()
    time.sleep(2.0)
    count, elapsed = len(sent) - before, time.monotonic() - began
    assert 5 <= count <= 20 * elapsed + 2, f"{count} updates in {elapsed:.1f} s with a 20/s cap"
    assert len(set(sent[before:])) == count, "an update repeated the poses before it"
    assert len(tracks) <= 2, "the track's picture was sent again while it did not change"

    returns = dashboard.charts.lines["actor/imagined_return"]
    wait_for(lambda: view.charts_sent >= 2 and returns.x.size, 10, "charts")
    first_chart = returns.x.size
    wait_for(lambda: returns.x.size > first_chart, 10, "the charts to grow")
    history = trainer.snapshot()["history"]
    logged = [r["env_steps"] for r in history if math.isfinite(r.get("actor/imagined_return") or math.nan)]
    assert returns.x[0] == logged[0] and returns.x[-1] <= logged[-1]  # the records' own env steps
    assert "running" in dashboard.status.value

    dashboard.pause.click()
    trainer.wait_until(lambda s: s["status"] == "paused", 5)
    time.sleep(0.3)
    paused = len(sent)
    time.sleep(0.5)
    assert len(sent) == paused, "poses were sent while paused"
    snap = trainer.snapshot()  # what the canvas holds is where the cars are
    np.testing.assert_allclose(decode_poses(canvas.poses)[:, :4], snap["cars"], rtol=1e-6)
    assert view.error is None


def test_render_loop_errors_are_kept_and_shown(dashboard):
    class Broken:
        def snapshot(self):
            raise RuntimeError("no snapshot today")

    view = LiveView(Broken(), dashboard.canvas)
    view.start()
    try:
        wait_for(lambda: view.error, 5, "the error")
        assert "no snapshot today" in view.error and view.alive
    finally:
        assert view.stop()
    dashboard.view.error = view.error
    dashboard._show_error()
    assert "view error" in dashboard.error.value and "no snapshot today" in dashboard.error.value


def test_show_displays_and_open_lab_replaces_the_previous_lab(tmp_path, capsys):
    first = open_lab(config=CONFIG, models_dir=tmp_path)
    assert first.view.alive
    first.trainer.wait_ready(180)
    stepped = first.trainer.step(2).result(30)
    assert stepped["env_steps"] == 2 * PER_ROUND and stepped["status"] == "paused"
    path = first.trainer.save(tmp_path / "first.safetensors").result(30)

    second = open_lab(checkpoint_path=path, models_dir=tmp_path, show=False)
    try:
        assert not first.view.alive and not first.trainer.alive
        assert second.trainer.wait_ready(60)["env_steps"] == 2 * PER_ROUND
        assert second.checkpoints.options and not second.view.alive
    finally:
        second.close()
    capsys.readouterr()  # display() outside a kernel prints the widget's repr


def test_key_driver():
    actions = []
    driver = KeyDriver(actions.append)
    for event in (("keydown", "ArrowUp"), ("keydown", "ArrowUp"), ("keydown", "D"), ("keydown", "x")):
        driver.handle({"type": event[0], "key": event[1]})
    assert [a.tolist() for a in actions] == [[0.0, 1.0], [1.0, 1.0]]  # repeats and other keys: no change
    driver.handle({"type": "keyup", "key": "d"})  # Shift released before the letter
    assert actions[-1].tolist() == [0.0, 1.0]
    driver.handle({"type": "mouseleave"})  # keys released off the canvas never arrive
    assert actions[-1].tolist() == [0.0, 0.0] and not driver.held
    assert key_action({"ArrowLeft", "ArrowRight", "s"}).tolist() == [0.0, -1.0]


def test_charts_are_png_with_or_without_data():
    charts = Charts()
    assert charts.png(())[:4] == PNG
    history = [
        {"env_steps": 100 * i, "env/return": None if i % 2 else float(i), "wm/loss": 1.0 / (i + 1)}
        for i in range(20)
    ]
    picture = charts.png(history)
    assert picture[:4] == PNG and picture != charts.png(history[:5])
    assert np.isfinite(charts.lines["wm/loss"].get_ydata()).all()
