"""The notebooks' figures: each helper draws what it was given, where it says it does."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from carlab.course import plots
from carlab.sim import env
from carlab.sim.track import make_track


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _truth_and_model(steps=12, channels=6, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.0, 1.0, (steps, channels))
    return truth, truth + rng.normal(0.0, 0.1, (steps, channels))


def test_truth_model_error_shows_truth_model_and_error():
    truth, predicted = _truth_and_model()
    fig = plots.truth_model_error(truth, predicted)
    panels = fig.axes[:3]
    assert len(fig.axes) == 5  # three strips and two colour bars
    shown = [ax.get_images()[0].get_array() for ax in panels]
    # Channels are rows and steps columns: the transposes of the (T, C) inputs.
    np.testing.assert_allclose(shown[0], truth.T)
    np.testing.assert_allclose(shown[1], predicted.T)
    np.testing.assert_allclose(shown[2], np.abs(predicted - truth).T)
    assert [t.get_text() for t in panels[0].get_yticklabels()] == list(env.OBS_LABELS)
    # truth and model share one colour scale, so equal colours mean equal values
    assert panels[0].get_images()[0].get_clim() == panels[1].get_images()[0].get_clim()


def test_truth_model_error_rejects_mismatched_inputs():
    truth, predicted = _truth_and_model()
    with pytest.raises(ValueError, match="truth and predicted"):
        plots.truth_model_error(truth, predicted[:-1])
    with pytest.raises(ValueError, match="labels"):
        plots.truth_model_error(truth, predicted, labels=["a", "b"])


def test_open_loop_traces_draws_truth_and_model_per_channel():
    truth, predicted = _truth_and_model(steps=10, channels=7)
    fig = plots.open_loop_traces(truth, predicted, [f"c{i}" for i in range(7)], ncols=4)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 7
    for c, ax in enumerate(visible):
        truth_line, model_line = ax.get_lines()
        np.testing.assert_allclose(truth_line.get_xdata(), np.arange(1, 11))
        np.testing.assert_allclose(truth_line.get_ydata(), truth[:, c])
        np.testing.assert_allclose(model_line.get_ydata(), predicted[:, c])
        assert ax.get_title() == f"c{c}"


def test_loss_curves_total_first_on_a_log_scale():
    updates = 200
    history = {
        "wm/recon_loss": np.linspace(1.0, 0.01, updates),
        "wm/loss": np.linspace(2.0, 0.1, updates),
        "wm/grad_norm": np.ones(updates),  # not a loss: left out
    }
    fig = plots.loss_curves(history, smooth=10)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["wm/loss", "wm/recon_loss"]
    raw = ax.get_lines()[0]
    np.testing.assert_allclose(raw.get_ydata(), history["wm/loss"])


def test_smooth_is_a_running_mean():
    values = np.array([0.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(plots._smooth(values, 2), [0.0, 1.0, 3.0, 5.0])
    np.testing.assert_allclose(plots._smooth(values, 1), values)


def test_error_by_horizon_one_line_per_channel_plus_mean():
    error = np.cumsum(np.full((20, 6), 0.01), axis=0)
    fig = plots.error_by_horizon(error, reward_error=np.linspace(0.1, 1.0, 20))
    obs_ax, reward_ax = fig.axes
    assert len(obs_ax.get_lines()) == 7
    np.testing.assert_allclose(obs_ax.get_lines()[-1].get_ydata(), error.mean(axis=1))
    np.testing.assert_allclose(reward_ax.get_lines()[0].get_ydata(), np.linspace(0.1, 1.0, 20))
    with pytest.raises(ValueError):
        plots.error_by_horizon(error[:, :3])


def test_imagined_vs_real_scatter_and_diagonal():
    imagined, real = np.array([5.0, 6.0, 7.0]), np.array([1.0, 6.0, 2.0])
    fig = plots.imagined_vs_real({"poor": (imagined, real)})
    (ax,) = fig.axes
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), np.stack([real, imagined], axis=1))  # x real, y imagined
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert "poor (mean gap +3.0)" in legend
    with pytest.raises(ValueError):
        plots.imagined_vs_real({"bad": (imagined, real[:2])})


def test_dream_and_real_frame_draws_both_paths():
    track = make_track(0)
    start = np.array([track.centre[0, 0], track.centre[0, 1], 0.0, 0.0])
    steps = 20
    real = np.repeat(start[None], steps + 1, axis=0)
    real[:, 0] += np.arange(steps + 1) * 3.0
    dream = real.copy()
    dream[:, 1] += np.arange(steps + 1) * 2.0
    obs = np.full((steps, 6), 0.5)
    frame = plots.dream_and_real_frame(track, real, dream, obs, obs, step=10)
    assert frame.shape == (600, 800, 3) and frame.dtype == np.uint8
    without = plots.dream_and_real_frame(track, real, real, obs, obs, step=10)
    assert np.any(frame != without)  # the dream's diverging path is drawn
    fig = plots.image_grid([frame, without], ["dream", "same"])
    assert len(fig.axes) == 2 and fig.axes[0].get_title() == "dream"


def test_crop_stays_inside_the_frame():
    frame = np.arange(600 * 800 * 3, dtype=np.int64).reshape(600, 800, 3)
    middle = plots.crop(frame, (400, 300), size=(100, 200))
    assert middle.shape == (100, 200, 3)
    np.testing.assert_array_equal(middle, frame[250:350, 300:500])
    corner = plots.crop(frame, (0, 0), size=(100, 200))  # pushed back inside, not cut short
    np.testing.assert_array_equal(corner, frame[:100, :200])
    assert plots.crop(frame, (800, 600), size=(100, 200)).shape == (100, 200, 3)


def test_learning_rounds_one_curve_per_round_and_one_bar_per_score():
    imagined = [np.linspace(0, 5, 40), np.linspace(1, 8, 40)]
    fig = plots.learning_rounds(imagined, {"random": 0.03, "round 1": 0.2, "round 2": 0.4}, smooth=5)
    ax_dream, ax_real = fig.axes
    raw = ax_dream.get_lines()[::2]  # faint raw curve, then its running mean, per round
    for line, values in zip(raw, imagined):
        np.testing.assert_allclose(line.get_ydata(), values)
    heights = [patch.get_height() for patch in ax_real.patches]
    np.testing.assert_allclose(heights, [0.03, 0.2, 0.4])
    with pytest.raises(ValueError):
        plots.learning_rounds([], {"random": 0.0})
