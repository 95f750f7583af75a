"""Experience: drive real cars with any policy and keep every step, for studying a world model.

The trainer collects into its replay buffer as it goes (:mod:`carlab.learn.loop`). The notebooks want
something plainer: "drive 16 cars for 500 steps at random, give me everything", time-major, with the
cars' poses so what happened can be drawn::

    traj = experience.collect(key, env_params, num_cars=16, num_steps=500,
                              policy=policies.random(key, throttle_low=0.0, hold=8))
    buffer = experience.to_buffer(traj)       # a full replay buffer, stride = num_cars
    windows = experience.windows(key, traj, length=30, count=64)   # stretches for open-loop checks
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from carlab.checks import check_int
from carlab.learn import policies, replay
from carlab.learn.policies import Policy
from carlab.sim import env


class Trajectories(NamedTuple):
    """Everything N cars did in T steps, time-major: arrays (T, N, ...)."""

    obs: jax.Array  # (T, N, 6) observation before the action
    action: jax.Array  # (T, N, 2) the sanitised action taken
    next_obs: jax.Array  # (T, N, 6) observation after it (before any auto-reset)
    reward: jax.Array  # (T, N)
    done: jax.Array  # (T, N) bool, terminated (crashed)
    truncated: jax.Array  # (T, N) bool, stopped by the step limit
    car: jax.Array  # (T + 1, N, 4) [x, y, speed, angle] before each step, and after the last
    track_id: jax.Array  # (N,) the track each car drives (car i: track i % M)


class Windows(NamedTuple):
    """B stretches of L consecutive real steps of one car, for comparing a model with reality."""

    batch: replay.Transition  # (B, L, ...) transitions
    car: jax.Array  # (B, L + 1, 4) the real poses before each step and after the last
    track_id: jax.Array  # (B,) the track of each stretch
    mask: jax.Array  # (B, L) 1 while the stretch is still in the episode it started in


def _car(state: env.EnvState) -> jax.Array:
    return jnp.stack([state.x, state.y, state.speed, state.angle], axis=-1)


@functools.partial(jax.jit, static_argnames=("num_cars", "num_steps"))
def _collect(key, params: env.EnvParams, policy: Policy, num_cars: int, num_steps: int):
    obs, state = env.reset_batch(key, params, num_cars)
    vstep = jax.vmap(env.step, in_axes=(None, 0, 0, None))

    def body(carry, t):
        obs, state = carry
        action = env.sanitize_action(policy(obs, t))
        next_obs, next_state, reward, terminated, truncated, info = vstep(key, state, action, params)
        out = (obs, action, info["final_obs"], reward, terminated, truncated, _car(state))
        return (next_obs, next_state), out

    (_, last), out = jax.lax.scan(body, (obs, state), jnp.arange(num_steps, dtype=jnp.int32))
    *fields, cars = out
    cars = jnp.concatenate([cars, _car(last)[None]])
    return Trajectories(*fields, car=cars, track_id=state.track_id)


def collect(
    key, params: env.EnvParams, *, num_cars: int, num_steps: int, policy: Policy | None = None
) -> Trajectories:
    """Drive ``num_cars`` cars (car i on track i % M) for ``num_steps`` steps; one jitted ``lax.scan``.

    Args:
        key: PRNG key (the env is deterministic; the default policy draws from it).
        params: env params with ``auto_reset`` on (a crashed car restarts on its start line).
        num_cars: cars driving at once.
        num_steps: steps each car drives.
        policy: a :class:`carlab.learn.policies.Policy`, called as ``policy(obs (N, 6), t)``; it is a
            traced argument, so a new actor of the same sizes (or a new key) needs no new compilation.
            Default: uniform random steering and throttle in [0, 1], each draw held for 8 steps
            (:func:`carlab.learn.policies.random` with ``fold_in(key, 1)``).
    """
    for name, value in (("num_cars", num_cars), ("num_steps", num_steps)):
        check_int(value, name, low=1, where="collect")
    if not params.auto_reset:
        raise ValueError("collect: params.auto_reset must be on (crashed cars restart and keep driving)")
    if policy is None:
        policy = policies.random(jax.random.fold_in(key, 1), throttle_low=0.0, hold=8)
    if not isinstance(policy, Policy):
        raise TypeError(
            f"collect: policy must be a carlab.learn.policies.Policy or None, got {type(policy).__name__}"
        )
    return _collect(key, params, policy, num_cars, num_steps)


def alive(done) -> jax.Array:
    """(T, B) bool: the episode had not ended before step t (the ending step itself still counts)."""
    done = jnp.asarray(done, bool)
    before = jnp.concatenate([jnp.zeros_like(done[:1]), done[:-1]])
    return jnp.cumprod(~before, axis=0).astype(bool)


def return_until_done(reward, done) -> jax.Array:
    """(B,) the sum of each column of ``reward`` (T, B) up to and including its first ``done``."""
    return jnp.sum(jnp.where(alive(done), reward, 0.0), axis=0)


def to_buffer(traj: Trajectories) -> replay.ReplayBuffer:
    """A full replay buffer holding every transition, step by step (car i's steps N slots apart)."""
    steps, cars = traj.reward.shape
    flat = [
        x.reshape((steps * cars,) + x.shape[2:])
        for x in (traj.obs, traj.action, traj.next_obs, traj.reward, traj.done)
    ]
    return replay.add(replay.init_buffer(steps * cars), *flat)


def windows(key, traj: Trajectories, *, length: int, count: int) -> Windows:
    """``count`` stretches of ``length`` steps, each of one car from a uniform random start step.

    A stretch may run past its episode's end (a crash or truncation); ``mask`` says where.
    """
    steps, cars = traj.reward.shape
    check_int(length, "length", low=1, high=steps, where="windows")
    check_int(count, "count", low=1, where="windows")
    key_car, key_start = jax.random.split(key)
    car = jax.random.randint(key_car, (count,), 0, cars)
    start = jax.random.randint(key_start, (count,), 0, steps - length + 1)
    time = start[:, None] + jnp.arange(length)[None, :]  # (B, L)
    pick = lambda x: x[time, car[:, None]]
    batch = replay.Transition(
        *(pick(x) for x in (traj.obs, traj.action, traj.next_obs, traj.reward, traj.done))
    )
    poses = traj.car[start[:, None] + jnp.arange(length + 1)[None, :], car[:, None]]
    return Windows(batch=batch, car=poses, track_id=traj.track_id[car], mask=replay.sequence_mask(batch))


__all__ = ["Trajectories", "Windows", "alive", "collect", "return_until_done", "to_buffer", "windows"]
