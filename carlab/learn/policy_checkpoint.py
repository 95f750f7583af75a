"""TD7's policy checkpoints (Fujimoto et al. 2023): the *driver* of a run, kept beside its newest actor.

Every ``config.train.checkpoint_every`` env steps the newest deterministic actor drives a lap of
each of the first ``checkpoint_tracks`` training tracks (and ``checkpoint_more_tracks`` more when it
laps them all: a sequential test, :func:`sequential_score`); it becomes the driver when it laps at
least as many as the driver did on its own test (:func:`checkpoint_test`). The driver — not the
newest actor — is what a run validates, saves as its agent, evaluates and plays::

    params = driver_params(state, config)      # {"world_model", "actor"}: the checkpoint, once tested
    policies.actor(params, world_model_config=config.world_model, agent_config=config.agent)

The test runs inside the jitted round (:func:`checkpoint_test_if_due`, called by
:mod:`carlab.learn.loop`, :mod:`carlab.learn.seeds` and the lab's manual steps), so tests fall at the
same env steps whatever the calls' sizes. It never touches training: nothing goes into the buffer
and no key is drawn, so a run's newest actor is bit-identical with checkpoints on or off. What the
tests cost is experience, counted apart as ``Driver.test_steps``. With ``checkpoint_tracks=0`` (the
default) nothing is tested and the newest actor drives.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from carlab.learn import evaluation, policies
from carlab.learn.config import Config
from carlab.sim import env

if TYPE_CHECKING:  # loop imports this module
    from carlab.learn.loop import TrainState

DRIVER_KEYS = ("world_model", "actor")  # the weights a driver needs: encoder and actor


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Driver:
    """The policy checkpoint (``TrainState.driver``): the driver that acts, evaluated and saved,
    while the newest actor keeps learning beside it."""

    params: dict  # {"world_model", "actor"}: the driver's weights (the actor drives the encoder's latent)
    laps: jax.Array  # int32, laps the driver drove on its own test (-1: no test yet, the newest drives)
    env_steps: jax.Array  # int32, training env steps when it became the driver (-1: not yet)
    newest_laps: jax.Array  # int32, laps of the newest actor at the latest test (-1: no test yet)
    tests: jax.Array  # int32, tests driven
    test_steps: jax.Array  # int32, env steps all tests drove: experience, beside env_steps


def init_driver(net: dict) -> Driver:
    """No driver yet: the newest actor drives until the first test (``net``: TrainState.params)."""
    i32 = jnp.int32
    none = jnp.asarray(-1, i32)
    return Driver(
        params={k: net[k] for k in DRIVER_KEYS},
        laps=none,
        env_steps=none,
        newest_laps=none,
        tests=jnp.asarray(0, i32),
        test_steps=jnp.asarray(0, i32),
    )


def check_config(config: Config) -> None:
    """One-line ``ValueError`` unless the checkpoint test fits the training tracks."""
    t = config.train
    n, more = t.checkpoint_tracks, t.checkpoint_more_tracks
    if n < 0 or more < 0 or t.checkpoint_every < 1:
        raise ValueError(
            "train.checkpoint_tracks and checkpoint_more_tracks must be >= 0 and checkpoint_every >= 1, "
            f"got {n}, {more}, {t.checkpoint_every}"
        )
    if more and not n:
        raise ValueError("train.checkpoint_more_tracks needs train.checkpoint_tracks > 0 (the first test)")
    if n + more > t.num_train_tracks:
        raise ValueError(
            f"the checkpoint test drives {n} + {more} training tracks but there are only "
            f"{t.num_train_tracks} (train.num_train_tracks)"
        )


def driver_params(state: TrainState, config: Config) -> dict:
    """The weights of the driver that acts — ``{"world_model", "actor"}``, for
    :func:`carlab.learn.policies.actor`: with ``config.train.checkpoint_tracks`` the checkpoint once
    one was tested (:func:`checkpoint_test`), else the newest actor. Works on stacked states too."""
    newest = {k: state.params[k] for k in DRIVER_KEYS}
    if not config.train.checkpoint_tracks:
        return newest
    tested = state.driver.laps >= 0  # () or (S,) for stacked runs

    def pick(kept, new):
        return jnp.where(tested.reshape(tested.shape + (1,) * (kept.ndim - tested.ndim)), kept, new)

    return jax.tree.map(pick, state.driver.params, newest)


def driver_policy(state: TrainState, config: Config) -> policies.Policy:
    """The run's driver (:func:`driver_params`) as a deterministic :class:`carlab.learn.policies.Policy`."""
    params = driver_params(state, config)
    return policies.actor(params, world_model_config=config.world_model, agent_config=config.agent)


def sequential_score(lapped, steps, first: int):
    """A sequential test's ``(laps, env steps)``: tracks ``[:first]`` always, the rest only when
    every one of those lapped (a failing driver is not driven further, so those steps are not spent)."""
    lapped = lapped.astype(jnp.int32)
    passed = jnp.sum(lapped[:first]) == first
    laps = jnp.sum(lapped[:first]) + jnp.where(passed, jnp.sum(lapped[first:]), 0)
    cost = jnp.sum(steps[:first]) + jnp.where(passed, jnp.sum(steps[first:]), 0)
    return laps, cost


def checkpoint_test(state: TrainState, params: env.EnvParams, config: Config) -> TrainState:
    """TD7's checkpoint test: the newest deterministic actor drives training tracks ``0 ..
    checkpoint_tracks + checkpoint_more_tracks - 1`` (a lap each, at most ``max_episode_steps``
    steps; the later ones only when it lapped all the first — :func:`sequential_score`) and becomes the
    driver when it laps at least as many as the driver did on its own test (with
    ``checkpoint_keep_ties``: more, or every test track).

    The test leaves training untouched (nothing goes into the buffer, no key is drawn): a run's
    newest actor is the same with checkpoints on or off, so the driver is always one of its actors.
    """
    t = config.train
    n, more = t.checkpoint_tracks, t.checkpoint_more_tracks
    ids = np.arange(n + more)
    tracks = dataclasses.replace(
        params,
        tracks=jax.tree.map(lambda x: x[ids], params.tracks),
        start_obs=params.start_obs[ids],
        auto_reset=False,
        max_steps=t.max_episode_steps,
    )
    newest = {k: state.params[k] for k in DRIVER_KEYS}
    actor = policies.actor(newest, world_model_config=config.world_model, agent_config=config.agent)
    out = evaluation.rollout(actor, tracks, t.max_episode_steps)
    laps, cost = sequential_score(out["lapped"], out["steps"], n)
    kept = state.driver
    better = (laps > kept.laps) | (laps == n + more) if t.checkpoint_keep_ties else laps >= kept.laps
    driver = Driver(
        params=jax.tree.map(lambda new, old: jnp.where(better, new, old), newest, kept.params),
        laps=jnp.where(better, laps, kept.laps),
        env_steps=jnp.where(better, state.env_steps, kept.env_steps),
        newest_laps=laps,
        tests=kept.tests + 1,
        test_steps=kept.test_steps + cost,
    )
    return dataclasses.replace(state, driver=driver)


def checkpoint_test_if_due(
    before_env_steps, state: TrainState, params: env.EnvParams, config: Config, *, stacked: bool = False
) -> TrainState:
    """:func:`checkpoint_test` when ``state.env_steps`` has passed a multiple of ``checkpoint_every``
    since ``before_env_steps`` (nothing when checkpoints are off): the same tests, whatever the
    calls' sizes.

    ``stacked``: ``state`` holds a set of runs (:mod:`carlab.learn.seeds`), tested together. Their
    due test is asked once, unbatched (runs of one set count env steps alike): under ``vmap`` the
    ``cond`` would become a select and drive the test in every round."""
    if not config.train.checkpoint_tracks:
        return state

    def test(one: TrainState) -> TrainState:
        return checkpoint_test(one, params, config)

    after, before = state.env_steps, before_env_steps
    if stacked:
        test, after, before = jax.vmap(test), after[0], before[0]
    every = config.train.checkpoint_every
    return jax.lax.cond(after // every > before // every, test, lambda s: s, state)


def summary(driver: Driver) -> dict:
    """The driver's part of a history record (:func:`carlab.learn.loop.summarize`): ``test_steps``
    always (0 when off), and once a test was driven ``driver/laps``, ``driver/env_steps`` (when it
    became the driver) and ``driver/newest_laps`` (the newest actor at the latest test)."""
    out = {"test_steps": int(driver.test_steps)}
    if int(driver.tests):
        out["driver/laps"] = int(driver.laps)
        out["driver/env_steps"] = int(driver.env_steps)
        out["driver/newest_laps"] = int(driver.newest_laps)
    return out
