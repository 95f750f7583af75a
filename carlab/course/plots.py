"""Matplotlib figures for the notebooks: loss curves, model-versus-truth strips, dreams on the track.

Every helper takes plain arrays (NumPy or JAX), draws one figure and returns it, so a notebook cell is
one call and a test can look inside the figure::

    fig = plots.truth_model_error(truth, predicted, labels=OBS_LABELS)   # Dreamer's three strips
    fig = plots.loss_curves(history)                                     # world_model.fit's history

Nothing here computes anything a learner uses; it only draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from carlab.sim.env import OBS_LABELS, rays_px

TRUTH_COLOR = "black"
MODEL_COLOR = "#1aa7c9"  # the cyan of render.PREDICTED_RAY, a shade darker to read on white
ERROR_COLOR = "#d1495b"


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over ``window`` points (shorter at the start), so noisy curves read as trends."""
    window = max(1, min(int(window), len(values)))
    cumsum = np.cumsum(np.insert(np.asarray(values, dtype=np.float64), 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    starts = np.arange(len(values)) + 1 - counts
    return (cumsum[np.arange(1, len(values) + 1)] - cumsum[starts]) / counts


def loss_curves(
    history: Mapping[str, np.ndarray],
    keys: Sequence[str] | None = None,
    *,
    smooth: int = 50,
    title: str = "world-model losses",
    ax=None,
) -> Figure:
    """Each loss in ``history`` (name -> (updates,) array) against the update, on a log scale.

    The raw values are drawn faintly and a running mean of ``smooth`` updates on top. ``keys``
    defaults to every key ending in ``loss``, the total (``.../loss``) first and thickest.
    """
    if keys is None:
        keys = sorted((k for k in history if k.endswith("loss")), key=lambda k: (not k.endswith("/loss"), k))
    if not keys:
        raise ValueError("loss_curves: no losses to draw")
    fig, ax = _figure(ax, (9, 4))
    for i, key in enumerate(keys):
        values = np.asarray(history[key], dtype=np.float64)
        steps = np.arange(1, len(values) + 1)
        total = key.endswith("/loss")
        color = "black" if total else f"C{i}"
        ax.plot(steps, values, color=color, alpha=0.15, linewidth=0.8)
        ax.plot(steps, _smooth(values, smooth), color=color, linewidth=2.5 if total else 1.5, label=key)
    ax.set_yscale("log")
    ax.set_xlabel("update")
    ax.set_ylabel("loss (log scale)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small", ncol=2)
    ax.grid(True, which="major", alpha=0.3)
    return fig


def truth_model_error(
    truth,
    predicted,
    labels: Sequence[str] = OBS_LABELS,
    *,
    title: str = "open loop: truth, model, error",
    vmax: float | None = None,
) -> Figure:
    """Dreamer's truth / model / error strips, for vectors: three heatmaps, channels down, steps across.

    Args:
        truth, predicted: (T, C) what really happened and what the model predicted, step 1..T.
        labels: C channel names (rows).
        vmax: top of the colour scale of truth and model (default: the larger of their maxima).
    Returns:
        A figure whose first three axes are the truth, model and |model - truth| panels (images with
        channels as rows), then two colour bars.
    """
    truth, predicted = _pair(truth, predicted, "truth_model_error")
    steps, channels = truth.shape
    if len(labels) != channels:
        raise ValueError(f"truth_model_error: {channels} channels but {len(labels)} labels")
    error = np.abs(predicted - truth)
    top = float(np.nanmax([np.nanmax(truth), np.nanmax(predicted), 1e-6])) if vmax is None else vmax
    fig, axes = plt.subplots(3, 1, figsize=(10, 1.2 + 3 * (0.3 * channels + 0.4)), sharex=True)
    extent = (0.5, steps + 0.5, channels - 0.5, -0.5)
    panels = (
        (truth, "truth", "viridis", 0.0, top),
        (predicted, "model (open loop)", "viridis", 0.0, top),
        (error, "|model − truth|", "magma", 0.0, max(float(np.nanmax(error)), 1e-6)),
    )
    images = []
    for ax, (values, name, cmap, low, high) in zip(axes, panels):
        images.append(
            ax.imshow(
                values.T,
                aspect="auto",
                cmap=cmap,
                vmin=low,
                vmax=high,
                extent=extent,
                interpolation="nearest",
            )
        )
        ax.set_yticks(range(channels), labels, fontsize="small")
        ax.set_ylabel(name)
    axes[-1].set_xlabel("steps ahead")
    fig.colorbar(images[0], ax=list(axes[:2]), fraction=0.03, pad=0.01, label="value")
    fig.colorbar(images[2], ax=axes[2], fraction=0.03, pad=0.01, label="error")
    fig.suptitle(title)
    return fig


def open_loop_traces(
    truth,
    predicted,
    labels: Sequence[str],
    *,
    ncols: int = 4,
    title: str = "open loop: the model never sees reality again",
) -> Figure:
    """One small panel per channel: truth (solid black) and the model's prediction (dashed) per step.

    ``truth`` and ``predicted`` are (T, C); a NaN in ``truth`` (say, after the episode ended) leaves a gap.
    """
    truth, predicted = _pair(truth, predicted, "open_loop_traces")
    steps, channels = truth.shape
    if len(labels) != channels:
        raise ValueError(f"open_loop_traces: {channels} channels but {len(labels)} labels")
    nrows = -(-channels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), sharex=True, squeeze=False)
    k = np.arange(1, steps + 1)
    for c, ax in enumerate(axes.flat):
        if c >= channels:
            ax.set_visible(False)
            continue
        ax.plot(k, truth[:, c], color=TRUTH_COLOR, label="truth")
        ax.plot(k, predicted[:, c], color=MODEL_COLOR, linestyle="--", linewidth=2, label="model")
        ax.set_title(labels[c], fontsize="medium")
        ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("steps ahead")
    axes.flat[0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def error_by_horizon(
    channel_error,
    reward_error=None,
    labels: Sequence[str] = OBS_LABELS,
    *,
    title: str = "how far the model drifts, by how far ahead it predicts",
) -> Figure:
    """Mean squared open-loop error against the number of steps predicted ahead.

    Args:
        channel_error: (L, C) error per observation entry (``world_model.open_loop_errors``).
        reward_error: optional (L,) reward error, drawn in a second panel (its own scale).
    """
    channel_error = np.asarray(channel_error, dtype=np.float64)
    if channel_error.ndim != 2 or channel_error.shape[1] != len(labels):
        raise ValueError(
            f"error_by_horizon: channel_error must be (L, {len(labels)}), got {channel_error.shape}"
        )
    panels = 1 if reward_error is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 3.8), squeeze=False)
    k = np.arange(1, len(channel_error) + 1)
    ax = axes[0, 0]
    for c, label in enumerate(labels):
        ax.plot(k, channel_error[:, c], label=label, linewidth=1.2)
    ax.plot(k, channel_error.mean(axis=1), color="black", linewidth=2.5, label="mean")
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("mean squared error")
    ax.set_title("observation")
    ax.legend(fontsize="small", ncol=2)
    ax.grid(True, alpha=0.3)
    if reward_error is not None:
        ax = axes[0, 1]
        ax.plot(k, np.asarray(reward_error, dtype=np.float64), color=ERROR_COLOR, linewidth=2)
        ax.set_xlabel("steps ahead")
        ax.set_ylabel("mean squared error")
        ax.set_title("reward")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def imagined_vs_real(
    groups: Mapping[str, tuple],
    *,
    title: str = "what the actor expected, and what it got",
    ax=None,
) -> Figure:
    """Scatter of imagined against real return, one colour per group, with the line "imagined = real".

    ``groups`` maps a name to ``(imagined (M,), real (M,))``; points above the line are drives the
    model promised more for than reality paid.
    """
    if not groups:
        raise ValueError("imagined_vs_real: no groups to draw")
    fig, ax = _figure(ax, (5.5, 6.5))
    everything = []
    for i, (name, (imagined, real)) in enumerate(groups.items()):
        imagined, real = np.asarray(imagined, np.float64), np.asarray(real, np.float64)
        if imagined.shape != real.shape or imagined.ndim != 1:
            raise ValueError(
                f"imagined_vs_real: {name!r} needs two (M,) arrays, got {imagined.shape}, {real.shape}"
            )
        gap = float(np.mean(imagined - real))
        ax.scatter(real, imagined, s=30, alpha=0.75, color=f"C{i}", label=f"{name} (mean gap {gap:+.1f})")
        everything += [imagined, real]
    values = np.concatenate(everything)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    pad = 0.05 * max(high - low, 1.0)
    ax.plot(
        [low - pad, high + pad],
        [low - pad, high + pad],
        color="grey",
        linestyle="--",
        label="imagined = real",
    )
    ax.set_xlim(low - pad, high + pad)
    ax.set_ylim(low - pad, high + pad)
    ax.set_aspect("equal")
    ax.set_xlabel("real return")
    ax.set_ylabel("imagined return (the model's promise)")
    ax.set_title(title)
    # Below the axes: points can crowd any corner of the square.
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1)
    ax.grid(True, alpha=0.3)
    return fig


def learning_rounds(
    imagined: Sequence[np.ndarray],
    real: Mapping[str, float],
    *,
    smooth: int = 50,
    real_label: str = "mean progress on held-out tracks (laps)",
) -> Figure:
    """Rounds of learning in imagination: what the actor expected (left) and what it did (right).

    Args:
        imagined: per round, the actor's imagined return at each update (``actor/imagined_return``).
        real: bar name -> a real score (say, mean lap progress), e.g. ``{"random": 0.03, "round 1": 0.3}``.
    """
    if not len(imagined) or not real:
        raise ValueError("learning_rounds: needs at least one round and one real score")
    fig, (ax_dream, ax_real) = plt.subplots(1, 2, figsize=(13, 4), width_ratios=(3, 2))
    for i, values in enumerate(imagined):
        values = np.asarray(values, dtype=np.float64)
        steps = np.arange(1, len(values) + 1)
        ax_dream.plot(steps, values, color=f"C{i}", alpha=0.15, linewidth=0.8)
        ax_dream.plot(steps, _smooth(values, smooth), color=f"C{i}", linewidth=2, label=f"round {i + 1}")
    ax_dream.set_xlabel("actor-critic update")
    ax_dream.set_ylabel("imagined return (λ-return, H steps + value)")
    ax_dream.set_title("in the dream")
    ax_dream.legend(fontsize="small")
    ax_dream.grid(True, alpha=0.3)
    names, scores = list(real), [float(v) for v in real.values()]
    bars = ax_real.bar(names, scores, color=["grey"] + [f"C{i}" for i in range(len(names) - 1)])
    ax_real.bar_label(bars, fmt="%.2f")
    ax_real.set_ylabel(real_label)
    ax_real.set_title("on the real track")
    ax_real.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def dream_and_real_frame(
    track, real_car, dream_car, real_obs, dream_obs, step: int, *, hud=None
) -> np.ndarray:
    """The real drive and the dream of it on one track, as an (H, W, 3) image.

    Args:
        track: the :class:`carlab.sim.track.Track` both started on.
        real_car, dream_car: (R + 1, 4) and (D + 1, 4) poses ``[x, y, speed, angle]``, the start first:
            the real car's, and the dream's dead-reckoned ones, each cut where its drive ended (as
            :meth:`carlab.course.offline.Comparison.drive` gives them; a crashed real path may be a pose short).
        real_obs, dream_obs: (R, 6) and (D, 6) the observation after each step, real and dreamed.
        step: which step's car and rays to draw (clipped to what each path has).
    The real path is drawn in white and the car in red with its real (yellow) rays; the dream's path
    in cyan and its car as a ghost outline with the rays the model believes in.
    """
    from carlab.sim.render import IMAGINED_PATH, render_frame

    real_car, dream_car = np.asarray(real_car, np.float64), np.asarray(dream_car, np.float64)
    real_obs, dream_obs = np.asarray(real_obs, np.float64), np.asarray(dream_obs, np.float64)
    r = int(np.clip(step, 1, len(real_obs)))
    d = int(np.clip(step, 1, len(dream_obs)))
    pose = min(r, len(real_car) - 1)  # a crashed car's path stops one pose short of its last observation
    return render_frame(
        track,
        real_car[pose],
        rays=rays_px(real_obs[r - 1]),
        polylines=[(real_car[: pose + 1, :2], (255, 255, 255)), (dream_car[: d + 1, :2], IMAGINED_PATH)],
        ghost=dream_car[d],
        ghost_rays=rays_px(dream_obs[d - 1]),
        hud=hud,
    )


def image_grid(
    images: Sequence[np.ndarray], titles: Sequence[str] = (), *, ncols: int = 2, width: float = 16
) -> Figure:
    """Show rendered frames side by side, axes off, with optional titles."""
    if not len(images):
        raise ValueError("image_grid: no images")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    height = width / ncols * images[0].shape[0] / images[0].shape[1] * nrows
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height + 0.4 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i])
            if i < len(titles):
                ax.set_title(titles[i])
    fig.tight_layout()
    return fig


def crop(frame: np.ndarray, centre, size: tuple[int, int] = (300, 400)) -> np.ndarray:
    """The (height, width) window of a rendered frame around ``centre`` = (x, y) px, kept inside the frame.

    Frames from :func:`carlab.sim.render.render_frame` are drawn 1 px per track px, so a car's ``x, y``
    can be passed directly: a close-up of the car and its rays.
    """
    frame = np.asarray(frame)
    height, width = min(size[0], frame.shape[0]), min(size[1], frame.shape[1])
    x, y = (float(v) for v in np.asarray(centre, dtype=np.float64)[:2])
    top = int(np.clip(round(y - height / 2), 0, frame.shape[0] - height))
    left = int(np.clip(round(x - width / 2), 0, frame.shape[1] - width))
    return frame[top : top + height, left : left + width]


def _figure(ax, size):
    if ax is None:
        fig, ax = plt.subplots(figsize=size)
        return fig, ax
    return ax.figure, ax


def _pair(truth, predicted, name: str) -> tuple[np.ndarray, np.ndarray]:
    truth, predicted = np.asarray(truth, np.float64), np.asarray(predicted, np.float64)
    if truth.ndim == 1:
        truth, predicted = truth[:, None], predicted[:, None] if predicted.ndim == 1 else predicted
    if truth.ndim != 2 or truth.shape != predicted.shape:
        raise ValueError(
            f"{name}: truth and predicted must both be (T, C), got {truth.shape} and {predicted.shape}"
        )
    return truth, predicted


__all__ = [
    "crop",
    "dream_and_real_frame",
    "error_by_horizon",
    "image_grid",
    "imagined_vs_real",
    "learning_rounds",
    "loss_curves",
    "open_loop_traces",
    "truth_model_error",
]
