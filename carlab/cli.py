"""The ``carlab`` command line: ``carlab play``, ``carlab train``, ``carlab eval``.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and sets
``func`` to ``_run_<name>(args) -> int``. List the adder in ``_COMMANDS`` and ``main`` picks it up.
Heavy imports (JAX, pygame) happen inside the ``_run_*`` functions so ``--help`` stays fast.

Exit status: 0 success, 2 usage errors and unreadable checkpoints (one line on stderr, no
traceback), 1 when a result cannot be written, 130 when training is interrupted (Ctrl-C; the last
finished chunk is saved first).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from carlab.learn.config import EVAL_FIRST_SEED, PRESETS


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


def _add_play(subparsers) -> None:
    parser = subparsers.add_parser(
        "play",
        help="drive the car with the keyboard (or watch an agent)",
        description="Arrows/WASD drive, R restarts, N next track, Esc quits.",
    )
    parser.add_argument(
        "--track-seed", type=int, default=0, metavar="N", help="track to start on, in [0, 2**31) (default 0)"
    )
    parser.add_argument("--agent", metavar="CHECKPOINT", help="let a trained agent drive when no key is held")
    parser.add_argument("--frames", type=int, default=None, metavar="N", help="stop after N >= 1 frames")
    parser.add_argument("--fps", type=int, default=30, help="frame-rate cap of the window, >= 1 (default 30)")
    parser.add_argument("--headless", action="store_true", help="no window: draw offscreen (needs --frames)")
    parser.set_defaults(func=_run_play)


def _load_agent(path: str):
    """The run checkpoint's actor as NumPy ``obs (6,) -> action (2,)`` (``CheckpointError`` if unreadable)."""
    from carlab.learn.runs import load_policy  # imported late: it pulls in JAX

    return load_policy(path)


_SEED_LIMIT = 2**31  # track seeds are in [0, 2**31) (carlab.sim.track.make_track)


def _play_usage_error(args: argparse.Namespace) -> str | None:
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


def _run_play(args: argparse.Namespace) -> int:
    problem = _play_usage_error(args)
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


def _add_train(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an agent: world model + actor-critic in imagination",
        description=(
            "Train from scratch (or --resume a run) and save the checkpoint to --out, with "
            "<stem>.metrics.jsonl/.csv and <stem>.png beside it. After every chunk the deterministic "
            "actor drives 32 validation tracks (seeds from 500,000), and <stem>-best.safetensors is "
            "saved whenever its lap rate (then mean progress) beats the best so far."
        ),
    )
    parser.add_argument(
        "--steps",
        type=_int_at_least(1),
        default=100_000,
        metavar="N",
        help="env steps (transitions of all cars together) to collect (default 100000)",
    )
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="run seed (default 0)")
    parser.add_argument(
        "--seeds",
        default=None,
        metavar="LIST",
        help="one run per seed, all in one jitted program (0-7, 0,3,5 or 0-3,8): writes <stem>-seed<S>"
        ".safetensors per seed and <stem>-seeds.png; --resume PATH continues each <PATH stem>-seed<S>",
    )
    parser.add_argument(
        "--config", choices=sorted(PRESETS), default=None, help="config preset (default: default)"
    )
    parser.add_argument(
        "--out",
        default="models/agent.safetensors",
        metavar="PATH",
        help="checkpoint to write (default models/agent.safetensors)",
    )
    parser.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue this run for --steps more steps (its config and seed)",
    )
    parser.add_argument(
        "--eval-tracks",
        type=_int_at_least(0),
        default=100,
        metavar="N",
        help="held-out tracks to evaluate on afterwards (0: skip; default 100)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=_run_train)


def _train_setup(args: argparse.Namespace):
    """``(state, config, history)`` to start from: a loaded run or a fresh preset (state None).

    Raises ``ValueError`` with a one-line message for options that contradict each other.
    """
    from carlab.learn import config as config_lib

    if args.resume is None:
        config = config_lib.preset(args.config or "default")
        if args.seed is not None:
            config = config_lib.with_overrides(config, train={"seed": args.seed})
        return None, config, []
    from carlab.learn import runs

    state, config, history, _ = runs.load_run(args.resume)
    name = runs.config_name(config)
    if args.config is not None and args.config != name:
        raise ValueError(
            f"--config {args.config} disagrees with the resumed run's config ({name}); drop --config"
        )
    if args.seed is not None and args.seed != config.train.seed:
        raise ValueError(
            f"--seed {args.seed} disagrees with the resumed run's seed ({config.train.seed}); drop --seed"
        )
    return state, config, history


def _actor(state, config):
    """The run's deterministic actor as a :class:`carlab.learn.policies.Policy`."""
    from carlab.learn import policies  # imported late: it pulls in JAX

    return policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)


def _run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".safetensors":
        return _fail("train", f"--out must end in .safetensors, got {args.out}")
    if args.seeds is not None:
        return _run_train_seeds(args, out)
    from carlab.learn import evaluation, loop, runs  # imported late: they pull in JAX
    from carlab.learn.checkpoint import CheckpointError

    try:
        state, config, history = _train_setup(args)
    except (CheckpointError, OSError, ValueError) as error:
        return _fail("train", str(error))
    saver = runs.BestSaver(runs.best_path(out), config, history=history)
    try:
        state, _ = loop.train(config, args.steps, state=state, callback=saver, progress=not args.no_progress)
    except KeyboardInterrupt:
        if saver.state is None:
            return _fail("train", "interrupted before the first chunk finished; nothing saved", 130)
        runs.save_run(out, saver.state, config, saver.history, extra={"interrupted": True})
        return _fail("train", f"interrupted; saved the last finished chunk to {out}", 130)
    history = saver.history  # the whole run's records, earlier calls' first
    extra, result = {}, None
    if args.eval_tracks > 0:
        result = evaluation.evaluate(_actor(state, config), num_tracks=args.eval_tracks)
        print(evaluation.format_summary(result))
        extra["eval"] = result
    try:
        runs.save_run(out, state, config, history, extra=extra)
        prefix = runs.metrics_prefix(out)
        jsonl, csv_path = runs.write_metrics(history, prefix)
        title = (
            f"{runs.config_name(config)} config, seed {config.train.seed}, {int(state.env_steps):,} env steps"
        )
        png = runs.plot_learning_curve(history, prefix.with_suffix(".png"), eval_result=result, title=title)
    except OSError as error:
        return _fail("train", f"cannot write results: {error}", 1)
    counts = runs.counters(state)
    print(
        f"saved {out}  (env steps {counts['env_steps']}, updates {counts['updates']}, "
        f"episodes {counts['episodes']}, best progress {counts['best_progress']:.3f})"
    )
    print(f"metrics {jsonl}, {csv_path}; learning curve {png}")
    if saver.saves:
        laps, progress = saver.best
        print(
            f"best checkpoint {runs.best_path(out)} (validation: {laps:.0%} laps, progress "
            f"{progress:.2f}; saved {saver.saves}x)"
        )
    return 0


def _train_seeds_setup(args: argparse.Namespace):
    """``(seeds, states, config, histories)`` to start from: the runs ``<resume stem>-seed<S>.safetensors``
    stacked, or a fresh preset (states None); ``ValueError`` (one line) for contradicting options."""
    from carlab.learn import config as config_lib
    from carlab.learn import runs, seed_runs

    seeds = seed_runs.parse_seeds(args.seeds)
    if args.seed is not None:
        raise ValueError("--seed and --seeds contradict each other; give one of them")
    if args.resume is None:
        return seeds, None, config_lib.preset(args.config or "default"), [[] for _ in seeds]
    states, config, histories = seed_runs.load_seeds(args.resume, seeds)
    if args.config is not None and args.config != runs.config_name(config):
        raise ValueError(f"--config {args.config} disagrees with the resumed runs' config; drop --config")
    return seeds, states, config, histories


def _run_train_seeds(args: argparse.Namespace, out: Path) -> int:
    """``carlab train --seeds``: one run per seed, trained together (:func:`carlab.learn.seeds.train_seeds`)."""
    from carlab.learn import evaluation, runs, seed_runs  # imported late: they pull in JAX
    from carlab.learn import seeds as seeds_lib
    from carlab.learn.checkpoint import CheckpointError

    try:
        seeds, states, config, histories = _train_seeds_setup(args)
    except (CheckpointError, OSError, ValueError) as error:
        return _fail("train", str(error))
    configs = [seeds_lib.seed_config(config, seed) for seed in seeds]
    paths = [runs.seed_path(out, seed) for seed in seeds]
    savers = [runs.BestSaver(runs.best_path(p), c, history=h) for p, c, h in zip(paths, configs, histories)]
    try:
        states, _ = seeds_lib.train_seeds(
            config, seeds, args.steps, states=states, savers=savers, progress=not args.no_progress
        )
    except KeyboardInterrupt:
        if savers[0].state is None:
            return _fail("train", "interrupted before the first chunk finished; nothing saved", 130)
        last, extras = [s.state for s in savers], [{"interrupted": True}] * len(seeds)
        seed_runs.save_seeds(out, last, config, seeds, [s.history for s in savers], extras=extras)
        return _fail("train", f"interrupted; saved each seed's last finished chunk ({paths[0]}, ...)", 130)
    finals = [seeds_lib.seed_state(states, i) for i in range(len(seeds))]
    tracks = args.eval_tracks
    evals = [evaluation.evaluate(_actor(s, c), num_tracks=tracks) for s, c in zip(finals, configs) if tracks]
    try:
        extras = [{"eval": e} for e in evals] or None
        png = seed_runs.save_seeds(out, finals, config, seeds, [s.history for s in savers], extras=extras)
    except OSError as error:
        return _fail("train", f"cannot write results: {error}", 1)
    print(seed_runs.format_summary(seeds, paths, [s.best for s in savers], evals or None))
    print(f"metrics (.metrics.jsonl/.csv) and -best.safetensors beside each run; figure {png}")
    return 0


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


def _add_eval(subparsers) -> None:
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
    parser.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
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


# name -> function adding the subcommand's parser; add bench here.
_COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "play": _add_play,
    "train": _add_train,
    "eval": _add_eval,
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
