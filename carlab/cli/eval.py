"""``carlab eval``: drive a trained agent round held-out tracks and report the metrics."""

from __future__ import annotations

import argparse
import json

from carlab.cli.common import _SEED_LIMIT, _actor, _fail, _int_at_least
from carlab.learn.config import EVAL_FIRST_SEED

EVAL_JSON_KEYS = (
    "lap_completion_rate",
    "mean_progress",
    "crash_rate",
    "mean_return",
    "mean_steps",
    "num_tracks",
    "first_seed",
    "max_steps",
    "checkpoint",
    "env_steps",
)


def add_parser(subparsers) -> None:
    """Declare ``carlab eval``'s arguments."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a trained agent on held-out tracks",
        description="Drive one lap on each held-out track with the deterministic actor and report the metrics.",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a run checkpoint from `carlab train`")
    parser.add_argument(
        "--tracks", type=_int_at_least(1), default=100, metavar="N", help="tracks (default 100)"
    )
    parser.add_argument(
        "--first-seed",
        type=_int_at_least(0),
        default=EVAL_FIRST_SEED,
        metavar="S",
        help=f"seed of the first track (default {EVAL_FIRST_SEED}, never used in training)",
    )
    parser.add_argument(
        "--max-steps",
        type=_int_at_least(1),
        default=1000,
        metavar="N",
        help="steps per episode (default 1000)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the checkpoint and print a table (or one JSON object with ``--json``)."""
    if args.first_seed + args.tracks > _SEED_LIMIT:
        return _fail(
            "eval",
            f"--first-seed {args.first_seed} with --tracks {args.tracks} runs past the last track seed "
            f"(2**31 - 1): the first seed can be at most {_SEED_LIMIT - args.tracks}",
        )
    from carlab.learn import evaluation, runs  # imported late: they pull in JAX
    from carlab.learn.checkpoint import CheckpointError

    try:
        state, config, _, metadata = runs.load_run(args.checkpoint)
    except (CheckpointError, OSError) as error:
        return _fail("eval", str(error))
    result = evaluation.evaluate(
        _actor(state, config), num_tracks=args.tracks, first_seed=args.first_seed, max_steps=args.max_steps
    )
    result.update(checkpoint=str(args.checkpoint), env_steps=int(metadata.get("env_steps", state.env_steps)))
    if args.json:
        print(json.dumps({k: result[k] for k in EVAL_JSON_KEYS}))
    else:
        print(
            f"checkpoint {result['checkpoint']} ({runs.config_name(config)} config, {result['env_steps']:,} env steps)"
        )
        print(evaluation.format_summary(result))
    return 0
