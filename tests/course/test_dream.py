"""The dream env: the world model's maths one step at a time, a dead-reckoned pose, auto-reset, Gymnasium."""

import dataclasses
import functools
import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import carlab  # noqa: F401  (registers carlab/Dream-v0)
from carlab.course import dream
from carlab.learn import world_model
from carlab.learn.config import WorldModelConfig
from carlab.learn.runs import load_run
from carlab.sim import env

CHECKPOINT = "models/agent.safetensors"
STEPS = 25  # long enough for the pretrained car to get going and turn
TOL = {"rtol": 1e-5, "atol": 1e-5}
# Jitted: op by op, every small op compiles on its own. jit == no-jit is a test of its own (below).
_step_env = jax.jit(dream.step_env)
_step = jax.jit(dream.step)


@functools.cache
def _pretrained():
    """The saved run's world model: (params, config). Loaded once per test process."""
    state, config, _, _ = load_run(CHECKPOINT)
    return state.params["world_model"], config.world_model


@pytest.fixture(scope="module")
def params():
    """Dream params of the pretrained model on the start lines of tracks 0, 1, 2 (no auto-reset)."""
    wm_params, wm_config = _pretrained()
    env_params = env.EnvParams.from_seeds([0, 1, 2], auto_reset=False)
    return dream.DreamParams.from_env(wm_params, env_params, wm_config)


def _actions(seed=0, steps=STEPS, batch=()):
    """Swerving full-ish throttle: enough steering to exercise the heading, in [-1, 1]."""
    key = jax.random.key(seed)
    steering = jax.random.uniform(key, (steps, *batch), minval=-1.0, maxval=1.0)
    throttle = jnp.linspace(1.0, 0.3, steps).reshape((steps,) + (1,) * len(batch))
    return jnp.stack([steering, jnp.broadcast_to(throttle, steering.shape)], axis=-1)


def _dream(params, actions, track_id=0):
    """Step :func:`dream.step_env` through ``actions`` (T, 2); returns the stacked outputs."""
    obs, state = dream.reset(None, params, track_id)
    out = {"obs": [], "reward": [], "prob": [], "latent": [state.latent], "car": [state.car], "term": []}
    for action in actions:
        obs, state, reward, terminated, _, info = _step_env(None, state, action, params)
        for name, value in (("obs", obs), ("reward", reward), ("prob", info["continue_prob"])):
            out[name].append(value)
        out["latent"].append(state.latent)
        out["car"].append(state.car)
        out["term"].append(terminated)
    return {k: np.stack(v) for k, v in out.items()}


# ---------------------------------------------------------------- the same maths as the world model


def test_step_env_is_the_world_models_open_loop(params):
    wm_params, wm_config = _pretrained()
    wm = world_model.make_world_model(wm_config)
    wm = wm._replace(**{name: jax.jit(getattr(wm, name)) for name in wm._fields})  # op by op is slow
    actions = _actions()
    got = _dream(params, actions)

    # The oracle: the world model's parts by hand.
    start = params.start_obs[0]
    z = wm.encode(wm_params, start)
    manual = {"obs": [], "reward": [], "prob": [], "latent": [z]}
    for action in actions:
        z = wm.dynamics(wm_params, z, action)
        manual["obs"].append(wm.decode(wm_params, z))
        manual["reward"].append(wm.reward(wm_params, z))
        manual["prob"].append(jax.nn.sigmoid(wm.continue_logit(wm_params, z)))
        manual["latent"].append(z)
    for name, values in manual.items():
        np.testing.assert_allclose(got[name], np.stack(values), **TOL, err_msg=name)

    pred_obs, pred_reward, pred_cont = world_model.open_loop(wm_params, start[None], actions[None], wm_config)
    np.testing.assert_allclose(got["obs"], pred_obs[0], **TOL)
    np.testing.assert_allclose(got["reward"], pred_reward[0], **TOL)
    np.testing.assert_allclose(got["prob"], pred_cont[0], **TOL)

    # Not a trivial model: the dream moves, earns, and its observations change.
    assert np.ptp(got["obs"], axis=0).max() > 0.1 and np.ptp(got["reward"]) > 0.05
    assert got["car"][-1, 2] > 1.0  # px per step


def test_rollout_equals_step_env_and_open_loop(params):
    wm_params, wm_config = _pretrained()
    actions = _actions(seed=1, batch=(3,))  # (T, B=3, 2)
    start = params.start_obs  # three tracks' start lines
    cars = np.concatenate([params.start_pose[:, :2], np.zeros((3, 1)), params.start_pose[:, 2:]], axis=1)
    roll = jax.jit(dream.rollout, static_argnames=("act", "num_steps"))(
        params, start, cars, lambda z, t: actions[t], STEPS
    )
    T, B = STEPS, 3
    assert roll.obs.shape == (T, B, 6) and roll.action.shape == (T, B, 2) and roll.reward.shape == (T, B)
    assert roll.continue_prob.shape == roll.alive.shape == (T, B)
    assert roll.car.shape == (T + 1, B, 4) and roll.latent.shape == (T + 1, B, wm_config.latent_size)
    np.testing.assert_array_equal(roll.action, actions)

    pred_obs, pred_reward, pred_cont = world_model.open_loop(
        wm_params, start, jnp.swapaxes(actions, 0, 1), wm_config
    )
    np.testing.assert_allclose(roll.obs, jnp.swapaxes(pred_obs, 0, 1), **TOL)
    np.testing.assert_allclose(roll.reward, jnp.swapaxes(pred_reward, 0, 1), **TOL)
    np.testing.assert_allclose(roll.continue_prob, jnp.swapaxes(pred_cont, 0, 1), **TOL)
    for b in range(B):
        one = _dream(params, actions[:, b], track_id=b)
        np.testing.assert_allclose(roll.obs[:, b], one["obs"], **TOL)
        np.testing.assert_allclose(roll.car[:, b], one["car"], rtol=1e-5, atol=1e-3)  # px
        np.testing.assert_allclose(roll.latent[:, b], one["latent"], **TOL)
        # alive: no predicted crash *before* the step (the crashing step itself still counts).
        crashed_before = np.concatenate([[False], np.cumsum(one["term"])[:-1] > 0])
        np.testing.assert_array_equal(roll.alive[:, b], ~crashed_before)


def test_rollout_alive_stops_after_a_predicted_crash(params):
    # Every step is a "crash" when P(continue) must reach 1: alive only on the first step.
    strict = dataclasses.replace(params, crash_threshold=1.0)
    actions = _actions(batch=(2,))
    rollout = jax.jit(dream.rollout, static_argnames=("act", "num_steps"))
    roll = rollout(strict, strict.start_obs[:2], np.zeros((2, 4)), lambda z, t: actions[t], 5)
    assert np.all(np.asarray(roll.continue_prob) < 1.0)
    expected = np.zeros((5, 2), bool)
    expected[0] = True
    np.testing.assert_array_equal(roll.alive, expected)
    # rollout records the action as the env applies it.
    wild = rollout(
        params, params.start_obs[:1], np.zeros((1, 4)), lambda z, t: jnp.array([[jnp.nan, 7.0]]), 2
    )
    np.testing.assert_array_equal(wild.action, np.broadcast_to([0.0, 1.0], (2, 1, 2)))


def test_dead_reckoned_pose_turns_like_the_real_car(params):
    env_params = env.EnvParams.from_seeds([0, 1, 2], auto_reset=False)
    # Braking at rest first: the model then believes in a (slightly) negative speed.
    actions = jnp.concatenate([jnp.tile(jnp.array([[0.0, -1.0]]), (3, 1)), _actions(seed=2)])
    got = _dream(params, actions)
    assert np.any(got["obs"][:, 5] < -0.01)
    # The dream starts exactly where the real car does, at rest.
    real = env.start_state(env_params, 0)
    np.testing.assert_allclose(got["car"][0], [real.x, real.y, 0.0, real.angle], rtol=1e-6)
    # The heading turns exactly like the real car's under the same actions (wrapped the same way).
    angles = [real.angle]
    real_step = jax.jit(env.step_env)
    for action in actions:
        _, real, *_ = real_step(None, real, action, env_params)
        angles.append(real.angle)
    np.testing.assert_allclose(got["car"][:, 3], np.array(angles), atol=1e-5)
    assert np.ptp(got["car"][:, 3]) > 0.2  # it really turned
    # Speed is the decoded speed (clipped like a sensor); x, y move by it along the new heading.
    speed = np.clip(got["obs"][:, 5], 0.0, 1.0) * env_params.max_speed
    np.testing.assert_allclose(got["car"][1:, 2], speed, rtol=1e-5, atol=1e-6)
    assert np.all(got["car"][:, 2] >= 0.0)  # the car never reverses, in a dream neither
    x, y, angle = got["car"][:-1, 0], got["car"][:-1, 1], got["car"][1:, 3]
    np.testing.assert_allclose(got["car"][1:, 0], x + speed * np.cos(angle), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(got["car"][1:, 1], y + speed * np.sin(angle), rtol=1e-5, atol=1e-3)


def test_from_env_takes_the_envs_starts_and_constants():
    wm_params, wm_config = _pretrained()
    env_params = env.EnvParams.from_seeds([3, 5], max_speed=4.0, turn_rate=0.1, max_steps=77)
    params = dream.DreamParams.from_env(wm_params, env_params, wm_config, crash_threshold=0.3)
    assert (params.max_speed, params.turn_rate, params.max_steps, params.auto_reset) == (4.0, 0.1, 77, True)
    assert params.crash_threshold == 0.3 and params.config == wm_config and params.num_tracks == 2
    np.testing.assert_array_equal(params.start_obs, env_params.start_obs)
    for i in range(2):
        start = env.start_state(env_params, i)
        np.testing.assert_allclose(params.start_pose[i], [start.x, start.y, start.angle])
    with pytest.raises(TypeError):
        dream.DreamParams.from_env(wm_params, env_params, wm_config, no_such_field=1)


def test_reset_and_dream_from_start_from_the_models_belief(params):
    wm_params, wm_config = _pretrained()
    wm = world_model.make_world_model(wm_config)
    obs, state = dream.reset(None, params, 2)
    np.testing.assert_allclose(obs, wm.decode(wm_params, wm.encode(wm_params, params.start_obs[2])), **TOL)
    assert int(state.track_id) == 2 and int(state.time) == 0 and float(state.speed) == 0.0
    # dream_from: any real observation and pose.
    real = np.array([0.2, 0.3, 1.0, 0.3, 0.2, 0.6], np.float32)
    obs, state = dream.dream_from(real, [10.0, 20.0, 3.0, 0.5], params, track_id=1)
    np.testing.assert_allclose(obs, wm.decode(wm_params, wm.encode(wm_params, real)), **TOL)
    np.testing.assert_allclose(state.car, [10.0, 20.0, 3.0, 0.5])
    assert int(state.track_id) == 1
    # With no track_id the key picks one, uniformly over the tracks.
    drawn = {int(dream.reset(jax.random.key(k), params)[1].track_id) for k in range(40)}
    assert drawn == {0, 1, 2}


# ---------------------------------------------------------------- jit, vmap, auto-reset


def test_jit_equals_no_jit(params):
    auto = dataclasses.replace(params, auto_reset=True, max_steps=3)
    _, state = dream.reset(None, auto, 1)
    for action in _actions(seed=3, steps=5):  # crosses the truncation at step 3
        eager = dream.step(None, state, action, auto)
        fast = _step(None, state, action, auto)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), eager, fast)
        state = fast[1]
    assert int(state.time) == 2  # it did auto-reset at step 3


def test_vmap_over_dreams_equals_one_at_a_time(params):
    B = 3
    _, states = jax.vmap(dream.reset, in_axes=(None, None, 0))(None, params, jnp.arange(B))
    actions = _actions(seed=4, steps=6, batch=(B,))
    vstep = jax.jit(jax.vmap(dream.step, in_axes=(None, 0, 0, None)))
    singles = [dream.reset(None, params, b)[1] for b in range(B)]
    for action in actions:
        batched = vstep(None, states, action, params)
        states = batched[1]
        for b in range(B):
            one = _step(None, singles[b], action[b], params)
            singles[b] = one[1]
            jax.tree.map(lambda a, s, b=b: np.testing.assert_allclose(a[b], s, **TOL), batched, one)
    assert len({float(s.x) for s in singles}) == B  # three different dreams


def test_auto_reset_on_a_predicted_crash(params):
    obs, state = dream.reset(None, params, 1)
    for action in _actions(steps=5):
        obs, state, *_ = dream.step(None, state, action, params)
    assert int(state.time) == 5 and float(state.speed) > 0.0
    # P(continue) is always below 1, so with crash_threshold=1 the next step is a crash.
    crashy = dataclasses.replace(params, crash_threshold=1.0, auto_reset=True)
    ended_obs, ended, *_ = dream.step_env(None, state, jnp.array([0.5, 1.0]), crashy)
    obs, new, _, terminated, truncated, info = dream.step(None, state, jnp.array([0.5, 1.0]), crashy)
    assert bool(terminated) and not bool(truncated) and float(info["continue_prob"]) < 1.0
    np.testing.assert_allclose(info["final_obs"], ended_obs, **TOL)  # what the crashing step saw
    start_obs, start = dream.reset(None, crashy, 1)  # back on its own track's start line, at rest
    np.testing.assert_allclose(obs, start_obs, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), new, start)
    assert float(ended.speed) > 0.0 and int(ended.time) == 6  # what it was reset from
    # Without auto-reset the crashed dream stays where it crashed.
    manual = dataclasses.replace(crashy, auto_reset=False)
    _, stay, _, terminated, *_ = dream.step(None, state, jnp.array([0.5, 1.0]), manual)
    assert bool(terminated) and int(stay.time) == 6
    # With the default threshold the pretrained model does not predict a crash at the start.
    _, _, _, terminated, *_ = dream.step(None, start, jnp.array([0.0, 1.0]), params)
    assert not bool(terminated)


def test_truncation_at_max_steps(params):
    never_crash = dataclasses.replace(params, crash_threshold=0.0, max_steps=4, auto_reset=True)
    _, state = dream.reset(None, never_crash, 2)
    flags = []
    for action in _actions(steps=9):
        _, state, _, terminated, truncated, _ = dream.step(None, state, action, never_crash)
        assert not bool(terminated)
        flags.append(bool(truncated))
        assert int(state.time) == len(flags) % 4 and int(state.track_id) == 2
    assert flags == [False, False, False, True] * 2 + [False]
    # step_env reports it too, and leaves the state where it is.
    _, state = dream.reset(None, never_crash, 0)
    for _ in range(4):
        _, state, _, _, truncated, _ = dream.step_env(None, state, jnp.array([0.0, 1.0]), never_crash)
    assert bool(truncated) and int(state.time) == 4 and float(state.speed) > 0.0


# ---------------------------------------------------------------- carlab/Dream-v0


def test_gymnasium_check_env_passes_without_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = gymnasium.make("carlab/Dream-v0", checkpoint=CHECKPOINT)
        check_env(made.unwrapped)
    assert [str(w.message) for w in caught] == []
    assert isinstance(made.unwrapped, dream.DreamRaceEnv)
    made.close()


def test_gym_env_matches_the_functional_dream_and_stays_in_the_box(params):
    wm_params, wm_config = _pretrained()
    denv = dream.DreamRaceEnv(wm_params=wm_params, wm_config=wm_config, track_seed=0)
    obs, info = denv.reset(seed=1)
    assert obs in denv.observation_space and info == {"time": 0}
    actions = np.asarray(_actions(seed=5))
    got = _dream(params, actions)
    for t, action in enumerate(actions):
        obs, reward, terminated, truncated, info = denv.step(action)
        assert obs.dtype == np.float32 and obs in denv.observation_space
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        np.testing.assert_allclose(obs, np.clip(got["obs"][t], 0.0, 1.0), **TOL)
        np.testing.assert_allclose(reward, got["reward"][t], **TOL)
        assert info["time"] == t + 1 and abs(info["continue_prob"] - got["prob"][t]) < 1e-5
    # reset is deterministic: the same start every time.
    np.testing.assert_array_equal(denv.reset()[0], denv.reset(seed=7)[0])


def test_gym_env_truncates_and_terminates():
    wm_params, wm_config = _pretrained()
    short = dream.DreamRaceEnv(wm_params=wm_params, wm_config=wm_config, max_steps=3)
    short.reset()
    flags = [short.step(np.array([0.0, 1.0], np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    scared = dream.DreamRaceEnv(wm_params=wm_params, wm_config=wm_config, crash_threshold=1.0)
    scared.reset()
    assert scared.step(np.array([0.0, 1.0], np.float32))[2] is True


@pytest.mark.parametrize(
    "action", [np.zeros(3), np.zeros((1, 2)), np.zeros(()), np.array([np.nan, 0.0]), np.array([0.0, np.inf])]
)
def test_gym_env_rejects_bad_actions(action):
    wm_params, wm_config = _pretrained()
    denv = dream.DreamRaceEnv(wm_params=wm_params, wm_config=wm_config)
    denv.reset()
    with pytest.raises(ValueError, match="action"):
        denv.step(action)
    assert int(denv.state.time) == 0  # nothing happened


def test_gym_env_needs_exactly_one_model():
    wm_params, wm_config = _pretrained()
    with pytest.raises(ValueError, match="checkpoint"):
        gymnasium.make("carlab/Dream-v0")
    with pytest.raises(ValueError, match="checkpoint"):
        dream.DreamRaceEnv(checkpoint=CHECKPOINT, wm_params=wm_params, wm_config=wm_config)
    with pytest.raises(ValueError, match="render_mode"):
        dream.DreamRaceEnv(wm_params=wm_params, wm_config=wm_config, render_mode="human")
    with pytest.raises(RuntimeError, match="reset"):
        dream.DreamRaceEnv(wm_params=wm_params, wm_config=wm_config).step(np.zeros(2, np.float32))


def test_gym_env_renders_the_dream_car():
    wm_params, wm_config = _pretrained()
    made = gymnasium.make(
        "carlab/Dream-v0", wm_params=wm_params, wm_config=wm_config, track_seed=2, render_mode="rgb_array"
    )
    made.reset()
    first = made.render()
    assert first.shape == (600, 800, 3) and first.dtype == np.uint8
    for _ in range(15):
        made.step(np.array([0.0, 1.0], np.float32))
    moved = made.render()
    assert moved.shape == (600, 800, 3) and np.any(moved != first)  # the dream car drove on
    made.close()


def test_default_config_matches_the_wm_params_it_is_given():
    # A fresh default-sized model dreams too (wm_config defaults to WorldModelConfig()).
    wm_params = world_model.make_world_model(WorldModelConfig()).init(jax.random.key(0))
    denv = dream.DreamRaceEnv(wm_params=wm_params)
    obs, _ = denv.reset()
    assert denv.step(np.zeros(2, np.float32))[0].shape == obs.shape == (6,)
