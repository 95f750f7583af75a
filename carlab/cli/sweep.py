"""``carlab sweep``: a grid of config knobs x seeds on Ray Tune, on a local Ray or a cluster.

    carlab sweep --config tiny --set agent.actor_lr=1e-4,3e-4 --seeds 0-3 --steps 20000 --out sweeps/lr
    carlab sweep sweep.yaml --address ray://head:10001 --scheduler asha

Ray is an optional extra (``pip install -e ".[sweep]"``); nothing of Ray or JAX is imported until
the command runs. Exit status: 0 done, 2 bad options / no Ray / no cluster, 1 when every trial
failed, 130 on Ctrl-C (the finished trials' rows stay in ``results.csv``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

from carlab.cli.common import _fail, _int_at_least, _unwritable
from carlab.learn.config import PRESETS

INSTALL_HINT = 'Ray is not installed; install the sweep extra: pip install -e ".[sweep]"'


def add_parser(subparsers) -> None:
    """Declare ``carlab sweep``'s arguments."""
    parser = subparsers.add_parser(
        "sweep",
        help="sweep config knobs x seeds on Ray Tune (local Ray or a cluster)",
        description=(
            "Train every combination of the knobs' values (a trial) for every seed, the seeds of a "
            "trial vmapped in one call, on Ray Tune. Writes DIR/results.csv (one row per trial and "
            "seed, as trials finish), DIR/laps-by-<knob>.png per knob and the best trial's runs "
            'DIR/best-seed<S>.safetensors. Needs the sweep extra: pip install -e ".[sweep]".'
        ),
    )
    parser.add_argument(
        "grid", nargs="?", metavar="FILE.yaml", help="a sweep file (keys config, steps, seeds, knobs)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KNOB=V1,V2",
        help="a knob and its values, e.g. agent.actor_lr=1e-4,3e-4 (repeatable; replaces the file's)",
    )
    parser.add_argument("--seeds", metavar="LIST", help="seeds of every trial: 0-3, 0,3,5 (default 0-3)")
    parser.add_argument(
        "--steps", type=_int_at_least(1), metavar="N", help="env steps per run (default 100000)"
    )
    parser.add_argument(
        "--config", choices=sorted(PRESETS), help="preset the trials start from (default: default)"
    )
    parser.add_argument("--out", metavar="DIR", help="results folder (default sweeps/sweep-<date>-<time>)")
    parser.add_argument(
        "--address", metavar="ADDR", help="a running Ray cluster: ray://host:10001, host:6379 or auto"
    )
    parser.add_argument(
        "--cpus-per-trial", type=_int_at_least(1), default=1, metavar="N", help="cores per trial (default 1)"
    )
    parser.add_argument(
        "--scheduler", choices=("fifo", "asha"), default="fifo", help="asha stops poor trials early"
    )
    parser.add_argument(
        "--storage",
        metavar="PATH",
        help="Tune's checkpoint storage (default DIR/tune; on a cluster a shared path or URI)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _sweep_of(args: argparse.Namespace):
    """The :class:`carlab.sweep.grid.Sweep` of the file and options (``ValueError``, one line, if bad)."""
    from carlab.sweep import grid

    knobs = dict(grid.parse_set(text) for text in args.set)
    options = {"seeds": args.seeds, "steps": args.steps, "preset": args.config}
    if args.grid is not None:
        return grid.load_sweep(args.grid, knobs=knobs, **options)
    if not knobs:
        raise ValueError("give the knobs to sweep: --set section.field=v1,v2 or a FILE.yaml")
    return grid.make_sweep(knobs=knobs, **{k: v for k, v in options.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    """Run ``carlab sweep``."""
    if importlib.util.find_spec("ray") is None:
        return _fail("sweep", INSTALL_HINT)
    try:
        sweep = _sweep_of(args)
    except ValueError as error:
        return _fail("sweep", str(error))
    out = Path(args.out or f"sweeps/sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    problem = _unwritable([out / "results.csv"])
    if problem is not None:
        return _fail("sweep", problem)
    if args.address is None and args.cpus_per_trial > (os.cpu_count() or 1):
        return _fail(
            "sweep", f"--cpus-per-trial {args.cpus_per_trial}: this machine has {os.cpu_count()} cores"
        )
    from carlab.sweep import results
    from carlab.sweep.tune import ClusterError, run_sweep  # imported late: Ray

    trials = len(sweep.trials())
    print(f"sweep: {trials} trials x {len(sweep.seeds)} seeds, {sweep.steps:,} env steps per run -> {out}")
    try:
        outcome = run_sweep(
            sweep,
            out,
            address=args.address,
            cpus_per_trial=args.cpus_per_trial,
            scheduler=None if args.scheduler == "fifo" else args.scheduler,
            storage=args.storage,
            progress=not args.no_progress,
        )
    except ClusterError as error:
        return _fail("sweep", str(error))
    except KeyboardInterrupt:
        rows = results.read_results(out)
        done = len({row["trial"] for row in rows})
        return _fail(
            "sweep", f"interrupted; the rows of {done} finished trials are in {out / 'results.csv'}", 130
        )
    for line in outcome.errors:
        print(f"failed: {line}")
    print(f"results {outcome.results}; figures {', '.join(map(str, outcome.figures)) or '-'}")
    if outcome.best_trial is not None:
        best = results.medians(results.read_results(out))[outcome.best_trial]
        files = ", ".join(map(str, outcome.best_files))
        print(f"best trial {outcome.best_trial} (median best validation {best:.0%} laps): {files}")
    if outcome.interrupted:
        return _fail(
            "sweep",
            f"interrupted; {outcome.finished} of {outcome.total} trials finished, their rows are kept",
            130,
        )
    if outcome.errors and not outcome.finished:
        return _fail("sweep", "every trial failed", 1)
    return 0
