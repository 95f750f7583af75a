"""The trainer's slow work, done in short-lived helper threads: build, load, compile.

Each job is a pure function of what it is given and returns a value the worker adopts
(:class:`carlab.lab.worker.Worker`); none holds trainer state, so a helper still compiling when the
trainer stops finishes on its own. :class:`Helpers` runs the jobs and hands their results back.

    helpers = Helpers("carlab-trainer-1", wake=shared.wake)
    helpers.spawn("initialising", fresh_job(config, None), then=adopt)
    for then, (result, error) in helpers.take_done(): ...     # in the worker, once woken
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from carlab.learn import loop, runs
from carlab.learn.config import Config

_COMPILED: set = set()  # (function, config, shapes) already compiled in this process
_COMPILED_LOCK = threading.Lock()


class Helpers:
    """Helper threads running jobs for one worker, and the outcomes they hand back to it."""

    def __init__(self, name: str, *, wake: Callable[[], None]):
        """``name`` prefixes the threads' names; ``wake()`` is called whenever a job is done."""
        self.name = name
        self._wake = wake
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._done: list = []

    def spawn(self, what: str, job: Callable[[], Any], then: Callable[[Any], None]) -> None:
        """Run ``job()`` in a thread named ``<name>-<what>``; ``then`` comes back with its outcome."""

        def helper():
            try:
                outcome = (job(), None)
            except Exception as error:  # noqa: BLE001 - handed to the worker, which keeps and shows it
                outcome = (None, error)
            _release_memory()
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


def _release_memory() -> None:
    """Hand freed heap back to the OS. An XLA compile leaves a few hundred MB of freed scratch memory
    in glibc's arenas, which the kernel's RSS would otherwise keep showing (about 0.36 GB of 1 GB)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        pass


__all__ = ["Helpers", "compile_job", "fresh_job", "is_compiled", "load_job", "tracks_of"]
