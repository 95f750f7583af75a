"""Live learning curves as PNG bytes: a bare matplotlib Figure on the Agg canvas (never pyplot).

pyplot keeps global state and is not thread-safe; a :class:`Figure` owned by one :class:`Charts`
and drawn only from the render loop is. The lines are created once and their data replaced on each
refresh, so a redraw costs one Agg render (tens of ms) and the picture never flickers: the image
widget swaps one finished PNG for the next.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PANELS = (  # (title, {history key: legend label}, log scale)
    ("episode return", {"env/return": "return"}, False),
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


class Charts:
    """Three stacked panels (episode return, world-model losses, actor/critic losses) vs env steps."""

    def __init__(self, width_px: int = 420, height_px: int = 600, dpi: int = 80):
        """A figure of ``width_px`` x ``height_px`` pixels."""
        self.figure = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
        FigureCanvasAgg(self.figure)
        self.axes = self.figure.subplots(len(PANELS), 1, sharex=True)
        self.lines: dict[str, object] = {}
        for ax, (title, keys, log) in zip(self.axes, PANELS):
            ax.set_title(title, fontsize=10)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
            if log:
                ax.set_yscale("log")
            for key, label in keys.items():
                (self.lines[key],) = ax.plot([], [], label=label, linewidth=1.2)
            if len(keys) > 1:
                ax.legend(fontsize=7, loc="upper right")
        self.axes[-1].set_xlabel("env steps", fontsize=9)
        self.figure.tight_layout()

    def png(self, history: Sequence[dict]) -> bytes:
        """The panels for ``history`` (records from :func:`carlab.training.summarize`) as PNG bytes."""
        x = np.array([r.get("env_steps", i) for i, r in enumerate(history)], dtype=float)
        for key, line in self.lines.items():
            y = np.array([_number(r.get(key)) for r in history], dtype=float)
            if key.startswith("wm/"):
                y = np.where(y > 0, y, np.nan)  # a log axis cannot show zeros
            line.set_data(x, y)
        for ax in self.axes:
            ax.relim()
            ax.autoscale_view()
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png")
        return buffer.getvalue()


def _number(value) -> float:
    """A record value as a float; None (a chunk without episodes or updates) becomes NaN (a gap)."""
    if value is None:
        return math.nan
    return float(value)
