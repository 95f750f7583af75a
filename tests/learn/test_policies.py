"""One policy type: the pretrained actor drives as before, random and noisy policies reproduce their
draws, and a policy's weights are traced data (a new actor of the same shape shares a compilation)."""

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn import agent as agent_lib
from carlab.learn import config as config_lib
from carlab.learn import loop, policies, runs
from carlab.learn import world_model as wm_lib

CHECKPOINT = Path(__file__).resolve().parents[2] / "models" / "agent.safetensors"
TINY = config_lib.tiny()
OBS = np.random.default_rng(0).uniform(0.0, 1.0, (64, 6)).astype(np.float32)


@functools.cache
def _pretrained():
    """The saved run's (params, config), loaded once per test process."""
    state, config, _, _ = runs.load_run(CHECKPOINT)
    return state.params, config


def _actor(params, config):
    return policies.actor(params, world_model_config=config.world_model, agent_config=config.agent)


def _old_actor(params, obs, config):
    """What ``training.policy`` computed before the policy module: actor(encode(obs))."""
    z = wm_lib.make_world_model(config.world_model).encode(params["world_model"], obs)
    return agent_lib.make_agent(config.agent).act(params["actor"], z)


def _old_random(key, obs, t, throttle_low, hold):
    """What ``evaluate.random_policy`` drew before the policy module."""
    low = jnp.array([-1.0, throttle_low])
    window = jax.random.fold_in(key, t // hold)
    return jax.random.uniform(window, obs.shape[:-1] + (2,), minval=low, maxval=1.0)


@jax.jit
def _call(policy, obs, t):
    return policy(obs, t)


def test_pretrained_actor_drives_as_before():
    params, config = _pretrained()
    driver = _actor(params, config)
    expected = np.asarray(jax.jit(functools.partial(_old_actor, config=config))(params, OBS))
    np.testing.assert_array_equal(np.asarray(_call(driver, OBS, jnp.int32(0))), expected)
    np.testing.assert_array_equal(np.asarray(_call(driver, OBS, jnp.int32(99))), expected)  # no clock
    pure = policies.actor_action(
        params, OBS, world_model_config=config.world_model, agent_config=config.agent
    )
    np.testing.assert_allclose(pure, expected, rtol=1e-6)
    # Only the two networks it drives with are kept.
    assert set(driver.params) == {"world_model", "actor"}


def test_numpy_driver_is_the_actor_on_one_car():
    params, config = _pretrained()
    drive = policies.numpy_driver(_actor(params, config))
    one = jax.jit(functools.partial(_old_actor, config=config))  # unbatched, as numpy_policy was
    for obs in OBS[:8]:
        action = drive(obs)
        assert isinstance(action, np.ndarray) and action.shape == (2,) and action.dtype == np.float32
        np.testing.assert_array_equal(action, np.clip(np.asarray(one(params, obs)), -1.0, 1.0))
    assert drive(list(OBS[0])).shape == (2,)  # anything array-like
    with pytest.raises(ValueError, match="shape"):
        drive(OBS[:2])
    with pytest.raises(TypeError, match="Policy"):
        policies.numpy_driver(lambda obs: obs[:2])


def test_numpy_driver_counts_steps_and_clips():
    drive = policies.numpy_driver(policies.random(jax.random.key(0), hold=2))
    actions = np.stack([drive(OBS[0]) for _ in range(6)])
    np.testing.assert_array_equal(actions[0], actions[1])
    assert not np.array_equal(actions[1], actions[2])  # step 2 opens a new window
    expected = [_old_random(jax.random.key(0), jnp.asarray(OBS[0]), t, -1.0, 2) for t in range(6)]
    np.testing.assert_array_equal(actions, np.stack(expected))
    wild = policies.numpy_driver(policies.from_function(lambda obs: jnp.full(obs.shape[:-1] + (2,), 7.0)))
    np.testing.assert_array_equal(wild(OBS[0]), [1.0, 1.0])


def test_a_policy_is_a_pytree_of_its_params():
    tiny = loop.init_state(TINY).params
    other = jax.tree.map(lambda x: x + 1.0, tiny)
    a, b = _actor(tiny, TINY), _actor(other, TINY)
    assert a.apply is b.apply  # cached per config: one compilation for both
    assert jax.tree.structure(a) == jax.tree.structure(b)
    assert len(jax.tree.leaves(a)) == len(jax.tree.leaves(a.params)) > 0
    out_a = _call(a, OBS, jnp.int32(0))
    compiled = _call._cache_size()
    out_b = _call(b, OBS, jnp.int32(0))
    assert _call._cache_size() == compiled  # new weights, the same program
    assert not np.allclose(out_a, out_b)
    assert policies.from_function(np.tanh).apply is policies.from_function(np.tanh).apply


@pytest.mark.parametrize("hold", [1, 3])
@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey])
def test_random_reproduces_the_old_draws(hold, make_key):
    key = make_key(7)
    act = policies.random(key, throttle_low=-0.5, hold=hold)
    obs = jnp.asarray(OBS[:5])
    for t in range(7):
        np.testing.assert_array_equal(
            np.asarray(_call(act, obs, jnp.int32(t))), np.asarray(_old_random(key, obs, t, -0.5, hold))
        )
    np.testing.assert_array_equal(act(obs, 3), _old_random(key, obs, 3, -0.5, hold))  # un-jitted too


def test_random_draws_fresh_actions_in_range():
    act = policies.random(jax.random.PRNGKey(0))
    obs = jnp.zeros((5, 6))
    a0, a1 = np.asarray(act(obs, jnp.int32(0))), np.asarray(act(obs, jnp.int32(1)))
    assert a0.shape == (5, 2) and np.all(np.abs(a0) <= 1.0)
    assert not np.array_equal(a0, a1)
    assert np.array_equal(a0, np.asarray(policies.random(jax.random.PRNGKey(0))(obs, jnp.int32(0))))
    forward = np.asarray(policies.random(jax.random.PRNGKey(0), throttle_low=0.0)(jnp.zeros((500, 6)), 3))
    assert forward[:, 1].min() >= 0.0 and forward[:, 0].min() < -0.5


def test_random_key_throttle_and_hold_are_traced():
    obs = jnp.asarray(OBS[:4])
    _call(policies.random(jax.random.key(0)), obs, jnp.int32(0))
    compiled = _call._cache_size()
    _call(policies.random(jax.random.key(1), throttle_low=0.0, hold=8), obs, jnp.int32(0))
    assert _call._cache_size() == compiled


def test_noisy_reproduces_the_old_explore_policy():
    params, config = _pretrained()
    base = _actor(params, config)
    key, obs = jax.random.PRNGKey(3), jnp.asarray(OBS[:5])
    act = policies.noisy(key, base, noise=0.5, hold=4)
    clean = _old_actor(params, obs, config)
    for t in range(9):
        draw = 0.5 * jax.random.normal(jax.random.fold_in(key, t // 4), (5, 2))
        expected = jnp.clip(clean + draw, -1.0, 1.0)  # offline.explore_policy's formula
        np.testing.assert_allclose(np.asarray(_call(act, obs, jnp.int32(t))), expected, rtol=1e-6, atol=1e-7)
    same = [np.asarray(_call(act, obs, jnp.int32(t))) for t in range(4)]  # steps 0..3: one held draw
    for a in same[1:]:
        np.testing.assert_array_equal(a, same[0])
    assert not np.allclose(np.asarray(_call(act, obs, jnp.int32(4))), same[0])  # a fresh draw at step 4
    assert not np.allclose(same[0], clean) and np.all(np.abs(same[0]) <= 1.0)
    assert policies.noisy(key, base, noise=0.1, hold=2).apply is act.apply  # one compilation per base


def test_from_function_ignores_the_clock():
    fn = lambda obs: obs[..., :2] * 2.0 - 1.0
    act = policies.from_function(fn)
    np.testing.assert_array_equal(act(OBS, 0), fn(OBS))
    np.testing.assert_array_equal(_call(act, OBS, jnp.int32(5)), fn(OBS))


def test_bad_arguments():
    params, config = _pretrained()
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="hold"):
            policies.random(jax.random.key(0), hold=bad)
        with pytest.raises(ValueError, match="hold"):
            policies.noisy(jax.random.key(0), _actor(params, config), noise=0.5, hold=bad)
    for bad in (-1.5, 2.0, True, "low"):
        with pytest.raises(ValueError, match="throttle_low"):
            policies.random(jax.random.key(0), throttle_low=bad)
    for bad in (-0.1, float("nan"), None):
        with pytest.raises(ValueError, match="noise"):
            policies.noisy(jax.random.key(0), _actor(params, config), noise=bad, hold=2)
    with pytest.raises(TypeError, match="base must be a Policy"):
        policies.noisy(jax.random.key(0), np.tanh, noise=0.5, hold=2)
    with pytest.raises(ValueError, match='"world_model" and "actor"'):
        _actor({"actor": params["actor"]}, config)
    with pytest.raises(TypeError, match="world_model_config"):
        policies.actor(params, world_model_config=config.agent, agent_config=config.agent)
    with pytest.raises(TypeError, match="agent_config"):
        policies.actor(params, world_model_config=config.world_model, agent_config=config)
    with pytest.raises(TypeError, match="fn must be a function"):
        policies.from_function("drive")
