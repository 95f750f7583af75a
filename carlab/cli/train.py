"""``carlab train``: train an agent (world model + actor-critic), one seed or a set."""

from __future__ import annotations

import argparse
from pathlib import Path

from carlab.cli.common import _actor, _fail, _int_at_least, _new_run_path, _unwritable
from carlab.learn.config import PRESETS


def add_parser(subparsers) -> None:
    """Declare ``carlab train``'s arguments."""
    parser = subparsers.add_parser(
        "train",
        help="train an agent: a world model and an actor-critic (the default preset: the anchored learner)",
        description=(
            "Train from scratch (or --resume a run) and save the checkpoint to --out, with "
            "<stem>.metrics.jsonl/.csv and <stem>.png beside it. After every chunk the run's driver "
            "(the deterministic actor; with --config checkpointed, its policy checkpoint) drives 32 "
            "validation tracks (seeds from 500,000), and <stem>-best.safetensors is saved whenever its "
            "lap rate (then mean progress) beats the best so far."
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
        default=None,
        metavar="PATH",
        help="checkpoint to write (default: a new runs/<preset>-seed<S>-<YYYYmmdd-HHMMSS>.safetensors); "
        "an existing file is refused unless --force",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing --out and its -best sibling (--resume PATH --out PATH needs no --force)",
    )
    parser.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue this run for --steps more steps (its config and seed); --out CHECKPOINT too "
        "continues it in place",
    )
    parser.add_argument(
        "--eval-tracks",
        type=_int_at_least(0),
        default=100,
        metavar="N",
        help="held-out tracks to evaluate on afterwards (0: skip; default 100)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


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
    if args.config is not None and not runs.is_preset(config, args.config):
        raise ValueError(
            f"--config {args.config} disagrees with the resumed run's config ({runs.config_name(config)}); "
            "drop --config"
        )
    if args.seed is not None and args.seed != config.train.seed:
        raise ValueError(
            f"--seed {args.seed} disagrees with the resumed run's seed ({config.train.seed}); drop --seed"
        )
    return state, config, history


def _checkpoints(out: Path, seeds: list[int] | None) -> list[tuple[Path, Path]]:
    """``(run, its -best sibling)`` for each checkpoint a run (or a set of ``seeds``) saved at ``out`` writes."""
    from carlab.learn import runs  # imported late: it pulls in JAX (only to name the files)

    runs_at = [out] if seeds is None else [runs.seed_path(out, seed) for seed in seeds]
    return [(path, runs.best_path(path)) for path in runs_at]


def _targets(out: Path, seeds: list[int] | None) -> list[Path]:
    """Every checkpoint a run (or a set of ``seeds``) saved at ``out`` writes, -best siblings too."""
    return [path for pair in _checkpoints(out, seeds) for path in pair]


def _continues(args: argparse.Namespace, out: Path) -> bool:
    """Whether ``--out`` is the run being resumed (continuing it is not overwriting it)."""
    return args.resume is not None and Path(args.resume).resolve() == out.resolve()


def _check_out(args: argparse.Namespace, out: Path, seeds: list[int] | None) -> str | None:
    """Why the run cannot be saved at ``out`` (a file would be overwritten, or none can be written)."""
    if not (args.force or _continues(args, out)):
        for run, best in _checkpoints(out, seeds):
            if run.exists():
                what = "it" if seeds is None else "the set"
                return f"{run} exists; pass --force to overwrite it (or --resume {out} to continue {what})"
            if best.exists():
                return f"{best} exists; pass --force to overwrite it"
    return _unwritable(_targets(out, seeds))


def _prepare_out(args: argparse.Namespace, stem: str, seeds: list[int] | None) -> tuple[Path, str | None]:
    """``(out, problem)``: ``--out`` or a new ``runs/<stem>-<time>.safetensors``, ready to write.

    ``problem`` is a one-line reason when the default path cannot be written. With ``--force``, an
    old -best sibling is removed so that it cannot pass for this run's best.
    """
    if args.out is None:
        try:
            out = _new_run_path(stem, lambda path: _targets(path, seeds))
        except OSError as error:
            return Path("runs"), str(error)
        problem = _unwritable(_targets(out, seeds))
        if problem is not None:
            return out, problem
    else:
        out = Path(args.out)
    if args.force and not _continues(args, out):
        for _, best in _checkpoints(out, seeds):
            best.unlink(missing_ok=True)
    return out, None


def run(args: argparse.Namespace) -> int:
    """Train one run (or a set with ``--seeds``), evaluate it and save it with its metrics."""
    if args.out is not None and Path(args.out).suffix != ".safetensors":
        return _fail("train", f"--out must end in .safetensors, got {args.out}")
    if args.seeds is not None:
        return _run_train_seeds(args)
    if args.out is not None and (problem := _check_out(args, Path(args.out), None)) is not None:
        return _fail("train", problem)
    from carlab.learn import evaluation, loop, runs  # imported late: they pull in JAX
    from carlab.learn.checkpoint import CheckpointError

    try:
        state, config, history = _train_setup(args)
    except (CheckpointError, OSError, ValueError) as error:
        return _fail("train", str(error))
    name = runs.config_name(config)
    out, problem = _prepare_out(args, f"{name}-seed{config.train.seed}", None)
    if problem is not None:
        return _fail("train", problem)
    print(f"training {name} config, seed {config.train.seed}: saving to {out}")
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
    laps, progress = saver.best
    if saver.saves:
        print(
            f"best checkpoint {runs.best_path(out)} (validation: {laps:.0%} laps, progress "
            f"{progress:.2f}; saved {saver.saves}x)"
        )
    else:
        print(f"no best checkpoint: {_no_best(saver)}")
    return 0


def _no_best(saver) -> str:
    """Why a run (its :class:`carlab.learn.runs.BestSaver`) wrote no -best checkpoint: a fresh actor
    that stands still validates at 0 laps, progress 0, which beats nothing."""
    laps, progress = saver.best
    return f"no validation beat {laps:.0%} laps, progress {progress:.2f}"


def _parse_seeds(args: argparse.Namespace) -> list[int]:
    """The seeds of ``--seeds``; ``ValueError`` (one line) if bad or given with ``--seed``."""
    from carlab.learn import seed_runs  # imported late: it pulls in JAX

    seeds = seed_runs.parse_seeds(args.seeds)
    if args.seed is not None:
        raise ValueError("--seed and --seeds contradict each other; give one of them")
    return seeds


def _train_seeds_setup(args: argparse.Namespace, seeds: list[int]):
    """``(states, config, histories)`` to start from: the runs ``<resume stem>-seed<S>.safetensors``
    stacked, or a fresh preset (states None); ``ValueError`` (one line) for contradicting options."""
    from carlab.learn import config as config_lib
    from carlab.learn import runs, seed_runs

    if args.resume is None:
        return None, config_lib.preset(args.config or "default"), [[] for _ in seeds]
    states, config, histories = seed_runs.load_seeds(args.resume, seeds)
    if args.config is not None and not runs.is_preset(config, args.config):
        raise ValueError(f"--config {args.config} disagrees with the resumed runs' config; drop --config")
    return states, config, histories


def _run_train_seeds(args: argparse.Namespace) -> int:
    """``carlab train --seeds``: one run per seed, trained together (:func:`carlab.learn.seeds.train_seeds`)."""
    try:
        seeds = _parse_seeds(args)
    except ValueError as error:
        return _fail("train", str(error))
    if args.out is not None and (problem := _check_out(args, Path(args.out), seeds)) is not None:
        return _fail("train", problem)
    from carlab.learn import evaluation, runs, seed_runs  # imported late: they pull in JAX
    from carlab.learn import seeds as seeds_lib
    from carlab.learn.checkpoint import CheckpointError

    try:
        states, config, histories = _train_seeds_setup(args, seeds)
    except (CheckpointError, OSError, ValueError) as error:
        return _fail("train", str(error))
    name = runs.config_name(seeds_lib.seed_config(config, seeds[0]))
    out, problem = _prepare_out(args, f"{name}-seeds{seeds[0]}-{seeds[-1]}", seeds)
    if problem is not None:
        return _fail("train", problem)
    print(f"training {name} config, seeds {args.seeds}: saving to {runs.seed_path(out, seeds[0])}, ...")
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
    for seed, saver in zip(seeds, savers):
        if not saver.saves:
            print(f"seed {seed}: no -best checkpoint ({_no_best(saver)})")
    return 0
