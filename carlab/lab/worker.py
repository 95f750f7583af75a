"""The trainer's worker thread: its loop, the operations it carries out, the snapshots it publishes.

A :class:`Worker` is the only code that reads or replaces the run (a
:class:`carlab.lab.session.Session`); :class:`carlab.lab.trainer.Trainer` starts a thread on
:meth:`Worker.run` and talks to it through ``Shared``: the settings under its lock, operations
on its queue, the stop event, and the snapshot the worker publishes after every unit of work
(:class:`carlab.lab.jobs.Shared`). Slow work goes to helper threads (:mod:`carlab.lab.jobs`) whose
results the worker adopts once woken.

**No future is lost.** At most :data:`carlab.lab.jobs.QUEUE_SIZE` operations wait at a time (queued, or deferred
while a helper works); one more is refused at once with ``RuntimeError("trainer busy: N commands
queued")``. Each waiting operation takes a bounded time (a save, or a helper's build or read; a
reset right after a reset is the same run, so it is done once). When the worker ends (a stop), the
futures of the operations it did not carry out are cancelled (a load still being read fails with
RuntimeError, and the run stays as it was); operations without a future (reset, hyperparameters, the first build) wait for the next start.
"""

from __future__ import annotations

import collections
import queue
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from carlab.lab import jobs, manual
from carlab.lab.session import Session
from carlab.lab.snapshot import empty_snapshot
from carlab.learn import loop
from carlab.learn.config import Config

IDLE_POLL_S = 0.05  # how long an idle worker waits for news before looking again


class Worker:
    """The worker thread's side of a trainer; see the module docstring. Only :meth:`run`'s thread
    calls it."""

    def __init__(
        self,
        shared: jobs.Shared,
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
        self.busy_detail, self.busy_since = "", None  # for what, and since when (time.monotonic())
        self.ahead: set = set()  # compiles started ahead of need (see _compile_manual_ahead)
        self.deferred: list = []  # operations that arrived while busy
        self.loading: Future | None = None  # the future of a load a helper is reading
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
                    if self.deferred and not self.busy:  # kept from before a stop
                        self._replay_deferred()
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
            self._abandon()
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
            if self.shared.stop.is_set():
                return  # what is left waits in the queue (see _abandon)
            try:
                op = self.shared.ops.get_nowait()
            except queue.Empty:
                return

    def _handle(self, name: str, payload: Any) -> None:
        if name == "wake":
            self.shared.woken()
            return
        if self.busy:
            if name == "reset" and self.deferred and self.deferred[-1][0] == "reset":
                self.shared.finished()  # a reset right after a reset builds the same run
                return
            self.deferred.append((name, payload))  # replayed once the helper's result is adopted
            return
        self.shared.finished()
        try:
            if self.session is None and name not in ("fresh", "load"):
                raise RuntimeError(f"cannot {name}: there is no run (building it failed); load a checkpoint")
            getattr(self, f"_op_{name}")(payload)
        except Exception as error:
            if name in ("step", "save", "load") and payload[1] is not None:
                jobs.resolve(payload[1], error=error)
            raise

    def _replay_deferred(self) -> None:
        """Carry out the operations deferred while a helper worked (deferred again if one is slow)."""
        deferred, self.deferred = self.deferred, []
        for op in deferred:
            try:
                self._handle(*op)
            except Exception as error:  # noqa: BLE001 - kept and shown; the others still run
                self._fail(error)

    def _abandon(self) -> None:
        """The worker ends: cancel the futures of what it did not carry out; keep the rest for later."""
        self._drop_steps()
        ops = list(self.deferred)
        while True:
            try:
                ops.append(self.shared.ops.get_nowait())
            except queue.Empty:
                break
        self.deferred = []
        for name, payload in ops:
            if name == "wake":
                self.shared.woken()
            elif name in ("step", "save", "load") and payload[1] is not None:
                jobs.cancel(payload[1])
                self.shared.finished()
            else:
                self.deferred.append((name, payload))
        if self.loading is not None:  # its result is not adopted (see _op_load)
            stopped = RuntimeError("the trainer stopped before this load was done; the run is as it was")
            jobs.resolve(self.loading, error=stopped)

    def _adopt_jobs(self) -> None:
        done = self.helpers.take_done()
        for then, (result, error) in done:
            self.busy, self.loading = None, None
            try:
                if error is not None:
                    raise error
                then(result)
            except Exception as failure:  # noqa: BLE001 - kept and shown; the other results still count
                self._fail(failure)
        if done and not self.busy:
            self._replay_deferred()

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
            _, future, _ = self.steps.popleft()
            if error is None:
                jobs.cancel(future)
            else:
                jobs.resolve(future, error=error)

    def _spawn(
        self, what: str, job: Callable[[], Any], then: Callable[[Any], None], *, detail: str = ""
    ) -> None:
        """Run ``job()`` in a helper thread (busy with ``what`` meanwhile, for ``detail``); then ``then(result)``."""
        self.busy, self.busy_detail, self.busy_since = what, detail, time.monotonic()
        self._publish()
        self.helpers.spawn(what, job, then)

    # ---- the operations (posted by the Trainer)
    def _op_fresh(self, payload) -> None:
        config, env_params = payload
        self._spawn("initialising", jobs.fresh_job(config, env_params), self._adopt)

    def _op_step(self, payload) -> None:
        rounds, future, pauses = payload
        if pauses < self.shared.pauses:  # a pause came after it
            jobs.cancel(future)
        else:
            self.steps.append([rounds, future, pauses])

    def _op_reset(self, _) -> None:
        def adopt(result) -> None:
            self._adopt(result)
            hyper, (running, mode, _) = dict(self.session.hyper), self.shared.settings()  # as in effect now
            explore, kept = hyper.pop("explore_prob"), ", ".join(f"{k}={v:g}" for k, v in hyper.items())
            self.message = f"reset: a fresh run (new networks, empty buffer, same tracks) with {kept}; "
            self.message += f"explore restarts at {explore:.2f}; {'running' if running else 'paused'}, "
            self.message += f"mode stays {'Manual' if mode == 'manual' else 'AI'}"

        self._spawn("resetting", self.session.reset_job(), adopt)

    def _op_save(self, payload) -> None:
        path, future = payload
        if not future.set_running_or_notify_cancel():
            return  # cancelled by its holder: not saved
        written = self.session.save(path, extra={"saved_by": "carlab.lab.trainer"})
        self.message = f"saved {written}"
        future.set_result(written)

    def _op_load(self, payload) -> None:
        # ``future`` is None for the trainer's first build, which no stop cancels.
        path, future = payload
        if future is not None and not future.set_running_or_notify_cancel():
            return  # cancelled by its holder
        job = jobs.load_job(path) if self.session is None else self.session.load_job(path)
        self.loading = future

        def reading():
            try:
                return job()
            except Exception as error:
                if future is not None:
                    jobs.resolve(future, error=error)
                raise

        def adopt(result):
            if future is None or not future.done():  # a stop meanwhile failed it: the run stays
                self._adopt(result, f"loaded {path}")
                jobs.resolve(future, path)

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
        detail = jobs.compile_detail(fn, config, self.session.config)
        self._spawn("compiling", jobs.compile_job(fn, args, config, key=key), lambda _: None, detail=detail)
        return False

    def _compile_manual_ahead(self, run: Session) -> None:
        """Compile the manual-driving step in the background once the run trains, so that toggling
        Manual takes effect at once rather than after a compile (about 10 s on a laptop CPU)."""
        key = (manual.manual_step, run.next_config, run.signature)  # what next_call would run
        if key not in self.ahead and not jobs.is_compiled(key):
            self.ahead.add(key)
            fn, args, config = run.next_call(manual_mode=True, rounds=1, action=(0.0, 0.0))
            self.helpers.spawn("ahead-compiling", jobs.compile_job(fn, args, config, key=key), None)

    def _work(self) -> None:
        while self.steps and self.steps[0][2] < self.shared.pauses:  # paused since it was posted
            jobs.cancel(self.steps.popleft()[1])
        run = self.session
        if run is None or self.busy:
            return
        running, mode, action = self.shared.settings()
        manual_mode = running and mode == "manual"
        if not running:
            while self.steps and self.steps[0][1].cancelled():  # cancelled by whoever holds them
                jobs.cancel(self.steps.popleft()[1])
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
        self._compile_manual_ahead(run)
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
        if self.busy:
            snap.update(busy_detail=self.busy_detail, busy_since=self.busy_since)
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
            jobs.resolve(future, snap)  # (unless cancelled by its holder after its rounds ran)


__all__ = ["IDLE_POLL_S", "Worker"]
