"""Return normalisation, the stochastic actor's entropy and the ensemble's disagreement, against small
references computed by hand (or by plain NumPy, step by step)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn import agent as agent_lib
from carlab.learn import config as config_lib
from carlab.learn import returns as returns_lib
from carlab.learn import world_model as wm_lib

CONFIG = config_lib.tiny("dream")  # the dream learner's objective


def test_return_range_moves_towards_the_batch_percentiles():
    returns = jnp.arange(101.0)  # 5th percentile 5, 95th percentile 95
    got = returns_lib.update_return_range(jnp.array([0.0, 10.0]), returns, 0.01)
    np.testing.assert_allclose(got, [0.99 * 0.0 + 0.01 * 5.0, 0.99 * 10.0 + 0.01 * 95.0], rtol=1e-6)


def test_return_scale_shrinks_large_returns_and_never_grows_small_ones():
    assert float(returns_lib.return_scale(jnp.array([-3.0, 37.0]))) == 40.0
    assert float(returns_lib.return_scale(jnp.array([0.1, 0.4]))) == 1.0  # range 0.3 < limit 1
    assert float(returns_lib.return_scale(jnp.array([0.1, 0.4]), limit=0.2)) == pytest.approx(0.3)


def test_normalised_objective_is_the_raw_one_divided_by_the_range():
    """With return_norm_rate 1 the range is this batch's, so the actor's loss is the raw one / range."""
    agent = dataclasses.replace(CONFIG.agent, saturation_penalty=0.0)
    normed = dataclasses.replace(agent, return_norm_rate=1.0, return_norm_limit=1e-6)
    wm_params, params, z0 = _setup(agent)
    raw_loss, (raw, _) = agent_lib.loss_fn(params, wm_params, z0, CONFIG.world_model, agent)
    _, (metrics, rng) = agent_lib.loss_fn(
        params, wm_params, z0, CONFIG.world_model, normed, return_range=returns_lib.init_return_range()
    )
    scale = float(rng[1] - rng[0])
    assert scale > 0 and float(metrics["actor/return_scale"]) == pytest.approx(scale)
    assert float(metrics["actor/loss"]) == pytest.approx(float(raw["actor/loss"]) / scale, rel=1e-5)
    del raw_loss


def test_stochastic_actor_log_prob_matches_the_squashed_gaussian_density():
    agent = dataclasses.replace(CONFIG.agent, stochastic=True, horizon=3)
    wm_params, params, z0 = _setup(agent)
    key = jax.random.PRNGKey(5)
    traj = agent_lib.imagine(wm_params, params["actor"], z0, 3, CONFIG.world_model, agent, key)
    nets = agent_lib.make_agent(agent)
    # Step 0 by hand: u = mean + std eps, a = tanh(u), log pi(a) = log N(u; mean, std) - log(1 - a^2).
    mean, std = nets.dist(params["actor"], z0)
    u = np.asarray(traj.raw_actions[0], np.float64)
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    gauss = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    want = np.sum(gauss - np.log(1.0 - np.tanh(u) ** 2), axis=-1)
    np.testing.assert_allclose(traj.log_probs[0], want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(traj.actions[0], np.tanh(u), atol=1e-6)
    assert np.all((std >= agent.std_min) & (std <= agent.std_max))
    # Its mode is what drives the real car: tanh(mean), the same as act().
    np.testing.assert_allclose(nets.act(params["actor"], z0), np.tanh(mean), atol=1e-6)


def test_entropy_bonus_is_minus_the_weighted_mean_log_prob():
    agent = dataclasses.replace(CONFIG.agent, stochastic=True, saturation_penalty=0.0)
    bonus = dataclasses.replace(agent, entropy_scale=0.5)
    wm_params, params, z0 = _setup(agent)
    key = jax.random.PRNGKey(1)
    _, (plain, _) = agent_lib.loss_fn(params, wm_params, z0, CONFIG.world_model, agent, key)
    _, (with_bonus, _) = agent_lib.loss_fn(params, wm_params, z0, CONFIG.world_model, bonus, key)
    traj = agent_lib.imagine(wm_params, params["actor"], z0, agent.horizon, CONFIG.world_model, agent, key)
    weight = _weights(traj, agent)
    entropy = -np.mean(weight * np.asarray(traj.log_probs))
    assert float(with_bonus["actor/entropy"]) == pytest.approx(entropy, rel=1e-4)
    assert float(with_bonus["actor/loss"]) == pytest.approx(
        float(plain["actor/loss"]) - 0.5 * entropy, rel=1e-4
    )


def test_ensemble_members_differ_and_dynamics_is_their_mean():
    wm_config = dataclasses.replace(CONFIG.world_model, ensemble=3)
    wm = wm_lib.make_world_model(wm_config)
    params = wm.init(jax.random.PRNGKey(0))
    z = jnp.tanh(jax.random.normal(jax.random.PRNGKey(1), (4, wm_config.latent_size)))
    a = jnp.zeros((4, 2))
    members = wm.members(params, jnp.broadcast_to(z, (3, *z.shape)), a)
    assert members.shape == (3, 4, wm_config.latent_size)
    assert not np.allclose(members[0], members[1])  # independent initial weights
    np.testing.assert_allclose(wm.dynamics(params, z, a), members.mean(0), atol=1e-6)


def test_pessimism_subtracts_lambda_times_the_members_spread():
    wm_config = dataclasses.replace(CONFIG.world_model, ensemble=3)
    agent = CONFIG.agent
    wm_params, params, z0 = _setup(agent, wm_config)
    plain = agent_lib.imagine(wm_params, params["actor"], z0, 4, wm_config, agent)
    pess = agent_lib.imagine(
        wm_params, params["actor"], z0, 4, wm_config, dataclasses.replace(agent, pessimism=2.0)
    )
    wm = wm_lib.make_world_model(wm_config)
    z1 = wm.members(wm_params, jnp.broadcast_to(z0, (3, *z0.shape)), plain.actions[0])
    spread = np.mean(np.std(np.asarray(z1), axis=0), axis=-1)
    np.testing.assert_allclose(plain.disagreement[0], spread, rtol=1e-5, atol=1e-7)
    assert np.all(spread > 0)
    np.testing.assert_allclose(pess.rewards, plain.rewards - 2.0 * plain.disagreement, rtol=1e-5, atol=1e-6)


def test_a_single_network_has_no_disagreement():
    wm_params, params, z0 = _setup(CONFIG.agent)
    traj = agent_lib.imagine(wm_params, params["actor"], z0, 4, CONFIG.world_model, CONFIG.agent)
    assert np.all(np.asarray(traj.disagreement) == 0.0)


def _weights(traj, agent_config):
    """The loss's per-step weight, by hand: the chance the imagined episode still runs, discounted."""
    alive = np.cumprod(np.concatenate([np.ones_like(traj.continues[:1]), traj.continues[:-1]]), axis=0)
    return alive * agent_config.discount ** np.arange(agent_config.horizon)[:, None]


def _setup(agent_config, wm_config=CONFIG.world_model):
    wm_params = wm_lib.make_world_model(wm_config).init(jax.random.PRNGKey(0))
    params, _ = agent_lib.init_actor_critic(jax.random.PRNGKey(1), agent_config, wm_config.latent_size)
    z0 = jnp.tanh(jax.random.normal(jax.random.PRNGKey(2), (16, wm_config.latent_size)))
    return wm_params, params, z0


def test_cautious_continue_is_the_lowest_members_chance():
    wm_config = dataclasses.replace(CONFIG.world_model, ensemble=3)
    cautious = dataclasses.replace(CONFIG.agent, cautious_continue=True)
    wm_params, params, z0 = _setup(cautious, wm_config)
    plain = agent_lib.imagine(wm_params, params["actor"], z0, 2, wm_config, CONFIG.agent)
    got = agent_lib.imagine(wm_params, params["actor"], z0, 2, wm_config, cautious)
    wm = wm_lib.make_world_model(wm_config)
    z1 = wm.members(wm_params, jnp.broadcast_to(z0, (3, *z0.shape)), plain.actions[0])
    each = np.asarray(jax.nn.sigmoid(wm.continue_logit(wm_params, z1)))  # (3, B)
    np.testing.assert_allclose(got.continues[0], each.min(axis=0), rtol=1e-6)
    np.testing.assert_allclose(got.latents, plain.latents)  # only the chance changes, not the path


def test_reinforce_objective_is_log_prob_times_the_stopped_advantage():
    agent = dataclasses.replace(CONFIG.agent, stochastic=True, saturation_penalty=0.0)
    mixed = dataclasses.replace(agent, reinforce=1.0)
    wm_params, params, z0 = _setup(agent)
    key = jax.random.PRNGKey(3)
    _, (metrics, _) = agent_lib.loss_fn(params, wm_params, z0, CONFIG.world_model, mixed, key)
    # By hand: the same rollout, log pi of its (stopped) samples, advantage R_t - v_target(z_t).
    traj = agent_lib.imagine(wm_params, params["actor"], z0, agent.horizon, CONFIG.world_model, agent, key)
    nets = agent_lib.make_agent(agent)
    values = np.asarray(nets.value(params["critic_target"], traj.latents))
    returns = np.asarray(
        returns_lib.lambda_return(traj.rewards, traj.continues, values, agent.discount, agent.lambda_)
    )
    weight = _weights(traj, agent)
    want = np.mean(weight * np.asarray(traj.log_probs) * (returns - values[:-1]))
    assert float(metrics["actor/loss"]) == pytest.approx(-want, rel=1e-4, abs=1e-6)
    # And it trains the actor (through its distribution: the samples and the model are stopped).
    grads = jax.grad(lambda p: agent_lib.loss_fn(p, wm_params, z0, CONFIG.world_model, mixed, key)[0])(params)
    assert any(np.any(np.asarray(g) != 0) for g in jax.tree.leaves(grads["actor"]))


def test_reinforce_needs_a_stochastic_actor():
    with pytest.raises(ValueError, match="stochastic"):
        agent_lib.make_agent(dataclasses.replace(CONFIG.agent, reinforce=0.5))


def test_n_step_targets_sum_real_rewards_and_stop_at_a_crash_or_the_stretch_end():
    """One stretch of 4 steps, a crash at step 2: hand-computed 3-step targets."""
    g = 0.5
    reward = jnp.array([[1.0, 2.0, 4.0, 8.0]])
    done = jnp.array([[False, False, True, False]])
    follows = jnp.array([[True, True, False, False]])  # step 3 starts a new episode
    z_next = jnp.arange(4.0).reshape(1, 4, 1)
    total, bootstrap, z_boot = returns_lib.n_step_targets(reward, done, follows, z_next, 3, g)
    # t=0: 1 + .5*2 + .25*4, ends on the crash (discount 0); t=1: 2 + .5*4, crash; t=2: 4, crash;
    # t=3: 8, the stretch ends, bootstrap gamma from z_next[3].
    np.testing.assert_allclose(total, [[3.0, 4.0, 4.0, 8.0]])
    np.testing.assert_allclose(bootstrap, [[0.0, 0.0, 0.0, g]])
    np.testing.assert_allclose(z_boot[..., 0], [[2.0, 2.0, 2.0, 3.0]])
    one = returns_lib.n_step_targets(reward, done, follows, z_next, 1, g)
    np.testing.assert_allclose(one[0], reward)
    np.testing.assert_allclose(one[1], [[g, g, 0.0, g]])
    np.testing.assert_allclose(one[2], z_next)


def test_n_step_targets_bootstrap_after_n_steps_without_a_crash():
    g = 0.9
    reward = jnp.ones((1, 5))
    done = jnp.zeros((1, 5), bool)
    follows = jnp.array([[True, True, True, True, False]])
    z_next = jnp.arange(5.0).reshape(1, 5, 1)
    total, bootstrap, z_boot = returns_lib.n_step_targets(reward, done, follows, z_next, 2, g)
    np.testing.assert_allclose(total, [[1.9, 1.9, 1.9, 1.9, 1.0]], rtol=1e-6)
    np.testing.assert_allclose(bootstrap, [[g**2, g**2, g**2, g**2, g]], rtol=1e-6)
    np.testing.assert_allclose(z_boot[..., 0], [[1.0, 2.0, 3.0, 4.0, 4.0]])
