"""How fast does a preset learn to race? Lap rate on held-out tracks against env steps and wall time.

Trains a preset from scratch (the same :func:`carlab.learn.loop.train` as ``carlab train``) and every
``--eval-every`` env steps drives the run's deterministic driver
(:func:`carlab.learn.policy_checkpoint.driver_params`:
the newest actor, or its policy checkpoint with ``train.checkpoint_tracks``) on ``--tracks`` held-out tracks
(:func:`carlab.learn.evaluation.evaluate`, seeds from :data:`carlab.learn.config.EVAL_FIRST_SEED`). Prints one line
per evaluation (on stderr with ``--json``, whose one object is stdout's) and, at the end, the first env step and wall time at which the lap rate reached
``--target``. Wall time counts training only (compilation included), not the evaluations.
It also evaluates the driver ``carlab train`` would have saved as ``<out>-best.safetensors`` (the
state with the best lap rate on the validation tracks, :class:`carlab.learn.runs.BestSaver`'s rule; the
validation after each chunk counts as training time, as it does in ``carlab train``).

It also prints the cost of one world-model update and one actor-critic update (ms; imagination, and the anchored learner's critics on real steps), each timed alone
on the preset's batch sizes. Results for this repository are in ``benchmarks/learning.md``.

    python benchmarks/learning.py --steps 60000 --eval-every 5000 [--seed 0] [--json]   # the default preset
    python benchmarks/learning.py --config dream --set replay.crash_memory=0   # a variant of a preset
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax

from carlab.learn import config as config_lib
from carlab.learn import evaluation, learners, loop, policy_checkpoint, replay, runs
from carlab.learn import world_model as wm_lib

SUMMARY = ("lap_completion_rate", "mean_progress", "crash_rate", "mean_steps")


def update_costs(config: config_lib.Config, repeats: int = 200) -> dict:
    """Milliseconds per world-model update and per imagination update (best of 3 timings of ``repeats``)."""
    state = loop.init_state(config)
    key = jax.random.PRNGKey(0)
    # Fill the buffer with the start observations: the cost does not depend on the data.
    n = config.replay.capacity
    obs = jax.numpy.tile(state.obs, (n // config.train.num_cars, 1))
    zeros = jax.numpy.zeros(n)
    buffer = replay.add(state.buffer, obs, jax.numpy.zeros((n, 2)), obs, zeros, zeros.astype(bool))
    batch = replay.sample_sequences(
        buffer, key, config.replay.batch_size, config.replay.sequence_length, config.train.num_cars
    )
    wm_params, wm_opt = state.params["world_model"], state.opt_state["world_model"]
    z0 = wm_lib.make_world_model(config.world_model).encode(wm_params, obs[: config.agent.imagine_batch])
    ac_params = {k: v for k, v in state.params.items() if k != "world_model"}
    ac_opt = {k: v for k, v in state.opt_state.items() if k != "world_model"}
    wm = wm_lib.make_world_model(config.world_model)
    # The learner's whole actor-critic update (the anchored one: critics on the batch's real steps too).
    actor_critic = jax.jit(lambda *args: learners.update(*args[:2], wm, *args[2:], config))

    def wm_step():
        return wm_lib.update(wm_params, wm_opt, batch, key, config.world_model)

    def imagination_step():
        return actor_critic(ac_params, ac_opt, wm_params, z0, batch, key)

    out = {}
    for name, fn in (("world_model_update_ms", wm_step), ("imagination_update_ms", imagination_step)):
        jax.block_until_ready(fn())  # compile
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(repeats):
                result = fn()
            jax.block_until_ready(result)
            best = min(best, (time.perf_counter() - start) / repeats * 1e3)
        out[name] = best
    return out


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--seed`` and repeatable ``--set SECTION.FIELD=VALUE`` (read by :func:`config_from_args`)."""
    parser.add_argument("--config", default="default", choices=sorted(config_lib.PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override one config field (a JSON value), e.g. --set agent.discount=0.98; repeatable",
    )


def config_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> config_lib.Config:
    """The preset ``--config`` with ``--seed`` and every ``--set`` applied (a bad one: a one-line error)."""
    return with_sets(config_lib.preset(args.config), args.set, parser, train={"seed": args.seed})


def with_sets(
    config: config_lib.Config, sets: list[str], parser: argparse.ArgumentParser, **overrides
) -> config_lib.Config:
    """``config`` with ``overrides`` (``section={field: value}``) and each ``SECTION.FIELD=VALUE`` of
    ``sets`` (JSON values) applied; a malformed one is ``parser.error``'s one line."""
    overrides = {section: dict(fields) for section, fields in overrides.items()}
    for item in sets:
        name, _, value = item.partition("=")
        section, _, field = name.partition(".")
        if not (section and field and value):
            parser.error(f"--set wants SECTION.FIELD=VALUE, got {item!r}")
        overrides.setdefault(section, {})[field] = json.loads(value)
    return config_lib.with_overrides(config, **overrides)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_options(parser)
    parser.add_argument("--steps", type=int, default=1_200_000)
    parser.add_argument("--eval-every", type=int, default=100_000)
    parser.add_argument("--tracks", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)

    config = config_from_args(args, parser)
    curve, eval_s, next_eval = [], 0.0, args.eval_every
    start = time.perf_counter()

    seen = []  # (episodes, mean progress) of the training chunks since the last evaluation
    saver = runs.BestSaver(None, config)  # carlab train's best-checkpoint rule, kept in memory

    def callback(state, record):
        nonlocal eval_s, next_eval
        saver(state, record)
        if record["episodes_in_chunk"]:
            seen.append((record["episodes_in_chunk"], record["env/progress"]))
        if record["env_steps"] < next_eval:
            return
        episodes = sum(n for n, _ in seen)
        train_progress = sum(n * p for n, p in seen) / episodes if episodes else float("nan")
        seen.clear()
        next_eval += args.eval_every
        t = time.perf_counter()
        result = evaluation.evaluate(policy_checkpoint.driver_policy(state, config), num_tracks=args.tracks)
        eval_s += time.perf_counter() - t
        point = {
            "env_steps": record["env_steps"],
            # env steps the policy-checkpoint tests drove (train.checkpoint_tracks): experience too
            "test_steps": record["test_steps"],
            "wall_s": round(time.perf_counter() - start - eval_s, 1),
            **{k: round(result[k], 3) for k in SUMMARY},
            "train_progress": round(train_progress, 3),  # mean over training episodes (with exploration)
        }
        curve.append(point)
        # With --json the one object at the end is stdout's; each evaluation still shows on stderr.
        print(json.dumps(point), flush=True, file=sys.stderr if args.json else sys.stdout)

    loop.train(config, args.steps, callback=callback, progress=False)
    reached = next((p for p in curve if p["lap_completion_rate"] >= args.target), None)
    best_eval = None
    if saver.best_state is not None:
        best_driver = policy_checkpoint.driver_policy(saver.best_state, config)
        result = evaluation.evaluate(best_driver, num_tracks=args.tracks)
        best_eval = {
            "env_steps": int(saver.best_state.env_steps),
            "val_laps": saver.best[0],
            "val_progress": round(saver.best[1], 3),
            **{k: round(result[k], 3) for k in SUMMARY},
        }
    summary = {
        "config": args.config,
        "overrides": args.set,
        "seed": args.seed,
        "target": args.target,
        "reached": reached,
        "final": curve[-1] if curve else None,
        "best_checkpoint": best_eval,
        "curve": curve,
        **{k: round(v, 3) for k, v in update_costs(config).items()},
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"first at >= {args.target:.0%} laps: {reached}")
        print(f"final: {summary['final']}")
        print(f"best checkpoint (by validation laps): {best_eval}")
        print(
            f"one world-model update {summary['world_model_update_ms']:.2f} ms, "
            f"one actor-critic update {summary['imagination_update_ms']:.2f} ms"
        )
    return summary


if __name__ == "__main__":
    main()
