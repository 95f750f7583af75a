"""Would planning with the world model at decision time lift the actor's dips? A diagnostic (issue 13).

Trains a preset from scratch (:func:`carlab.learn.loop.train`) and after every chunk drives, on
``--tracks`` held-out tracks, the deterministic actor and one shooting planner per ``--plan H,K,SIGMA``:
at every step it rolls ``K`` candidate action sequences ``H`` imagined steps through the world model
(each the actor's own action along the imagined path plus Gaussian noise ``SIGMA`` held for the whole
sequence; candidate 0 has none), scores each by the discounted predicted rewards, weighted by the
continue head's chance of still being alive, plus the discounted minimum of the twin critics at the
end (the anchored learner's critics, at the actor's action there), and applies the first action of
the best one. Training never depends on the evaluations, so the actor's curve is the run's own.
Results for this repository are in ``benchmarks/learning.md`` (session 15).

    python benchmarks/planning_diagnostic.py --seed 1 --steps 36000 --plan 5,32,0.3 --plan 10,32,0.3 --json
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from carlab.learn import agent as agent_lib
from carlab.learn import anchored, evaluation, loop, policies
from carlab.learn import config as config_lib
from carlab.learn import world_model as wm_lib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning import add_config_options, config_from_args


@functools.cache
def _plan_apply(config: config_lib.Config, horizon: int, candidates: int, sigma: float):
    """The planner's ``apply(params, obs, t)`` for these sizes (cached: one compilation each)."""
    wm, agent = wm_lib.make_world_model(config.world_model), agent_lib.make_agent(config.agent)
    _, critic = anchored.make_critic(config.agent)
    discount = config.agent.discount

    def apply(params, obs, t):
        wm_params = params["world_model"]
        z = wm.encode(wm_params, obs)
        noise = sigma * jax.random.normal(jax.random.fold_in(params["key"], t), (candidates, obs.shape[0], 2))
        noise = noise.at[0].set(0.0)  # candidate 0: the actor's own plan

        def step(carry, _):
            z, alive, ret, scale = carry
            mean, _ = agent.dist(params["actor"], z)
            action = jnp.clip(jnp.tanh(mean) + noise, -1.0, 1.0)
            z = wm.dynamics(wm_params, z, action)
            ret = ret + scale * alive * wm.reward(wm_params, z)
            alive = alive * jax.nn.sigmoid(wm.continue_logit(wm_params, z))
            return (z, alive, ret, scale * discount), action

        ones = jnp.ones((candidates, obs.shape[0]))
        carry = (jnp.broadcast_to(z, (candidates, *z.shape)), ones, 0.0 * ones, ones)
        (z_end, alive, ret, scale), actions = jax.lax.scan(step, carry, None, horizon)
        mean, _ = agent.dist(params["actor"], z_end)
        value = jnp.min(critic(params["critic"], z_end, jnp.tanh(mean)), axis=0)
        best = jnp.argmax(ret + scale * alive * value, axis=0)
        return actions[0][best, jnp.arange(obs.shape[0])]

    return apply


def planner(
    params, config: config_lib.Config, horizon: int, candidates: int, sigma: float
) -> policies.Policy:
    """A shooting planner over a run's world model, actor and critics (see the module doc)."""
    if config.agent.learner != "anchored":
        raise ValueError(f"planner: needs the anchored learner's twin critics, not {config.agent.learner!r}")
    weights = {k: params[k] for k in ("world_model", "actor", "critic")}
    weights["key"] = jax.random.PRNGKey(7)
    return policies.Policy(apply=_plan_apply(config, horizon, candidates, sigma), params=weights)


def parse_plan(text: str) -> tuple[int, int, float]:
    """``"H,K,SIGMA"`` -> (horizon >= 1, candidates >= 1, sigma >= 0)."""
    try:
        h, k, s = text.split(",")
        plan = (int(h), int(k), float(s))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--plan wants H,K,SIGMA (e.g. 5,32,0.3), got {text!r}") from None
    if plan[0] < 1 or plan[1] < 1 or plan[2] < 0:
        raise argparse.ArgumentTypeError(f"--plan wants H >= 1, K >= 1, SIGMA >= 0, got {text!r}")
    return plan


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_options(parser)
    parser.add_argument("--steps", type=int, default=36_000)
    parser.add_argument("--tracks", type=int, default=100, help="held-out tracks per evaluation")
    parser.add_argument("--plan", type=parse_plan, action="append", metavar="H,K,SIGMA", help="repeatable")
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    plans = args.plan or [(5, 32, 0.3)]
    config = config_from_args(args, parser)
    if config.agent.learner != "anchored":
        parser.error(
            f"--config {args.config} uses the {config.agent.learner} learner; planning needs 'anchored'"
        )
    names = [f"plan_{h}_{k}_{s:g}" for h, k, s in plans]
    curve, eval_s, start = [], 0.0, time.perf_counter()

    def callback(state, record):
        nonlocal eval_s
        t0 = time.perf_counter()
        actor = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
        point = {"env_steps": record["env_steps"], "wall_s": round(t0 - start - eval_s, 1)}
        point["actor"] = round(evaluation.evaluate(actor, num_tracks=args.tracks)["lap_completion_rate"], 3)
        for name, plan in zip(names, plans):
            t1 = time.perf_counter()
            result = evaluation.evaluate(planner(state.params, config, *plan), num_tracks=args.tracks)
            point[name] = round(result["lap_completion_rate"], 3)
            point[name + "_eval_s"] = round(time.perf_counter() - t1, 1)
        eval_s += time.perf_counter() - t0
        curve.append(point)
        print(json.dumps(point), flush=True, file=sys.stderr if args.json else sys.stdout)

    loop.train(config, args.steps, callback=callback, progress=False)
    summary = {
        "config": args.config,
        "seed": args.seed,
        "tracks": args.tracks,
        "plans": names,
        "curve": curve,
    }
    if args.json:
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
