"""The trainer's plumbing: the channel its threads share, and slow work in helper threads.

:class:`Shared` is what the UI threads and the worker share (settings, the bounded operation queue,
the stop event, the snapshot). The slow work (build, load, compile) runs in short-lived helper
threads.

Each job is a pure function of what it is given and returns a value the worker adopts
(:class:`carlab.lab.worker.Worker`); none holds trainer state, so a helper still compiling when the
trainer stops finishes on its own. :class:`Helpers` runs the jobs and hands their results back.

    helpers = Helpers("carlab-trainer-1", wake=shared.wake)
    helpers.spawn("initialising", fresh_job(config, None), then=adopt)
    for then, (result, error) in helpers.take_done(): ...     # in the worker, once woken
"""

from __future__ import annotations

import ctypes
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from pathlib import Path
from typing import Any

import jax
import numpy as np

from carlab.lab import hyperparams, manual
from carlab.learn import loop, runs
from carlab.learn.config import Config

QUEUE_SIZE = 64  # operations waiting at most (queued or deferred); a UI posts a handful per click
_COMPILED: set = set()  # (function, config, shapes) already compiled in this process
_COMPILED_LOCK = threading.Lock()


class Shared:
    """What the UI threads and the worker share: settings under ``lock`` (only the newest value
    matters), the bounded ``ops`` queue, the ``stop`` event, and the newest published ``snapshot``.
    ``pending`` counts the operations posted and not yet carried out or dropped; ``pauses`` counts
    :meth:`carlab.lab.trainer.Trainer.pause` calls (a step posted before the newest pause is cancelled)."""

    def __init__(self, name: str, snapshot: dict):
        """Settings at rest (paused, AI mode); ``snapshot`` shows the run not built yet."""
        self.name = name
        self.lock = threading.Lock()
        # Never full: ``pending`` bounds the operations in it, and one wake-up at a time is queued.
        self.ops: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE + 1)
        self.pending = 0
        self.pauses = 0
        self._wake_queued = False
        self.stop = threading.Event()
        self.want_running = False
        self.mode = "ai"
        self.manual_action = np.zeros(2, np.float32)
        self.snapshot = snapshot

    def post(self, name: str, payload: Any = None) -> None:
        """Queue the operation ``name`` for the worker; RuntimeError at once if :data:`QUEUE_SIZE` wait."""
        with self.lock:
            if self.pending >= QUEUE_SIZE:
                raise RuntimeError(
                    f"trainer busy: {self.pending} commands queued ({self.name}); try again later"
                )
            self.pending += 1
            self.ops.put_nowait((name, payload))

    def finished(self, count: int = 1) -> None:
        """``count`` posted operations were carried out or dropped."""
        with self.lock:
            self.pending -= count

    def wake(self) -> None:
        """Wake a worker waiting for operations."""
        with self.lock:
            if not self._wake_queued:
                self._wake_queued = True
                self.ops.put_nowait(("wake", None))

    def woken(self) -> None:
        """The worker took the wake-up: the next :meth:`wake` queues another."""
        with self.lock:
            self._wake_queued = False

    def pause(self) -> None:
        """Stop training after the current call and cancel every step posted so far."""
        with self.lock:
            self.want_running = False
            self.pauses += 1

    def settings(self) -> tuple[bool, str, np.ndarray]:
        """``(want_running, mode, manual_action)`` as one consistent read."""
        with self.lock:
            return self.want_running, self.mode, self.manual_action


def resolve(future: Future | None, result: Any = None, *, error: BaseException | None = None) -> None:
    """Give ``future`` its result (or ``error``), unless nobody waits for it any more (cancelled)."""
    if future is None:
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:  # cancelled by its holder, or failed by a stop, meanwhile
        if future.cancelled():
            future.set_running_or_notify_cancel()  # so that wait() and as_completed() hear of it


def cancel(future: Future) -> None:
    """Cancel ``future`` (unless it runs or is done) and wake whoever waits on it: a Future only
    cancelled still looks pending to ``concurrent.futures.wait`` and ``as_completed``. The worker
    calls it once per future, when it drops the operation."""
    if future.cancel():
        future.set_running_or_notify_cancel()


class Helpers:
    """Helper threads running jobs for one worker, and the outcomes they hand back to it."""

    def __init__(self, name: str, *, wake: Callable[[], None]):
        """``name`` prefixes the threads' names; ``wake()`` is called whenever a job is done."""
        self.name = name
        self._wake = wake
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._done: list = []

    def spawn(self, what: str, job: Callable[[], Any], then: Callable[[Any], None] | None) -> None:
        """Run ``job()`` in a thread named ``<name>-<what>``; ``then`` comes back with its outcome
        (``then=None``: work ahead of need, whose outcome nobody waits for; an error in it shows
        again when the work is done for real)."""

        def helper():
            try:
                outcome = (job(), None)
            except Exception as error:  # noqa: BLE001 - handed to the worker, which keeps and shows it
                outcome = (None, error)
            _release_memory()
            if then is None:
                return
            with self._lock:
                self._done.append((then, outcome))
            self._wake()

        # Not a daemon: at exit the interpreter waits for it, since killing a thread inside an XLA
        # compile aborts the process. Helpers always end by themselves (a compile, a file read).
        thread = threading.Thread(target=helper, name=f"{self.name}-{what}", daemon=False)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()

    def take_done(self) -> list[tuple[Callable[[Any], None], tuple[Any, BaseException | None]]]:
        """The finished jobs since the last call: ``(then, (result, error))`` each, oldest first."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def alive(self) -> int:
        """How many helper threads are still at work."""
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            return len(self._threads)


def fresh_job(config: Config, params) -> Callable[[], tuple]:
    """A job building a fresh run of ``config`` (on ``params``, default the config's tracks):
    ``(state, config, params, history)``."""

    def job():
        p = loop.env_params(config) if params is None else params
        return loop.init_state(config, p), config, p, []

    return job


def load_job(path: str | Path, *, keep: tuple | None = None) -> Callable[[], tuple]:
    """A job reading a run checkpoint: ``(state, config, params, history)``. ``keep`` is
    ``(tracks_of(config), params)`` of tracks already built, reused when the loaded config has the same."""

    def job():
        state, config, history, _ = runs.load_run(path)
        if keep is not None and keep[0] == tracks_of(config):
            return state, config, keep[1], history
        return state, config, loop.env_params(config), history

    return job


def tracks_of(config: Config) -> tuple:
    """What decides a config's training tracks (two configs with the same value share them)."""
    t = config.train
    return t.train_first_seed, t.num_train_tracks, t.max_episode_steps


def is_compiled(key: tuple) -> bool:
    """Whether :func:`compile_job` already compiled ``key`` = ``(function, config, shapes)`` here."""
    with _COMPILED_LOCK:
        return key in _COMPILED


def compile_job(fn, args: tuple, config: Config, *, key: tuple) -> Callable[[], None]:
    """A job compiling ``fn(*args, config)``, then recording ``key`` for :func:`is_compiled`; every
    trainer in the process shares the record."""

    def job():
        # One call, its result thrown away (fn is pure): it fills jit's cache, so the worker's next
        # plain call is fast, whether fn is a jitted function or a Python function around one.
        jax.block_until_ready(fn(*args, config))
        with _COMPILED_LOCK:
            _COMPILED.add(key)

    return job


def compile_detail(fn, config: Config, current: Config) -> str:
    """What compiling ``fn`` for ``config`` is for, in a student's words: ``"the manual-driving step"``,
    ``"the training step for horizon=3"`` (the live knobs where ``config`` differs from ``current``, the
    run's config now) or plain ``"the training step"`` (a fresh or loaded run's first call)."""
    what = "the manual-driving step" if fn is manual.manual_step else "the training step"
    new, old = (
        hyperparams.current(None, config, where="config"),
        hyperparams.current(None, current, where="config"),
    )
    changed = [f"{name}={value:g}" for name, value in new.items() if old.get(name) != value]
    return f"{what} for {', '.join(changed)}" if changed else what


def _release_memory() -> None:
    """Hand freed heap back to the OS. An XLA compile leaves a few hundred MB of freed scratch memory
    in glibc's arenas, which the kernel's RSS would otherwise keep showing (about 0.36 GB of 1 GB)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


__all__ = [
    "QUEUE_SIZE",
    "Helpers",
    "Shared",
    "cancel",
    "compile_detail",
    "compile_job",
    "fresh_job",
    "is_compiled",
    "load_job",
    "resolve",
    "tracks_of",
]
