"""The trainer: the one stateful owner of a live training run, driven from a daemon thread.

    trainer = Trainer(config.tiny())          # returns at once; builds and compiles in the background
    trainer.start()                           # train
    trainer.set_hyperparameters(horizon=7, world_model_lr=3e-4)   # ValueError here if invalid
    trainer.snapshot()["env_steps"]           # plain numbers and NumPy arrays, safe from any thread
    trainer.pause(); trainer.step(5); trainer.save("models/lab.safetensors").result()
    trainer.stop()                            # joins within 1 s; start() again carries on

**Threads.** A worker thread owns the run — a :class:`carlab.lab.session.Session` holding the
:class:`~carlab.learn.loop.TrainState` — and is the only code that reads or replaces it. Other
threads talk to it three ways: *settings* where only the newest value matters (run or pause, AI or
manual mode, the manual action) are set under a lock; *operations* (step, reset, save, load,
hyperparameters, new track) go through a bounded :class:`queue.Queue`; and what the trainer shows
comes back as a *snapshot* — a fresh dict of Python numbers and NumPy copies published under the
lock after every unit of work. A :class:`threading.Event` stops it.

The worker does only short things (one jitted call of a few ms, a snapshot), so it answers pause
and stop within a frame. Slow things — building the run, compiling, loading, a new track — run as
pure functions in short-lived helper threads whose results the worker adopts when they are ready;
a helper still compiling when :meth:`stop` returns finishes on its own and holds no trainer state.

**Training** calls :func:`carlab.learn.loop.train_rounds` a few rounds at a time, choosing the count so
one call takes about ``target_call_s`` (the live view then gets a new frame every call). In manual
mode it calls :func:`carlab.lab.manual.manual_step` 30 times a second instead: car 0 follows the keys,
and every car's experience still goes into the replay buffer.

**Live hyperparameters** (:mod:`carlab.lab.hyperparams`): learning rates and ``explore_prob`` change the
state and cost nothing. ``horizon``, ``train_every``, ``batch_size`` and ``explore_noise`` are static
config fields: the next round uses a new config, which compiles ``train_rounds`` once per distinct
value (a few seconds; training waits, status ``compiling``) and is cached for the process after.

**Errors** inside the worker are caught and kept (``snapshot()["error"]``, message and traceback);
the trainer pauses with its last good state, and :meth:`start` carries on.
"""

from __future__ import annotations

import atexit
import ctypes
import queue
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from carlab.lab import hyperparams, manual, session
from carlab.lab.session import Session
from carlab.learn import checkpoint, loop
from carlab.learn import config as config_lib
from carlab.learn.config import Config

QUEUE_SIZE = 256  # pending operations; a UI posts a handful per click
JOIN_TIMEOUT_S = 1.0  # stop() waits this long for the worker
IDLE_POLL_S = 0.05  # how long an idle worker waits for news before looking again
MODES = ("ai", "manual")

_COMPILED: set = set()  # (function, config, shapes) already compiled in this process
_COMPILED_LOCK = threading.Lock()
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
            config = _checkpoint_config(checkpoint_path)  # a bad file fails here, in the caller
        config = config if config is not None else config_lib.default()
        _NUMBER += 1
        self.name = f"carlab-trainer-{_NUMBER}"
        self._auto_save = None if auto_save is None else Path(auto_save)
        self._target_call_s = float(target_call_s)
        self._manual_period = 1.0 / float(manual_fps)

        # Shared with other threads: guarded by _lock (or thread-safe by construction).
        self._lock = threading.Lock()
        self._worker_lock = threading.Lock()
        self._ops: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._stop = threading.Event()
        self._want_running = False
        self._mode = "ai"
        self._manual_action = np.zeros(2, np.float32)
        self._done_jobs: list = []
        self._helpers: list[threading.Thread] = []
        self._worker: threading.Thread | None = None
        self._snapshot = _empty_snapshot(config)

        # Owned by the worker thread.
        self._session: Session | None = None
        self._busy: str | None = None  # what a helper is doing for us ("compiling", "loading", ...)
        self._deferred: list = []  # operations that arrived while busy
        self._steps_left = 0
        self._next_manual = 0.0
        self._running = False  # whether the last unit of work trained
        self._error: str | None = None
        self._message = ""

        if checkpoint_path is not None:
            self._post("load", (Path(checkpoint_path), Future()))
        else:
            self._post("fresh", (config, env_params))
        _LIVE.add(self)
        self._ensure_worker()

    # ------------------------------------------------------------------ the UI's side
    def start(self) -> None:
        """Train (starting the worker if it was stopped); a restart clears the last error."""
        with self._lock:
            self._want_running = True
        self._ensure_worker()

    def resume(self) -> None:
        """Carry on training after :meth:`pause` (the same as :meth:`start`)."""
        self.start()

    def pause(self) -> None:
        """Stop training after the current call (a few ms); the run is kept. Cancels pending steps."""
        with self._lock:
            self._want_running = False
        self._post("cancel_steps")

    def step(self, n: int = 1) -> None:
        """Pause, then run ``n`` training rounds (each: ``train_every`` env steps of every car, then
        the updates once the buffer is warm)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 1_000_000:
            raise ValueError(f"step(n): n must be an int in [1, 1000000], got {n!r}")
        with self._lock:
            self._want_running = False
        self._post("step", int(n))
        self._ensure_worker()

    def reset(self) -> None:
        """Pause and start a fresh run (new networks, empty buffer, cars on the start lines), keeping
        the hyperparameters now in effect."""
        with self._lock:
            self._want_running = False
        self._post("reset")
        self._ensure_worker()

    def save(self, path: str | Path) -> Future:
        """Save the whole run (:func:`carlab.learn.runs.save_run`) to ``path``; the Future gives the path."""
        future: Future = Future()
        self._post("save", (Path(path), future))
        self._ensure_worker()
        return future

    def load(self, path: str | Path) -> Future:
        """Pause and replace the run by the one saved at ``path``: state, config, history, counters.

        The Future gives the path, or raises :class:`carlab.learn.checkpoint.CheckpointError`. Tracks
        changed by :meth:`new_track` go back to the loaded config's tracks.
        """
        with self._lock:
            self._want_running = False
        future: Future = Future()
        self._post("load", (Path(path), future))
        self._ensure_worker()
        return future

    def set_hyperparameters(self, **values) -> dict:
        """Change live hyperparameters (names in :data:`carlab.lab.hyperparams.KNOBS`) from the next call.

        Raises ValueError, here in the caller, for an unknown name or a value of the wrong type or
        out of range. Returns the validated values.
        """
        clean = hyperparams.validate(values, self.config)
        if clean:
            self._post("hyper", clean)
            self._ensure_worker()
        return clean

    def set_mode(self, mode: str) -> None:
        """``"ai"``: the actor drives every car; ``"manual"``: car 0 follows :meth:`set_manual_action`."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._lock:
            self._mode = mode
            if mode == "ai":
                self._manual_action = np.zeros(2, np.float32)

    def set_manual_action(self, action) -> None:
        """The ``[steering, throttle]`` (each in [-1, 1]) car 0 takes in manual mode until changed."""
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (2,) or not np.all(np.isfinite(action)) or np.any(np.abs(action) > 1.0):
            raise ValueError(f"manual action must be 2 finite numbers in [-1, 1], got {action!r}")
        with self._lock:
            self._manual_action = action.copy()

    def new_track(self) -> None:
        """Replace the track car 0 is on by a freshly generated one (a seed no run trained on); the
        cars on it restart there, and every car meets it in turn. Same shapes: nothing recompiles."""
        self._post("new_track")
        self._ensure_worker()

    def snapshot(self) -> dict:
        """The newest published view of the run: a new dict whose values (Python numbers, NumPy
        arrays, tuples) nobody mutates. Keys: see :func:`_empty_snapshot`."""
        with self._lock:
            # The settings show at once, not at the worker's next publish.
            mode, action = self._mode, self._manual_action
            return {**self._snapshot, "mode": mode, "manual_action": (float(action[0]), float(action[1]))}

    def wait_until(
        self, predicate: Callable[[dict], bool], timeout: float = 30.0, poll: float = 0.01
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
        """The newest published TrainState (immutable JAX arrays), for scripts and tests; UIs use
        :meth:`snapshot`."""
        return self.snapshot()["_state"]

    @property
    def alive(self) -> bool:
        """Whether the worker thread runs."""
        worker = self._worker
        return worker is not None and worker.is_alive()

    def helpers_alive(self) -> int:
        """How many helper threads (compiling, loading) are still at work."""
        with self._lock:
            self._helpers = [t for t in self._helpers if t.is_alive()]
            return len(self._helpers)

    def stop(self, timeout: float = JOIN_TIMEOUT_S) -> bool:
        """Stop the worker and join it (within ``timeout``); the run is kept for a later
        :meth:`start`. Returns whether the worker ended in time."""
        with self._lock:
            self._want_running = False
        worker = self._worker
        if worker is None:
            return True
        self._stop.set()
        self._wake()
        worker.join(timeout)
        return not worker.is_alive()

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        snap = self.snapshot()
        return f"<Trainer {self.name} {snap['status']} env_steps={snap['env_steps']}>"

    # ------------------------------------------------------------------ plumbing
    def _post(self, name: str, payload: Any = None) -> None:
        try:
            self._ops.put((name, payload), timeout=1.0)
        except queue.Full:
            raise RuntimeError(f"{self.name}: {QUEUE_SIZE} operations are waiting; is it stopped?") from None

    def _wake(self) -> None:
        try:
            self._ops.put_nowait(("wake", None))
        except queue.Full:
            pass  # the worker has plenty to wake up for

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            worker = self._worker
            if worker is not None and worker.is_alive():
                if not self._stop.is_set():
                    return
                worker.join()  # a stop() that timed out: let that worker end before a new one
            self._stop.clear()
            self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._worker.start()

    def _spawn(self, what: str, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run ``job()`` in a helper thread; the worker calls ``then(result)`` once it is done."""
        self._busy = what
        self._publish()

        def helper():
            try:
                outcome = (job(), None)
            except Exception as error:  # noqa: BLE001 - handed to the worker, which keeps and shows it
                outcome = (None, error)
            _release_memory()
            with self._lock:
                self._done_jobs.append((then, outcome))
            self._wake()

        # Not a daemon: at exit the interpreter waits for it, since killing a thread inside an XLA
        # compile aborts the process. Helpers always end by themselves (a compile, a file read).
        thread = threading.Thread(target=helper, name=f"{self.name}-{what}", daemon=False)
        with self._lock:
            self._helpers = [t for t in self._helpers if t.is_alive()] + [thread]
        thread.start()

    # ------------------------------------------------------------------ the worker thread
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._take_ops(block=not self._has_work())
                    self._adopt_jobs()
                    if self._stop.is_set():
                        break
                    self._work()
                except Exception as error:  # noqa: BLE001 - kept, shown, and the trainer pauses
                    self._fail(error)
                self._publish()
        finally:
            self._running = False
            self._publish(stopped=True)

    def _has_work(self) -> bool:
        if self._session is None or self._busy:
            return False  # waiting for a helper, which wakes the worker when it is done
        with self._lock:
            running, mode = self._want_running, self._mode
        if running and mode == "manual":
            return time.monotonic() >= self._next_manual
        return running or self._steps_left > 0

    def _take_ops(self, block: bool) -> None:
        timeout = IDLE_POLL_S
        with self._lock:
            if self._want_running and self._mode == "manual":
                timeout = min(timeout, max(0.0, self._next_manual - time.monotonic()))
        try:
            op = self._ops.get(timeout=timeout) if block else self._ops.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*op)
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                return

    def _handle(self, name: str, payload: Any) -> None:
        if name == "wake":
            return
        if name == "cancel_steps":
            self._steps_left = 0
            return
        if self._busy or (self._session is None and name not in ("fresh", "load")):
            self._deferred.append((name, payload))  # replayed once the helper's result is adopted
            return
        try:
            getattr(self, f"_op_{name}")(payload)
        except Exception as error:
            if name in ("save", "load"):
                payload[1].set_exception(error)
            raise

    def _adopt_jobs(self) -> None:
        with self._lock:
            done, self._done_jobs = self._done_jobs, []
        for then, (result, error) in done:
            self._busy = None
            try:
                if error is not None:
                    raise error
                then(result)
            except Exception as failure:  # noqa: BLE001 - kept and shown; the other results still count
                self._fail(failure)
        if done and not self._busy:
            deferred, self._deferred = self._deferred, []
            for op in deferred:
                self._handle(*op)

    def _fail(self, error: BaseException) -> None:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._error = f"{type(error).__name__}: {error}\n{text}"
        self._steps_left, self._running = 0, False
        with self._lock:
            self._want_running = False

    # ---- operations (worker thread only)
    def _op_fresh(self, payload) -> None:
        self._spawn("initialising", session.fresh_job(*payload), self._adopt)

    def _op_step(self, n: int) -> None:
        self._steps_left += n

    def _op_reset(self, _) -> None:
        self._spawn(
            "resetting", self._session.reset_job(), lambda result: self._adopt(result, "reset: a fresh run")
        )

    def _op_save(self, payload) -> None:
        path, future = payload
        written = self._session.save(path, extra={"saved_by": "carlab.lab.trainer"})
        self._message = f"saved {written}"
        future.set_result(written)

    def _op_load(self, payload) -> None:
        path, future = payload
        job = session.load_job(path) if self._session is None else self._session.load_job(path)

        def reading():
            try:
                return job()
            except Exception as error:
                future.set_exception(error)
                raise

        def adopt(result):
            self._adopt(result, f"loaded {path}")
            future.set_result(path)

        self._spawn("loading", reading, adopt)

    def _op_hyper(self, values: dict) -> None:
        self._session.apply_hyperparameters(values)
        self._message = "set " + ", ".join(f"{k}={v:g}" for k, v in values.items())

    def _op_new_track(self, _) -> None:
        job, adopt = self._session.new_track_job()
        self._spawn("new track", job, lambda result: setattr(self, "_message", adopt(result)))

    def _adopt(self, result: tuple, message: str = "") -> None:
        """A (state, config, params, history) from a helper becomes the run."""
        lrs = self._session.learning_rates if self._session is not None else {}
        self._session = Session(*result, auto_save=self._auto_save)
        self._session.learning_rates.update(lrs)
        self._steps_left = 0
        self._message = message

    # ---- training
    def _compiled(self, fn, args: tuple, config: Config) -> bool:
        """Whether ``fn`` is compiled for ``config``; if not, compile it in a helper (busy meanwhile)."""
        if not hasattr(fn, "lower"):
            return True  # not a jitted function (a test's stand-in): nothing to compile
        key = (fn, config, self._session.signature)
        with _COMPILED_LOCK:
            if key in _COMPILED:
                return True

        def job():
            fn.lower(*args, config).compile()  # fills jit's cache: the next plain call is fast

        def adopt(_):
            with _COMPILED_LOCK:
                _COMPILED.add(key)

        self._spawn("compiling", job, adopt)
        return False

    def _work(self) -> None:
        run = self._session
        if run is None or self._busy:
            return
        with self._lock:
            running, mode, action = self._want_running, self._mode, self._manual_action
        manual_mode = running and mode == "manual"
        if not (running or self._steps_left > 0):
            if self._running:
                run.stopped_running()
            self._running = False
            return
        if manual_mode and time.monotonic() < self._next_manual:
            return
        rounds = run.rounds_per_call if running else min(run.rounds_per_call, self._steps_left)
        fn, args, config = run.next_call(manual_mode, rounds, action)
        if not self._compiled(fn, args, config):
            return
        if running and not self._running:
            self._error = None  # a (re)start acknowledges the last error
        self._running = running
        start = time.perf_counter()
        state, sums = fn(*args, config)
        if manual_mode:
            self._next_manual = max(self._next_manual + self._manual_period, time.monotonic())
            run.finish_call(state, sums, 1.0 / config.train.train_every, time.perf_counter() - start, config)
            return
        run.finish_call(state, sums, rounds, time.perf_counter() - start, config)
        run.tune_rounds(rounds, time.perf_counter() - start, self._target_call_s)
        if not running:
            self._steps_left -= rounds
            if self._steps_left == 0:
                run.stopped_running()

    def _publish(self, stopped: bool = False) -> None:
        with self._lock:
            mode, want, action = self._mode, self._want_running, self._manual_action
        run = self._session
        if stopped:
            status = "stopped"
        elif self._busy:
            status = self._busy
        elif run is None:
            status = "initialising"
        elif self._running and want:
            status = "manual" if mode == "manual" else "running"
        elif self._steps_left > 0:
            status = "stepping"
        else:
            status = "paused"
        snap = _empty_snapshot(run.config if run is not None else self._snapshot["config"])
        snap.update(status=status, running=status in ("running", "manual"), mode=mode, error=self._error)
        snap.update(message=self._message, manual_action=(float(action[0]), float(action[1])))
        if run is not None:
            last = run.history_view[-1] if run.history_view else {}
            snap.update(run.view)
            snap.update(
                steps_per_s=run.steps_per_s() if snap["running"] else 0.0,
                losses={k: last[k] for k in loop.LOSS_KEYS if k in last},
                history=run.history_view,
                track=run.render_track(),
                frame=run.frame,
                hyper={**run.hyper, "explore_prob": run.view["explore_prob"]},
                rounds_per_call=run.rounds_per_call,
            )
        with self._lock:
            self._snapshot = snap


@atexit.register
def _stop_all() -> None:
    """Stop every worker before the interpreter tears down (a daemon thread killed in the middle of
    a jitted call can abort the process)."""
    for trainer in list(_LIVE):
        trainer.stop()


def _empty_snapshot(config: Config) -> dict:
    """The snapshot's keys, with the values shown before the run exists."""
    return {
        # initialising, compiling, loading, resetting, new track (a helper at work), paused,
        # stepping (paused, running step(n)'s rounds), running, manual, stopped (no worker)
        "status": "initialising",
        "running": False,
        "mode": "ai",
        "env_steps": 0,
        "updates": 0,
        "episodes": 0,
        "steps_per_s": 0.0,  # env steps (all cars) per second, over the last 2 s
        "explore_prob": float("nan"),
        "best_progress": 0.0,  # the most laps any finished episode drove
        "buffer_size": 0,
        "losses": {},  # the newest history record's losses ("wm/loss", "actor/loss", ...)
        "history": (),  # the newest history records (dicts from loop.summarize, plus time_s)
        "cars": None,  # (N, 4) float32 [x, y, speed, angle] of every car
        "track_ids": None,  # (N,) int32 track slot of every car
        "rays": None,  # (N, 5) float32 ray lengths in px
        "shown_car": manual.SHOWN_CAR,
        "track": None,  # the shown car's Track (NumPy arrays, drawing fields only)
        "frame": 0,  # grows whenever the cars move
        "hyper": {},  # every live hyperparameter now in effect (carlab.lab.hyperparams.current)
        "config": config,  # the Config the newest call ran with
        "error": None,  # the last error in the worker: "Type: message\ntraceback"
        "message": "",  # the last thing done ("saved ...", "loaded ...")
        "manual_action": (0.0, 0.0),  # [steering, throttle] car 0 takes in manual mode
        "rounds_per_call": 1,
        "_state": None,  # the TrainState itself (see Trainer.state)
    }


def _release_memory() -> None:
    """Hand freed heap back to the OS. An XLA compile leaves a few hundred MB of freed scratch memory
    in glibc's arenas, which the kernel's RSS would otherwise keep showing (about 0.36 GB of 1 GB)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


def _checkpoint_config(path) -> Config:
    """The config saved in a run checkpoint (CheckpointError if it has none or cannot be read)."""
    metadata = checkpoint.read_metadata(path)
    if not isinstance(metadata.get("config"), dict):
        raise checkpoint.CheckpointError(f"{path} is not a training run (no config in it)")
    try:
        return Config.from_dict(metadata["config"])
    except (TypeError, ValueError) as error:
        raise checkpoint.CheckpointError(f"{path} has a config this carlab cannot read: {error}") from None


__all__ = ["MODES", "Trainer"]
