"""The dashboard's charts: imagined against real return, and the spread panel that shows only when needed."""

import math

import numpy as np
import pytest

from carlab.lab.widgets import charts as charts_lib
from carlab.lab.widgets.charts import REAL_RETURN, Charts, real_return_estimate, series
from carlab.lab.widgets.live_charts import LiveCharts, nice_ticks

PNG = b"\x89PNG"


def _history(n=12, **extra):
    """Fake summarize records: 1000 env steps and 2 finished episodes (one crashed) per chunk."""
    return [
        {
            "env_steps": 1000 * (i + 1),
            "episodes_in_chunk": 2,
            "env/return": 30.0 + i,
            "env/crash_rate": 0.5,
            "actor/imagined_return": 20.0 + 2.0 * i,
            "critic/value": 15.0 + i,
            "actor/entropy": 0.0,
            "actor/disagreement": 0.0,
            "wm/loss": 1.0 / (i + 1),
            **{key: values[i] for key, values in extra.items()},
        }
        for i in range(n)
    ]


def test_real_return_matches_a_hand_computed_reference():
    history = [
        {
            "env_steps": 100,
            "episodes_in_chunk": 1,
            "env/return": 10.0,
            "env/crash_rate": 1.0,
        },  # steps unknown
        {"env_steps": 200, "episodes_in_chunk": 2, "env/return": 5.0, "env/crash_rate": 0.5},
        {"env_steps": 300, "episodes_in_chunk": 0, "env/return": None, "env/crash_rate": None},
        {"env_steps": 400, "episodes_in_chunk": 1, "env/return": -2.0, "env/crash_rate": 1.0},
        {
            "env_steps": 50,
            "episodes_in_chunk": 3,
            "env/return": 99.0,
            "env/crash_rate": 0.0,
        },  # a drop: uncounted
    ]
    got = real_return_estimate(history, discount=0.9, min_episodes=2)
    # r = reward per step, c = crashes per step over the trailing records with >= 2 episodes.
    want = [
        math.nan,
        (10 / 100) / (1 - 0.9 * (1 - 1 / 100)),  # record 1 alone: 2 episodes, reward 10, 1 crash
        (10 / 200) / (1 - 0.9 * (1 - 1 / 200)),  # records 1-2
        (8 / 300) / (1 - 0.9 * (1 - 2 / 300)),  # records 1-3 (2-3 hold only one episode)
        (8 / 300) / (1 - 0.9 * (1 - 2 / 300)),  # the drop adds nothing
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isnan(real_return_estimate(history[:1], discount=0.9)).all()
    for bad in (1.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="discount"):
            real_return_estimate(history, discount=bad)


def test_imagined_and_real_return_share_one_panel():
    history = _history()
    charts = Charts()
    assert charts.png(history, discount=0.99)[:4] == PNG
    imagined, critic, real = (charts.lines[k] for k in ("actor/imagined_return", "critic/value", REAL_RETURN))
    assert imagined.axes is critic.axes is real.axes
    np.testing.assert_allclose(imagined.get_xdata(), [r["env_steps"] for r in history])
    np.testing.assert_allclose(imagined.get_ydata(), [r["actor/imagined_return"] for r in history])
    np.testing.assert_allclose(critic.get_ydata(), [r["critic/value"] for r in history])
    real_y = np.asarray(real.get_ydata(), dtype=float)
    assert np.isnan(real_y[0]) and np.isfinite(real_y[1:]).all()
    np.testing.assert_allclose(real_y[1:], real_return_estimate(history, discount=0.99)[1:])
    # 2 episodes of ~31+ return per 1000 steps: far below the imagined 20+, so the gap shows.
    assert (real_y[1:] < np.asarray(imagined.get_ydata())[1:]).all()
    # The discount matters: a shorter-sighted run is worth less from the same reward rate.
    charts.png(history, discount=0.9)
    assert (np.asarray(real.get_ydata())[1:] < real_y[1:]).all()


def test_spread_panel_only_when_entropy_or_disagreement_is_nonzero():
    charts = Charts()
    zeros = _history()
    charts.png(zeros)
    assert charts.spread == () and len(charts.axes) == len(charts_lib.PANELS)
    assert "actor/entropy" not in charts.lines and "actor/disagreement" not in charts.lines
    assert "policy spread" not in charts_lib.captions_html(zeros)
    base_height = charts.figure.get_size_inches()[1]

    entropy = [math.nan] + [0.5 + 0.1 * i for i in range(11)]  # NaN: a chunk without updates
    one = _history(**{"actor/entropy": entropy})
    charts.png(one)
    assert charts.spread == ("actor/entropy",) and "actor/disagreement" not in charts.lines
    np.testing.assert_allclose(charts.lines["actor/entropy"].get_ydata()[1:], entropy[1:])
    assert len(charts.axes) == len(charts_lib.PANELS) + 1
    assert charts.figure.get_size_inches()[1] > base_height
    caption = charts_lib.captions_html(one)
    assert "policy spread" in caption and "model doubt" not in caption

    both = _history(**{"actor/entropy": entropy, "actor/disagreement": [0.0] * 11 + [0.02]})
    assert charts.png(both)[:4] == PNG
    assert charts.spread == ("actor/entropy", "actor/disagreement")
    spread_line, doubt_line = charts.lines["actor/entropy"], charts.lines["actor/disagreement"]
    assert spread_line.axes is not doubt_line.axes  # one y axis each: they share no scale
    assert "model doubt" in charts_lib.captions_html(both)

    charts.png(zeros)  # back to a deterministic actor and one network: the panel goes again
    assert charts.spread == () and len(charts.axes) == len(charts_lib.PANELS)
    assert "actor/entropy" not in charts.lines
    assert np.isfinite(charts.lines["wm/loss"].get_ydata()).all()
    assert charts.png(())[:4] == PNG and charts.spread == ()


def test_series_is_what_both_charts_draw():
    history = _history()
    history[3]["actor/loss"] = None
    x, ys = series(history, discount=0.9)
    np.testing.assert_array_equal(x, [1000.0 * (i + 1) for i in range(12)])
    panel_keys = [key for _, keys, _ in charts_lib.PANELS for key in keys]
    assert set(ys) == set(panel_keys) | set(charts_lib.SPREAD) | set(charts_lib.DRIVER)
    np.testing.assert_allclose(ys[REAL_RETURN], real_return_estimate(history, discount=0.9), equal_nan=True)
    np.testing.assert_array_equal(ys["critic/value"], [15.0 + i for i in range(12)])
    assert np.isnan(ys["actor/loss"]).all() and np.isfinite(ys["wm/loss"]).all()
    history[0]["wm/loss"] = 0.0  # a zero loss: a gap on the log axis
    assert np.isnan(series(history, discount=0.9)[1]["wm/loss"][0])


def test_live_charts_hand_the_browser_the_series_and_the_runs_discount():
    live = LiveCharts()
    history = _history()
    live.show(history, discount=0.5)
    x, ys = series(history, discount=0.5)
    for key in ("env/return", "actor/imagined_return", "wm/loss"):
        np.testing.assert_array_equal(live.lines[key].x, x)
        np.testing.assert_array_equal(live.lines[key].y, ys[key])
    # Only known points go to the browser: the real return is unknown at the first record.
    np.testing.assert_array_equal(live.lines[REAL_RETURN].x, x[1:])
    np.testing.assert_array_equal(live.lines[REAL_RETURN].y, ys[REAL_RETURN][1:])
    assert live.lines["actor/loss"].x.size == 0  # never logged: no points
    live.show(history, discount=0.99)  # a load or reset changed the run's gamma
    np.testing.assert_allclose(live.lines[REAL_RETURN].y, real_return_estimate(history, discount=0.99)[1:])
    assert all(figure.marks and figure.axes for figure in live.figures) and live.shown == 2


def test_live_spread_panel_shows_only_the_non_zero_metrics_and_a_reset_blanks_every_panel():
    live = LiveCharts()
    live.show(_history())  # a deterministic actor and one network: entropy and disagreement are 0
    assert live.spread == () and live.spread_figure not in live.widget.children
    live.show(_history(**{"actor/entropy": [0.5] * 12}))
    assert live.spread == ("actor/entropy",) and live.widget.children[-1] is live.spread_figure
    assert live.lines["actor/entropy"].visible and not live.lines["actor/disagreement"].visible
    assert live.spread_axes["actor/entropy"].visible and not live.spread_axes["actor/disagreement"].visible
    live.show(())  # Reset: a fresh run has no history
    assert live.spread == () and live.spread_figure not in live.widget.children
    assert all(line.x.size == 0 and line.y.size == 0 for line in live.lines.values())


def _tested(n=12):
    """Records of a run with policy checkpoints: no test in the first two chunks, then the newest
    actor's test laps (a dip at chunk 7) and the driver's, which a lower score does not replace."""
    history = _history(n)
    newest = [None, None, 3, 9, 14, 16, 16, 4, 16, 15, 16, 16]
    driver = [None, None, 3, 9, 14, 16, 16, 16, 16, 16, 16, 16]
    for record, mine, kept in zip(history, newest, driver):
        if mine is not None:
            record.update({"driver/newest_laps": mine, "driver/laps": kept, "test_steps": 100})
    return history, newest, driver


def test_driver_panel_only_for_runs_with_policy_checkpoints():
    history, newest, driver = _tested()
    x, ys = series(history, discount=0.9)
    np.testing.assert_array_equal(ys["driver/newest_laps"][2:], newest[2:])
    assert np.isnan(ys["driver/laps"][:2]).all()
    assert not charts_lib.has_driver_tests(_history()) and charts_lib.has_driver_tests(history)
    assert "checkpoint tests" in charts_lib.captions_html(history)
    assert "checkpoint tests" not in charts_lib.captions_html(_history())

    charts = Charts()
    charts.png(_history())
    assert not charts.driver and "driver/laps" not in charts.lines
    assert charts.png(history)[:4] == PNG and charts.driver
    assert len(charts.axes) == len(charts_lib.PANELS) + 1
    np.testing.assert_array_equal(charts.lines["driver/laps"].get_ydata()[2:], driver[2:])
    # with the spread panel too: both, the driver's last
    both = [{**r, "actor/entropy": 0.5} for r in history]
    charts.png(both)
    assert charts.spread == ("actor/entropy",) and charts.driver
    assert charts.lines["driver/laps"].axes is charts.axes[len(charts_lib.PANELS) + 1]

    live = LiveCharts()
    live.show(_history())
    assert live.driver_figure not in live.widget.children
    live.show(history)
    assert live.widget.children[-1] is live.driver_figure and live.driver
    np.testing.assert_array_equal(live.lines["driver/newest_laps"].y, newest[2:])
    np.testing.assert_array_equal(live.lines["driver/laps"].x, x[2:])
    live.show(both)
    assert list(live.widget.children[-2:]) == [live.spread_figure, live.driver_figure]
    live.show(())  # Reset
    assert live.driver_figure not in live.widget.children and live.spread_figure not in live.widget.children


def test_an_empty_history_after_a_run_draws_fresh_axes():
    """After Reset the charts must look like a fresh run's, not keep the old run's axis ranges."""
    charts = Charts()
    charts.png(_history())
    old = charts.axes[0].get_xlim()
    fresh = Charts()
    fresh.png(())
    charts.png(())
    assert charts.axes[0].get_xlim() == fresh.axes[0].get_xlim() != old


def test_nice_ticks_are_round_and_inside_the_range():
    np.testing.assert_array_equal(nice_ticks(2417.5, 63582.5), [20_000, 40_000, 60_000])
    np.testing.assert_array_equal(nice_ticks(-29.4, 388.0), [0, 150, 300])
    np.testing.assert_allclose(nice_ticks(2e-4, 0.45, log=True), [1e-3, 1e-2, 1e-1])  # decades
    np.testing.assert_allclose(nice_ticks(0.11, 0.42, log=True), [0.2, 0.3, 0.4])  # within one decade
    many = nice_ticks(1e-7, 1e3, log=True)  # ten decades: at most five ticks, still powers of ten
    assert 2 <= many.size <= 5 and np.allclose(np.log10(many), np.round(np.log10(many)))


def test_live_axes_tick_at_round_values_of_each_panels_range():
    live = LiveCharts()
    live.show(_history())
    for scale, axes in live.axes.items():
        for axis in axes:
            ticks = np.asarray(axis.tick_values)
            assert ticks.size >= 1 and (ticks >= scale.min).all() and (ticks <= scale.max).all()
    x_ticks = np.asarray(live.axes[live.x_scale][0].tick_values)
    np.testing.assert_array_equal(x_ticks, nice_ticks(live.x_scale.min, live.x_scale.max))
    assert len(live.axes[live.x_scale]) == len(live.figures)  # every panel's x axis follows
