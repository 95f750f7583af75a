"""The loop draws every random number from its state: the seed seeds init_state and nothing else."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn import config as config_lib
from carlab.learn import loop

# Held exploration noise (explore_hold) takes the hold_key path too.
CONFIG = config_lib.with_overrides(config_lib.tiny(), agent={"explore_hold": 4})
STEPS = 400  # tiny: 20 rounds, past the 100-transition warm-up


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _identical(a, b) -> bool:
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(_leaves(a), _leaves(b)))


def _seed(seed: int) -> config_lib.Config:
    return config_lib.with_overrides(CONFIG, train={"seed": seed})


def test_init_state_takes_its_keys_from_the_seed_or_a_given_key():
    state = loop.init_state(_seed(5))
    assert np.array_equal(state.hold_key, jax.random.PRNGKey(5))
    assert _identical(state, loop.init_state(CONFIG, key=jax.random.PRNGKey(5)))
    assert not np.array_equal(loop.init_state(_seed(6)).hold_key, state.hold_key)


def test_two_seeds_share_one_compilation_and_differ():
    """Runs of seeds 1 and 2 compile train_rounds once between them (the seed is state, not a
    static config field), and the same seed twice gives the same run, bit for bit."""
    first, first_history = loop.train(_seed(1), STEPS, progress=False)
    compiled = loop._train_rounds._cache_size()
    second, _ = loop.train(_seed(2), STEPS, progress=False)
    assert loop._train_rounds._cache_size() == compiled, "another seed recompiled train_rounds"
    again, again_history = loop.train(_seed(1), STEPS, progress=False)
    assert _identical(first, again)
    for record, rerun in zip(first_history, again_history, strict=True):
        assert record.keys() == rerun.keys()
        for name in record.keys() - {"time_s"}:
            assert np.array_equal(record[name], rerun[name], equal_nan=True), name
    assert all(not np.array_equal(x, y) for x, y in zip(_leaves(first.params), _leaves(second.params)))
    assert not np.array_equal(np.asarray(first.buffer.action), np.asarray(second.buffer.action))


def test_the_seed_in_the_config_is_never_read_after_init():
    """A state of seed 3 trained under a config that says seed 9 is the run of seed 3."""
    state = loop.init_state(_seed(3))
    params = loop.env_params(CONFIG)
    a, sums_a = loop.train_rounds(state, jnp.int32(8), params, _seed(3))
    b, sums_b = loop.train_rounds(state, jnp.int32(8), params, _seed(9))
    assert _identical(a, b) and _identical(sums_a, sums_b)
    assert loop.seedless(_seed(9)) == loop.seedless(CONFIG) and loop.seedless(CONFIG) is CONFIG


def test_held_draws_come_from_the_hold_key():
    """Warm-up and held exploration draws depend on hold_key and the step count, not on the run key:
    they stay fixed within a hold window and change with another hold key."""
    state = loop.init_state(CONFIG)
    key = jax.random.PRNGKey(0)
    choose = jax.jit(lambda key, state: loop.choose_actions(key, state, CONFIG))
    warm = choose(key, state)
    assert np.array_equal(warm, choose(jax.random.PRNGKey(1), state))  # warm-up: key unused
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 1.0])
    assert np.all((np.asarray(warm) >= low) & (np.asarray(warm) <= high))
    later = dataclasses.replace(state, env_steps=state.env_steps + CONFIG.train.num_cars)  # same window
    assert np.array_equal(warm, choose(key, later))
    other = dataclasses.replace(state, hold_key=jax.random.PRNGKey(1))
    assert not np.array_equal(warm, choose(key, other))
    # After the warm-up, held exploration: every car noised (explore_prob 1), the same noise all window.
    warmed = dataclasses.replace(state, buffer=dataclasses.replace(state.buffer, size=jnp.int32(10**6)))
    noisy = choose(key, warmed)
    assert not np.array_equal(noisy, warm)
    assert np.array_equal(noisy, choose(jax.random.PRNGKey(7), warmed))
    moved = dataclasses.replace(warmed, hold_key=jax.random.PRNGKey(1))
    assert not np.array_equal(noisy, choose(key, moved))


def test_manual_override_drives_the_shown_car_only():
    state = loop.init_state(CONFIG)
    key = jax.random.PRNGKey(0)
    plain = loop.choose_actions(key, state, CONFIG)
    manual = loop.choose_actions(key, state, CONFIG, manual_action=jnp.array([0.5, -0.25]), manual=True)
    np.testing.assert_array_equal(np.asarray(manual[loop.SHOWN_CAR]), [0.5, -0.25])
    others = [i for i in range(CONFIG.train.num_cars) if i != loop.SHOWN_CAR]
    np.testing.assert_array_equal(np.asarray(manual)[others], np.asarray(plain)[others])
    off = loop.choose_actions(key, state, CONFIG, manual_action=jnp.array([0.5, -0.25]), manual=False)
    np.testing.assert_array_equal(np.asarray(off), np.asarray(plain))


def test_collect_step_is_choose_then_record():
    state = loop.init_state(CONFIG)
    params = loop.env_params(CONFIG)
    stepped, sums = jax.jit(lambda s: loop.collect_step(s, params, CONFIG))(state)

    @jax.jit
    def choose_then_record(state):
        key, k_explore = jax.random.split(state.key)
        action = loop.choose_actions(k_explore, state, CONFIG)
        return action, loop.record_step(dataclasses.replace(state, key=key), action, params, CONFIG)

    action, (recorded, recorded_sums) = choose_then_record(state)
    assert _identical(stepped, recorded) and _identical(sums, recorded_sums)
    assert (
        int(stepped.env_steps) == CONFIG.train.num_cars and int(stepped.buffer.size) == CONFIG.train.num_cars
    )
    np.testing.assert_array_equal(
        np.asarray(stepped.buffer.action[: CONFIG.train.num_cars]), np.asarray(action)
    )
    assert np.array_equal(stepped.hold_key, state.hold_key)  # constant for the whole run


@pytest.mark.parametrize("bad", [{"capacity": 2_001}])
def test_capacity_must_be_a_multiple_of_the_cars(bad):
    with pytest.raises(ValueError, match="multiple of num_cars"):
        loop.init_state(config_lib.with_overrides(CONFIG, replay=bad))
