"""Policies: one type, one signature, for every driver in carlab.

A :class:`Policy` is a frozen dataclass pytree of two fields:

* ``apply(params, obs (..., 6), t) -> actions (..., 2)``, a static, hashable function (pytree
  metadata): it says *how* the policy drives;
* ``params``, its traced arrays (pytree data): network weights, a PRNG key, noise levels.

Call it as ``policy(obs, t)``, ``t`` being the step index (an int32 scalar; policies that need no
clock ignore it). Because the weights are data, not constants captured in a closure, a jitted
function that takes a policy as an argument (:func:`carlab.learn.evaluation.evaluate`,
:func:`carlab.course.experience.collect`) compiles once per ``apply`` and shape: a second actor of
the same sizes, or a random policy with a new key, drives with no new compilation::

    driver = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
    evaluate(driver, num_tracks=100)
    evaluate(policies.random(jax.random.key(0), throttle_low=0.0, hold=8))
    evaluate(policies.from_function(lambda obs: jnp.zeros(obs.shape[:-1] + (2,))))
    play = policies.numpy_driver(driver)  # NumPy obs (6,) -> action (2,), for one car

A policy of your own with a clock is ``Policy(apply=my_apply, params=my_arrays)``; define
``my_apply`` once (at module level), so every call shares its compilation.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from carlab.checks import check_int
from carlab.learn import agent as agent_lib
from carlab.learn import world_model as wm_lib
from carlab.learn.config import AgentConfig, WorldModelConfig
from carlab.sim import env

Apply = Callable[[Any, jax.Array, jax.Array], jax.Array]  # (params, obs (..., 6), t) -> actions (..., 2)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["params"], meta_fields=["apply"])
@dataclasses.dataclass(frozen=True)
class Policy:
    """A driver: ``apply(params, obs, t) -> actions`` (static) and its ``params`` (traced)."""

    apply: Apply  # static (pytree metadata): the same object for policies that share a compilation
    params: Any = None  # a pytree of arrays (pytree data), passed to apply

    def __call__(self, obs: jax.Array, t) -> jax.Array:
        """The actions (..., 2) for observations (..., 6) at step ``t``."""
        return self.apply(self.params, obs, t)


def actor_action(params, obs, *, world_model_config: WorldModelConfig, agent_config: AgentConfig):
    """The deterministic actor's action: ``actor(encode(obs))``, in [-1, 1].

    ``params`` holds at least ``"world_model"`` and ``"actor"`` (a run's ``TrainState.params`` does).
    """
    z = wm_lib.make_world_model(world_model_config).encode(params["world_model"], obs)
    return agent_lib.make_agent(agent_config).act(params["actor"], z)


def actor_sample(params, obs, key, *, world_model_config: WorldModelConfig, agent_config: AgentConfig):
    """A stochastic actor's sampled action ``tanh(mean + std eps)`` for ``encode(obs)`` (SAC's
    exploration); a deterministic actor's action as :func:`actor_action`."""
    z = wm_lib.make_world_model(world_model_config).encode(params["world_model"], obs)
    mean, std = agent_lib.make_agent(agent_config).dist(params["actor"], z)
    if std is None:
        return jnp.tanh(mean)
    return agent_lib.squashed_sample(mean, std, jax.random.normal(key, mean.shape))[0]


@functools.cache
def _actor_apply(world_model_config: WorldModelConfig, agent_config: AgentConfig) -> Apply:
    """The actor's ``apply`` for these sizes (cached: the same object every time, one compilation)."""

    def apply(params, obs, t):
        del t  # the actor has no clock
        return actor_action(params, obs, world_model_config=world_model_config, agent_config=agent_config)

    return apply


def actor(params, *, world_model_config: WorldModelConfig, agent_config: AgentConfig) -> Policy:
    """The trained actor on the real car, ``obs -> actor(encode(obs))`` (deterministic, no noise).

    Args:
        params: a dict with ``"world_model"`` and ``"actor"`` weights (a run's ``TrainState.params``;
            only those two are kept).
        world_model_config: the world model's sizes.
        agent_config: the actor-critic's sizes.
    """
    if not isinstance(world_model_config, WorldModelConfig):
        raise TypeError(
            f"actor: world_model_config must be a WorldModelConfig, got {type(world_model_config).__name__}"
        )
    if not isinstance(agent_config, AgentConfig):
        raise TypeError(f"actor: agent_config must be an AgentConfig, got {type(agent_config).__name__}")
    if not isinstance(params, dict) or not {"world_model", "actor"} <= set(params):
        raise ValueError('actor: params must be a dict with "world_model" and "actor" weights')
    weights = {"world_model": params["world_model"], "actor": params["actor"]}
    return Policy(apply=_actor_apply(world_model_config, agent_config), params=weights)


def _random_apply(params, obs, t):
    """Uniform actions in [-1, 1] x [throttle_low, 1], one draw per car per window of ``hold`` steps."""
    low = jnp.stack([jnp.float32(-1.0), params["throttle_low"]])
    window = jax.random.fold_in(params["key"], t // params["hold"])
    return jax.random.uniform(window, obs.shape[:-1] + (2,), minval=low, maxval=1.0)


def random(key, *, throttle_low: float = -1.0, hold: int = 1) -> Policy:
    """A policy drawing actions uniformly from the action box, fresh every ``hold`` steps (a baseline).

    Steering is uniform in [-1, 1] and throttle in [``throttle_low``, 1]; the default is the whole
    action space, where braking (-0.3 px/step^2) outweighs accelerating (+0.2), so the car crawls.
    ``hold`` > 1 keeps each draw for that many steps (the key folded with ``t // hold``), so the car
    sweeps through real curves instead of jittering straight ahead (how the trainer's warm-up
    explores). ``key``, ``throttle_low`` and ``hold`` are all traced: any values, one compilation.
    """
    check_int(hold, "hold", low=1, where="random")
    if (
        isinstance(throttle_low, bool)
        or not isinstance(throttle_low, (int, float))
        or not -1 <= throttle_low <= 1
    ):
        raise ValueError(f"random: throttle_low must be a number in [-1, 1], got {throttle_low!r}")
    params = {"key": key, "throttle_low": jnp.float32(throttle_low), "hold": jnp.int32(hold)}
    return Policy(apply=_random_apply, params=params)


@functools.lru_cache(maxsize=64)
def _noisy_apply(base_apply: Apply) -> Apply:
    """``base_apply`` plus held Gaussian noise, clipped (cached per base: one compilation)."""

    def apply(params, obs, t):
        window = jax.random.fold_in(params["key"], t // params["hold"])
        draw = params["noise"] * jax.random.normal(window, obs.shape[:-1] + (2,))
        return jnp.clip(base_apply(params["base"], obs, t) + draw, -1.0, 1.0)

    return apply


def noisy(key, base: Policy, *, noise: float, hold: int) -> Policy:
    """``base`` plus Gaussian noise of std ``noise``, each draw held ``hold`` steps, clipped to [-1, 1].

    Driving only the actor's own line, a world model never sees what happens off it; the held noise
    (a real swerve, not a wobble) shows it the neighbourhood the actor will explore next (see
    ``AgentConfig.explore_hold``). The draw at step t comes from ``fold_in(key, t // hold)``.
    """
    if not isinstance(base, Policy):
        raise TypeError(f"noisy: base must be a Policy, got {type(base).__name__}")
    check_int(hold, "hold", low=1, where="noisy")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noisy: noise must be a number >= 0, got {noise!r}")
    params = {"base": base.params, "key": key, "noise": jnp.float32(noise), "hold": jnp.int32(hold)}
    return Policy(apply=_noisy_apply(base.apply), params=params)


@functools.lru_cache(maxsize=64)
def _function_apply(fn: Callable[[jax.Array], jax.Array]) -> Apply:
    """``fn(obs)`` as an ``apply`` (cached per function: one compilation for each)."""
    return lambda params, obs, t: fn(obs)


def from_function(fn: Callable[[jax.Array], jax.Array]) -> Policy:
    """A hand-written jittable driver ``obs (..., 6) -> actions (..., 2)`` as a Policy (no params).

    Whatever ``fn`` needs it captures itself, as constants: pass the same function object again to
    reuse its compilation. A driver that needs the step index is a ``Policy(apply, params)``.
    """
    if not callable(fn) or isinstance(fn, Policy):
        raise TypeError(f"from_function: fn must be a function obs -> action, got {type(fn).__name__}")
    return Policy(apply=_function_apply(fn), params=None)


@jax.jit
def _drive_one(policy: Policy, obs, t):
    """One car's clipped action, the policy as an argument (one compilation per ``apply``)."""
    return jnp.clip(policy(obs, t), -1.0, 1.0)


def numpy_driver(policy: Policy) -> Callable[[np.ndarray], np.ndarray]:
    """One car's driver, NumPy ``obs (6,) -> action (2,)`` float32 in [-1, 1] (``carlab play --agent``).

    The observation goes to the policy unbatched (shape (6,)), and the driver counts the steps it was
    called for as ``t``, so a random or noisy policy still redraws every ``hold`` calls.
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"numpy_driver: policy must be a Policy, got {type(policy).__name__}")
    steps = itertools.count()

    def drive(obs) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if obs.shape != (env.OBS_SIZE,):
            raise ValueError(f"numpy_driver: obs must have shape ({env.OBS_SIZE},), got {obs.shape}")
        return np.asarray(_drive_one(policy, jnp.asarray(obs), jnp.int32(next(steps))))

    return drive


__all__ = ["Policy", "actor", "actor_action", "from_function", "noisy", "numpy_driver", "random"]
