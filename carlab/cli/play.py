"""``carlab play``: drive the car with the keyboard, or watch an agent drive."""

from __future__ import annotations

import argparse

from carlab.cli.common import _SEED_LIMIT, _fail
from carlab.sim.track import DRIVE_TRACK


def add_parser(subparsers) -> None:
    """Declare ``carlab play``'s arguments."""
    parser = subparsers.add_parser(
        "play",
        help="drive the car with the keyboard (or watch an agent)",
        description="Arrows/WASD drive, R restarts, N next track, Esc quits.",
    )
    parser.add_argument(
        "--track-seed",
        type=int,
        default=DRIVE_TRACK,
        metavar="N",
        help=f"track to start on, in [0, 2**31) (default {DRIVE_TRACK}: it starts on a long straight)",
    )
    parser.add_argument("--agent", metavar="CHECKPOINT", help="let a trained agent drive when no key is held")
    parser.add_argument("--frames", type=int, default=None, metavar="N", help="stop after N >= 1 frames")
    parser.add_argument("--fps", type=int, default=30, help="frame-rate cap of the window, >= 1 (default 30)")
    parser.add_argument("--headless", action="store_true", help="no window: draw offscreen (needs --frames)")
    parser.set_defaults(func=run)


def _load_agent(path: str):
    """The run checkpoint's actor as NumPy ``obs (6,) -> action (2,)`` (``CheckpointError`` if unreadable)."""
    from carlab.learn.runs import load_policy  # imported late: it pulls in JAX

    return load_policy(path)


def _usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with ``carlab play``'s options, in one line (None if nothing)."""
    if not 0 <= args.track_seed < _SEED_LIMIT:
        return f"--track-seed must be in [0, 2**31), got {args.track_seed}"
    if args.frames is not None and args.frames < 1:
        return f"--frames must be at least 1, got {args.frames}"
    if args.fps < 1:
        return f"--fps must be at least 1, got {args.fps}"
    if args.headless and args.frames is None:
        return "--headless needs --frames N"
    return None


def run(args: argparse.Namespace) -> int:
    """Open the window (or draw offscreen) and drive; print a one-line summary."""
    problem = _usage_error(args)
    if problem is not None:
        return _fail("play", problem)
    agent = None
    if args.agent is not None:
        from carlab.learn.checkpoint import CheckpointError

        try:
            agent = _load_agent(args.agent)
        except (CheckpointError, OSError) as error:
            return _fail("play", str(error))
    from carlab.sim.play import run_play  # imported late: it pulls in JAX and pygame

    summary = run_play(
        track_seed=args.track_seed, agent=agent, max_frames=args.frames, fps=args.fps, headless=args.headless
    )
    print(
        f"frames {summary['frames']}  episodes {summary['episodes']}  crashes {summary['crashes']}  "
        f"laps {summary['laps']}  reward {summary['total_reward']:.2f}  track {summary['track_seed']}"
    )
    return 0
