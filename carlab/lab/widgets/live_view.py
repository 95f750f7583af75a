"""The render loop: the one place that updates the live view, the charts and the status.

A daemon thread wakes every ``1 / max_fps`` s, reads the trainer's newest snapshot and, only if the
cars moved since the last update, sends their poses to the :class:`~carlab.lab.widgets.race_canvas.RaceCanvas`
(one small binary message; the track's picture only when the shown track changes). The browser
draws the cars itself, up to 40 times a second, gliding them between updates. The loop never sends
faster than the cap and always sends the newest poses, not a backlog. Every ``1 / chart_hz`` s it
hands the history to the :class:`~carlab.lab.widgets.live_charts.LiveCharts` when it grew (the
browser draws the curves too); every ``1 / status_hz`` s it calls the status callback.

Nothing here touches JAX: the snapshot holds NumPy copies. An exception in the loop is caught,
kept in :attr:`LiveView.error` (shown by the dashboard), and the loop carries on.
"""

from __future__ import annotations

import atexit
import threading
import time
import traceback
import weakref
from collections.abc import Callable

_LIVE: weakref.WeakSet = weakref.WeakSet()  # views to stop before the interpreter exits


class LiveView:
    """Shows a trainer's snapshots on a race canvas and live charts from one daemon thread."""

    def __init__(
        self,
        trainer,
        canvas,
        charts=None,
        *,
        discount: Callable[[], float] | None = None,
        on_status: Callable[[dict], None] | None = None,
        max_fps: float = 40.0,
        chart_hz: float = 1.0,
        status_hz: float = 5.0,
    ):
        """Args:
        trainer: a :class:`carlab.lab.trainer.Trainer` (only its ``snapshot()`` is used).
        canvas: a :class:`~carlab.lab.widgets.race_canvas.RaceCanvas`.
        charts: a :class:`~carlab.lab.widgets.live_charts.LiveCharts` (anything with its
            ``show(history, discount=)``), or None for no charts.
        discount: returns the run's gamma for the charts' real return, read at each refresh (a
            load or reset may change it; default: the default preset's).
        on_status: called with each status-tick snapshot (from this thread).
        max_fps: cap on pose updates sent per second (the browser draws at its own rate).
        chart_hz, status_hz: refresh rates.
        """
        self.trainer, self.canvas, self.charts, self.discount = trainer, canvas, charts, discount
        self.on_status = on_status
        self.period = 1.0 / float(max_fps)
        self.chart_period, self.status_period = 1.0 / float(chart_hz), 1.0 / float(status_hz)
        self.frames_sent = 0  # pose updates sent (the browser draws frames between them)
        self.frame_cpu_s = 0.0  # CPU time this thread spent preparing and sending them
        self.charts_sent = 0  # histories handed to the charts
        self.chart_cpu_s = 0.0  # CPU time this thread spent on them
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent_frame = -1
        self._charted: tuple | None = None  # the history last charted (None: nothing drawn yet)
        _LIVE.add(self)

    def start(self) -> None:
        """Start the loop thread (no-op if it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="carlab-live-view", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the loop and join it; returns whether it ended in time."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    @property
    def alive(self) -> bool:
        """Whether the loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        next_frame = next_chart = next_status = time.monotonic()
        while not self._stop.wait(max(0.0, next_frame - time.monotonic())):
            now = time.monotonic()
            next_frame = max(next_frame + self.period, now)  # late: skip ahead, never send a backlog
            try:
                snap = self.trainer.snapshot()
                if snap["frame"] != self._sent_frame:
                    self.send_frame(snap)
                if self.charts is not None and now >= next_chart:
                    next_chart = now + self.chart_period
                    self.send_charts(snap)
                if now >= next_status:
                    next_status = now + self.status_period
                    if self.on_status is not None:
                        self.on_status(snap)
            except Exception as error:  # noqa: BLE001 - kept and shown by the dashboard
                self.error = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                self._stop.wait(0.5)  # do not spin on a persistent failure

    def send_frame(self, snap: dict) -> None:
        """Send ``snap``'s cars to the canvas: the shown car bold, its track if it changed, a HUD."""
        began = time.thread_time()
        self._sent_frame = snap["frame"]
        if snap.get("cars") is None or snap.get("track") is None:
            return
        shown = snap["shown_car"]
        hud = {"mode": "manual" if snap["mode"] == "manual" else "AI", "speed": float(snap["cars"][shown][2])}
        self.canvas.show_track(snap["track"])
        self.canvas.show_cars(snap["cars"], snap["rays"], highlight=shown, hud=hud)
        self.frames_sent += 1
        self.frame_cpu_s += time.thread_time() - began

    def send_charts(self, snap: dict) -> None:
        """Hand ``snap``'s history to the charts if it changed (empty panels at first)."""
        history = snap["history"]
        if history is self._charted:
            return
        began = time.thread_time()
        self._charted = history
        self.charts.show(history, discount=None if self.discount is None else self.discount())
        self.charts_sent += 1
        self.chart_cpu_s += time.thread_time() - began


@atexit.register
def _stop_all() -> None:
    """Stop every render loop before the interpreter tears down the modules it uses."""
    for view in list(_LIVE):
        view.stop()
