"""Many seeds in one jitted call against the same seeds one after another: training throughput and memory.

For each S in ``--seeds`` (default 1, 2, 4, 8, 16) it trains S runs of ``--config`` (default ``race``)
together with :func:`carlab.learn.seeds.train_seed_rounds` and reports:

* env steps/s of all S runs together, training only (no validation or evaluation), compile excluded:
  the first call compiles and runs past the replay warm-up, then ``--rounds`` rounds are timed, best
  of ``--repeats`` (the machine is shared and noisy; the best repeat is closest to what the code can do);
* the ratio to S runs one after another: the single-run rate of :func:`carlab.learn.loop.train_rounds`
  is measured once (S sequential runs take S times as long), so ratio = rate of S together / single rate;
* memory: the bytes of the S stacked TrainStates (the device buffers a run carries, exact: the sum of
  their ``nbytes``) and the peak resident memory of the process that trained them
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which includes JAX, XLA's compiler and the
  program's temporaries). Each S runs in its own subprocess, so each peak is that S's alone.

    python benchmarks/seeds_speed.py [--config race] [--seeds 1,2,4,8,16] [--json]
    python benchmarks/seeds_speed.py --quick      # a smoke run: tiny preset, S = 2, in this process

``--json`` prints one object with ``ratio_<S>_seeds`` and ``steps_per_s_<S>_seeds`` keys. Target: 8
seeds in one call at >= 4x the throughput of 8 sequential runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time

TARGET_SEEDS, TARGET_RATIO = 8, 4.0


def measure(config_name: str, count: int, *, rounds: int, repeats: int) -> dict:
    """Train ``count`` runs together (0: one run with ``loop.train_rounds``); their env steps/s and memory."""
    import jax
    import jax.numpy as jnp

    from carlab.learn import config as config_lib
    from carlab.learn import loop, seeds

    config = config_lib.preset(config_name)
    params = loop.env_params(config)
    if count == 0:
        state = loop.init_state(config, params)
        train = lambda state, n: loop.train_rounds(state, jnp.int32(n), params, config)
    else:
        state = seeds.init_states(config, range(count), params)
        train = lambda state, n: seeds.train_seed_rounds(state, jnp.int32(n), params, config)
    per_round = config.train.num_cars * config.train.train_every
    warm_rounds = math.ceil(config.replay.warmup / per_round) + 1  # the timed rounds all train
    start = time.perf_counter()
    state = jax.block_until_ready(train(state, warm_rounds)[0])
    first_call_s = time.perf_counter() - start
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        state = jax.block_until_ready(train(state, rounds)[0])
        best = min(best, time.perf_counter() - start)
    return {
        "seeds": count,
        "steps_per_s": max(count, 1) * rounds * per_round / best,
        "state_mb": sum(x.nbytes for x in jax.tree.leaves(state)) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "first_call_s": first_call_s,
        "device": jax.devices()[0].device_kind,
    }


def _measure_apart(config_name: str, count: int, *, rounds: int, repeats: int) -> dict:
    """:func:`measure` in a fresh Python process (so its peak memory is its own)."""
    argv = [sys.executable, __file__, "--worker", str(count), "--config", config_name]
    argv += ["--rounds", str(rounds), "--repeats", str(repeats)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"seeds_speed: the worker for S={count} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts like 1,2,4,8, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"every count must be at least 1, got {text!r}")
    return counts


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="race", help="preset (default race)")
    parser.add_argument("--seeds", type=_counts, default=[1, 2, 4, 8, 16], metavar="LIST", help="S values")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per timed call (default 20)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per S, best kept (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny, S = 2, in this process")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        result = measure(args.config, args.worker, rounds=args.rounds, repeats=args.repeats)
        print(json.dumps(result))
        return result
    if args.quick:
        args.config, args.seeds, args.rounds, args.repeats = "tiny", [2], 5, 1
    run = measure if args.quick else _measure_apart
    single = run(args.config, 0, rounds=args.rounds, repeats=args.repeats)
    rows = [run(args.config, s, rounds=args.rounds, repeats=args.repeats) for s in args.seeds]
    summary = {
        "config": args.config,
        "device": single["device"],
        "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
        "rounds": args.rounds,
        "repeats": args.repeats,
        "single_steps_per_s": single["steps_per_s"],
        "single_peak_rss_mb": single["peak_rss_mb"],
        "single_state_mb": single["state_mb"],
        "rows": rows,
    }
    for row in rows:
        row["ratio"] = row["steps_per_s"] / single["steps_per_s"]
        summary[f"steps_per_s_{row['seeds']}_seeds"] = row["steps_per_s"]
        summary[f"ratio_{row['seeds']}_seeds"] = row["ratio"]
    if f"ratio_{TARGET_SEEDS}_seeds" in summary:
        summary["target_met"] = summary[f"ratio_{TARGET_SEEDS}_seeds"] >= TARGET_RATIO
    if args.json:
        print(json.dumps(summary))
        return summary
    print(
        f"{args.config} config on {summary['device']}: one run alone {single['steps_per_s']:,.0f} env steps/s"
    )
    print(
        f"{'S':>4} {'env steps/s (all)':>18} {'per run':>9} {'x S sequential':>15} {'states MB':>10} {'peak RSS MB':>12}"
    )
    for row in rows:
        print(
            f"{row['seeds']:>4} {row['steps_per_s']:>18,.0f} {row['steps_per_s'] / row['seeds']:>9,.0f} "
            f"{row['ratio']:>15.2f} {row['state_mb']:>10.1f} {row['peak_rss_mb']:>12.0f}"
        )
    if "target_met" in summary:
        verdict = "met" if summary["target_met"] else "NOT met"
        print(f"target {TARGET_SEEDS} seeds >= {TARGET_RATIO:g}x sequential: {verdict}")
    return summary


if __name__ == "__main__":
    main()
