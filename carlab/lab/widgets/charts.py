"""Live learning curves as PNG bytes: a bare matplotlib Figure on the Agg canvas (never pyplot).

pyplot keeps global state and is not thread-safe; a :class:`Figure` owned by one :class:`Charts`
and drawn by one thread (a :class:`ChartWorker`) is. The lines are created once and their data
replaced on each refresh, so a redraw costs one Agg render (about 0.1 s) and the picture never
flickers: the image widget swaps one finished PNG for the next.
"""

from __future__ import annotations

import io
import math
import threading
import time
import traceback
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

    def __init__(self, *, width_px: int = 420, height_px: int = 600, dpi: int = 80):
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
        """The panels for ``history`` (records from :func:`carlab.learn.loop.summarize`) as PNG bytes."""
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


class ChartWorker:
    """Draws :class:`Charts` in a thread of its own, so a redraw (about 0.1 s of matplotlib) never
    holds up the render loop's frames. The render loop asks with :meth:`request` and collects the
    finished PNG with :meth:`take`; only the newest request is drawn. The figure is used by this
    thread alone."""

    def __init__(self, charts: Charts | None = None):
        """Wrap ``charts`` (default: a new :class:`Charts`, made in the thread so that building the
        dashboard returns at once)."""
        self.charts = charts
        self.cpu_s = 0.0  # CPU time spent drawing
        self.error: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._request: Sequence[dict] | None = None
        self._ready: bytes | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the drawing thread (no-op if it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="carlab-live-charts", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop and join the thread (a redraw in progress finishes first); whether it ended in time."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def request(self, history: Sequence[dict]) -> None:
        """Ask for the charts of ``history`` (replacing a request not yet drawn)."""
        with self._lock:
            self._request = history
        self._wake.set()

    def take(self) -> bytes | None:
        """The newest finished PNG, once (None if nothing new was drawn)."""
        with self._lock:
            png, self._ready = self._ready, None
        return png

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                history, self._request = self._request, None
            if history is None or self._stop.is_set():
                continue
            began = time.thread_time()
            try:
                if self.charts is None:
                    self.charts = Charts()
                png = self.charts.png(history)
            except Exception as error:  # noqa: BLE001 - kept; the dashboard shows it
                self.error = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                continue
            self.cpu_s += time.thread_time() - began
            with self._lock:
                self._ready = png
