"""Does a trained driver stay trained? Resume a run (by default the pretrained agent, as the lab does
when a student presses Start) for a wall-clock budget, evaluating on held-out tracks as it goes.

Every ``--eval-every`` env steps the run's deterministic driver
(:func:`carlab.learn.policy_checkpoint.driver_params`:
the newest actor, or its policy checkpoint when the config keeps one) drives ``--tracks`` held-out tracks
(:func:`carlab.learn.evaluation.evaluate`). Prints one JSON line per evaluation and a summary: the
lowest lap rate, the share of evaluations at or above ``--floor``, and the final lap rate. Wall time
counts training only (the evaluations are not counted). Figures are in ``benchmarks/learning.md``.

    python benchmarks/resume.py [--run models/agent.safetensors] [--minutes 10] [--json]
    python benchmarks/resume.py --set train.checkpoint_tracks=6 --set train.checkpoint_more_tracks=10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from carlab.learn import evaluation, loop, policy_checkpoint, runs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import with_sets


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="models/agent.safetensors", help="run checkpoint to resume")
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall time to resume for")
    parser.add_argument("--eval-every", type=int, default=10_000, help="env steps between evaluations")
    parser.add_argument("--tracks", type=int, default=100, help="held-out tracks per evaluation")
    parser.add_argument("--floor", type=float, default=0.85, help="the lap rate a driver must keep")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="change one field of the run's config (a JSON value) before resuming; repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)

    state, config, _, _ = runs.load_run(args.run)
    config = with_sets(config, args.set, parser)
    curve, trained_s = [], 0.0

    def evaluate(state) -> dict:
        result = evaluation.evaluate(policy_checkpoint.driver_policy(state, config), num_tracks=args.tracks)
        point = {
            "env_steps": int(state.env_steps),
            "test_steps": int(state.driver.test_steps),  # policy-checkpoint tests' env steps
            "wall_s": round(trained_s, 1),
            **{k: round(result[k], 3) for k in ("lap_completion_rate", "mean_progress", "crash_rate")},
        }
        curve.append(point)
        if not args.json:
            print(json.dumps(point), flush=True)
        return point

    evaluate(state)
    while trained_s < args.minutes * 60.0:
        start = time.perf_counter()
        state, _ = loop.train(config, args.eval_every, state=state, progress=False)
        trained_s += time.perf_counter() - start
        evaluate(state)
    laps = [p["lap_completion_rate"] for p in curve]
    summary = {
        "run": args.run,
        "overrides": args.set,
        "minutes": args.minutes,
        "evaluations": len(curve),
        "lowest": min(laps),
        "share_at_floor": round(sum(x >= args.floor for x in laps) / len(laps), 3),
        "floor": args.floor,
        "final": laps[-1],
        "curve": curve,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{len(curve)} evaluations over {trained_s / 60:.1f} min of training: lowest {min(laps):.2f}, "
            f"{summary['share_at_floor']:.0%} at >= {args.floor:.0%}, final {laps[-1]:.2f}"
        )
    return summary


if __name__ == "__main__":
    main()
