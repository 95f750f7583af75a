"""The trainer: the one stateful owner of a live training run, driven from a daemon thread.

    trainer = Trainer(config.tiny())          # returns at once; builds and compiles in the background
    trainer.start()                           # train
    trainer.set_hyperparameters(horizon=7, world_model_lr=3e-4)   # ValueError here if invalid
    trainer.snapshot()["env_steps"]           # plain numbers and NumPy arrays, safe from any thread
    trainer.step(5).result()                  # pause, run 5 rounds; the snapshot right after them
    trainer.save("models/lab.safetensors").result()
    trainer.stop()                            # True once the worker ended; start() again carries on

**Threads.** A worker thread (:class:`carlab.lab.worker.Worker`) owns the run — a
:class:`carlab.lab.session.Session` holding the :class:`~carlab.learn.loop.TrainState` — and is
the only code that reads or replaces it. Other threads talk to it through a
:class:`carlab.lab.jobs.Shared`, three ways: *settings* where only the newest value matters (run
or pause, AI or manual mode, the manual action) are set under a lock; *operations* (step, reset,
save, load, hyperparameters, new track) go through a bounded :class:`queue.Queue`; and what the
trainer shows comes back as a *snapshot* — a fresh dict of Python numbers and NumPy copies (and the
immutable TrainState) published under the lock after every unit of work. A
:class:`threading.Event` stops it. Operations with a result (step, save, load) return a
:class:`concurrent.futures.Future`.

The worker does only short things (one jitted call of a few ms, a snapshot), so it answers pause
and stop within a frame. Slow things — building the run, compiling, loading, a new track — run as
pure functions in short-lived helper threads (:mod:`carlab.lab.jobs`) whose results the worker
adopts when they are ready; a helper still compiling when :meth:`Trainer.stop` returns finishes on
its own and holds no trainer state.

**Training** calls :func:`carlab.learn.loop.train_rounds` a few rounds at a time, choosing the count so
one call takes about ``target_call_s`` (the live view then gets a new frame every call). In manual
mode it calls :func:`carlab.lab.manual.manual_step` 30 times a second instead: car 0 follows the keys,
and every car's experience still goes into the replay buffer.

**Live hyperparameters** (:mod:`carlab.lab.hyperparams`): learning rates and ``explore_prob`` change the
state and cost nothing. ``horizon``, ``train_every``, ``batch_size`` and ``explore_noise`` are static
config fields: the next round uses a new config, which compiles ``train_rounds`` once per distinct
value (a few seconds; training waits, status ``compiling``) and is cached for the process after.

**Errors** inside the worker are caught and kept (``snapshot()["error"]``, message and traceback);
the trainer pauses with its last good state, and :meth:`Trainer.start` carries on.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from carlab.checks import check_int
from carlab.lab import hyperparams, jobs
from carlab.lab.jobs import Shared
from carlab.lab.snapshot import empty_snapshot
from carlab.lab.worker import Worker
from carlab.learn import config as config_lib
from carlab.learn import loop, runs
from carlab.learn.config import Config

JOIN_TIMEOUT_S = 1.0  # stop() waits this long for the worker (see Trainer.stop)
MODES = ("ai", "manual")
MAX_STEP_ROUNDS = 1_000_000

_NUMBER = 0  # names threads: carlab-trainer-1, -2, ...
_LIVE: weakref.WeakSet = weakref.WeakSet()  # trainers to stop when the interpreter exits


class Trainer:
    """A live training run owned by a daemon worker thread; see the module docstring."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        checkpoint_path: str | Path | None = None,
        env_params=None,
        auto_save: str | Path | None = None,
        target_call_s: float = 0.025,
        manual_fps: float = 30.0,
    ):
        """Create the trainer and its (paused) worker; returns at once.

        Args:
            config: the run's config (default :func:`carlab.learn.config.default`); ignored when
                ``checkpoint_path`` is given, whose saved config is used.
            checkpoint_path: a run checkpoint (:func:`carlab.learn.runs.save_run`) to start from.
            env_params: the training tracks (default :func:`carlab.learn.loop.env_params`).
            auto_save: where to save the run whenever its driver beats its best lap rate (then
                progress) on the validation tracks, checked with :func:`carlab.learn.runs.validate` at
                most every 10 s while it trains (None: never, and no validation).
            target_call_s: wall time aimed at per jitted training call: the cars move on screen once
                per call, so keep it under 1/30 s; longer calls train a little faster.
            manual_fps: env steps per second in manual mode (one step is one frame at 30 FPS).
        """
        global _NUMBER
        if checkpoint_path is not None:
            config = runs.read_config(checkpoint_path)  # a bad file fails here, in the caller
        config = config if config is not None else config_lib.default()
        _NUMBER += 1
        self.name = f"carlab-trainer-{_NUMBER}"
        self._shared = Shared(self.name, empty_snapshot(config))
        self._helpers = jobs.Helpers(self.name, wake=self._shared.wake)
        self._worker = Worker(
            self._shared,
            self._helpers,
            auto_save=None if auto_save is None else Path(auto_save),
            target_call_s=float(target_call_s),
            manual_period_s=1.0 / float(manual_fps),
        )
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        if checkpoint_path is not None:
            self._shared.post("load", (Path(checkpoint_path), None))  # no future: no stop cancels it
        else:
            self._shared.post("fresh", (config, env_params))
        _LIVE.add(self)
        self._ensure_worker()

    # ------------------------------------------------------------------ running and pausing
    def start(self) -> None:
        """Train (starting the worker if it was stopped); a restart clears the last error."""
        self._want_running(True)
        self._ensure_worker()

    def resume(self) -> None:
        """Carry on training after :meth:`pause` (the same as :meth:`start`)."""
        self.start()

    def pause(self) -> None:
        """Stop training after the current call (a few ms); the run is kept. Cancels pending steps.
        Never refused, even when the queue is full."""
        self._shared.pause()

    def step(self, n: int = 1) -> Future:
        """Pause, then run ``n`` training rounds (each: ``train_every`` env steps of every car, then
        the updates once the buffer is warm).

        The Future gives the snapshot published right after the ``n``-th round (see
        :meth:`snapshot`). It is cancelled by a :meth:`pause`, :meth:`reset` or :meth:`load` that
        comes first, and raises the worker's error if one stops the rounds; cancelling it drops the
        rounds not yet run.
        """
        n = check_int(n, "n", low=1, high=MAX_STEP_ROUNDS, where="step(n)")
        self._want_running(False)
        future: Future = Future()
        with self._shared.lock:
            pauses = self._shared.pauses
        self._shared.post("step", (int(n), future, pauses))
        self._ensure_worker()
        return future

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the worker and wait up to ``timeout`` s for it to end; the run is kept for a later
        :meth:`start`. Returns whether it ended.

        The worker ends at its next look at the stop event, after the unit of work it is in: one
        jitted call (about ``target_call_s``, 25 ms), a save it is writing, or a snapshot. So stop
        returns within ``timeout`` plus the operating system's scheduling delay (a few ms on a
        loaded machine), True almost always. It returns False only when that unit outlasts
        ``timeout`` (a large save, or a machine so loaded that a 25 ms call takes a second); the
        worker then still ends right after it, by itself, and :meth:`start` waits for it. The
        futures of operations not carried out (step, save, load) are cancelled when it ends.
        """
        self._want_running(False)
        thread = self._thread
        if thread is None:
            return True
        self._shared.stop.set()
        self._shared.wake()
        thread.join(timeout)
        return not thread.is_alive()

    close = stop

    # ------------------------------------------------------------------ changing the run
    def reset(self) -> None:
        """Pause and start a fresh run (new networks, empty buffer, cars on the start lines), keeping
        the hyperparameters now in effect."""
        self._want_running(False)
        self._shared.post("reset")
        self._ensure_worker()

    def save(self, path: str | Path) -> Future:
        """Save the whole run (:func:`carlab.learn.runs.save_run`) to ``path``; the Future gives the
        path (cancelled if the trainer stops first). RuntimeError if the queue is full (see
        :mod:`carlab.lab.worker`), as for every operation but :meth:`pause`."""
        future: Future = Future()
        self._shared.post("save", (Path(path), future))
        self._ensure_worker()
        return future

    def load(self, path: str | Path) -> Future:
        """Pause and replace the run by the one saved at ``path``: state, config, history, counters.

        The Future gives the path, or raises :class:`carlab.learn.checkpoint.CheckpointError`; it is
        cancelled (and the run left as it was) if the trainer stops before the load is adopted.
        Tracks changed by :meth:`new_track` go back to the loaded config's tracks.
        """
        self._want_running(False)
        future: Future = Future()
        self._shared.post("load", (Path(path), future))
        self._ensure_worker()
        return future

    def set_hyperparameters(self, **values) -> dict:
        """Change live hyperparameters (names in :data:`carlab.lab.hyperparams.KNOBS`) from the next call.

        Raises ValueError, here in the caller, for an unknown name or a value of the wrong type or
        out of range. Returns the validated values.
        """
        clean = hyperparams.validate(values, self.config)
        if clean:
            self._shared.post("hyper", clean)
            self._ensure_worker()
        return clean

    def set_mode(self, mode: str) -> None:
        """``"ai"``: the actor drives every car; ``"manual"``: car 0 follows :meth:`set_manual_action`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._shared.lock:
            self._shared.mode = mode
            if mode == "ai":
                self._shared.manual_action = np.zeros(2, np.float32)

    def set_manual_action(self, action) -> None:
        """The ``[steering, throttle]`` (each in [-1, 1]) car 0 takes in manual mode until changed."""
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (2,) or not np.all(np.isfinite(action)) or np.any(np.abs(action) > 1.0):
            raise ValueError(f"manual action must be 2 finite numbers in [-1, 1], got {action!r}")
        with self._shared.lock:
            self._shared.manual_action = action.copy()

    def new_track(self) -> None:
        """Replace the track car 0 is on by a freshly generated one (a seed no run trained on); the
        cars on it restart there, and every car meets it in turn. Same shapes: nothing recompiles."""
        self._shared.post("new_track")
        self._ensure_worker()

    # ------------------------------------------------------------------ watching
    def snapshot(self) -> dict:
        """The newest published view of the run: a new dict whose values (Python numbers, NumPy
        arrays, tuples, the immutable TrainState under ``"state"``) nobody mutates. Keys: see
        :func:`carlab.lab.snapshot.empty_snapshot`."""
        shared = self._shared
        with shared.lock:
            # The settings show at once, not at the worker's next publish.
            mode, action = shared.mode, shared.manual_action
            return {**shared.snapshot, "mode": mode, "manual_action": (float(action[0]), float(action[1]))}

    def wait_until(
        self, predicate: Callable[[dict], bool], timeout: float = 30.0, *, poll: float = 0.01
    ) -> dict:
        """Poll :meth:`snapshot` until ``predicate(snapshot)`` holds; returns it, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name}: condition not met in {timeout} s; status {snap['status']!r}, "
                    f"error {snap['error']!r}"
                )
            time.sleep(poll)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        """Wait until the run exists and nothing is compiling or loading."""
        return self.wait_until(lambda s: s["status"] in ("paused", "running", "manual"), timeout)

    @property
    def config(self) -> Config:
        """The config the newest call ran with (a pending change shows in ``snapshot()["hyper"]``)."""
        return self.snapshot()["config"]

    @property
    def state(self) -> loop.TrainState | None:
        """The newest published TrainState (``snapshot()["state"]``: immutable JAX arrays), for
        scripts and tests; UIs draw from the snapshot's NumPy fields."""
        return self.snapshot()["state"]

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def helpers_alive(self) -> int:
        """How many helper threads (compiling, loading) are still at work."""
        return self._helpers.alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        snap = self.snapshot()
        return f"<Trainer {self.name} {snap['status']} env_steps={snap['env_steps']}>"

    # ------------------------------------------------------------------ plumbing
    def _want_running(self, running: bool) -> None:
        with self._shared.lock:
            self._shared.want_running = running

    def _ensure_worker(self) -> None:
        with self._thread_lock:
            thread = self._thread
            if thread is not None and thread.is_alive():
                if not self._shared.stop.is_set():
                    return
                thread.join()  # a stop() that timed out: let that worker end before a new one
            self._shared.stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        # The thread's target holds the trainer itself, so a running trainer nobody else holds stays
        # in _LIVE (a weak set) and is still stopped at exit.
        self._worker.run()


@atexit.register
def _stop_all() -> None:
    """Stop every worker before the interpreter tears down (a daemon thread killed in the middle of
    a jitted call can abort the process)."""
    for trainer in list(_LIVE):
        trainer.stop()


__all__ = ["MODES", "Trainer"]
