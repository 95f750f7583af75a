"""The render loop: the one place that draws the live view, the charts and the status.

A daemon thread wakes every ``1 / max_fps`` s, reads the trainer's newest snapshot and, only if the
cars moved since the last frame (or a browser view asked to be redrawn), renders one frame with
:class:`carlab.sim.render.Renderer` and sends it to the ipycanvas canvas as JPEG
(``put_image_data`` on an RGB array). ipycanvas queues every message and never drops one, so the
loop never sends faster than the cap and always sends the newest frame, not a backlog. Every
``1 / chart_hz`` s it asks for new charts (when the history grew) — a :class:`ChartWorker` thread
draws them, so matplotlib never stalls the frames — and it puts each finished PNG into the image
widget itself; every ``1 / status_hz`` s it calls the status callback.

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

import numpy as np

from carlab.lab.widgets.charts import ChartWorker
from carlab.sim.render import Renderer, surface_to_array

# ipycanvas sends every canvas's drawing through one shared manager widget that remembers which
# canvas it last addressed; two render loops (two dashboards) must not interleave their messages.
CANVAS_LOCK = threading.Lock()
_LIVE: weakref.WeakSet = weakref.WeakSet()  # views to stop before the interpreter exits


class LiveView:
    """Draws a trainer's snapshots onto a canvas and charts image from one daemon thread."""

    def __init__(
        self,
        trainer,
        canvas,
        charts_image=None,
        *,
        on_status: Callable[[dict], None] | None = None,
        max_fps: float = 40.0,
        chart_hz: float = 1.0,
        status_hz: float = 5.0,
        others_alpha: float = 0.35,
    ):
        """Args:
        trainer: a :class:`carlab.lab.trainer.Trainer` (only its ``snapshot()`` is used).
        canvas: an ipycanvas ``Canvas`` (its size is the frame size).
        charts_image: an ``ipywidgets.Image`` for the PNG charts, or None for no charts.
        on_status: called with each status-tick snapshot (from this thread).
        max_fps: cap on frames sent per second. chart_hz, status_hz: refresh rates.
        others_alpha: opacity of the cars other than the shown one.
        """
        self.trainer, self.canvas, self.charts_image = trainer, canvas, charts_image
        self.on_status = on_status
        self.period = 1.0 / float(max_fps)
        self.chart_period, self.status_period = 1.0 / float(chart_hz), 1.0 / float(status_hz)
        self.others_alpha = float(others_alpha)
        self.renderer = Renderer(int(canvas.width), int(canvas.height))
        self.charts = ChartWorker() if charts_image is not None else None
        self.frames_sent = 0
        self.frame_cpu_s = 0.0  # CPU time this thread spent rendering and encoding frames
        self.charts_sent = 0
        self.last_frame: np.ndarray | None = None
        self.error: str | None = None
        self._redraw = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sent_frame = -1
        self._charted: tuple | None = None  # the history last charted (None: nothing drawn yet)
        canvas.on_client_ready(self.request_redraw)  # a (re)loaded page starts with a blank canvas
        _LIVE.add(self)

    def request_redraw(self, *_) -> None:
        """Send the current frame again at the next tick even if nothing moved."""
        self._redraw.set()

    def start(self) -> None:
        """Start the loop thread (no-op if it runs)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        if self.charts is not None:
            self.charts.start()
        self._thread = threading.Thread(target=self._loop, name="carlab-live-view", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the loop (and the chart thread) and join them; returns whether they ended in time."""
        self._stop.set()
        charts_ended = self.charts is None or self.charts.stop(timeout)
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return charts_ended and (thread is None or not thread.is_alive())

    @property
    def alive(self) -> bool:
        """Whether the loop thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def chart_cpu_s(self) -> float:
        """CPU time spent drawing charts."""
        return 0.0 if self.charts is None else self.charts.cpu_s

    def _loop(self) -> None:
        next_frame = next_chart = next_status = time.monotonic()
        while not self._stop.wait(max(0.0, next_frame - time.monotonic())):
            now = time.monotonic()
            next_frame = max(next_frame + self.period, now)  # late: skip ahead, never send a backlog
            try:
                snap = self.trainer.snapshot()
                if snap["frame"] != self._sent_frame or self._redraw.is_set():
                    self.send_frame(snap)
                if self.charts is not None:
                    if now >= next_chart:
                        next_chart = now + self.chart_period
                        self.request_charts(snap)
                    self.send_charts()
                if now >= next_status:
                    next_status = now + self.status_period
                    if self.on_status is not None:
                        self.on_status(snap)
            except Exception as error:  # noqa: BLE001 - kept and shown by the dashboard
                self.error = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                self._stop.wait(0.5)  # do not spin on a persistent failure

    def render(self, snap: dict) -> np.ndarray | None:
        """The frame for a snapshot: the shown car's track, every car (others faint), rays, a HUD."""
        if snap.get("cars") is None or snap.get("track") is None:
            return None
        shown = snap["shown_car"]
        speed = float(snap["cars"][shown][2])
        hud = {"mode": "manual" if snap["mode"] == "manual" else "AI", "speed": speed}
        surface = self.renderer.draw_surface(
            snap["track"],
            snap["cars"],
            rays=snap["rays"],
            highlight=shown,
            others_alpha=self.others_alpha,
            hud=hud,
        )
        return surface_to_array(surface)

    def send_frame(self, snap: dict) -> None:
        """Render ``snap`` and send it to the canvas (JPEG on the wire)."""
        self._redraw.clear()
        began = time.thread_time()
        frame = self.render(snap)
        self._sent_frame = snap["frame"]
        if frame is None:
            return
        with CANVAS_LOCK:
            self.canvas.put_image_data(frame, 0, 0)  # an RGB array goes out as JPEG
        self.last_frame = frame
        self.frames_sent += 1
        self.frame_cpu_s += time.thread_time() - began

    def request_charts(self, snap: dict) -> None:
        """Ask the chart thread for new charts if the history changed (empty axes at first)."""
        history = snap["history"]
        if history is not self._charted:
            self._charted = history
            self.charts.request(history)

    def send_charts(self) -> None:
        """Put the newest finished charts, if any, into the image widget."""
        png = self.charts.take()
        if png is not None:
            self.charts_image.value = png
            self.charts_sent += 1
        if self.charts.error and not self.error:
            self.error = self.charts.error


@atexit.register
def _stop_all() -> None:
    """Stop every render loop before the interpreter tears down the modules it uses."""
    for view in list(_LIVE):
        view.stop()
