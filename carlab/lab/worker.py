"""The trainer's worker thread: its loop, the operations it carries out, the snapshots it publishes.

A :class:`Worker` is the only code that reads or replaces the run (a
:class:`carlab.lab.session.Session`); :class:`carlab.lab.trainer.Trainer` starts a thread on
:meth:`Worker.run` and talks to it through :class:`Shared`: the settings under its lock, operations
on its queue, the stop event, and the snapshot the worker publishes after every unit of work. Slow
work goes to helper threads (:mod:`carlab.lab.jobs`) whose results the worker adopts once woken.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

import numpy as np

from carlab.lab import jobs, manual
from carlab.lab.session import Session
from carlab.learn import loop
from carlab.learn.config import Config

QUEUE_SIZE = 256  # pending operations; a UI posts a handful per click
IDLE_POLL_S = 0.05  # how long an idle worker waits for news before looking again


class Shared:
    """What the UI threads and the worker share: settings under ``lock`` (only the newest value
    matters), the bounded ``ops`` queue, the ``stop`` event, and the newest published ``snapshot``."""

    def __init__(self, name: str, config: Config):
        """Settings at rest (paused, AI mode); the snapshot of a run not built yet."""
        self.name = name
        self.lock = threading.Lock()
        self.ops: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self.stop = threading.Event()
        self.want_running = False
        self.mode = "ai"
        self.manual_action = np.zeros(2, np.float32)
        self.snapshot = empty_snapshot(config)

    def post(self, name: str, payload: Any = None) -> None:
        """Queue the operation ``name`` for the worker (RuntimeError if the queue stays full)."""
        try:
            self.ops.put((name, payload), timeout=1.0)
        except queue.Full:
            raise RuntimeError(f"{self.name}: {QUEUE_SIZE} operations are waiting; is it stopped?") from None

    def wake(self) -> None:
        """Wake a worker waiting for operations."""
        try:
            self.ops.put_nowait(("wake", None))
        except queue.Full:
            pass  # the worker has plenty to wake up for

    def settings(self) -> tuple[bool, str, np.ndarray]:
        """``(want_running, mode, manual_action)`` as one consistent read."""
        with self.lock:
            return self.want_running, self.mode, self.manual_action


class Worker:
    """The worker thread's side of a trainer; see the module docstring. Only :meth:`run`'s thread
    calls it."""

    def __init__(
        self,
        shared: Shared,
        helpers: jobs.Helpers,
        *,
        auto_save: Path | None,
        target_call_s: float,
        manual_period_s: float,
    ):
        """A worker with no run yet; the first operation (``fresh`` or ``load``) builds one."""
        self.shared, self.helpers = shared, helpers
        self.auto_save = auto_save
        self.target_call_s = target_call_s
        self.manual_period_s = manual_period_s
        self.session: Session | None = None
        self.busy: str | None = None  # what a helper is doing for us ("compiling", "loading", ...)
        self.deferred: list = []  # operations that arrived while busy
        self.steps: collections.deque = collections.deque()  # [rounds left, Future] per step(n)
        self.finished_steps: list[Future] = []  # step futures resolved at the next publish
        self.next_manual = 0.0
        self.running = False  # whether the last unit of work trained
        self.error: str | None = None
        self.message = ""

    def run(self) -> None:
        """The thread's loop: take operations, adopt helpers' results, work, publish; until stopped."""
        stop = self.shared.stop
        try:
            while not stop.is_set():
                try:
                    self._take_ops(block=not self._has_work())
                    self._adopt_jobs()
                    if stop.is_set():
                        break
                    self._work()
                except Exception as error:  # noqa: BLE001 - kept, shown, and the trainer pauses
                    self._fail(error)
                self._publish()
        finally:
            self.running = False
            self._publish(stopped=True)

    # ------------------------------------------------------------------ operations in
    def _has_work(self) -> bool:
        if self.session is None or self.busy:
            return False  # waiting for a helper, which wakes the worker when it is done
        running, mode, _ = self.shared.settings()
        if running and mode == "manual":
            return time.monotonic() >= self.next_manual
        return running or bool(self.steps)

    def _take_ops(self, block: bool) -> None:
        timeout = IDLE_POLL_S
        running, mode, _ = self.shared.settings()
        if running and mode == "manual":
            timeout = min(timeout, max(0.0, self.next_manual - time.monotonic()))
        try:
            op = self.shared.ops.get(timeout=timeout) if block else self.shared.ops.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*op)
            try:
                op = self.shared.ops.get_nowait()
            except queue.Empty:
                return

    def _handle(self, name: str, payload: Any) -> None:
        if name == "wake":
            return
        if name == "cancel_steps":
            self._drop_steps()
            return
        if self.busy or (self.session is None and name not in ("fresh", "load")):
            self.deferred.append((name, payload))  # replayed once the helper's result is adopted
            return
        try:
            getattr(self, f"_op_{name}")(payload)
        except Exception as error:
            if name in ("save", "load"):
                payload[1].set_exception(error)
            raise

    def _adopt_jobs(self) -> None:
        done = self.helpers.take_done()
        for then, (result, error) in done:
            self.busy = None
            try:
                if error is not None:
                    raise error
                then(result)
            except Exception as failure:  # noqa: BLE001 - kept and shown; the other results still count
                self._fail(failure)
        if done and not self.busy:
            deferred, self.deferred = self.deferred, []
            for op in deferred:
                self._handle(*op)

    def _fail(self, error: BaseException) -> None:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        self.error = f"{type(error).__name__}: {error}\n{text}"
        self.running = False
        self._drop_steps(error)
        with self.shared.lock:
            self.shared.want_running = False

    def _drop_steps(self, error: BaseException | None = None) -> None:
        """Forget the pending rounds of step(n): their futures are cancelled, or raise ``error``."""
        while self.steps:
            _, future = self.steps.popleft()
            if error is None:
                future.cancel()
                continue
            try:
                future.set_exception(error)
            except InvalidStateError:
                pass  # cancelled by its holder meanwhile: nobody waits for it

    def _spawn(self, what: str, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run ``job()`` in a helper thread (busy with ``what`` meanwhile); then ``then(result)``."""
        self.busy = what
        self._publish()
        self.helpers.spawn(what, job, then)

    # ---- the operations (posted by the Trainer)
    def _op_fresh(self, payload) -> None:
        config, env_params = payload
        self._spawn("initialising", jobs.fresh_job(config, env_params), self._adopt)

    def _op_step(self, payload) -> None:
        rounds, future = payload
        self.steps.append([rounds, future])

    def _op_reset(self, _) -> None:
        self._spawn(
            "resetting", self.session.reset_job(), lambda result: self._adopt(result, "reset: a fresh run")
        )

    def _op_save(self, payload) -> None:
        path, future = payload
        written = self.session.save(path, extra={"saved_by": "carlab.lab.trainer"})
        self.message = f"saved {written}"
        future.set_result(written)

    def _op_load(self, payload) -> None:
        path, future = payload
        job = jobs.load_job(path) if self.session is None else self.session.load_job(path)

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
        self.session.apply_hyperparameters(values)
        self.message = "set " + ", ".join(f"{k}={v:g}" for k, v in values.items())

    def _op_new_track(self, _) -> None:
        job, adopt = self.session.new_track_job()
        self._spawn("new track", job, lambda result: setattr(self, "message", adopt(result)))

    def _adopt(self, result: tuple, message: str = "") -> None:
        """A (state, config, params, history) from a helper becomes the run."""
        rates = self.session.learning_rates if self.session is not None else {}
        self.session = Session(*result, auto_save=self.auto_save)
        self.session.learning_rates.update(rates)
        self._drop_steps()
        self.message = message

    # ------------------------------------------------------------------ training
    def _compiled(self, fn, args: tuple, config: Config) -> bool:
        """Whether ``fn`` is compiled for ``config``; if not, compile it in a helper (busy meanwhile)."""
        key = (fn, config, self.session.signature)
        if jobs.is_compiled(key):
            return True
        self._spawn("compiling", jobs.compile_job(fn, args, config, key=key), lambda _: None)
        return False

    def _work(self) -> None:
        run = self.session
        if run is None or self.busy:
            return
        running, mode, action = self.shared.settings()
        manual_mode = running and mode == "manual"
        if not running:
            while self.steps and self.steps[0][1].cancelled():  # cancelled by whoever holds them
                self.steps.popleft()
        if not (running or self.steps):
            if self.running:
                run.stopped_running()
            self.running = False
            return
        if manual_mode and time.monotonic() < self.next_manual:
            return
        # A step(n) ends exactly after its n rounds, so its future shows that moment's snapshot.
        rounds = run.rounds_per_call if running else min(run.rounds_per_call, self.steps[0][0])
        fn, args, config = run.next_call(manual_mode=manual_mode, rounds=rounds, action=action)
        if not self._compiled(fn, args, config):
            return
        if running and not self.running:
            self.error = None  # a (re)start acknowledges the last error
        self.running = running
        start = time.perf_counter()
        state, sums = fn(*args, config)
        if manual_mode:
            self.next_manual = max(self.next_manual + self.manual_period_s, time.monotonic())
            run.finish_call(
                state,
                sums,
                config,
                rounds=1.0 / config.train.train_every,
                elapsed_s=time.perf_counter() - start,
            )
            return
        run.finish_call(state, sums, config, rounds=rounds, elapsed_s=time.perf_counter() - start)
        run.tune_rounds(rounds=rounds, elapsed_s=time.perf_counter() - start, target_s=self.target_call_s)
        if not running:
            self.steps[0][0] -= rounds
            if self.steps[0][0] == 0:
                self.finished_steps.append(self.steps.popleft()[1])
            if not self.steps:
                run.stopped_running()

    # ------------------------------------------------------------------ snapshots out
    def _publish(self, stopped: bool = False) -> None:
        want, mode, action = self.shared.settings()
        run = self.session
        if stopped:
            status = "stopped"
        elif self.busy:
            status = self.busy
        elif run is None:
            status = "initialising"
        elif self.running and want:
            status = "manual" if mode == "manual" else "running"
        elif self.steps:
            status = "stepping"
        else:
            status = "paused"
        snap = empty_snapshot(run.config if run is not None else self.shared.snapshot["config"])
        snap.update(status=status, running=status in ("running", "manual"), mode=mode, error=self.error)
        snap.update(message=self.message, manual_action=(float(action[0]), float(action[1])))
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
        with self.shared.lock:
            self.shared.snapshot = snap
        finished, self.finished_steps = self.finished_steps, []
        for future in finished:
            try:
                future.set_result(snap)
            except InvalidStateError:
                pass  # cancelled by its holder after its rounds ran: nobody waits for it


def empty_snapshot(config: Config) -> dict:
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
        # The run's loop.TrainState as of this snapshot (JAX arrays, never mutated: replaced by the
        # next call), for scripts and tests; UIs draw from the NumPy fields above.
        "state": None,
    }


__all__ = ["IDLE_POLL_S", "QUEUE_SIZE", "Shared", "Worker", "empty_snapshot"]
