"""Evaluate a driver on held-out tracks: one car per track, one lap each, no exploration.

    driver = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
    result = evaluate(driver, num_tracks=100)
    print(result["lap_completion_rate"], result["mean_progress"])

All cars drive at once in one jitted ``lax.scan`` over ``max_steps`` steps of ``jax.vmap(env.step_env)``
(no auto-reset). A car's episode ends at the first of:

* a crash (``terminated``: off the track or into an obstacle) — counted in ``crash_rate``;
* one full lap (``state.laps >= 1``: all ten checkpoints in order) — counted in ``lap_completion_rate``;
* ``max_steps`` steps (truncation).

From then on the car is frozen by an ``alive`` mask: its later steps change nothing and count for
nothing. The tracks are ``range(first_seed, first_seed + num_tracks)``, by default from
:data:`carlab.learn.config.EVAL_FIRST_SEED`, a range training never uses.

Metrics (over the ``num_tracks`` episodes):

* ``lap_completion_rate`` — fraction of tracks on which the car drove a full lap without crashing.
* ``mean_progress`` — mean of ``min(best_progress, 1)`` at the episode's end: how much of one lap was
  covered (0 = never left the start line, 1 = a full lap).
* ``crash_rate`` — fraction of episodes that ended in a crash.
* ``mean_return`` — mean sum of env rewards up to and including the episode's last step.
* ``mean_steps`` — mean episode length in steps.
* ``num_tracks``, ``first_seed``, ``max_steps`` — what was evaluated.
* per-track lists ``progress``, ``lapped``, ``crashed``, ``return``, ``steps`` (index i is track
  ``first_seed + i``).

The driver is a :class:`carlab.learn.policies.Policy`, called as ``policy(obs (N, 6), t)``. The
jitted rollout takes it as an argument, so its weights are traced: a second actor of the same sizes
(or a random policy with another key) evaluates with no new compilation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from carlab.checks import check_int
from carlab.learn.config import EVAL_FIRST_SEED
from carlab.learn.policies import Policy
from carlab.sim import env


@functools.lru_cache(maxsize=8)
def eval_env_params(first_seed: int, num_tracks: int, max_steps: int) -> env.EnvParams:
    """The held-out tracks ``first_seed ... first_seed + num_tracks - 1``, without auto-reset (cached)."""
    return env.EnvParams.from_seeds(
        range(first_seed, first_seed + num_tracks), auto_reset=False, max_steps=max_steps
    )


@functools.partial(jax.jit, static_argnames="max_steps")
def rollout(policy: Policy, params: env.EnvParams, max_steps: int):
    """Drive one car per track of ``params`` (no auto-reset) for ``max_steps`` steps; returns per-car
    episode results as arrays: ``progress``, ``lapped``, ``crashed``, ``return``, ``steps`` (the
    steps each car drove before its crash, lap or truncation). Jittable inside other programs:
    :func:`carlab.learn.policy_checkpoint.checkpoint_test` drives its tests with it."""
    num_tracks = params.num_tracks
    obs, state = jax.vmap(env.reset, in_axes=(None, None, 0))(
        jax.random.PRNGKey(0), params, jnp.arange(num_tracks, dtype=jnp.int32)
    )
    step = jax.vmap(env.step_env, in_axes=(None, 0, 0, None))
    zeros_f, false = jnp.zeros(num_tracks, jnp.float32), jnp.zeros(num_tracks, bool)
    carry = (obs, state, jnp.ones(num_tracks, bool), zeros_f, jnp.zeros(num_tracks, jnp.int32), false, false)

    def body(carry, t):
        obs, state, alive, ret, steps, crashed, lapped = carry
        action = policy(obs, t)
        next_obs, next_state, reward, terminated, truncated, _ = step(None, state, action, params)
        ret = ret + jnp.where(alive, reward, 0.0)
        steps = steps + alive.astype(jnp.int32)
        now_crashed = alive & terminated
        now_lapped = alive & ~terminated & (next_state.laps >= 1)
        # Freeze finished cars: their state stays where the episode ended.
        keep = lambda new, old: jnp.where(alive.reshape(alive.shape + (1,) * (new.ndim - 1)), new, old)
        state = jax.tree.map(keep, next_state, state)
        obs = keep(next_obs, obs)
        alive = alive & ~terminated & ~truncated & ~now_lapped
        return (obs, state, alive, ret, steps, crashed | now_crashed, lapped | now_lapped), None

    carry, _ = jax.lax.scan(body, carry, jnp.arange(max_steps, dtype=jnp.int32))
    _, state, _, ret, steps, crashed, lapped = carry
    return {
        "progress": jnp.minimum(state.best_progress, 1.0),
        "lapped": lapped,
        "crashed": crashed,
        "return": ret,
        "steps": steps,
    }


def evaluate(
    policy: Policy, *, num_tracks: int = 100, first_seed: int = EVAL_FIRST_SEED, max_steps: int = 1000
) -> dict:
    """Drive ``policy`` once round each held-out track; see the module doc for the metrics.

    Args:
        policy: a :class:`carlab.learn.policies.Policy` (``policies.actor(...)`` for a trained run).
        num_tracks: tracks to drive, one car each.
        first_seed: seed of the first track.
        max_steps: steps before an episode is truncated.
    Returns:
        A dict of plain Python numbers and lists.
    """
    if not isinstance(policy, Policy):
        raise TypeError(
            "evaluate: policy must be a carlab.learn.policies.Policy (policies.actor, policies.random, "
            f"policies.from_function), got {type(policy).__name__}"
        )
    for name, value, low in (
        ("num_tracks", num_tracks, 1),
        ("max_steps", max_steps, 1),
        ("first_seed", first_seed, 0),
    ):
        check_int(value, name, low=low, where="evaluate")
    env_params = eval_env_params(int(first_seed), int(num_tracks), int(max_steps))
    out = jax.device_get(rollout(policy, env_params, int(max_steps)))
    progress, lapped, crashed = out["progress"], out["lapped"], out["crashed"]
    return {
        "lap_completion_rate": float(np.mean(lapped)),
        "mean_progress": float(np.mean(progress)),
        "crash_rate": float(np.mean(crashed)),
        "mean_return": float(np.mean(out["return"])),
        "mean_steps": float(np.mean(out["steps"])),
        "num_tracks": int(num_tracks),
        "first_seed": int(first_seed),
        "max_steps": int(max_steps),
        "progress": [float(p) for p in progress],
        "lapped": [bool(v) for v in lapped],
        "crashed": [bool(v) for v in crashed],
        "return": [float(r) for r in out["return"]],
        "steps": [int(s) for s in out["steps"]],
    }


SUMMARY_KEYS = ("lap_completion_rate", "mean_progress", "crash_rate", "mean_return", "mean_steps")


def format_summary(result: dict) -> str:
    """A small human-readable table of an :func:`evaluate` result."""
    first, last = result["first_seed"], result["first_seed"] + result["num_tracks"] - 1
    heading = f"evaluated on {result['num_tracks']} held-out tracks (seeds {first}..{last}"
    lines = [f"{heading}, at most {result['max_steps']} steps)"]
    labels = {
        "lap_completion_rate": "lap completion rate",
        "mean_progress": "mean progress (laps)",
        "crash_rate": "crash rate",
        "mean_return": "mean return",
        "mean_steps": "mean steps",
    }
    lines += [f"  {labels[k]:<22} {result[k]:>10.3f}" for k in SUMMARY_KEYS]
    return "\n".join(lines)
