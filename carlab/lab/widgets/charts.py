"""Learning curves: what the lab charts (:func:`series`, the real return's estimate) and a static
picture of them as PNG bytes (:class:`Charts`: a bare matplotlib Figure on the Agg canvas, never
pyplot, e.g. for a saved run's history in a notebook).

The live dashboard does not draw with matplotlib: :class:`carlab.lab.widgets.live_charts.LiveCharts`
sends the same :func:`series` to the browser, which draws them (a matplotlib redraw of these panels
costs the kernel ~0.3 s of CPU, which a training run on two cores cannot spare once a second).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from carlab.learn import config as config_lib

REAL_RETURN = "real/discounted_return"  # the line of real_return_estimate (not a history key)
PANELS = (  # (title, {history key: legend label}, log scale)
    ("episode return", {"env/return": "return"}, False),
    (
        "imagined vs real return (per state)",
        {
            "actor/imagined_return": "imagined (model)",
            "critic/value": "critic value",
            REAL_RETURN: "real (road)",
        },
        False,
    ),
    (
        "world-model losses",
        {
            "wm/loss": "total",
            "wm/recon_loss": "recon",
            "wm/next_obs_loss": "next obs",
            "wm/reward_loss": "reward",
        },
        True,
    ),
    ("actor / critic losses", {"actor/loss": "actor", "critic/loss": "critic"}, False),
)
# Drawn only when non-zero somewhere in the history: a deterministic actor logs entropy 0, a single
# dynamics network disagreement 0, and an empty panel would only puzzle.
SPREAD = {"actor/entropy": "policy spread", "actor/disagreement": "model doubt"}
SPREAD_TITLE = "policy spread (entropy) · model doubt (disagreement)"
# Drawn only for runs with policy checkpoints (train.checkpoint_tracks): their records hold these.
DRIVER = {"driver/newest_laps": "newest actor", "driver/laps": "driver"}
DRIVER_TITLE = "checkpoint tests (laps of the test tracks)"
CAPTIONS = {
    "return": (
        "<b>imagined vs real return</b>: <i>imagined</i> is what the actor maximises from replayed states:"
        " the dream learner's λ-return as the world model predicts it (minus any pessimism), or the anchored"
        " learner's (the default) critics' value of its action, learned from real steps; <i>critic</i> is"
        " the value they bootstrap from; <i>real</i> is what the road paid the cars (exploration included), discounted"
        " the same way: reward per step / (1 − γ (1 − crashes per step)), over at least the last {episodes}"
        " finished episodes. The gap is the exploitation signal: when the model promises more than the road gives,"
        " the actor is exploiting the model."
    ),
    "actor/entropy": (
        "<b>policy spread</b>: the stochastic actor's entropy; high means it still tries varied actions,"
        " falling means it is settling on one (a knife-edge the model alone may believe in). The anchored"
        " learner's temperature tunes itself to hold it near its target."
    ),
    "driver/laps": (
        "<b>checkpoint tests</b>: every few thousand env steps the <i>newest actor</i> drives a lap of"
        " each test track (training tracks, no exploration; the later ones only if it laps all the"
        " first); it becomes the <i>driver</i> — the one validated, saved and evaluated — when it laps at"
        " least as many as the driver did on its own test. Where the newest falls below the driver, the"
        " learner is dipping and the driver is not."
    ),
    "actor/disagreement": (
        "<b>model doubt</b>: how far the world model's dynamics members disagree on the next state in"
        " imagination; where it is high the model is guessing (pessimism, when set, subtracts it from the reward)."
    ),
}
REAL_WINDOW_EPISODES = 32  # episodes the real return averages over: enough that one crash is no spike


def default_discount() -> float:
    """gamma of the default preset's agent: the charts' discount when the run's is not given."""
    return config_lib.default().agent.discount


def real_return_estimate(
    history: Sequence[dict], *, discount: float, min_episodes: int = REAL_WINDOW_EPISODES
) -> np.ndarray:
    """The discounted return real driving paid from a state, one per record (NaN where unknown).

    The trainer logs whole episodes (``env/return``, ``env/crash_rate`` of the ``episodes_in_chunk``
    that ended in a chunk), not the return from a state, so this reads the reward rate off them: over
    the trailing records holding at least ``min_episodes`` finished episodes, ``r`` = reward per env
    step and ``c`` = crashes per env step. A car earning ``r`` a step and crashing (the only real end
    imagination knows: its continue head) with chance ``c`` a step is worth, discounted by ``gamma``,
    ``r / (1 - gamma (1 - c))`` (the crash penalty is inside ``r``; truncation, which imagination does
    not model, ends nothing). Env steps of a record are the growth of ``env_steps`` since the one
    before, so the first record, and one after a drop, count for nothing.
    """
    if not 0.0 <= discount < 1.0:
        raise ValueError(f"discount must be in [0, 1), got {discount}")
    if min_episodes < 1:
        raise ValueError(f"min_episodes must be >= 1, got {min_episodes}")
    steps = np.diff([_number(r.get("env_steps")) for r in history], prepend=math.nan)
    known = np.isfinite(steps) & (steps > 0)
    episodes = np.array([_number(r.get("episodes_in_chunk")) for r in history], dtype=float)
    known &= np.isfinite(episodes)
    episodes = np.where(known, episodes, 0.0)
    # A record with no finished episode has env/return NaN: it adds steps and no reward (it was paid
    # to an episode that ends later, inside the window or past its end: on average the rate holds).
    returns = np.nan_to_num(np.array([_number(r.get("env/return")) for r in history], dtype=float))
    crashes = np.nan_to_num(np.array([_number(r.get("env/crash_rate")) for r in history], dtype=float))
    totals = {
        name: np.concatenate([[0.0], np.cumsum(np.where(known, values, 0.0))])
        for name, values in (
            ("steps", steps),
            ("episodes", episodes),
            ("reward", returns * episodes),
            ("crashes", crashes * episodes),
        )
    }
    ends = np.arange(1, len(history) + 1)
    # The window of record i is records start..i: the latest start that still holds min_episodes.
    starts = np.searchsorted(totals["episodes"], totals["episodes"][ends] - min_episodes, side="right") - 1
    starts = np.maximum(starts, 0)
    window = {name: total[ends] - total[starts] for name, total in totals.items()}
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = window["reward"] / window["steps"]
        crash_rate = window["crashes"] / window["steps"]
        value = rate / (1.0 - discount * (1.0 - crash_rate))
    return np.where((window["episodes"] > 0) & (window["steps"] > 0), value, math.nan)


def spread_keys(history: Sequence[dict]) -> tuple[str, ...]:
    """The :data:`SPREAD` metrics that are non-zero somewhere in ``history`` (those worth a line)."""
    shown = []
    for key in SPREAD:
        values = np.array([_number(r.get(key)) for r in history], dtype=float)
        if np.any(np.isfinite(values) & (values != 0.0)):
            shown.append(key)
    return tuple(shown)


def has_driver_tests(history: Sequence[dict]) -> bool:
    """Whether ``history`` is a run's with policy checkpoints that has been tested (the driver panel)."""
    return any("driver/laps" in r for r in history)


def captions_html(history: Sequence[dict]) -> str:
    """The captions under the charts: the return panel's, and the spread and driver panels' if drawn."""
    parts = [CAPTIONS["return"].format(episodes=REAL_WINDOW_EPISODES)]
    parts += [CAPTIONS[key] for key in spread_keys(history)]
    if has_driver_tests(history):
        parts.append(CAPTIONS["driver/laps"])
    return "<small>" + "<br>".join(parts) + "</small>"


def series(history: Sequence[dict], *, discount: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """What the charts draw: env steps (x) and, for every metric of :data:`PANELS`, :data:`SPREAD`
    and :data:`DRIVER`, its value per record (NaN: a gap). The real return is
    :func:`real_return_estimate` with ``discount``; world-model losses are kept only where positive
    (a log axis cannot show zeros)."""
    x = np.array([_number(r.get("env_steps", i)) for i, r in enumerate(history)], dtype=float)
    ys = {}
    for key in [key for _, keys, _ in PANELS for key in keys] + list(SPREAD) + list(DRIVER):
        if key == REAL_RETURN:
            y = real_return_estimate(history, discount=discount)
        else:
            y = np.array([_number(r.get(key)) for r in history], dtype=float)
        if key.startswith("wm/"):
            y = np.where(y > 0, y, np.nan)
        ys[key] = y
    return x, ys


class Charts:
    """Stacked panels against env steps: episode return, imagined vs real return, world-model losses,
    actor/critic losses, (when non-zero) the actor's spread and the model's doubt, and (for a run
    with policy checkpoints) the checkpoint tests."""

    def __init__(self, *, width_px: int = 420, height_px: int = 680, dpi: int = 80):
        """A figure ``width_px`` wide and ``height_px`` tall (taller by one panel's share when the
        spread panel shows)."""
        self.width_in, self.dpi = width_px / dpi, dpi
        self.panel_in = height_px / dpi / len(PANELS)
        self.figure = Figure(dpi=dpi)
        FigureCanvasAgg(self.figure)
        self.lines: dict[str, object] = {}
        self.spread: tuple[str, ...] | None = None  # the spread lines drawn (None: not built yet)
        self.driver = False  # whether the driver panel is drawn
        self.drawn = 0  # records in the last history drawn (a drop to 0 is a reset)
        self._build((), driver=False)

    def _build(self, spread: tuple[str, ...], *, driver: bool) -> None:
        """Lay the panels out afresh, with a spread panel for the keys in ``spread`` (none if empty)
        and, with ``driver``, the checkpoint tests' panel."""
        self.figure.clear()
        panels = len(PANELS) + bool(spread) + driver
        self.figure.set_size_inches(self.width_in, self.panel_in * panels)
        self.axes = list(self.figure.subplots(panels, 1, sharex=True))
        self.lines, self.spread, self.driver = {}, spread, driver
        for ax, (title, keys, log) in zip(self.axes, PANELS):
            _style(ax, title)
            if log:
                ax.set_yscale("log")
            for key, label in keys.items():
                (self.lines[key],) = ax.plot([], [], label=label, linewidth=1.2)
            if len(keys) > 1:
                ax.legend(fontsize=7, loc="upper right")
        if driver:
            ax = self.axes[len(PANELS) + bool(spread)]
            _style(ax, DRIVER_TITLE)
            for key, label in DRIVER.items():
                (self.lines[key],) = ax.plot([], [], label=label, linewidth=1.2, drawstyle="steps-post")
            ax.legend(fontsize=7, loc="lower right")
        if spread:
            # Entropy (nats) and disagreement (latent units) share no scale: one y axis each.
            ax = self.axes[len(PANELS)]
            _style(ax, SPREAD_TITLE)
            twin = ax.twinx() if len(spread) > 1 else ax
            for axis, key, color in zip((ax, twin), spread, ("C0", "C1")):
                (self.lines[key],) = axis.plot([], [], label=SPREAD[key], linewidth=1.2, color=color)
                axis.tick_params(axis="y", labelsize=8, labelcolor=color)
            ax.legend(handles=[self.lines[k] for k in spread], fontsize=7, loc="upper right")
        self.axes[-1].set_xlabel("env steps", fontsize=9)
        if len(spread) > 1:
            self.axes.append(twin)  # rescaled with the others on each refresh
        self.figure.tight_layout()

    def png(self, history: Sequence[dict], *, discount: float | None = None) -> bytes:
        """The panels for ``history`` (records from :func:`carlab.learn.loop.summarize`) as PNG bytes.

        ``discount``: the run's gamma, for the real return (default :func:`default_discount`).
        """
        discount = default_discount() if discount is None else discount
        spread, driver = spread_keys(history), has_driver_tests(history)
        if (
            spread != self.spread or driver != self.driver or (self.drawn and not history)
        ):  # a reset: fresh axes
            self._build(spread, driver=driver)
        self.drawn = len(history)
        x, ys = series(history, discount=discount)
        for key, line in self.lines.items():
            line.set_data(x, ys[key])
        for ax in self.axes:
            ax.relim()
            ax.autoscale_view()
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()


def _style(ax, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def _number(value) -> float:
    """A record value as a float; None (a chunk without episodes or updates) becomes NaN (a gap)."""
    if value is None:
        return math.nan
    return float(value)
