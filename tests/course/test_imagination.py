"""Learning in imagination end to end (notebook 4's loop), on the tiny preset."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.course import dream, experience, offline
from carlab.learn import agent as agent_lib
from carlab.learn import config as config_lib
from carlab.learn import policies
from carlab.learn import world_model as wm_lib
from carlab.learn.config import EVAL_FIRST_SEED
from carlab.learn.evaluation import evaluate
from carlab.sim import env

CONFIG = config_lib.tiny("dream")  # notebook 4 is the dream learner's story
WM, AGENT = CONFIG.world_model, CONFIG.agent


@pytest.fixture(scope="module")
def trained():
    """A tiny model and actor, trained a little on random driving (a few seconds)."""
    params = env.EnvParams.from_seeds(range(4))
    traj = experience.collect(jax.random.PRNGKey(0), params, num_cars=4, num_steps=200)
    model = offline.fit_world_model(
        jax.random.PRNGKey(1),
        experience.to_buffer(traj),
        stride=4,
        num_updates=200,
        world_model_config=WM,
        progress=False,
    )
    actor = offline.fit_actor(
        jax.random.PRNGKey(2), model, traj.obs, num_updates=50, agent_config=AGENT, progress=False
    )
    return traj, model, actor


def test_fit_world_model_learns(trained):
    _, model, _ = trained
    loss = model.history["wm/loss"]
    assert loss.shape == (200,)
    assert loss[-20:].mean() < 0.5 * loss[:20].mean()


def test_fit_actor_trains_from_every_observation(trained):
    traj, model, actor = trained
    assert actor.history["actor/loss"].shape == (50,)
    assert set(actor.params) == {"actor", "critic", "critic_target"}
    latents = offline.encode(model, traj.obs)
    assert latents.shape == (200 * 4, WM.latent_size)  # (T, N, 6) flattened to T * N starts


def test_the_anchored_learner_fits_on_the_real_steps_of_a_buffer(trained):
    """Notebook 4's cure: critics learn from the buffer's real steps, in the same fixed model."""
    traj, model, _ = trained
    anchored = config_lib.with_overrides(CONFIG, agent={"learner": "anchored", "stochastic": True}).agent
    with pytest.raises(ValueError, match="pass buffer= and stride="):
        offline.fit_actor(jax.random.PRNGKey(3), model, traj.obs, num_updates=5, agent_config=anchored)
    buffer = experience.to_buffer(traj)
    actor = offline.fit_actor(
        jax.random.PRNGKey(3),
        model,
        traj.obs,
        num_updates=300,
        agent_config=anchored,
        buffer=buffer,
        stride=4,
        progress=False,
    )
    assert set(actor.params) == {"actor", "critic", "critic_target", "log_alpha"}
    history = actor.history
    assert history["critic/loss"].shape == (300,)
    # The critics fit the real returns: the TD error falls as they learn (random driving, -1 crashes).
    assert history["critic/loss"][-30:].mean() < history["critic/loss"][:30].mean()
    result = offline.evaluate_actor(model, actor, num_tracks=4)  # it drives the real car like any actor
    assert 0.0 <= result["mean_progress"] <= 1.0


def test_policy_is_actor_of_encoded_obs(trained):
    traj, model, actor = trained
    obs = traj.obs[10]
    z = wm_lib.make_world_model(WM).encode(model.params, obs)
    expected = agent_lib.make_agent(AGENT).act(actor.params["actor"], z)
    np.testing.assert_allclose(offline.policy(model, actor)(obs, 0), expected, rtol=1e-6)


def test_evaluate_actor_is_evaluate_of_the_actor_policy(trained):
    _, model, actor = trained
    by_actor = offline.evaluate_actor(model, actor, num_tracks=2, max_steps=40)
    # The same driver written by hand, captured in a closure, as an obs -> action function.
    wm, nets = wm_lib.make_world_model(WM), agent_lib.make_agent(AGENT)
    by_hand = policies.from_function(
        lambda obs: nets.act(actor.params["actor"], wm.encode(model.params, obs))
    )
    by_policy = evaluate(by_hand, num_tracks=2, max_steps=40)
    np.testing.assert_allclose(by_actor["progress"], by_policy["progress"], rtol=1e-5)
    assert by_actor["steps"] == by_policy["steps"]


def test_fit_actor_can_continue_from_an_actor(trained):
    traj, model, actor = trained
    fit = functools.partial(offline.fit_actor, num_updates=1, agent_config=AGENT, progress=False)
    more = fit(jax.random.PRNGKey(4), model, traj.obs, start=actor)
    fresh = fit(jax.random.PRNGKey(4), model, traj.obs)
    # One small step from the trained actor stays near it; a fresh actor starts somewhere else.
    near = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), more.params, actor.params)
    assert max(jax.tree.leaves(near)) < 0.01
    far = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), fresh.params, actor.params)
    assert max(jax.tree.leaves(far)) > 0.1


def test_best_round_picks_the_most_progress(trained, monkeypatch):
    _, model, actor = trained
    rounds = [offline.Round(model, actor, None)] * 3
    progress = iter([0.2, 0.5, 0.1])
    monkeypatch.setattr(
        offline,
        "evaluate_actor",
        lambda m, a, **kw: {"mean_progress": next(progress), "lap_completion_rate": 0.0, **kw},
    )
    best, results = offline.best_round(rounds, num_tracks=4, first_seed=0)
    assert best == 1
    assert [r["mean_progress"] for r in results] == [0.2, 0.5, 0.1]
    assert results[0]["first_seed"] == 0  # the tracks given are the ones driven


def test_noisy_actor_holds_its_noise(trained):
    traj, model, actor = trained
    obs = traj.obs[10]
    act = policies.noisy(jax.random.PRNGKey(3), offline.policy(model, actor), noise=0.5, hold=4)
    base = offline.policy(model, actor)(obs, 0)
    same = [np.asarray(act(obs, jnp.int32(t))) for t in range(4)]  # steps 0..3: one held draw
    for a in same[1:]:
        np.testing.assert_array_equal(a, same[0])
    assert not np.allclose(np.asarray(act(obs, jnp.int32(4))), same[0])  # a fresh draw at step 4
    assert not np.allclose(same[0], base)
    assert np.all(np.abs(same[0]) <= 1.0)
    with pytest.raises(ValueError, match="hold"):
        policies.noisy(jax.random.PRNGKey(3), offline.policy(model, actor), noise=0.5, hold=0)


def test_crash_probability_is_the_continue_head_one_step_ahead(trained):
    traj, model, _ = trained
    prob = offline.crash_probability(model, traj)
    assert prob.shape == traj.reward.shape
    # The same as an open-loop prediction of one step from each observation.
    _, _, cont = wm_lib.open_loop(model.params, traj.obs[5], traj.action[5][:, None], WM)
    np.testing.assert_allclose(prob[5], 1.0 - cont[:, 0], atol=1e-5)
    # Even this briefly trained model thinks a crash likelier where one happened than where none did.
    done = np.asarray(traj.done)
    assert done.any() and np.mean(np.asarray(prob)[done]) > np.mean(np.asarray(prob)[~done])


def test_expected_return_weights_steps_by_survival():
    reward = jnp.array([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]])  # (T=3, B=2)
    cont = jnp.array([[0.5, 1.0], [0.5, 1.0], [0.5, 1.0]])
    # Column 0: 1 + 0.5 + 0.25; a step counts in full when nothing before it could end the episode.
    np.testing.assert_allclose(offline.expected_return(reward, cont), [1.75, 6.0])


def test_concat_puts_cars_side_by_side():
    params = env.EnvParams.from_seeds(range(2))
    a = experience.collect(jax.random.PRNGKey(0), params, num_cars=2, num_steps=10)
    b = experience.collect(jax.random.PRNGKey(1), params, num_cars=3, num_steps=10)
    both = offline.concat(a, b)
    assert both.obs.shape == (10, 5, 6) and both.car.shape == (11, 5, 4) and both.track_id.shape == (5,)
    np.testing.assert_array_equal(both.reward[:, 2:], b.reward)
    np.testing.assert_array_equal(both.track_id, [0, 1, 0, 1, 0])
    short = experience.collect(jax.random.PRNGKey(1), params, num_cars=2, num_steps=5)
    with pytest.raises(ValueError, match="same number of steps"):
        offline.concat(a, short)


def test_imagined_and_real_drive_the_same_start_lines(trained):
    _, model, actor = trained
    params = env.EnvParams.from_seeds(range(EVAL_FIRST_SEED, EVAL_FIRST_SEED + 3))
    out = offline.imagined_and_real(params, model, actor, num_steps=30)
    compiled = offline._dream._cache_size()
    other = offline.Actor(jax.tree.map(lambda x: x * 0.5, actor.params), actor.config, actor.history)
    halved = offline.imagined_and_real(params, model, other, num_steps=30)
    assert offline._dream._cache_size() == compiled  # another actor dreams with no new compilation
    assert not np.allclose(halved.dream.action, out.dream.action)
    assert out.imagined_return.shape == out.real_return.shape == (3,)
    # The real drive is experience.collect with the actor: its return counts until the first crash.
    real = experience.collect(
        jax.random.PRNGKey(0), params, num_cars=3, num_steps=30, policy=offline.policy(model, actor)
    )
    np.testing.assert_allclose(
        out.real_return, experience.return_until_done(real.reward, real.done | real.truncated), rtol=1e-5
    )
    # Both start on each track's start line, facing the same way.
    np.testing.assert_allclose(out.dream.car[0], out.real.car[0], atol=1e-5)
    np.testing.assert_allclose(out.real.obs[0], params.start_obs, atol=1e-6)
    np.testing.assert_allclose(
        out.imagined_return,
        offline.expected_return(out.dream.reward, out.dream.continue_prob),
        rtol=1e-5,
    )
    # Each drive is cut where it ended: the real one at its crash, the dream where it predicted one.
    for i in range(3):
        drive = out.drive(i)
        assert len(drive.real_obs) == out.real_steps[i] and len(drive.dream_obs) == out.dream_steps[i]
        assert len(drive.dream_car) == out.dream_steps[i] + 1
        assert len(drive.real_car) == out.real_steps[i] + (0 if out.real_crashed[i] else 1)
        np.testing.assert_allclose(drive.real_car, out.real.car[: len(drive.real_car), i])
        assert out.real_crashed[i] == bool(np.any(out.real.done[: out.real_steps[i], i]))
    assert np.all(out.dream_crashed == (np.asarray(out.dream.continue_prob) < 0.5).any(axis=0))
    np.testing.assert_allclose(
        out.dream_crash_prob, 1.0 - np.prod(np.asarray(out.dream.continue_prob, np.float64), axis=0)
    )
    assert np.all((out.dream_crash_prob >= 0.0) & (out.dream_crash_prob <= 1.0))
    # The dream is the actor acting in the model: its first action is the actor's on the start latent.
    z0 = offline.encode(model, params.start_obs)
    first = agent_lib.make_agent(AGENT).act(actor.params["actor"], z0)
    np.testing.assert_allclose(out.dream.action[0], dream.env_action(first), rtol=1e-5)


@pytest.mark.slow
def test_improve_grows_the_data_and_is_reproducible():
    params = env.EnvParams.from_seeds(range(4))
    sizes = {"num_cars": 4, "num_steps": 50, "wm_updates": 50, "agent_updates": 20}
    sizes |= {"world_model_config": WM, "agent_config": AGENT, "progress": False}
    run = lambda: offline.improve(jax.random.PRNGKey(7), params, num_rounds=2, **sizes)
    rounds = run()
    assert len(rounds) == 2
    assert rounds[0].data.obs.shape == (50, 4, 6) and rounds[1].data.obs.shape == (50, 8, 6)
    # round 2 drove the round-1 actor: its new cars are not the random cars again
    assert not np.allclose(rounds[1].data.action[:, 4:], rounds[0].data.action)
    again = run()
    np.testing.assert_array_equal(again[1].data.action, rounds[1].data.action)
    for a, b in zip(jax.tree.leaves(again[1].actor.params), jax.tree.leaves(rounds[1].actor.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="num_rounds"):
        offline.improve(jax.random.PRNGKey(7), params, num_rounds=0, **sizes)
