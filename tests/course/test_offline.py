"""Offline learning, the notebooks' way: a world model fitted on a fixed buffer, its open-loop errors,
and an actor-critic fitted purely in a fixed world model's imagination."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.course import experience
from carlab.learn import agent, config, policies, replay, world_model
from carlab.learn.runs import load_run
from carlab.sim import env

TINY = config.tiny()
CARS, STEPS = 8, 200
FIT_UPDATES = 250  # one jitted chunk (optim.FIT_CHUNK): one compilation for every fit below
FIT = {"stride": CARS, "batch_size": 16, "length": 6, "wm_config": TINY.world_model, "progress": False}


@functools.cache
def _pretrained():
    """The saved run: (train state, config). Loaded once per test process."""
    state, run_config, _, _ = load_run("models/agent.safetensors")
    return state, run_config


@pytest.fixture(scope="module")
def buffer():
    """1,600 random-policy transitions of 8 cars on 2 tracks, step-major (stride 8)."""
    params = env.EnvParams.from_seeds([0, 1], max_steps=STEPS)
    policy = policies.random(jax.random.key(1), throttle_low=0.0, hold=8)
    traj = experience.collect(jax.random.key(0), params, num_cars=CARS, num_steps=STEPS, policy=policy)
    return experience.to_buffer(traj)


# Jitted once per shape: un-jitted, every small op in them compiles on its own, which costs seconds.
_open_loop_errors = jax.jit(world_model.open_loop_errors, static_argnames="wm_config")
_loss = jax.jit(world_model.loss_fn, static_argnames="wm_config")
_sample = jax.jit(replay.sample_sequences, static_argnames=("batch_size", "length", "stride"))
_agent_init = jax.jit(agent.init_actor_critic, static_argnums=(1, 2))
_wm_init = jax.jit(world_model.make_world_model(TINY.world_model).init)


def _fresh_world_model(seed=0):
    wm_config = TINY.world_model
    params = _wm_init(jax.random.key(seed))
    return params, world_model.optimizer(wm_config).init(params)


def _trees_equal(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


# ---------------------------------------------------------------- world_model.fit


@pytest.fixture(scope="module")
def fitted(buffer):
    params, opt_state = _fresh_world_model()
    return world_model.fit(jax.random.key(2), params, opt_state, buffer, num_updates=FIT_UPDATES, **FIT)


def test_fit_lowers_the_loss(fitted):
    _, _, history = fitted
    assert set(world_model.LOSS_KEYS) <= set(history) and "wm/grad_norm" in history
    for name, values in history.items():
        assert values.shape == (FIT_UPDATES,) and np.all(np.isfinite(values)), name
    loss = history["wm/loss"]
    # About 7x when written (1.27 -> 0.18); 3x leaves room for numerical drift across machines.
    assert loss[-20:].mean() < loss[0] / 3, f"{loss[0]:.3f} -> {loss[-20:].mean():.3f}"
    for name in ("wm/recon_loss", "wm/next_obs_loss"):
        assert history[name][-20:].mean() < history[name][:5].mean() / 3, name


def test_fit_learned_the_buffer(fitted, buffer):
    # The fitted model's loss on the buffer, measured independently of fit's own history.
    fresh, _ = _fresh_world_model()
    params, _, _ = fitted
    batch = _sample(buffer, jax.random.key(9), 64, FIT["length"], CARS)
    before, _ = _loss(fresh, batch, TINY.world_model)
    after, _ = _loss(params, batch, TINY.world_model)
    assert float(after) < float(before) / 3


def test_fit_is_deterministic_per_key(fitted, buffer):
    params, opt_state = _fresh_world_model()
    again = world_model.fit(jax.random.key(2), params, opt_state, buffer, num_updates=FIT_UPDATES, **FIT)
    assert _trees_equal(again[0], fitted[0])
    np.testing.assert_array_equal(again[2]["wm/loss"], fitted[2]["wm/loss"])
    other = world_model.fit(jax.random.key(3), params, opt_state, buffer, num_updates=FIT_UPDATES, **FIT)
    assert not _trees_equal(other[0], fitted[0])
    # The params passed in are not changed (fit is pure).
    assert _trees_equal(params, _fresh_world_model()[0])


def test_fit_rejects_a_bad_number_of_updates(buffer):
    params, opt_state = _fresh_world_model()
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="updates"):
            world_model.fit(jax.random.key(0), params, opt_state, buffer, num_updates=bad, **FIT)
    same, _, history = world_model.fit(jax.random.key(0), params, opt_state, buffer, num_updates=0, **FIT)
    assert history == {} and _trees_equal(same, params)


# ---------------------------------------------------------------- open_loop_errors


def test_open_loop_errors_grow_with_the_horizon_on_a_trained_model():
    state, run_config = _pretrained()
    length = 15
    batch = _sample(state.buffer, jax.random.key(0), 128, length, run_config.train.num_cars)
    errors = _open_loop_errors(state.params["world_model"], batch, run_config.world_model)
    assert errors["pred_obs"].shape == (128, length, 6) and errors["mask"].shape == (128, length)
    assert errors["obs_error"].shape == errors["reward_error"].shape == (length,)
    assert errors["channel_error"].shape == (length, 6)
    np.testing.assert_allclose(errors["obs_error"], errors["channel_error"].mean(-1), rtol=1e-6)
    # The model is good one step ahead and drifts open loop (0.008 -> 0.018 when written).
    assert errors["obs_error"][-1] > 1.5 * errors["obs_error"][0]
    assert errors["obs_error"][0] < 0.02


def _errors_reference(pred_obs, pred_reward, batch, mask):
    """Per-step masked mean squared errors in NumPy."""
    sq = (np.asarray(pred_obs) - np.asarray(batch.next_obs)) ** 2  # (B, L, 6)
    count = np.maximum(mask.sum(0), 1.0)
    channel = (sq * mask[..., None]).sum(0) / count[:, None]
    reward = ((np.asarray(pred_reward) - np.asarray(batch.reward)) ** 2 * mask).sum(0) / count
    return channel.mean(-1), channel, reward


def test_open_loop_errors_leave_out_steps_after_a_crash(fitted, buffer):
    params, _, _ = fitted
    wm_config = TINY.world_model
    length = 5
    batch = _sample(buffer, jax.random.key(4), 2, length, CARS)
    batch = batch._replace(done=jnp.zeros_like(batch.done))
    # Make the stretches continuous (each step starts where the last ended): only `done` cuts them.
    batch = batch._replace(obs=batch.obs.at[:, 1:].set(batch.next_obs[:, :-1]))
    crashed = batch._replace(done=batch.done.at[0, 1].set(True))  # stretch 0 crashes at its step 2
    errors = _open_loop_errors(params, crashed, wm_config)
    np.testing.assert_array_equal(errors["mask"], [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    expected = _errors_reference(
        errors["pred_obs"], errors["pred_reward"], crashed, np.asarray(errors["mask"])
    )
    for got, want in zip((errors["obs_error"], errors["channel_error"], errors["reward_error"]), expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # After the crash only stretch 1 counts: garbage in stretch 0's later steps changes nothing ...
    garbage = crashed._replace(
        next_obs=crashed.next_obs.at[0, 2:].set(100.0), reward=crashed.reward.at[0, 2:].set(1e3)
    )
    spoilt = _open_loop_errors(params, garbage, wm_config)
    for name in ("obs_error", "channel_error", "reward_error"):
        np.testing.assert_allclose(spoilt[name], errors[name], rtol=1e-6, err_msg=name)
    # ... and those steps are exactly stretch 1's own errors.
    alone = _open_loop_errors(params, jax.tree.map(lambda x: x[1:], crashed), wm_config)
    np.testing.assert_allclose(errors["obs_error"][2:], alone["obs_error"][2:], rtol=1e-5)
    # Without the crash every step averages both stretches, so the errors differ.
    both = _open_loop_errors(params, batch, wm_config)
    assert not np.allclose(both["obs_error"][2:], errors["obs_error"][2:])
    # Predictions themselves do not look at the mask (open loop from the first observation).
    np.testing.assert_array_equal(both["pred_obs"], errors["pred_obs"])


def test_open_loop_errors_with_every_stretch_ended_are_zero_there(fitted, buffer):
    params, _, _ = fitted
    batch = _sample(buffer, jax.random.key(5), 3, 4, CARS)
    batch = batch._replace(done=jnp.zeros_like(batch.done).at[:, 0].set(True))
    errors = _open_loop_errors(params, batch, TINY.world_model)
    assert np.all(np.asarray(errors["obs_error"][1:]) == 0.0) and errors["obs_error"][0] > 0.0
    with pytest.raises(AssertionError):  # single transitions are not stretches
        _open_loop_errors(params, jax.tree.map(lambda x: x[:, 0], batch), TINY.world_model)


# ---------------------------------------------------------------- agent.init and agent.fit


@pytest.fixture(scope="module")
def agent_run():
    """A fresh actor-critic fitted for 150 updates in the pretrained world model's imagination."""
    state, run_config = _pretrained()
    wm_params, wm_config = state.params["world_model"], run_config.world_model
    wm = world_model.make_world_model(wm_config)
    real_obs = state.buffer.obs[: int(state.buffer.size) : 50]  # 3,000 real observations
    start = wm.encode(wm_params, real_obs)
    # The dream learner (agent.fit) on the pretrained world model; the pretrained run itself used the
    # anchored learner, whose actor looks no steps ahead.
    agent_config = dataclasses.replace(config.dream().agent, imagine_batch=64)
    params, opt_state = _agent_init(jax.random.key(0), agent_config, wm_config.latent_size)
    fitted = agent.fit(
        jax.random.key(10), params, opt_state, wm_params=wm_params, start_latents=start, num_updates=150,
        wm_config=wm_config, agent_config=agent_config, progress=False,
    )  # fmt: skip
    return params, fitted, start, agent_config


def test_agent_init(agent_run):
    *_, agent_config = agent_run
    latent_size = _pretrained()[1].world_model.latent_size
    params, opt_state = _agent_init(jax.random.key(0), agent_config, latent_size)
    assert set(params) == {"actor", "critic", "critic_target"} and set(opt_state) == {"actor", "critic"}
    assert _trees_equal(params["critic"], params["critic_target"])
    assert params["actor"]["actor/mlp/~/linear_0"]["w"].shape == (latent_size, agent_config.actor_hidden[0])
    nets = agent.make_agent(agent_config)
    z = jnp.zeros((7, latent_size))
    assert nets.act(params["actor"], z).shape == (7, 2) and nets.value(params["critic"], z).shape == (7,)
    other, _ = _agent_init(jax.random.key(1), agent_config, latent_size)
    assert not _trees_equal(other["actor"], params["actor"])


def test_agent_fit_returns_finite_metrics_and_new_actor(agent_run):
    before, (params, opt_state, history), _, _ = agent_run
    assert {"actor/loss", "actor/imagined_return", "critic/loss", "actor/grad_norm"} <= set(history)
    for name, values in history.items():
        assert values.shape == (150,) and np.all(np.isfinite(values)), name
    assert not _trees_equal(params["actor"], before["actor"])
    assert not _trees_equal(params["critic"], before["critic"])
    assert not _trees_equal(params["critic_target"], params["critic"])  # it lags behind
    assert set(opt_state) == {"actor", "critic"}


def test_agent_fit_raises_the_imagined_return(agent_run):
    before, (params, _, history), start, agent_config = agent_run
    ret = history["actor/imagined_return"]
    # About 3.1 -> 7 when written (the critic learns the value, the actor drives better).
    assert ret[-10:].mean() > 1.5 * ret[:10].mean(), f"{ret[:10].mean():.2f} -> {ret[-10:].mean():.2f}"
    # The actor alone: from the same start latents its imagined rewards beat the fresh actor's.
    state, run_config = _pretrained()
    wm_params, wm_config = state.params["world_model"], run_config.world_model
    imagine = lambda actor: agent.imagine(wm_params, actor, start, 15, wm_config, agent_config)
    assert float(imagine(params["actor"]).rewards.mean()) > float(imagine(before["actor"]).rewards.mean())


def test_agent_fit_needs_a_matrix_of_start_latents(agent_run):
    before, _, start, agent_config = agent_run
    state, run_config = _pretrained()
    opt_state = _agent_init(jax.random.key(0), agent_config, run_config.world_model.latent_size)[1]
    with pytest.raises(AssertionError):
        agent.fit(
            jax.random.key(0), before, opt_state, wm_params=state.params["world_model"],
            start_latents=start[0], num_updates=1, wm_config=run_config.world_model, agent_config=agent_config,
            progress=False,
        )  # fmt: skip
