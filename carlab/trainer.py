"""The trainer: the one stateful owner of a live training run, driven from a daemon thread.

    trainer = Trainer(config.tiny())          # returns at once; builds and compiles in the background
    trainer.start()                           # train
    trainer.set_hyperparameters(horizon=7, world_model_lr=3e-4)   # ValueError here if invalid
    trainer.snapshot()["env_steps"]           # plain numbers and NumPy arrays, safe from any thread
    trainer.pause(); trainer.step(5); trainer.save("models/lab.safetensors").result()
    trainer.stop()                            # joins within 1 s; start() again carries on

**Threads.** A worker thread owns the :class:`~carlab.training.TrainState` and is the only code that
reads or replaces it. Other threads talk to it three ways: *settings* where only the newest value
matters (run or pause, AI or manual mode, the manual action) are set under a lock; *operations*
(step, reset, save, load, hyperparameters, new track) go through a bounded :class:`queue.Queue`;
and what the trainer shows comes back as a *snapshot* — a fresh dict of Python numbers and NumPy
copies published under the lock after every unit of work. A :class:`threading.Event` stops it.

The worker does only short things (one jitted call of a few ms, a snapshot), so it answers pause
and stop within a frame. Slow things — building the run, compiling, loading, a new track — run as
pure functions in short-lived helper threads whose results the worker adopts when they are ready;
a helper still compiling when :meth:`stop` returns finishes on its own and holds no trainer state.

**Training** calls :func:`carlab.training.train_rounds` a few rounds at a time, choosing the count so
one call takes about ``target_call_s`` (the live view then gets a new frame every call). In manual
mode it calls :func:`carlab.manual.manual_step` 30 times a second instead: car 0 follows the keys,
and every car's experience still goes into the replay buffer.

**Live hyperparameters** (:mod:`carlab.hyperparams`): learning rates and ``explore_prob`` change the
state and cost nothing. ``horizon``, ``train_every``, ``batch_size`` and ``explore_noise`` are static
config fields: the next round uses a new config, which compiles ``train_rounds`` once per distinct
value (a few seconds; training waits, status ``compiling``) and is cached for the process after.

**Errors** inside the worker are caught and kept (``snapshot()["error"]``, message and traceback);
the trainer pauses with its last good state, and :meth:`start` carries on.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import queue
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carlab import checkpoint, env, hyperparams, manual, run, training
from carlab import config as config_lib
from carlab.config import EVAL_FIRST_SEED, Config
from carlab.track import RAY_RANGE, Track, make_track

QUEUE_SIZE = 256  # pending operations; a UI posts a handful per click
JOIN_TIMEOUT_S = 1.0  # stop() waits this long for the worker
IDLE_POLL_S = 0.05  # how long an idle worker waits for news before looking again
RECORD_EVERY_S = 1.0  # a history record at least this often while training (else every chunk_rounds)
HISTORY_VIEW = 400  # records handed to the UI in each snapshot (the charts' window)
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
        target_call_s: float = 0.02,
        manual_fps: float = 30.0,
    ):
        """Create the trainer and its (paused) worker; returns at once.

        Args:
            config: the run's config (default :func:`carlab.config.default`); ignored when
                ``checkpoint_path`` is given, whose saved config is used.
            checkpoint_path: a run checkpoint (:func:`carlab.run.save_run`) to start from.
            env_params: the training tracks (default :func:`carlab.training.env_params`).
            auto_save: where to save the run each time its best progress improves (None: never).
            target_call_s: wall time aimed at per jitted training call (smaller: snappier, slower).
            manual_fps: env steps per second in manual mode (one step is one frame at 30 FPS).
        """
        global _NUMBER
        if checkpoint_path is not None:
            config = _checkpoint_config(checkpoint_path)  # a bad file fails here, in the caller
        self._config = config if config is not None else config_lib.default()
        _NUMBER += 1
        self.name = f"carlab-trainer-{_NUMBER}"
        self._auto_save = None if auto_save is None else Path(auto_save)
        self._target_call_s = float(target_call_s)
        self._manual_period = 1.0 / float(manual_fps)

        # Shared with other threads (guarded by _lock, or thread-safe by construction).
        self._lock = threading.Lock()
        self._ops: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._stop = threading.Event()
        self._want_running = False
        self._mode = "ai"
        self._manual_action = np.zeros(2, np.float32)
        self._done_jobs: list = []
        self._helpers: list[threading.Thread] = []
        self._worker: threading.Thread | None = None
        self._snapshot = _empty_snapshot(self._config)
        self._worker_lock = threading.Lock()

        # Owned by the worker thread (never touched by others once it runs).
        self._state: training.TrainState | None = None
        self._params = env_params
        self._render_tracks: list[Track] = []
        self._busy: str | None = None
        self._deferred: list = []
        self._pending_config: Config | None = None
        self._live_lrs: dict[str, float] = {}
        self._steps_left = 0
        self._rounds_per_call = 1
        self._next_manual = 0.0
        self._history: list[dict] = []
        self._history_view: tuple = ()
        self._time_offset = 0.0
        self._run_time = 0.0
        self._acc: dict[str, float] = {}
        self._acc_rounds = 0.0
        self._last_record = time.monotonic()
        self._rate = collections.deque(maxlen=64)
        self._frame = 0
        self._saved_best = 0.0
        self._next_seed = self._config.train.train_first_seed + self._config.train.num_train_tracks
        self._error: str | None = None
        self._message = ""
        self._hyper: dict = {}
        self._view: dict = {}
        self._running = False
        self._signature_cache: tuple = ()

        self._post("init", checkpoint_path)
        _LIVE.add(self)
        self._ensure_worker()

    # ------------------------------------------------------------------ the UI's side
    def start(self) -> None:
        """Train (starting the worker if it was stopped); clears the last error."""
        with self._lock:
            self._want_running = True
        self._ensure_worker()

    def resume(self) -> None:
        """Carry on training after :meth:`pause` (the same as :meth:`start`)."""
        self.start()

    def pause(self) -> None:
        """Stop training after the current call (a few ms); the state is kept. Cancels pending steps."""
        with self._lock:
            self._want_running = False
        self._post("cancel_steps")

    def step(self, n: int = 1) -> None:
        """Pause, then run ``n`` training rounds (each: ``train_every`` env steps per car, then the
        updates once the buffer is warm)."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= 1_000_000:
            raise ValueError(f"step(n): n must be an int in [1, 1000000], got {n!r}")
        with self._lock:
            self._want_running = False
        self._post("step", int(n))
        self._ensure_worker()

    def reset(self) -> None:
        """Start a fresh run (new networks, empty buffer, cars on the start lines), keeping the
        hyperparameters now in effect; pauses."""
        with self._lock:
            self._want_running = False
        self._post("reset")
        self._ensure_worker()

    def save(self, path: str | Path) -> Future:
        """Save the whole run (:func:`carlab.run.save_run`) to ``path``; the Future gives the path."""
        future: Future = Future()
        self._post("save", (Path(path), future))
        self._ensure_worker()
        return future

    def load(self, path: str | Path) -> Future:
        """Pause and replace the run by the one saved at ``path`` (state, config, history, counters).

        The Future gives the path, or raises :class:`carlab.checkpoint.CheckpointError`. Tracks
        changed by :meth:`new_track` go back to the loaded config's tracks.
        """
        with self._lock:
            self._want_running = False
        future: Future = Future()
        self._post("load", (Path(path), future))
        self._ensure_worker()
        return future

    def set_hyperparameters(self, **values) -> dict:
        """Change live hyperparameters (names in :data:`carlab.hyperparams.KNOBS`) from the next update.

        Raises ValueError, here in the caller, for an unknown name or a value of the wrong type or
        out of range. Returns the validated values.
        """
        with self._lock:
            config = self._snapshot["config"]
        clean = hyperparams.validate(values, config)
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
        """Give car 0's track slot a freshly generated track (a seed no run trained on); the cars on
        it restart there. Same shapes, so nothing recompiles."""
        self._post("new_track")
        self._ensure_worker()

    def snapshot(self) -> dict:
        """The newest published view of the run (a new dict; values are Python numbers, NumPy
        arrays and tuples that nobody mutates). Keys: see :func:`_empty_snapshot`."""
        with self._lock:
            return dict(self._snapshot)

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
                    f"{self.name}: condition not met in {timeout} s; last status "
                    f"{snap['status']!r}, error {snap['error']!r}"
                )
            time.sleep(poll)

    def wait_ready(self, timeout: float = 120.0) -> dict:
        """Wait until the run is built and nothing is compiling or loading."""
        return self.wait_until(lambda s: s["status"] in ("paused", "running", "manual"), timeout)

    @property
    def config(self) -> Config:
        """The config the newest round ran with (a pending hyperparameter change shows in
        ``snapshot()["hyper"]`` first)."""
        return self.snapshot()["config"]

    @property
    def state(self) -> training.TrainState | None:
        """The newest published TrainState (immutable JAX arrays) — for scripts and tests; UIs use
        :meth:`snapshot`."""
        with self._lock:
            return self._snapshot["_state"]

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
        """Stop the worker and join it (within ``timeout``); the run is kept for a later :meth:`start`.
        Returns whether it ended in time."""
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
            raise RuntimeError(
                f"{self.name}: {QUEUE_SIZE} operations are waiting; is the trainer stopped?"
            ) from None

    def _wake(self) -> None:
        try:
            self._ops.put_nowait(("wake", None))
        except queue.Full:
            pass  # the worker has work queued anyway

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            worker = self._worker
            if worker is not None and worker.is_alive():
                if not self._stop.is_set():
                    return
                worker.join()  # a stop() that timed out: let that worker finish before a new one
            self._stop.clear()
            self._worker = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._worker.start()

    def _spawn(self, what: str, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run ``job()`` in a helper thread; the worker calls ``then(result)`` when it is done."""
        self._busy = what
        self._publish()

        def helper():
            try:
                outcome = (job(), None)
            except Exception as error:  # noqa: BLE001 - kept and shown, like the worker's own
                outcome = (None, error)
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
        with self._lock:
            running, mode = self._want_running, self._mode
        if self._state is None or self._busy:
            return False  # waiting for a helper, which wakes the worker when it is done
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
        if self._busy or (self._state is None and name != "init"):
            self._deferred.append((name, payload))  # replayed once the current job is adopted
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
            if error is not None:
                self._fail(error)
            else:
                then(result)
        if done and not self._busy:
            deferred, self._deferred = self._deferred, []
            for op in deferred:
                self._handle(*op)

    def _fail(self, error: BaseException) -> None:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self._error = f"{type(error).__name__}: {error}\n{text}"
        self._steps_left = 0
        with self._lock:
            self._want_running = False

    # ---- operations (worker thread only)
    def _op_init(self, checkpoint_path) -> None:
        if checkpoint_path is not None:
            self._op_load((Path(checkpoint_path), Future()))
            return
        config, params = self._config, self._params

        def job():
            p = training.env_params(config) if params is None else params
            return training.init_state(config, p), p

        self._spawn("initialising", job, lambda result: self._adopt_run(result[0], config, result[1], []))

    def _op_step(self, n: int) -> None:
        self._steps_left += n

    def _op_reset(self, _) -> None:
        config, params, lrs = self._current_config(), self._params, dict(self._live_lrs)

        def job():
            return hyperparams.apply_to_state(training.init_state(config, params), lrs)

        def adopt(state):
            self._adopt_run(state, config, params, [])
            self._message = "reset: a fresh run"

        self._spawn("resetting", job, adopt)

    def _op_save(self, payload) -> None:
        path, future = payload
        written = run.save_run(
            path, self._state, self._current_config(), self._history, extra={"saved_by": "lab"}
        )
        self._message = f"saved {written}"
        future.set_result(written)

    def _op_load(self, payload) -> None:
        path, future = payload
        current_config, params = self._current_config(), self._params

        def job():
            state, config, history, _ = run.load_run(path)
            same_tracks = params is not None and _tracks_of(config) == _tracks_of(current_config)
            return state, config, (params if same_tracks else training.env_params(config)), history

        def adopt(result):
            state, config, params, history = result
            self._adopt_run(state, config, params, history)
            self._message = f"loaded {path}"
            future.set_result(path)

        def job_or_fail():
            try:
                return job()
            except Exception as error:
                future.set_exception(error)
                raise

        self._spawn("loading", job_or_fail, adopt)

    def _op_hyper(self, values: dict) -> None:
        self._state = hyperparams.apply_to_state(self._state, values)
        self._live_lrs.update({k: v for k, v in values.items() if k.endswith("_lr")})
        config = hyperparams.apply_to_config(self._current_config(), values)
        self._pending_config = None if config == self._config else config
        self._refresh_hyper()
        self._message = "set " + ", ".join(f"{k}={v:g}" for k, v in values.items())

    def _op_new_track(self, _) -> None:
        state, params, seed = self._state, self._params, self._next_seed
        if seed >= EVAL_FIRST_SEED:
            raise ValueError("no more fresh track seeds below the evaluation range")
        slot = int(np.asarray(state.env_state.track_id)[manual.SHOWN_CAR])
        self._next_seed += 1

        def job():
            track = make_track(seed)
            new = jax.tree.map(lambda stack, one: stack.at[slot].set(one), params.tracks, track)
            new_params = dataclasses.replace(params, tracks=new, start_obs=None)  # start obs recomputed
            return track, new_params, _restart_slot.lower(state, new_params, slot).compile()

        def adopt(result):
            track, new_params, restart = result
            self._params = new_params
            self._state = restart(self._state, new_params, slot)
            self._render_tracks[slot] = _render_track(track)
            self._fetch_view(None)
            self._message = f"new track: seed {seed} replaces track slot {slot}"

        self._spawn("new track", job, adopt)

    # ---- adoption and compilation
    def _adopt_run(self, state, config: Config, params, history: list[dict]) -> None:
        self._state, self._config, self._params = state, config, params
        self._signature_cache = _signature(state, params)
        self._pending_config = None
        self._history = list(history)
        self._history_view = tuple(self._history[-HISTORY_VIEW:])
        self._time_offset = float(history[-1].get("time_s") or 0.0) if history else 0.0
        self._run_time, self._acc, self._acc_rounds = 0.0, {}, 0.0
        self._steps_left, self._rounds_per_call = 0, 1
        self._saved_best = float(state.best_progress)
        self._render_tracks = _render_tracks(params)
        self._rate.clear()
        self._refresh_hyper()
        self._fetch_view(None)

    def _current_config(self) -> Config:
        return self._pending_config or self._config

    def _refresh_hyper(self) -> None:
        self._hyper = hyperparams.current(self._state, self._current_config())

    def _compiled(self, fn, args: tuple, config: Config) -> bool:
        """Whether ``fn`` is compiled for ``config``; if not, compile it in a helper (busy meanwhile)."""
        if not hasattr(fn, "lower"):
            return True  # not a jitted function (a test's stand-in): nothing to compile
        key = (fn, config, self._signature_cache)
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

    # ---- training
    def _work(self) -> None:
        if self._state is None or self._busy:
            return
        with self._lock:
            running, mode, action = self._want_running, self._mode, self._manual_action
        if running and not self._running:
            self._error = None  # a (re)start acknowledges the last error
        config = self._current_config()
        manual_now = running and mode == "manual"
        if not (manual_now or running or self._steps_left > 0):
            self._running = False
            return
        if manual_now:
            if time.monotonic() < self._next_manual:
                return
            args = (self._state, jnp.asarray(action), self._params)
            if not self._compiled(manual.manual_step, args, config):
                return
            self._next_manual = max(self._next_manual + self._manual_period, time.monotonic())
            rounds = 1.0 / config.train.train_every
        else:
            k = self._rounds_per_call if running else min(self._rounds_per_call, self._steps_left)
            args = (self._state, jnp.int32(k), self._params)
            if not self._compiled(training.train_rounds, args, config):
                return
            rounds = float(k)
        if config is not self._config:
            self._config, self._pending_config = config, None
        self._running = running
        start = time.perf_counter()
        fn = manual.manual_step if manual_now else training.train_rounds
        state, sums = fn(*args, config)
        sums = self._fetch_view(state, sums)  # waits for the call to finish
        elapsed = time.perf_counter() - start
        self._state = state
        if not manual_now:
            if not running:
                self._steps_left -= int(rounds)
            scale = self._target_call_s / max(elapsed, 1e-4)
            self._rounds_per_call = int(
                np.clip(round(rounds * min(scale, 2.0)), 1, config.train.chunk_rounds)
            )
        self._account(sums, rounds, elapsed, config)

    def _fetch_view(self, state, sums=None):
        """Copy what the UI shows out of ``state`` (None: the current one) into NumPy, together with
        ``sums``, in one transfer; returns the sums on the host."""
        state = self._state if state is None else state
        s = state
        host = jax.device_get(
            (
                s.env_state.car,
                s.env_state.counters,
                s.obs,
                s.env_steps,
                s.updates,
                s.episodes,
                s.explore_prob,
                s.best_progress,
                s.buffer.size,
                sums,
            )
        )
        car, counters, obs, env_steps, updates, episodes, explore, best, size, sums = host
        self._view = {
            "cars": np.array(car),
            "track_ids": np.array(counters[:, 3]),
            "rays": np.array(obs[:, :5]) * RAY_RANGE,
            "env_steps": int(env_steps),
            "updates": int(updates),
            "episodes": int(episodes),
            "explore_prob": float(explore),
            "best_progress": float(best),
            "buffer_size": int(size),
            "_state": state,
        }
        self._frame += 1
        return sums

    def _account(self, sums: dict, rounds: float, elapsed: float, config: Config) -> None:
        now = time.monotonic()
        self._run_time += elapsed
        self._rate.append((now, self._view["env_steps"]))
        for k, v in sums.items():
            self._acc[k] = self._acc.get(k, 0.0) + float(v)
        self._acc_rounds += rounds
        if self._acc_rounds >= config.train.chunk_rounds or now - self._last_record >= RECORD_EVERY_S:
            record = training.summarize(self._acc, self._state)
            record["time_s"] = self._time_offset + self._run_time
            self._history.append(record)
            self._history_view = tuple(self._history[-HISTORY_VIEW:])
            self._acc, self._acc_rounds, self._last_record = {}, 0.0, now
            self._maybe_auto_save(config)

    def _maybe_auto_save(self, config: Config) -> None:
        best = self._view["best_progress"]
        if self._auto_save is not None and best > self._saved_best:
            run.save_run(self._auto_save, self._state, config, self._history, extra={"best_of_run": True})
            self._saved_best = best
            self._message = f"auto-saved {self._auto_save} (best progress {best:.3f})"

    def _steps_per_s(self) -> float:
        if not self._running or len(self._rate) < 2:
            return 0.0
        recent = [p for p in self._rate if p[0] >= self._rate[-1][0] - 2.0]
        (t0, s0), (t1, s1) = recent[0], recent[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def _publish(self, stopped: bool = False) -> None:
        with self._lock:
            mode, want = self._mode, self._want_running
        if stopped:
            status = "stopped"
        elif self._busy:
            status = self._busy
        elif self._state is None:
            status = "initialising"
        elif self._running and want:
            status = "manual" if mode == "manual" else "running"
        else:
            status = "paused"
        last = self._history_view[-1] if self._history_view else {}
        snap = {
            **_empty_snapshot(self._config),
            **self._view,
            "status": status,
            "running": status in ("running", "manual"),
            "mode": mode,
            "steps_per_s": self._steps_per_s() if status in ("running", "manual") else 0.0,
            "losses": {k: last[k] for k in training._SUMS if k in last},
            "history": self._history_view,
            "track": self._render_track(),
            "frame": self._frame,
            "hyper": {**self._hyper, **({"explore_prob": self._view["explore_prob"]} if self._view else {})},
            "error": self._error,
            "message": self._message,
            "rounds_per_call": self._rounds_per_call,
        }
        with self._lock:
            self._snapshot = snap

    def _render_track(self) -> Track | None:
        ids = self._view.get("track_ids")
        if ids is None or not self._render_tracks:
            return None
        return self._render_tracks[int(ids[manual.SHOWN_CAR])]


@atexit.register
def _stop_all() -> None:
    """Stop every worker before the interpreter tears down (a daemon thread killed in the middle of
    a jitted call can abort the process)."""
    for trainer in list(_LIVE):
        trainer.stop()


def _empty_snapshot(config: Config) -> dict:
    """The snapshot's keys, with the values shown before the run exists."""
    return {
        "status": "initialising",  # initialising/compiling/loading/resetting/new track/paused/running/manual/stopped
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
        "history": (),  # the newest history records (dicts from training.summarize, plus time_s)
        "cars": None,  # (N, 4) float32 [x, y, speed, angle] of every car
        "track_ids": None,  # (N,) int32 track slot of every car
        "rays": None,  # (N, 5) float32 ray lengths in px
        "shown_car": manual.SHOWN_CAR,
        "track": None,  # the shown car's Track (NumPy arrays, drawing fields only)
        "frame": 0,  # grows whenever the cars move
        "hyper": {},  # every live hyperparameter now in effect (carlab.hyperparams.current)
        "config": config,  # the Config the newest round ran with
        "error": None,  # the last error in the worker: "Type: message\ntraceback"
        "message": "",  # the last thing done ("saved ...", "loaded ...")
        "rounds_per_call": 1,
        "_state": None,  # the TrainState itself (see Trainer.state)
    }


def _checkpoint_config(path) -> Config:
    """The config saved in a run checkpoint (CheckpointError if it has none or cannot be read)."""
    metadata = checkpoint.read_metadata(path)
    if not isinstance(metadata.get("config"), dict):
        raise checkpoint.CheckpointError(f"{path} is not a training run (no config in it)")
    try:
        return Config.from_dict(metadata["config"])
    except (TypeError, ValueError) as error:
        raise checkpoint.CheckpointError(f"{path} has a config this carlab cannot read: {error}") from None


def _tracks_of(config: Config) -> tuple:
    t = config.train
    return t.train_first_seed, t.num_train_tracks, t.max_episode_steps


def _signature(state, params) -> tuple:
    """What, besides the config, decides whether a compiled program fits: tree shapes and dtypes."""
    leaves = jax.tree.leaves((state, params))
    return jax.tree.structure(params), tuple((x.shape, str(x.dtype)) for x in leaves)


_DRAWN = ("centre", "inner", "outer", "obstacles", "checkpoints", "seed")


def _render_track(track: Track) -> Track:
    """A track with only what the renderer draws, as NumPy (the big lookup tables left out)."""
    return track._replace(
        **{f: np.asarray(getattr(track, f)) for f in _DRAWN}, quads=None, near_segments=None
    )


def _render_tracks(params) -> list[Track]:
    fields = jax.device_get({f: getattr(params.tracks, f) for f in _DRAWN})
    empty = dict.fromkeys(Track._fields)
    return [Track(**{**empty, **{f: fields[f][i] for f in _DRAWN}}) for i in range(params.num_tracks)]


@jax.jit
def _restart_slot(state: training.TrainState, params, slot):
    """Put every car on track ``slot`` back on its start line (after the track was replaced)."""
    on_slot = state.env_state.track_id == slot
    fresh = jax.vmap(env.start_state, in_axes=(None, 0))(params, state.env_state.track_id)
    env_state = jax.tree.map(lambda f, s: jnp.where(on_slot[:, None], f, s), fresh, state.env_state)
    obs = jnp.where(on_slot[:, None], params.start_obs[state.env_state.track_id], state.obs)
    return dataclasses.replace(
        state, env_state=env_state, obs=obs, episode_return=jnp.where(on_slot, 0.0, state.episode_return)
    )


__all__ = ["MODES", "Trainer"]
