"""The ``carlab`` command line: ``carlab play`` now; train, eval and bench plug in the same way.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and sets
``func`` to ``_run_<name>(args) -> int``. List the adder in ``_COMMANDS`` and ``main`` picks it up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


def _add_play(subparsers) -> None:
    parser = subparsers.add_parser(
        "play",
        help="drive the car with the keyboard (or watch an agent)",
        description="Arrows/WASD drive, R restarts, N next track, Esc quits.",
    )
    parser.add_argument(
        "--track-seed", type=int, default=0, metavar="N", help="track to start on (default 0)"
    )
    parser.add_argument("--agent", metavar="CHECKPOINT", help="let a trained agent drive when no key is held")
    parser.add_argument("--frames", type=int, default=None, metavar="N", help="stop after N frames")
    parser.add_argument("--fps", type=int, default=30, help="frame-rate cap of the window (default 30)")
    parser.add_argument("--headless", action="store_true", help="no window: draw offscreen (needs --frames)")
    parser.set_defaults(func=_run_play)


def _load_agent(path: str):
    """An ``obs -> action`` callable from a checkpoint, once :mod:`carlab.checkpoint` provides one."""
    try:
        from carlab.checkpoint import load_policy  # arrives with the trainer
    except ImportError:
        return None
    return load_policy(path)


def _run_play(args: argparse.Namespace) -> int:
    if args.headless and args.frames is None:
        print("carlab play: --headless needs --frames N", file=sys.stderr)
        return 2
    agent = None
    if args.agent is not None:
        agent = _load_agent(args.agent)
        if agent is None:
            print(
                "carlab play: cannot load agents yet; agent checkpoints arrive with `carlab train`",
                file=sys.stderr,
            )
            return 2
    from carlab.play import run_play  # imported late: it pulls in JAX and pygame

    summary = run_play(
        track_seed=args.track_seed, agent=agent, max_frames=args.frames, fps=args.fps, headless=args.headless
    )
    print(
        f"frames {summary['frames']}  episodes {summary['episodes']}  crashes {summary['crashes']}  "
        f"laps {summary['laps']}  reward {summary['total_reward']:.2f}  track {summary['track_seed']}"
    )
    return 0


# name -> function adding the subcommand's parser; add train, eval, bench here.
_COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "play": _add_play,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand in ``_COMMANDS``."""
    parser = argparse.ArgumentParser(
        prog="carlab", description="Watch a car learn to race with a world model."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS.values():
        add(subparsers)
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
