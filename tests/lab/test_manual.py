"""Manual driving: one jitted step that must stay the training step with car 0's action swapped.

The oracle is the training loop itself. With ``drive=False`` (the actor drives car 0 too),
``train_every`` manual steps must give the same state as one ``train_rounds`` round — through the
random warm-up, exploration with held noise, episode ends (cars moving on to their next track) and
the updates. If the training step changes, these fail until :mod:`carlab.lab.manual` follows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.lab import manual
from carlab.learn import config as config_lib
from carlab.learn import loop, policies

CONFIG = config_lib.with_overrides(config_lib.tiny(), agent={"explore_prob": 0.0, "explore_min": 0.0})
# Short episodes and held exploration noise, so a few rounds cross every branch of a collect step.
BUSY = config_lib.with_overrides(
    config_lib.tiny(), train={"max_episode_steps": 12}, agent={"explore_hold": 3}
)


@pytest.fixture(scope="module")
def warm():
    """``(state, params)`` after enough rounds that the buffer is warm and updates run."""
    params = loop.env_params(CONFIG)
    state = loop.init_state(CONFIG, params)
    rounds = loop.rounds_for(CONFIG.replay.warmup, CONFIG) + 2
    state, _ = loop.train_rounds(state, jnp.int32(rounds), params, CONFIG)
    assert int(state.updates) > 0
    return state, params


def actors_choice(state) -> jax.Array:
    """What the actor itself would do with car 0 (no exploration in this config)."""
    actions = policies.actor_action(
        state.params, state.obs, world_model_config=CONFIG.world_model, agent_config=CONFIG.agent
    )
    return actions[manual.SHOWN_CAR]


def assert_same_tree(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(
            np.asarray(x, dtype=float), np.asarray(y, dtype=float), rtol=1e-4, atol=1e-5
        )


def test_one_manual_step_is_a_collect_step(warm):
    state, params = warm
    mine, sums = manual.manual_step(state, actors_choice(state), params, CONFIG)
    reference, _ = loop.collect_step(state, params, CONFIG)
    assert_same_tree(mine, reference)
    assert float(sums["updates"]) == 0.0  # mid-round: no update yet


def test_train_every_manual_steps_are_one_round(warm):
    state, params = warm
    mine = state
    updates = 0.0
    for _ in range(CONFIG.train.train_every):
        mine, sums = manual.manual_step(mine, actors_choice(mine), params, CONFIG)
        updates += float(sums["updates"])
    reference, _ = loop.train_rounds(state, jnp.int32(1), params, CONFIG)
    assert updates == CONFIG.train.updates_per_round
    assert_same_tree(mine, reference)


def test_manual_steps_without_a_driver_are_training_rounds():
    params = loop.env_params(BUSY)
    start = loop.init_state(BUSY, params)
    rounds = loop.rounds_for(BUSY.replay.warmup, BUSY) + 3  # through the warm-up into updates
    reference, _ = loop.train_rounds(start, jnp.int32(rounds), params, BUSY)
    mine, episodes, updates = start, 0.0, 0.0
    for _ in range(rounds * BUSY.train.train_every):
        mine, sums = manual.manual_step(mine, jnp.zeros(2), params, BUSY, drive=False)
        episodes += float(sums["env/episodes"])
        updates += float(sums["updates"])
    assert episodes > 0 and updates == int(reference.updates) > 0
    assert_same_tree(mine, reference)


def test_car_0_follows_the_given_action_and_it_is_replayed(warm):
    state, params = warm
    brake = jnp.array([0.0, -1.0])
    after, _ = manual.manual_step(state, brake, params, CONFIG)
    slot = (int(after.buffer.position) - CONFIG.train.num_cars) % after.buffer.capacity
    np.testing.assert_array_equal(np.asarray(after.buffer.action[slot]), [0.0, -1.0])
    assert float(after.env_state.speed[0]) <= float(state.env_state.speed[0])
    wild, _ = manual.manual_step(state, jnp.array([jnp.nan, 5.0]), params, CONFIG)  # sanitised like env.step
    np.testing.assert_array_equal(np.asarray(wild.buffer.action[slot]), [0.0, 1.0])
