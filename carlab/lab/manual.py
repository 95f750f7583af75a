"""Driving the shown car by hand while the others keep learning: one jitted env step.

:func:`manual_step` is :func:`carlab.learn.loop.train_rounds` slowed down to one env step, with car 0's
action taken from the person at the keyboard instead of the actor. Every car's transition — the
person's included — goes into the replay buffer, and a training update runs whenever a round's worth
of steps (``train_every``) has been collected, exactly as in a training round. It returns the same
metric sums as ``train_rounds``, so :func:`carlab.learn.loop.summarize` reads them.

The trainer thread calls it once per frame (30 per second) in manual mode.
"""

from __future__ import annotations

import functools

import jax

from carlab.learn import loop, policy_checkpoint
from carlab.learn.config import Config
from carlab.sim import env

SHOWN_CAR = loop.SHOWN_CAR  # the car the dashboard highlights and the person drives


@functools.partial(jax.jit, static_argnames="config")
def manual_step(state: loop.TrainState, action, params: env.EnvParams, config: Config, drive=True):
    """One env step of every car, car 0 driven by ``action`` (2,) ``[steering, throttle]``.

    Returns ``(state, sums)`` like :func:`carlab.learn.loop.train_rounds` for one step. The other
    cars act as in training (actor plus exploration noise; random until the buffer is warm).
    ``drive=False`` lets the actor drive car 0 too: then ``train_every`` calls are exactly one
    training round (the tests hold this function to that).
    """
    before = state.env_steps
    state, sums = loop.collect_step(state, params, config, manual_action=action, manual=drive)
    # A round's worth of steps collected -> the round's updates, as train_rounds would do them.
    steps_per_car = state.env_steps // config.train.num_cars
    due = (steps_per_car % config.train.train_every == 0) & (state.buffer.size >= config.replay.warmup)
    state, metrics = loop.train_if(due, state, config)
    return policy_checkpoint.checkpoint_test_if_due(before, state, params, config), {**metrics, **sums}
