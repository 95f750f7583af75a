"""The ``carlab`` command line: ``carlab play``, ``carlab train``, ``carlab eval``.

Each subcommand is a module ``carlab/cli/<name>.py`` with ``add_parser(subparsers) -> None``, which
declares its arguments and sets ``func`` to a ``run(args) -> int``. List the module's name in
``COMMANDS`` and ``main`` picks it up. Heavy imports (JAX, pygame) happen inside the ``run``
functions so ``--help`` stays fast; shared helpers are in :mod:`carlab.cli.common`.

Exit status: 0 success, 2 usage errors and unreadable checkpoints (one line on stderr, no
traceback), 1 when a result cannot be written, 130 when training is interrupted (Ctrl-C; the last
finished chunk is saved first).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# The subcommands, in the order `carlab --help` lists them: modules of this package.
COMMANDS = ("play", "train", "eval", "sweep")

# Imported here, not in build_parser, so importing the CLI loads what `carlab --help` loads.
_MODULES = tuple(importlib.import_module(f"{__name__}.{name}") for name in COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand in ``COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="carlab", description="Watch a car learn to race with a world model."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _MODULES:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``carlab COMMAND ...`` and return the exit status (2 for usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
