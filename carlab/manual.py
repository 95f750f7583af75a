"""Driving the shown car by hand while the others keep learning: one jitted env step.

:func:`manual_step` is :func:`carlab.training.train_rounds` slowed down to one env step, with car 0's
action taken from the person at the keyboard instead of the actor. Every car's transition — the
person's included — goes into the replay buffer, and a training update runs whenever a round's worth
of steps (``train_every``) has been collected, exactly as in a training round. It returns the same
metric sums as ``train_rounds``, so :func:`carlab.training.summarize` reads them.

The trainer thread calls it once per frame (30 per second) in manual mode.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from carlab import agent as agent_lib
from carlab import env, replay, training
from carlab.config import Config

SHOWN_CAR = 0  # the car the dashboard highlights and the person drives


@functools.partial(jax.jit, static_argnames="config")
def manual_step(state: training.TrainState, action, params: env.EnvParams, config: Config, drive=True):
    """One env step of every car, car 0 driven by ``action`` (2,) ``[steering, throttle]``.

    Returns ``(state, sums)`` like :func:`carlab.training.train_rounds` for one step. The other
    cars act as in training (actor plus exploration noise; random until the buffer is warm).
    ``drive=False`` lets the actor drive car 0 too: then ``train_every`` calls are exactly one
    training round (the tests hold this function to that).
    """
    # Mirrors training._collect_step line for line, keep in sync; a public collect step taking an
    # action override would let the two share one body.
    key, k_explore = jax.random.split(state.key)
    actions = training.policy(state.params, state.obs, config)
    if config.agent.explore_hold > 1:
        hold_window = state.env_steps // (config.train.num_cars * config.agent.explore_hold)
        stream = jax.random.fold_in(jax.random.PRNGKey(config.train.seed), 1)
        k_explore = jax.random.fold_in(stream, hold_window)
    actions = agent_lib.explore(k_explore, actions, state.explore_prob, config.agent)
    window = state.env_steps // (config.train.num_cars * config.replay.warmup_hold)
    k_random = jax.random.fold_in(jax.random.PRNGKey(config.train.seed), window)
    random_actions = jax.random.uniform(k_random, actions.shape, minval=jnp.array([-1.0, 0.0]), maxval=1.0)
    actions = jnp.where(state.buffer.size < config.replay.warmup, random_actions, actions)
    actions = jnp.where(drive, actions.at[SHOWN_CAR].set(env.sanitize_action(action)), actions)
    before = state.env_state
    vstep = jax.vmap(env.step, in_axes=(None, 0, 0, None))
    next_obs, env_state, reward, terminated, truncated, info = vstep(key, before, actions, params)
    buffer = replay.add(state.buffer, state.obs, actions, info["final_obs"], reward, terminated)
    done = terminated | truncated
    next_obs, env_state = training._next_track(next_obs, env_state, done, params, config.train.num_cars)
    ret = state.episode_return + reward
    final_progress = jnp.where(
        terminated, before.best_progress, training._best_after(before, env_state, done)
    )
    sums = {
        "env/return": jnp.sum(jnp.where(done, ret, 0.0)),
        "env/progress": jnp.sum(jnp.where(done, final_progress, 0.0)),
        "env/laps": jnp.sum(jnp.where(done, jnp.floor(final_progress), 0.0)),
        "env/crashes": jnp.sum(terminated.astype(jnp.float32)),
        "env/episodes": jnp.sum(done.astype(jnp.float32)),
    }
    state = dataclasses.replace(
        state,
        buffer=buffer,
        env_state=env_state,
        obs=next_obs,
        episode_return=jnp.where(done, 0.0, ret),
        key=key,
        explore_prob=jnp.maximum(state.explore_prob * config.agent.explore_decay, config.agent.explore_min),
        env_steps=state.env_steps + config.train.num_cars,
        episodes=state.episodes + jnp.sum(done).astype(jnp.int32),
        best_progress=jnp.maximum(state.best_progress, jnp.max(jnp.where(done, final_progress, 0.0))),
    )
    # A round's worth of steps collected -> the round's updates, as train_rounds would do them.
    steps_per_car = state.env_steps // config.train.num_cars
    due = (steps_per_car % config.train.train_every == 0) & (state.buffer.size >= config.replay.warmup)
    loss_keys = training._SUMS

    def train(state):
        metrics = {k: jnp.float32(0.0) for k in loss_keys}
        for _ in range(config.train.updates_per_round):
            state, m = training._update(state, config)
            metrics = {k: metrics[k] + m[k] for k in loss_keys}
        return state, metrics

    def skip(state):
        return state, {k: jnp.float32(0.0) for k in loss_keys}

    state, metrics = jax.lax.cond(due, train, skip, state)
    metrics["updates"] = jnp.where(due, jnp.float32(config.train.updates_per_round), 0.0)
    return state, {**metrics, **sums}
