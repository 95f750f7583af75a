"""Drive a car by hand on a canvas: arrow keys or WASD, as in the lab's manual mode.

    from carlab.lab import DriveView
    car = DriveView()               # track 21 (sim.track.DRIVE_TRACK): it starts on a straight
    car.show()                      # hover over the track and drive; returns at once
    car.drive([[0.0, 1.0]] * 20)    # or from code: 20 steps straight at full throttle

:class:`KeyDrivenView` is the plumbing shared with :class:`carlab.lab.widgets.dream_view.DreamView`: a
canvas, keys read through ipyevents (:class:`~carlab.lab.widgets.keys.KeyDriver`), and one daemon render
loop. The loop steps the world at ``fps`` steps per second while a key is held or the car still rolls,
draws the newest frame and sends it as JPEG (``put_image_data`` on an RGB array, as the lab's
:class:`~carlab.lab.widgets.live_view.LiveView` does); with nothing to do it sleeps on an event, so an idle
view costs no CPU. Stepping, resetting and rendering share one lock, so code in the notebook
(:meth:`step`, :meth:`reset`, :meth:`frame`) and the loop never interleave; only the loop draws on the
canvas. An exception in the loop or in a button is caught, kept in :attr:`error_text` and shown under
the canvas; the loop carries on.

One loop runs per kind of view: starting a view's loop stops the loop of the view of the same class
started before, so re-running a notebook cell that makes and shows a view never leaves the old one
stepping and drawing in the background (as :func:`carlab.lab.widgets.open_lab` does for dashboards).
A view made but never shown (driven from code with :meth:`step`, :meth:`drive`) starts no loop.
"""

from __future__ import annotations

import atexit
import functools
import html
import threading
import time
import traceback
import weakref

import ipywidgets as widgets
import jax
import numpy as np
from ipycanvas import Canvas
from ipyevents import Event

from carlab.lab.widgets.keys import KeyDriver
from carlab.sim import env
from carlab.sim.render import Renderer, surface_to_array
from carlab.sim.track import DRIVE_TRACK, SCREEN_HEIGHT, SCREEN_WIDTH

STOPPED_SPEED = 0.05  # px per step: below this a coasting car counts as stopped and the loop idles
_IDLE_WAKE_S = 1.0  # an idle loop still looks round this often (cheap), in case a wake-up was missed
_LIVE: weakref.WeakSet = weakref.WeakSet()  # views to stop before the interpreter exits
_RUNNING: dict[type, KeyDrivenView] = {}  # the view of each class whose loop was started last
_RUNNING_LOCK = threading.Lock()
# ipycanvas sends every canvas's drawing through one shared manager widget that remembers which
# canvas it last addressed; two render loops (two views) must not interleave their messages.
CANVAS_LOCK = threading.Lock()

HELP = "<small>Hover over the picture and drive with the arrow keys or WASD (↑ throttle, ↓ brake).</small>"


class KeyDrivenView:
    """A canvas driven by held keys through one render loop; subclasses supply the world.

    Subclasses implement :meth:`_step_locked` (one step of the world under ``action``),
    :meth:`_render_locked` (the frame), :meth:`moving` and :meth:`_reset_locked`, and may override
    :meth:`status` (a line of HTML under the canvas) and :meth:`action`.
    """

    thread_name = "carlab-drive-view"

    def __init__(self, width: int, height: int, *, fps: float = 30.0):
        """Args:
        width, height: canvas size in px (the frame size).
        fps: steps (and frames) per second while driving; the game runs at 30 steps per second.
        """
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.period = 1.0 / float(fps)
        self.canvas = Canvas(
            width=int(width), height=int(height), layout=widgets.Layout(width="100%", max_width=f"{width}px")
        )
        self.keys = KeyDriver(self._on_keys)
        self.key_events = Event(
            source=self.canvas, watched_events=["keydown", "keyup", "mouseleave"], prevent_default_action=True
        )
        self.key_events.on_dom_event(self.keys.handle)
        self.reset_button = widgets.Button(
            description="Reset", icon="undo", layout=widgets.Layout(width="110px")
        )
        self.reset_button.on_click(self._reporting(lambda _: self.reset()))
        self.help = widgets.HTML(HELP)
        self.status_line = widgets.HTML("")
        self.error = widgets.HTML("")
        self.error_text: str | None = None  # the last exception, with its traceback
        self.message = ""  # the last exception in a button or slider, one line
        self.frames_sent = 0
        self.loop_steps = 0  # steps the loop took (keys held or coasting), not counting step() calls
        self.last_frame: np.ndarray | None = None
        self._key_action = np.zeros(2, np.float32)
        self._lock = threading.RLock()  # the world and the renderers: stepped, reset and drawn under it
        self._wake = threading.Event()
        self._redraw = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._widget: widgets.Widget | None = None
        self._redraw.set()  # the first tick draws the starting frame
        self.canvas.on_client_ready(self.request_redraw)  # a (re)loaded page starts with a blank canvas
        _LIVE.add(self)

    # ------------------------------------------------------------------ the world (subclasses)
    def _step_locked(self, action: np.ndarray):
        raise NotImplementedError

    def _render_locked(self) -> np.ndarray:
        raise NotImplementedError

    def _reset_locked(self) -> None:
        raise NotImplementedError

    def moving(self) -> bool:
        """Whether the car still rolls (the loop keeps stepping it with the keys released)."""
        raise NotImplementedError

    def status(self) -> str:
        """The HTML line under the canvas."""
        return ""

    # ------------------------------------------------------------------ usable without a browser
    def action(self) -> np.ndarray:
        """The ``[steering, throttle]`` the loop steps with now (the held keys)."""
        return self._key_action.copy()

    def step(self, action):
        """One step of the world under ``action`` ``[steering, throttle]``; the canvas follows."""
        action = env.check_action(action, finite=False)  # NaN and out-of-range: the env sanitises them
        with self._lock:
            result = self._step_locked(action)
        self._changed()
        return result

    def drive(self, actions) -> list:
        """:meth:`step` through a sequence of actions; returns what each step returned."""
        return [self.step(action) for action in actions]

    def reset(self) -> None:
        """Put the car back on the start line, at rest."""
        with self._lock:
            self._reset_locked()
        self._changed()

    def frame(self) -> np.ndarray:
        """The current picture as an (H, W, 3) uint8 array (what the canvas shows)."""
        with self._lock:
            return self._render_locked()

    # ------------------------------------------------------------------ showing
    @property
    def widget(self) -> widgets.Widget:
        """The whole view: controls, canvas, status and error lines (built once)."""
        if self._widget is None:
            self._widget = self._layout()
        return self._widget

    def _layout(self) -> widgets.Widget:
        box = widgets.VBox([self.reset_button, self.canvas, self.status_line, self.help, self.error])
        box.add_class("carlab-drive-view")  # for the browser tests' locators
        return box

    def show(self) -> None:
        """Display the view and start its render loop; returns at once."""
        from IPython.display import display

        display(self.widget)
        self.start()

    def _ipython_display_(self) -> None:
        self.show()

    def start(self) -> None:
        """Start the render loop (no-op if it runs), stopping the loop of the view of this class
        started before (see the module docstring)."""
        if self.alive:
            return
        with _RUNNING_LOCK:
            previous = _RUNNING.get(type(self))
            _RUNNING[type(self)] = self
        if previous is not None and previous is not self:
            previous.stop()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop the render loop and join it; returns whether it ended in time."""
        with _RUNNING_LOCK:
            if _RUNNING.get(type(self)) is self:
                del _RUNNING[type(self)]
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def close(self) -> None:
        """Stop the loop and close the widgets."""
        self.stop()
        self.key_events.close()
        self.widget.close()
        self.canvas.close()

    @property
    def alive(self) -> bool:
        """Whether the render loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def request_redraw(self, *_) -> None:
        """Draw and send the current frame at the next tick even if nothing moved."""
        self._redraw.set()
        self._wake.set()

    # ------------------------------------------------------------------ the render loop
    def wants_step(self) -> bool:
        """Whether the loop should step now: a driving key is held or the car still rolls."""
        return bool(np.any(self.action() != 0.0)) or self.moving()

    def tick(self) -> bool:
        """One loop iteration's work: step if driving, then draw if anything changed. Returns
        whether it stepped (the loop then keeps its pace; otherwise it sleeps until woken)."""
        stepped = self.wants_step()
        if stepped:
            with self._lock:
                self._step_locked(self.action())
            self.loop_steps += 1
        if stepped or self._redraw.is_set():
            self.send_frame()
        return stepped

    def send_frame(self) -> None:
        """Render the current frame and send it to the canvas (JPEG on the wire), with the status."""
        self._redraw.clear()
        frame = self.frame()
        with CANVAS_LOCK:
            self.canvas.put_image_data(frame, 0, 0)  # an RGB array goes out as JPEG
        self.last_frame = frame
        self.frames_sent += 1
        line = self.status()
        if self.status_line.value != line:
            self.status_line.value = line

    def _loop(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            stepped = False
            try:
                stepped = self.tick()
            except Exception as error:  # noqa: BLE001 - kept and shown under the canvas
                self.error_text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
                self._show_error()
                self._stop.wait(0.5)  # do not spin on a persistent failure
            if stepped:  # keep the pace; when late, skip ahead rather than catch up
                next_tick = max(next_tick + self.period, time.monotonic())
                self._stop.wait(max(0.0, next_tick - time.monotonic()))
            else:  # nothing to do: sleep until a key, a button or a page load wakes us
                self._wake.wait(_IDLE_WAKE_S)
                self._wake.clear()
                next_tick = time.monotonic()

    # ------------------------------------------------------------------ callbacks (kernel thread)
    def _on_keys(self, action: np.ndarray) -> None:
        self._key_action = np.asarray(action, np.float32)
        self._wake.set()

    def _changed(self) -> None:
        """The world changed outside the loop: redraw it at the next tick."""
        self.request_redraw()

    def _reporting(self, callback):
        """Wrap a widget callback so an exception shows under the canvas instead of vanishing."""

        @functools.wraps(callback)
        def wrapped(*args):
            try:
                callback(*args)
                if self.message:
                    self.message = ""
                    self._show_error()
            except Exception as error:  # noqa: BLE001 - shown to the student
                self.message = f"{type(error).__name__}: {error}"
                self._show_error()

        return wrapped

    def _show_error(self) -> None:
        parts = []
        if self.message:
            parts.append(f"<b>{html.escape(self.message)}</b>")
        if self.error_text:
            head = self.error_text.strip().splitlines()[-1]
            parts.append(
                f"<b>view error:</b> {html.escape(head)}"
                f"<details><pre>{html.escape(self.error_text)}</pre></details>"
            )
        text = f"<div style='color:#b00020'>{'<br>'.join(parts)}</div>" if parts else ""
        if self.error.value != text:
            self.error.value = text


_env_step = jax.jit(env.step)


class DriveView(KeyDrivenView):
    """One car on one track, driven by hand; see the module docstring.

    The car is the real simulator (:func:`carlab.sim.env.step`, auto-reset on): a crash puts it back on
    the start line at rest, and the crash counter goes up.
    """

    # What the car is doing, as NumPy copies (read freely from any thread):
    obs: np.ndarray  # (6,) what the car senses: [5 rays / 150, speed / 5]
    car: np.ndarray  # (4,) [x, y, speed, angle]
    lap: float  # position along the lap in [0, 1)
    steps: int  # steps since the last start (crash or reset)

    def __init__(
        self,
        track_seed: int = DRIVE_TRACK,
        *,
        width: int = SCREEN_WIDTH,
        height: int = SCREEN_HEIGHT,
        fps: float = 30.0,
    ):
        """Args:
        track_seed: which track (as :func:`carlab.sim.track.make_track`).
        width, height: canvas size in px; the 800x600 track is scaled to fit.
        fps: steps per second while driving.
        """
        self.track_seed = int(track_seed)
        self.params = env.EnvParams.from_seeds([self.track_seed])
        self.track = self.params.track(0)
        self.renderer = Renderer(width, height)
        self.crashes = 0
        self._key = jax.random.key(0)  # the env is deterministic; the key is part of its interface
        super().__init__(width, height, fps=fps)
        self._reset_locked()
        self.status_line.value = self.status()

    def _reset_locked(self) -> None:
        obs, self._state = env.reset(self._key, self.params, 0)
        self.crashes = 0
        self._publish(obs, False)

    def _publish(self, obs, terminated) -> None:
        state = self._state
        obs, car, lap, steps, crashed = jax.device_get(
            (obs, state.car, state.track_progress, state.time, terminated)
        )
        self.obs, self.car, self.lap, self.steps = np.asarray(obs), np.asarray(car), float(lap), int(steps)
        self.crashes += int(crashed)

    def _step_locked(self, action: np.ndarray) -> np.ndarray:
        """One env step; returns the new observation (after a crash: the start line's)."""
        obs, self._state, _, terminated, _, _ = _env_step(self._key, self._state, action, self.params)
        self._publish(obs, terminated)
        return self.obs.copy()

    def moving(self) -> bool:
        return float(self.car[2]) > STOPPED_SPEED

    def _render_locked(self) -> np.ndarray:
        hud = {"speed": float(self.car[2]), "lap": f"{self.lap:.0%}", "crashes": self.crashes}
        rays = env.rays_px(self.obs)
        return surface_to_array(self.renderer.draw_surface(self.track, self.car, rays=rays, hud=hud))

    def status(self) -> str:
        x, y, speed, _ = (float(v) for v in self.car)
        return (
            f"<span class='carlab-car' data-x='{x:.1f}' data-y='{y:.1f}' data-speed='{speed:.2f}'>"
            f"car at ({x:.0f}, {y:.0f}), speed {speed:.1f} px/step, {self.lap:.0%} of a lap, "
            f"{self.crashes} crashes</span>"
        )


@atexit.register
def _stop_all() -> None:
    """Stop every render loop before the interpreter tears down the modules it uses."""
    for view in list(_LIVE):
        view.stop(0.5)


__all__ = ["DriveView", "KeyDrivenView"]
