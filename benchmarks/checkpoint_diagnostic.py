"""Would TD7's policy checkpoints keep the driver that acts steady, and what would the tests cost?
A diagnostic (issue 13).

TD7 (Fujimoto et al. 2023) keeps a *checkpoint* driver beside the learning one: every so often the
newest driver is tested on a few training episodes, and it replaces the checkpoint only when it does
at least as well as the checkpoint did on its own test; the checkpoint is the driver that is
evaluated and deployed. Here the test is the deterministic actor on ``n`` of the 64 training tracks,
a lap each, and those test laps are env steps the learner would have to spend.

``run`` trains a preset from scratch and after every chunk records the actor's lap rate on
``--tracks`` held-out tracks and, per training track, whether it lapped and how many steps that
took, with the chunk's own training episodes (one JSON line per chunk). Training never depends on the evaluations, so every rule can then be
simulated offline: the checkpoint is always an earlier chunk's actor, whose held-out lap rate is
known. ``score`` does that for the rules given and scores the checkpoint's held-out curve with
``benchmarks/stability.py``'s rule (after the first >= 90 %, every later evaluation >= 85 %, and
the last >= 90 %), beside the newest driver's. Results for this repository are in
``benchmarks/learning.md`` (session 16).

    python benchmarks/checkpoint_diagnostic.py run --seed 1 --steps 60000 [--set SECTION.FIELD=VALUE] > ck_seed1.jsonl
    python benchmarks/checkpoint_diagnostic.py score ck_seed*.jsonl --rule 16:2 --rule 8+8:2 --rule 32:4
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stability import score as stability_score

TRAIN_TRACKS = 64  # the training tracks of every preset (seeds 0..63)


def run(argv) -> None:
    """Train and print one JSON line per chunk (see the module doc)."""
    from learning import add_config_options, config_from_args

    from carlab.learn import evaluation, loop, policies

    parser = argparse.ArgumentParser(prog="checkpoint_diagnostic.py run")
    add_config_options(parser)
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--tracks", type=int, default=100, help="held-out tracks per evaluation")
    args = parser.parse_args(argv)
    config = config_from_args(args, parser)
    eval_s, start = 0.0, time.perf_counter()

    def callback(state, record):
        nonlocal eval_s
        t0 = time.perf_counter()
        actor = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
        held = evaluation.evaluate(actor, num_tracks=args.tracks)
        train = evaluation.evaluate(actor, num_tracks=TRAIN_TRACKS, first_seed=0)
        point = {
            "seed": args.seed,
            "env_steps": record["env_steps"],
            "wall_s": round(t0 - start - eval_s, 1),
            "held": round(held["lap_completion_rate"], 3),
            "train_lapped": [int(x) for x in train["lapped"]],
            "train_steps": [int(x) for x in train["steps"]],
            "train_progress": [round(float(x), 4) for x in train["progress"]],  # of one lap, per track
            # the chunk's own (exploring) training episodes: too few to rank drivers by
            "chunk_episodes": record["episodes_in_chunk"],
            "chunk_crash_rate": record["env/crash_rate"],
            "chunk_laps": record["env/laps"],
            "explore_prob": record["explore_prob"],
        }
        eval_s += time.perf_counter() - t0
        print(json.dumps(point), flush=True)

    loop.train(config, args.steps, callback=callback, progress=False)


def parse_rule(text: str) -> tuple[int, int, int, bool]:
    """``"N:EVERY"`` or ``"N+M:EVERY"``, optionally ``":keep"`` after -> (tracks per test, more
    tracks only if all N lap, every, keep ties).

    ``N+M``: a sequential test, tracks ``0..N-1`` first and ``N..N+M-1`` only when all N lapped
    (a failing driver costs N laps, a passing one N + M). A test after every EVERY-th chunk.
    ``keep``: a tie below a full score keeps the checkpoint (``train.checkpoint_keep_ties``).
    """
    try:
        tracks, every, *flag = text.split(":")
        n, _, m = tracks.partition("+")
        n, m, every = int(n), int(m or 0), int(every)
        if flag not in ([], ["keep"]):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--rule wants N:EVERY or N+M:EVERY, optionally :keep (e.g. 16:2, 6+10:2:keep), got {text!r}"
        ) from None
    if not (n >= 1 and m >= 0 and n + m <= TRAIN_TRACKS and every >= 1):
        raise argparse.ArgumentTypeError(
            f"--rule wants 1 <= N, 0 <= M, N + M <= {TRAIN_TRACKS} and EVERY >= 1, got {text!r}"
        )
    return n, m, every, bool(flag)


def rule_name(rule: tuple[int, int, int, bool]) -> str:
    n, m, every, keep = rule
    tracks = f"{n} tracks" if not m else f"{n} tracks, {m} more if all {n} lap"
    return f"checkpoint, {tracks}, every {every} chunks{', ties kept' if keep else ''}"


def checkpointed(
    rows: list[dict], n: int, every: int, cap: int = 1000, more: int = 0, keep_ties: bool = False
) -> tuple[list[float], list[int]]:
    """The checkpoint's held-out lap rate after every chunk, and the env steps its tests have cost
    by then.

    After every ``every``-th chunk the newest actor drives training tracks ``0..n-1`` (and, when it
    lapped all of them, ``n..n+more-1`` too); it becomes the checkpoint when it laps at least as
    many as the checkpoint did on its own test (with ``keep_ties``: more, or all ``n + more``).
    Until the first test the newest actor acts (there is no checkpoint yet). A test lap is stopped
    after ``cap`` steps (a lap not finished by then counts as failed), which caps what a slow
    driver's test costs. The library's rule (:mod:`carlab.learn.policy_checkpoint`) is this one.
    """
    held, best, best_laps, cost, costs = [], None, -1, 0, []
    for i, row in enumerate(rows):
        if (i + 1) % every == 0:
            steps = np.minimum(row["train_steps"], cap)
            passed = np.array(row["train_lapped"], bool) & (np.array(row["train_steps"]) <= cap)
            laps, cost = int(passed[:n].sum()), cost + int(steps[:n].sum())
            if more and laps == n:
                laps, cost = laps + int(passed[n : n + more].sum()), cost + int(steps[n : n + more].sum())
            if laps > best_laps or (laps == n + more if keep_ties else laps == best_laps):
                best, best_laps = i, laps
        held.append(rows[i if best is None else best]["held"])
        costs.append(cost)
    return held, costs


def _scored(rows: list[dict], held: list[float], costs: list[int], grid: int) -> dict:
    """The stability rule on every ``grid``-th chunk (and the last), with the env steps to the first
    90 % counting the tests' too."""
    keep = [i for i in range(len(rows)) if (i + 1) % grid == 0 or i == len(rows) - 1]
    curve = [
        {"env_steps": rows[i]["env_steps"], "wall_s": rows[i]["wall_s"], "lap_completion_rate": held[i]}
        for i in keep
    ]
    scored = stability_score({"curve": curve, "seed": rows[0]["seed"]})
    first = next((i for i in keep if held[i] >= 0.9), None)
    scored["first_env_steps_with_tests"] = None if first is None else rows[first]["env_steps"] + costs[first]
    scored["test_cost"] = costs[-1] / max(rows[-1]["env_steps"], 1)  # test env steps per training env step
    return scored


def score(argv) -> dict:
    """Score the newest driver and each rule's checkpoint on every run (see the module doc)."""
    parser = argparse.ArgumentParser(prog="checkpoint_diagnostic.py score")
    parser.add_argument("runs", nargs="+", type=Path, help="files of `run`'s JSON lines, one seed each")
    parser.add_argument(
        "--rule", type=parse_rule, action="append", metavar="N[+M]:EVERY[:keep]", help="repeatable"
    )
    parser.add_argument(
        "--cap", type=int, default=1000, help="steps after which a test lap is stopped (failed)"
    )
    parser.add_argument(
        "--grid", type=int, default=1, help="score every GRID-th chunk (2: every 5k env steps)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    runs = []
    for path in args.runs:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
        if not rows or "train_lapped" not in rows[0]:
            raise SystemExit(f"{path}: no checkpoint_diagnostic.py run lines in it")
        runs.append(rows)
    out = {"grid": args.grid, "cap": args.cap, "rules": []}
    for rule in [None, *(args.rule or [(16, 0, 2, False)])]:
        scored = []
        for rows in runs:
            if rule is None:
                held, costs = [r["held"] for r in rows], [0] * len(rows)
            else:
                n, more, every, keep = rule
                held, costs = checkpointed(rows, n, every, cap=args.cap, more=more, keep_ties=keep)
            scored.append(_scored(rows, held, costs, args.grid))
        lows = [s["lowest_after"] for s in scored if s["lowest_after"] is not None]
        firsts = [s["first_env_steps_with_tests"] for s in scored]
        reached = sorted(f for f in firsts if f is not None)
        out["rules"].append(
            {
                "rule": "newest driver" if rule is None else rule_name(rule),
                "holds": sum(s["holds"] for s in scored),
                "seeds": len(scored),
                "lowest_after": min(lows) if lows else None,
                "worst_final": min(s["final"] for s in scored),
                "test_cost": round(float(np.median([s["test_cost"] for s in scored])), 2),
                # env steps (training and tests) to the first >= 90 %: median seed, worst seed (None: never)
                "first_median": float(np.median(firsts)) if len(reached) == len(firsts) else None,
                "first_worst": reached[-1] if len(reached) == len(firsts) else None,
                "per_seed": scored,
            }
        )
    if args.json:
        print(json.dumps(out))
    else:
        print(
            "| driver | seeds that hold | lowest after a first 90 % | worst final "
            "| first 90 % at, env steps with the tests' (median / worst seed) | test env steps per training step |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for r in out["rules"]:
            first = (
                f"{r['first_median']:,.0f} / {r['first_worst']:,}"
                if r["first_worst"] is not None
                else "not all"
            )
            print(
                f"| {r['rule']} | {r['holds']}/{r['seeds']} | {r['lowest_after']} | {r['worst_final']} "
                f"| {first} | {r['test_cost']} |"
            )
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ("run", "score"):
        raise SystemExit("usage: checkpoint_diagnostic.py {run,score} ... (see --help of each)")
    return (run if argv[0] == "run" else score)(argv[1:])


if __name__ == "__main__":
    main()
