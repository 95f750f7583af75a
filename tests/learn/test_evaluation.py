"""Evaluation on held-out tracks: metric definitions, baselines, freezing finished cars, determinism,
and one compilation for every policy of the same shape."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn import config as config_lib
from carlab.learn import evaluation, loop, policies
from carlab.learn.config import EVAL_FIRST_SEED
from carlab.learn.evaluation import eval_env_params, evaluate, format_summary
from carlab.sim import env

CONFIG = config_lib.tiny()
TRACKS = 8
STEPS = 400  # enough for the follower below to finish a lap (about 330 steps at throttle 0.5)


def follow_track(obs, gain=8.0, throttle=0.5):
    """A hand-written driver: steer towards the side with more room (right rays minus left rays)."""
    steering = gain * ((obs[..., 3] + obs[..., 4]) - (obs[..., 0] + obs[..., 1]))
    return jnp.stack([jnp.clip(steering, -1.0, 1.0), jnp.full(obs.shape[:-1], throttle)], axis=-1)


def zero_throttle(obs):
    return jnp.zeros(obs.shape[:-1] + (2,))


FOLLOW, STILL = policies.from_function(follow_track), policies.from_function(zero_throttle)


def _actor(params, config=CONFIG):
    return policies.actor(params, world_model_config=config.world_model, agent_config=config.agent)


@pytest.fixture(scope="module")
def params():
    return loop.init_state(CONFIG).params


@pytest.fixture(scope="module")
def follower():
    return evaluate(FOLLOW, num_tracks=TRACKS, max_steps=STEPS)


def _check_consistent(result, num_tracks, max_steps):
    for key in ("progress", "lapped", "crashed", "return", "steps"):
        assert len(result[key]) == num_tracks
    progress, lapped, crashed = (np.array(result[k]) for k in ("progress", "lapped", "crashed"))
    steps = np.array(result["steps"])
    assert result["num_tracks"] == num_tracks and result["max_steps"] == max_steps
    assert np.all((progress >= 0.0) & (progress <= 1.0))
    assert np.all((steps >= 1) & (steps <= max_steps))
    assert not np.any(lapped & crashed)
    assert result["lap_completion_rate"] == pytest.approx(lapped.mean())
    assert result["crash_rate"] == pytest.approx(crashed.mean())
    assert result["mean_progress"] == pytest.approx(progress.mean(), rel=1e-6)
    assert result["mean_steps"] == pytest.approx(steps.mean())
    assert result["mean_return"] == pytest.approx(np.mean(result["return"]), rel=1e-6)
    for key in ("lap_completion_rate", "crash_rate", "mean_progress"):
        assert 0.0 <= result[key] <= 1.0
    # Lapped cars stop at the lap: their progress is exactly one lap (capped) and they ended early.
    assert np.all(progress[lapped] == 1.0) and np.all(steps[lapped] < max_steps)
    # Cars that neither crashed nor lapped ran to the step limit.
    assert np.all(steps[~lapped & ~crashed] == max_steps)


def test_actor_metrics_are_consistent(params):
    result = evaluate(_actor(params), num_tracks=TRACKS, max_steps=STEPS)
    _check_consistent(result, TRACKS, STEPS)
    assert result["first_seed"] == EVAL_FIRST_SEED


def test_zero_throttle_never_moves_and_is_truncated():
    result = evaluate(STILL, num_tracks=TRACKS, max_steps=STEPS)
    _check_consistent(result, TRACKS, STEPS)
    assert result["mean_progress"] == 0.0
    assert result["lap_completion_rate"] == 0.0 and result["crash_rate"] == 0.0
    assert result["mean_steps"] == STEPS
    assert result["mean_return"] == pytest.approx(-0.01 * STEPS, rel=1e-4)  # only the time cost


def test_track_follower_beats_random(follower):
    _check_consistent(follower, TRACKS, STEPS)
    rand = evaluate(policies.random(jax.random.PRNGKey(0)), num_tracks=TRACKS, max_steps=STEPS)
    _check_consistent(rand, TRACKS, STEPS)
    assert follower["mean_progress"] > rand["mean_progress"] + 0.3
    assert follower["lap_completion_rate"] >= 0.25  # 5 of these 8 tracks when written
    assert rand["lap_completion_rate"] == 0.0


def test_finished_cars_stay_frozen(follower):
    """Doubling max_steps must not change any episode that ended (crash or lap) before the old limit."""
    longer = evaluate(FOLLOW, num_tracks=TRACKS, max_steps=2 * STEPS)
    ended = np.array(follower["lapped"]) | np.array(follower["crashed"])
    assert ended.any()
    for key in ("progress", "lapped", "crashed", "return", "steps"):
        assert np.array(longer[key])[ended].tolist() == np.array(follower[key])[ended].tolist(), key


def test_scan_matches_a_python_loop(follower):
    """The vmapped scan gives the same episode as stepping one car in plain Python."""
    track = 1
    params = eval_env_params(EVAL_FIRST_SEED, TRACKS, STEPS)
    step = jax.jit(env.step_env)
    obs, state = env.reset(None, params, jnp.int32(track))
    total, steps = np.float32(0.0), 0
    for _ in range(STEPS):
        obs, state, reward, terminated, truncated, _ = step(None, state, follow_track(obs), params)
        total += np.float32(reward)
        steps += 1
        if terminated or truncated or state.laps >= 1:
            break
    assert steps == follower["steps"][track]
    assert bool(terminated) == follower["crashed"][track]
    assert bool(state.laps >= 1) == follower["lapped"][track]
    assert min(float(state.best_progress), 1.0) == pytest.approx(follower["progress"][track], abs=1e-6)
    assert float(total) == pytest.approx(follower["return"][track], rel=1e-5)


def test_deterministic(params):
    first = evaluate(_actor(params), num_tracks=4, max_steps=STEPS)
    assert evaluate(_actor(params), num_tracks=4, max_steps=STEPS) == first
    key = jax.random.PRNGKey(7)
    assert evaluate(policies.random(key), num_tracks=4, max_steps=STEPS) == evaluate(
        policies.random(key), num_tracks=4, max_steps=STEPS
    )


def test_a_second_actor_of_the_same_shape_needs_no_new_compilation(params):
    """The weights are the policy's traced params: new values, same program, different driving."""
    first = evaluate(_actor(params), num_tracks=4, max_steps=STEPS)
    compiled = evaluation.rollout._cache_size()
    other = loop.init_state(config_lib.with_overrides(CONFIG, train={"seed": 1})).params
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(other)))
    second = evaluate(_actor(other), num_tracks=4, max_steps=STEPS)
    assert evaluation.rollout._cache_size() == compiled
    assert second["return"] != first["return"]
    # So does a random policy with a new key, throttle floor and hold.
    evaluate(policies.random(jax.random.PRNGKey(0)), num_tracks=4, max_steps=STEPS)
    compiled = evaluation.rollout._cache_size()
    evaluate(policies.random(jax.random.PRNGKey(1), throttle_low=0.0, hold=8), num_tracks=4, max_steps=STEPS)
    assert evaluation.rollout._cache_size() == compiled


def test_no_compilation_is_logged_for_a_second_actor(params, caplog):
    """The same check through JAX's own compile log."""
    evaluate(_actor(params), num_tracks=2, max_steps=STEPS)
    other = jax.tree.map(lambda x: x * 1.01, params)
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        evaluate(_actor(other), num_tracks=2, max_steps=STEPS)
    assert not [r for r in caplog.records if "jit(rollout)" in r.getMessage()]
    with jax.log_compiles(), caplog.at_level(logging.WARNING):  # a new shape does compile, and says so
        evaluate(_actor(other), num_tracks=3, max_steps=STEPS)
    assert [r for r in caplog.records if "jit(rollout)" in r.getMessage()]


def test_first_seed_picks_the_tracks():
    a = evaluate(FOLLOW, num_tracks=4, first_seed=10, max_steps=STEPS)
    b = evaluate(FOLLOW, num_tracks=2, first_seed=12, max_steps=STEPS)
    assert a["progress"][2:] == b["progress"] and a["steps"][2:] == b["steps"]


@pytest.mark.parametrize("preset", sorted(config_lib.PRESETS))
def test_held_out_tracks_are_not_training_tracks(preset):
    config = config_lib.preset(preset)
    train_seeds = range(
        config.train.train_first_seed, config.train.train_first_seed + config.train.num_train_tracks
    )
    assert EVAL_FIRST_SEED not in train_seeds and EVAL_FIRST_SEED > max(train_seeds) + 1000
    held_out = np.asarray(eval_env_params(EVAL_FIRST_SEED, 4, STEPS).tracks.centre)
    trained = np.asarray(loop.env_params(config_lib.tiny()).tracks.centre)
    for track in held_out:
        assert all(not np.allclose(track, other) for other in trained)


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_tracks"):
        evaluate(STILL, num_tracks=0)
    with pytest.raises(ValueError, match="max_steps"):
        evaluate(STILL, num_tracks=2, max_steps=2.5)
    with pytest.raises(ValueError, match="first_seed"):
        evaluate(STILL, num_tracks=2, first_seed=-1)
    for bad in ("fast", None, zero_throttle):  # a bare function must be wrapped: one policy type
        with pytest.raises(TypeError, match="policy must be a carlab.learn.policies.Policy"):
            evaluate(bad, num_tracks=2)


def test_format_summary(follower):
    text = format_summary(follower)
    assert "lap completion rate" in text and f"{TRACKS} held-out tracks" in text
