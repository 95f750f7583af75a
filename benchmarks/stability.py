"""Does learning stay learned? Issue 13's stability rule, scored on ``benchmarks/learning.py --json`` runs.

For every run (one seed): the first evaluation at >= ``--target`` laps (env steps and training wall
time), the lowest lap rate of every evaluation after it, how many of those are >= ``--floor``, and
the final one. A run *holds* when all its later evaluations are >= ``--floor`` and its final one is
>= ``--target`` (issue 13: "after a seed first reaches 90 %, every later evaluation is >= 85 %, and
the final checkpoint laps >= 90 %"). Then, over the seeds, the median and the worst lap rate at
each evaluation (env steps) and at round wall times (a seed's rate at time t is that of its last
evaluation by t).

    python benchmarks/stability.py benchmarks/results/anchored_seed*.json            # Markdown tables
    python benchmarks/stability.py benchmarks/results/anchored_seed*.json --json     # one JSON object
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(path: Path) -> dict:
    """One ``learning.py --json`` summary (the file's last JSON line)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    if "curve" not in summary or "seed" not in summary:
        raise SystemExit(f"{path}: no benchmarks/learning.py --json summary in it")
    if not summary["curve"]:
        raise SystemExit(f"{path}: the run has no evaluations")
    return summary


def score(run: dict, *, target: float = 0.9, floor: float = 0.85) -> dict:
    """The stability rule on one run (see the module docstring)."""
    curve = run["curve"]
    laps = [p["lap_completion_rate"] for p in curve]
    first = next((i for i, rate in enumerate(laps) if rate >= target), None)
    after = laps[first + 1 :] if first is not None else []
    return {
        "seed": run["seed"],
        # experience: the training env steps plus those the policy-checkpoint tests drove (if any)
        "first_env_steps": curve[first]["env_steps"] + curve[first].get("test_steps", 0)
        if first is not None
        else None,
        "first_wall_s": curve[first]["wall_s"] if first is not None else None,
        "lowest_after": min(after) if after else None,
        "kept": sum(rate >= floor for rate in after),
        "later": len(after),
        "final": laps[-1],
        "final_env_steps": curve[-1]["env_steps"],
        "final_wall_s": curve[-1]["wall_s"],
        "holds": first is not None and all(rate >= floor for rate in after) and laps[-1] >= target,
    }


def over_steps(runs: list[dict]) -> list[dict]:
    """Median and worst seed per evaluation, up to the shortest run (the seeds evaluate together)."""
    length = min(len(run["curve"]) for run in runs)
    rows = []
    for i in range(length):
        rates = [run["curve"][i]["lap_completion_rate"] for run in runs]
        rows.append(
            {
                "env_steps": int(np.median([run["curve"][i]["env_steps"] for run in runs])),
                "median": float(np.median(rates)),
                "worst": float(min(rates)),
                "median_wall_s": float(np.median([run["curve"][i]["wall_s"] for run in runs])),
            }
        )
    return rows


def over_time(runs: list[dict], every_s: float) -> list[dict]:
    """Median and worst seed at ``every_s``, ``2 every_s``... seconds of training, while every seed
    has run that long; a seed not yet evaluated counts as 0 laps."""
    end = min(run["curve"][-1]["wall_s"] for run in runs)
    rows = []
    for t in np.arange(every_s, end + 1e-9, every_s):
        rates = []
        for run in runs:
            seen = [p["lap_completion_rate"] for p in run["curve"] if p["wall_s"] <= t]
            rates.append(seen[-1] if seen else 0.0)
        rows.append({"wall_s": float(t), "median": float(np.median(rates)), "worst": float(min(rates))})
    return rows


def markdown(out: dict, *, target: float, floor: float) -> str:
    """:func:`main`'s result as three tables: per seed, over env steps, over wall time."""
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    heading = (
        f"{out['holds']} of {out['seeds']} seeds hold (after the first >= {target:.0%}, every evaluation "
        f">= {floor:.0%}, and the last >= {target:.0%})"
    )
    columns = (
        f"| seed | first >= {target:.0%} at (env steps) | wall time there | lowest after it "
        f"| evaluations >= {floor:.0%} after it | last | holds |"
    )
    lines = [heading, "", columns, "|---:|---:|---:|---:|---:|---:|:---:|"]
    for s in out["per_seed"]:
        lines.append(
            f"| {s['seed']} | {fmt(s['first_env_steps'], ',')} | {fmt(s['first_wall_s'], '.0f')} s "
            f"| {fmt(s['lowest_after'], '.2f')} | {s['kept']}/{s['later']} | {s['final']:.2f} "
            f"| {'yes' if s['holds'] else '**no**'} |"
        )
    lines += ["", "| env steps | median seed | worst seed | median wall time (s) |", "|---:|---:|---:|---:|"]
    lines += [
        f"| {r['env_steps']:,} | {r['median']:.2f} | {r['worst']:.2f} | {r['median_wall_s']:.0f} |"
        for r in out["over_env_steps"]
    ]
    lines += ["", "| training wall time (s) | median seed | worst seed |", "|---:|---:|---:|"]
    lines += [f"| {r['wall_s']:.0f} | {r['median']:.2f} | {r['worst']:.2f} |" for r in out["over_wall_time"]]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "summaries", nargs="+", type=Path, help="benchmarks/learning.py --json files, one seed each"
    )
    parser.add_argument("--target", type=float, default=0.9, help="the lap rate a seed must first reach")
    parser.add_argument(
        "--floor", type=float, default=0.85, help="the lap rate every later evaluation must keep"
    )
    parser.add_argument("--every-s", type=float, default=60.0, help="spacing of the wall-time table (s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of Markdown")
    args = parser.parse_args(argv)
    if not 0 < args.floor <= args.target <= 1:
        parser.error(f"want 0 < --floor <= --target <= 1, got {args.floor} and {args.target}")
    if args.every_s <= 0:
        parser.error(f"--every-s must be > 0, got {args.every_s}")
    runs = [load(path) for path in args.summaries]
    scores = [score(run, target=args.target, floor=args.floor) for run in runs]
    out = {
        "holds": sum(s["holds"] for s in scores),
        "seeds": len(scores),
        "per_seed": scores,
        "over_env_steps": over_steps(runs),
        "over_wall_time": over_time(runs, args.every_s),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(markdown(out, target=args.target, floor=args.floor))
    return out


if __name__ == "__main__":
    main()
