"""The anchored learner: twin Q critics on real steps, an actor looking H imagined steps ahead, a
self-tuning temperature — each term against a small hand-computed reference."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from carlab.learn import agent as agent_lib
from carlab.learn import anchored, learners, loop, replay
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
    assert float(jnp.exp(params["log_alpha"])) == pytest.approx(anchored.INIT_TEMPERATURE)


def test_the_anchored_learner_needs_a_stochastic_actor_and_a_known_name():
    with pytest.raises(ValueError, match="stochastic"):
        learners.check(dataclasses.replace(AGENT, stochastic=False))
    with pytest.raises(ValueError, match="unknown agent.learner 'dreamer'"):
        learners.check(dataclasses.replace(AGENT, learner="dreamer"))
    with pytest.raises(ValueError, match="dream learner needs agent.horizon >= 1"):
        learners.check(dataclasses.replace(AGENT, learner="dream", horizon=0))
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
    assert float(metrics["actor/temperature"]) == pytest.approx(anchored.INIT_TEMPERATURE)


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


def test_a_delayed_actor_steps_once_per_actor_every_updates_on_their_mean_gradient():
    """actor_every = 2 (TD3's delayed policy): the first update leaves the actor as it was while the
    critics move; the second moves it by one Adam step on the mean of the two updates' gradients."""
    agent_config = dataclasses.replace(AGENT, actor_every=2)
    wm_params, params, opt_state, z, action = _setup(agent_config)
    real = (z, action, jnp.ones(B), jnp.full(B, AGENT.discount), z)
    keys = jax.random.split(jax.random.PRNGKey(3), 2)
    grad = lambda p, k: jax.grad(anchored.loss_fn, has_aux=True)(
        p, wm_params, z, real, k, TINY.world_model, agent_config
    )[0]["actor"]
    first, first_opt, _ = anchored.update(
        params, opt_state, wm_params, z, real, keys[0], TINY.world_model, agent_config
    )
    for a, b in zip(jax.tree.leaves(first["actor"]), jax.tree.leaves(params["actor"])):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(jax.tree.leaves(first["critic"])[0], jax.tree.leaves(params["critic"])[0])
    second, _, _ = anchored.update(
        first, first_opt, wm_params, z, real, keys[1], TINY.world_model, agent_config
    )
    mean = jax.tree.map(lambda g1, g2: (g1 + g2) / 2, grad(params, keys[0]), grad(first, keys[1]))
    plain = anchored.optimizers(AGENT)[0]  # actor_every = 1: Adam itself
    updates, _ = plain.update(mean, plain.init(params["actor"]), params["actor"])
    want = optax.apply_updates(params["actor"], updates)
    for got, ref in zip(jax.tree.leaves(second["actor"]), jax.tree.leaves(want)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="actor_every must be an int >= 1"):
        learners.check(dataclasses.replace(AGENT, actor_every=0))


def test_a_crash_costs_the_critics_crash_cost_more_in_every_n_step_target_that_reaches_it():
    """crash_cost c: each step's real n-step target drops by gamma^k c, k its steps to the crash."""
    wm_params = wm_lib.make_world_model(TINY.world_model).init(jax.random.PRNGKey(0))
    obs = jax.random.uniform(jax.random.PRNGKey(1), (1, 4, 6))  # one stretch of 4 linked steps
    next_obs = jnp.concatenate([obs[:, 1:], obs[:, :1]], axis=1)
    batch = replay.Transition(
        obs=obs,
        action=jnp.zeros((1, 4, 2)),
        next_obs=next_obs,
        reward=jnp.array([[1.0, 2.0, 3.0, -1.0]]),
        done=jnp.array([[False, False, False, True]]),  # the last step crashes
    )
    agent_config = dataclasses.replace(AGENT, real_steps=3, discount=0.9)
    plain = anchored.real_steps(wm_params, batch, TINY.world_model, agent_config)
    costly = anchored.real_steps(
        wm_params, batch, TINY.world_model, dataclasses.replace(agent_config, crash_cost=10.0)
    )
    # Step 0's 3-step window (steps 0-2) ends before the crash; steps 1, 2, 3 reach it 2, 1, 0 steps on.
    np.testing.assert_allclose(plain[2] - costly[2], [0.0, 10.0 * 0.81, 10.0 * 0.9, 10.0], rtol=1e-6)
    for same_plain, same_costly in zip(plain[3:], costly[3:]):  # bootstrap discounts and latents
        np.testing.assert_array_equal(same_plain, same_costly)
