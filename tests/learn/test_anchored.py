"""The anchored learner: twin Q critics on real steps, an actor looking H imagined steps ahead, a
self-tuning temperature — each term against a small hand-computed reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn import agent as agent_lib
from carlab.learn import anchored, learners, loop
from carlab.learn import config as config_lib
from carlab.learn import world_model as wm_lib

TINY = config_lib.tiny()
AGENT = dataclasses.replace(TINY.agent, learner="anchored", stochastic=True, horizon=0)
LATENT = TINY.world_model.latent_size
B = 16


def _setup(agent_config=AGENT, seed=0):
    k_wm, k_ac, k_z, k_a = jax.random.split(jax.random.PRNGKey(seed), 4)
    wm_params = wm_lib.make_world_model(TINY.world_model).init(k_wm)
    params, opt_state = anchored.init(k_ac, agent_config, LATENT)
    z = jnp.tanh(jax.random.normal(k_z, (B, LATENT)))
    action = jax.random.uniform(k_a, (B, 2), minval=-1.0, maxval=1.0)
    return wm_params, params, opt_state, z, action


def _near_deterministic(agent_config):
    """An actor whose std is ~0: its samples are tanh(mean), so references need no random draws."""
    return dataclasses.replace(agent_config, std_min=1e-6, std_max=1e-6)


def test_the_critic_holds_two_q_networks_of_the_seeds_shape():
    _, params, opt_state, z, action = _setup()
    assert set(params) == {"actor", "critic", "critic_target", "log_alpha"}
    assert set(opt_state) == {"actor", "critic", "log_alpha"}
    q = anchored.make_critic(AGENT)[1](params["critic"], z, action)
    assert q.shape == (2, B) and not np.allclose(q[0], q[1])  # two independent networks
    shapes = {k: v["w"].shape for k, v in params["critic"].items()}
    assert shapes["twin_critic/q1_linear_0"] == (LATENT + 2, AGENT.critic_hidden[0])
    assert float(jnp.exp(params["log_alpha"])) == pytest.approx(AGENT.init_temperature)


def test_the_anchored_learner_needs_a_stochastic_actor_and_a_known_name():
    with pytest.raises(ValueError, match="stochastic"):
        learners.check(dataclasses.replace(AGENT, stochastic=False))
    with pytest.raises(ValueError, match="unknown agent.learner 'dreamer'"):
        learners.check(dataclasses.replace(AGENT, learner="dreamer"))
    with pytest.raises(ValueError, match="dream learner needs agent.horizon >= 1"):
        learners.check(dataclasses.replace(AGENT, learner="dream", horizon=0))
    with pytest.raises(ValueError, match="agent.init_temperature must be > 0, got 0.0"):
        learners.check(dataclasses.replace(AGENT, init_temperature=0.0))
    learners.check(AGENT)  # horizon 0 is the anchored learner's default


def test_horizon_zero_is_sacs_actor_loss():
    """H = 0: actor loss = mean(alpha log pi(a|z) - min_i Q_i(z, a)); with std ~0, a = tanh(mean)."""
    agent_config = _near_deterministic(AGENT)
    wm_params, params, _, z, action = _setup(agent_config)
    params["log_alpha"] = jnp.log(jnp.float32(1e-9))  # alpha ~0: the log-probs of a point mass drop out
    real = (z, action, jnp.zeros(B), jnp.full(B, AGENT.discount), z)
    _, metrics = anchored.loss_fn(
        params, wm_params, z, real, jax.random.PRNGKey(1), TINY.world_model, agent_config
    )
    a = agent_lib.make_agent(agent_config).act(params["actor"], z)
    q = anchored.make_critic(agent_config)[1](params["critic"], z, a)
    expected = -float(jnp.mean(jnp.minimum(q[0], q[1])))
    assert float(metrics["actor/loss"]) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_horizon_one_adds_the_models_reward_and_discounts_by_its_continue():
    """H = 1: r(z1) + gamma c(z1) min Q(z1, a1), z1 = dynamics(z0, a0), every action tanh(mean)."""
    agent_config = _near_deterministic(dataclasses.replace(AGENT, horizon=1))
    wm_params, params, _, z, action = _setup(agent_config)
    params["log_alpha"] = jnp.log(jnp.float32(1e-9))
    real = (z, action, jnp.zeros(B), jnp.full(B, AGENT.discount), z)
    _, metrics = anchored.loss_fn(
        params, wm_params, z, real, jax.random.PRNGKey(2), TINY.world_model, agent_config
    )
    wm, act = wm_lib.make_world_model(TINY.world_model), agent_lib.make_agent(agent_config).act
    z1 = wm.dynamics(wm_params, z, act(params["actor"], z))
    reward, cont = wm.reward(wm_params, z1), jax.nn.sigmoid(wm.continue_logit(wm_params, z1))
    q = anchored.make_critic(agent_config)[1](params["critic"], z1, act(params["actor"], z1))
    expected = float(jnp.mean(reward + agent_config.discount * cont * jnp.minimum(q[0], q[1])))
    assert float(metrics["actor/imagined_return"]) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_critics_learn_the_reward_of_terminal_steps():
    """On steps that end the episode (bootstrap discount 0) the TD target is the reward itself."""
    wm_params, params, opt_state, z, action = _setup()
    reward = jnp.linspace(-1.0, 2.0, B)
    real = (z, action, reward, jnp.zeros(B), z)
    key = jax.random.PRNGKey(5)
    for _ in range(400):
        key, sub = jax.random.split(key)
        params, opt_state, _ = anchored.update(
            params, opt_state, wm_params, z, real, sub, TINY.world_model, AGENT
        )
    q = anchored.make_critic(AGENT)[1](params["critic"], z, action)
    np.testing.assert_allclose(q, np.broadcast_to(reward, (2, B)), atol=0.1)


def test_critic_target_bootstraps_from_the_slow_copy_with_the_entropy_bonus():
    """Non-terminal step: target = r + gamma (min Q'(z', a') - alpha log pi(a'|z')); a critic
    regressed onto it (the target critic and actor fixed) ends there."""
    agent_config = dataclasses.replace(_near_deterministic(AGENT), critic_lr=3e-3, actor_lr=1e-12)
    wm_params, params, opt_state, z, action = _setup(agent_config)
    params["log_alpha"] = jnp.log(jnp.float32(1e-9))
    z_next = jnp.roll(z, 1, axis=0)
    reward = jnp.linspace(0.0, 1.0, B)
    real = (z, action, reward, jnp.full(B, AGENT.discount), z_next)
    q_apply = anchored.make_critic(agent_config)[1]
    a_next = agent_lib.make_agent(agent_config).act(params["actor"], z_next)
    target = reward + agent_config.discount * jnp.min(
        q_apply(params["critic_target"], z_next, a_next), axis=0
    )
    frozen = params["critic_target"]
    key = jax.random.PRNGKey(6)
    for _ in range(500):
        key, sub = jax.random.split(key)
        params, opt_state, _ = anchored.update(
            params, opt_state, wm_params, z, real, sub, TINY.world_model, agent_config
        )
        params["critic_target"] = frozen  # hold the bootstrap still, as the reference does
    np.testing.assert_allclose(
        q_apply(params["critic"], z, action), np.broadcast_to(target, (2, B)), atol=0.1
    )


@pytest.mark.parametrize("target_entropy, direction", [(50.0, 1.0), (-50.0, -1.0)])
def test_temperature_rises_below_the_target_entropy_and_falls_above(target_entropy, direction):
    agent_config = dataclasses.replace(AGENT, target_entropy=target_entropy)
    wm_params, params, opt_state, z, action = _setup(agent_config)
    real = (z, action, jnp.zeros(B), jnp.full(B, AGENT.discount), z)
    new, _, metrics = anchored.update(
        params, opt_state, wm_params, z, real, jax.random.PRNGKey(0), TINY.world_model, agent_config
    )
    assert direction * float(new["log_alpha"] - params["log_alpha"]) > 0
    assert float(metrics["actor/temperature"]) == pytest.approx(agent_config.init_temperature)


def test_a_fixed_temperature_stays_where_it_started_while_actor_and_critics_learn():
    agent_config = dataclasses.replace(
        AGENT, init_temperature=0.1, tune_temperature=False, target_entropy=50.0
    )
    wm_params, params, opt_state, z, action = _setup(agent_config)
    real = (z, action, jnp.ones(B), jnp.full(B, AGENT.discount), z)
    new = params
    for i in range(3):
        new, opt_state, metrics = anchored.update(
            new, opt_state, wm_params, z, real, jax.random.PRNGKey(i), TINY.world_model, agent_config
        )
    assert float(jnp.exp(new["log_alpha"])) == pytest.approx(0.1, rel=1e-6)
    assert float(metrics["actor/temperature"]) == pytest.approx(0.1, rel=1e-6)
    moved = lambda a, b: any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert moved(new["actor"], params["actor"]) and moved(new["critic"], params["critic"])


def test_the_temperature_starts_at_init_temperature():
    """SAC's alpha starts where the config says (1.0, Stable-Baselines3's "auto", unless told)."""
    assert AGENT.init_temperature == 1.0
    _, params, _, _, _ = _setup(dataclasses.replace(AGENT, init_temperature=0.1))
    assert float(jnp.exp(params["log_alpha"])) == pytest.approx(0.1)


def test_target_critic_moves_target_rate_towards_the_critic():
    wm_params, params, opt_state, z, action = _setup()
    real = (z, action, jnp.ones(B), jnp.full(B, AGENT.discount), z)
    new, _, _ = anchored.update(
        params, opt_state, wm_params, z, real, jax.random.PRNGKey(0), TINY.world_model, AGENT
    )
    rate = AGENT.target_rate
    expected = jax.tree.map(lambda c, t: rate * c + (1 - rate) * t, new["critic"], params["critic_target"])
    for got, want in zip(jax.tree.leaves(new["critic_target"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_layer_norm_critics_normalise_each_hidden_layer():
    agent_config = dataclasses.replace(AGENT, layer_norm=True)
    _, params, _, z, action = _setup(agent_config)
    names = set(params["critic"])
    assert {"twin_critic/q1_norm_0", "twin_critic/q2_norm_1"} <= names
    assert anchored.make_critic(agent_config)[1](params["critic"], z, action).shape == (2, B)


def test_an_anchored_run_is_bit_identical_for_a_seed_and_explores_by_sampling():
    config = config_lib.with_overrides(
        TINY, agent={"learner": "anchored", "stochastic": True, "horizon": 2, "explore_sample": True}
    )
    first, _ = loop.train(config, 600, progress=False)
    second, _ = loop.train(config, 600, progress=False)
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert set(first.params) == {"world_model", "actor", "critic", "critic_target", "log_alpha"}
    assert int(first.updates) > 0
