"""Helpers the ``carlab`` subcommands share (private to :mod:`carlab.cli`): argument types, one-line
failures, the actor of a run, where a run may be written."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

_SEED_LIMIT = 2**31  # track seeds are in [0, 2**31) (carlab.sim.track.make_track)


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _fail(command: str, message: str, status: int = 2) -> int:
    """Print ``carlab COMMAND: message`` on stderr and return ``status``."""
    print(f"carlab {command}: {message}", file=sys.stderr)
    return status


def _actor(state, config):
    """The run's driver (its policy checkpoint when the config keeps one, else the newest actor) as
    a deterministic :class:`carlab.learn.policies.Policy`."""
    from carlab.learn import policy_checkpoint  # imported late: it pulls in JAX

    return policy_checkpoint.driver_policy(state, config)


def _unwritable(paths: Sequence[Path]) -> str | None:
    """Why one of ``paths`` cannot be written, in one line (None if all can).

    Each missing parent folder is made, and a temp file is created and removed in it: the only
    sure test (``os.access`` says yes to root on /proc, where nothing can be created).
    """
    for path in paths:
        try:
            if path.exists() and not path.is_file():
                return f"cannot write {path}: it is not a file"
        except OSError as error:
            return f"cannot write {path}: {error.strerror or error}"
    for path in {path.parent: path for path in reversed(paths)}.values():  # the first path of each folder
        folder = path.parent
        try:
            nearest = folder
            while not nearest.exists() and nearest != nearest.parent:
                nearest = nearest.parent
            if not nearest.is_dir():
                return f"cannot write {path}: {nearest} is not a folder"
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".carlab-write-check-"):
                pass
        except OSError as error:
            return f"cannot write {path}: no file can be created in {folder} ({error.strerror or error})"
    return None


def _new_run_path(stem: str, targets: Callable[[Path], list[Path]], *, folder: str = "runs") -> Path:
    """``<folder>/<stem>-<YYYYmmdd-HHMMSS>.safetensors``, with ``-2``, ``-3``... added until none of
    its ``targets(path)`` (the files a run at ``path`` writes) exists yet."""
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for count in range(1, 1000):
        path = Path(folder) / f"{base}{'' if count == 1 else f'-{count}'}.safetensors"
        if not any(target.exists() for target in targets(path)):
            return path
    raise FileExistsError(f"{folder}/{base}-*.safetensors: 999 runs started this second already exist")
