"""Experience collection: real cars driven by any policy, kept time-major with their poses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.course import experience
from carlab.learn import policies, replay
from carlab.sim import env

N, T = 6, 120  # cars, steps
MAX_STEPS = 50  # a short step limit, so truncations happen too
PARAMS = env.EnvParams.from_seeds([0, 1, 2], max_steps=MAX_STEPS)
# Held random actions; collect compiles once per policy apply function (and shapes), whatever the key.
POLICY = policies.random(jax.random.key(7), throttle_low=0.0, hold=4)


@pytest.fixture(scope="module")
def traj():
    return experience.collect(jax.random.key(0), PARAMS, num_cars=N, num_steps=T, policy=POLICY)


def _physics(car, action, params=PARAMS):
    """NumPy reference of the car's motion (carlab.sim.env's docstring): the next [x, y, speed, angle]."""
    x, y, speed, angle = np.moveaxis(np.asarray(car, np.float64), -1, 0)
    steering, throttle = np.moveaxis(np.asarray(action, np.float64), -1, 0)
    rate = np.where(throttle >= 0.0, params.acceleration, params.brake)
    speed = np.clip(speed * (1.0 - params.friction) + throttle * rate, 0.0, params.max_speed)
    angle = np.mod(angle + steering * params.turn_rate + np.pi, 2 * np.pi) - np.pi
    return np.stack([x + speed * np.cos(angle), y + speed * np.sin(angle), speed, angle], axis=-1)


def _start_cars(track_ids, params=PARAMS):
    starts = [env.start_state(params, int(i)) for i in track_ids]
    return np.array([[s.x, s.y, 0.0, s.angle] for s in starts])


def test_shapes_and_dtypes(traj):
    assert traj.obs.shape == traj.next_obs.shape == (T, N, 6)
    assert traj.action.shape == (T, N, 2)
    assert traj.reward.shape == traj.done.shape == traj.truncated.shape == (T, N)
    assert traj.done.dtype == traj.truncated.dtype == jnp.bool_
    assert traj.car.shape == (T + 1, N, 4)
    np.testing.assert_array_equal(traj.track_id, np.arange(N) % 3)  # car i on track i % M


def test_same_key_same_trajectories_and_a_new_key_new_ones(traj):
    again = experience.collect(jax.random.key(0), PARAMS, num_cars=N, num_steps=T, policy=POLICY)
    jax.tree.map(np.testing.assert_array_equal, traj, again)
    # The env is deterministic: only the default (random) policy depends on the key.
    default_a = experience.collect(jax.random.key(1), PARAMS, num_cars=2, num_steps=20)
    compiled = experience._collect._cache_size()
    default_b = experience.collect(jax.random.key(2), PARAMS, num_cars=2, num_steps=20)
    assert not np.array_equal(default_a.action, default_b.action)
    assert experience._collect._cache_size() == compiled  # a new key needs no new compilation
    other = policies.random(jax.random.key(8), throttle_low=-1.0, hold=2)  # new values, same shapes
    experience.collect(jax.random.key(2), PARAMS, num_cars=2, num_steps=20, policy=other)
    assert experience._collect._cache_size() == compiled
    # The default policy holds each draw for 8 steps and never brakes.
    action = np.asarray(default_a.action)
    assert np.all(action[:, :, 1] >= 0.0)
    np.testing.assert_array_equal(action[:8], np.broadcast_to(action[:1], action[:8].shape))
    assert not np.array_equal(action[7], action[8])


def test_actions_are_in_the_box_and_sanitised(traj):
    assert np.all(np.abs(np.asarray(traj.action)) <= 1.0)
    wild = experience.collect(
        jax.random.key(0),
        PARAMS,
        num_cars=2,
        num_steps=3,
        policy=policies.from_function(lambda obs: jnp.array([[jnp.nan, 5.0]] * 2)),
    )
    np.testing.assert_array_equal(wild.action, np.broadcast_to([0.0, 1.0], (3, 2, 2)))


def test_poses_follow_the_real_car(traj):
    car, action = np.asarray(traj.car), np.asarray(traj.action)
    ended = np.asarray(traj.done | traj.truncated)
    assert ended.sum() >= 3 and traj.done.any() and traj.truncated.any()  # both kinds of ending happen
    np.testing.assert_allclose(car[0], _start_cars(traj.track_id), rtol=1e-6)
    expected = _physics(car[:-1], action)
    np.testing.assert_allclose(car[1:][~ended], expected[~ended], rtol=1e-5, atol=1e-3)
    # A finished car is back on its own start line, at rest.
    t, i = np.nonzero(ended)
    np.testing.assert_allclose(car[t + 1, i], _start_cars(np.asarray(traj.track_id)[i]), rtol=1e-6)
    # The observation's speed entry is the pose's speed.
    np.testing.assert_allclose(traj.obs[..., 5] * PARAMS.max_speed, car[:-1, :, 2], atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(traj.next_obs[..., 5])[~ended] * PARAMS.max_speed, car[1:, :, 2][~ended], atol=1e-5
    )
    assert car[:, :, 2].max() > 2.0  # the cars really drove


def test_observations_chain_and_reset_on_endings(traj):
    obs, next_obs = np.asarray(traj.obs), np.asarray(traj.next_obs)
    ended = np.asarray(traj.done | traj.truncated)
    np.testing.assert_array_equal(obs[1:][~ended[:-1]], next_obs[:-1][~ended[:-1]])
    t, i = np.nonzero(ended[:-1])
    np.testing.assert_array_equal(obs[t + 1, i], np.asarray(PARAMS.start_obs)[np.asarray(traj.track_id)[i]])
    np.testing.assert_array_equal(obs[0], np.asarray(PARAMS.start_obs)[np.asarray(traj.track_id)])
    # Truncations come at the step limit, crashes cost the penalty.
    assert np.all(np.asarray(traj.reward)[np.asarray(traj.done)] < -0.5)


def test_matches_stepping_the_env_by_hand(traj):
    # The oracle: env.step for each car, one at a time, with the actions the trajectory took.
    step = jax.jit(env.step)
    for i in (0, 4):
        obs, state = env.reset(None, PARAMS, int(traj.track_id[i]))
        for t in range(T):
            np.testing.assert_allclose(traj.obs[t, i], obs, atol=1e-6)
            obs, state, reward, terminated, truncated, info = step(None, state, traj.action[t, i], PARAMS)
            np.testing.assert_allclose(traj.next_obs[t, i], info["final_obs"], atol=1e-6)
            np.testing.assert_allclose(traj.reward[t, i], reward, atol=1e-5)
            assert bool(traj.done[t, i]) == bool(terminated) and bool(traj.truncated[t, i]) == bool(truncated)


def test_to_buffer_is_step_major_and_sequences_are_real(traj):
    buffer = experience.to_buffer(traj)
    assert buffer.capacity == int(buffer.size) == T * N
    # Car i's step t sits in slot t * N + i.
    for t, i in ((0, 0), (5, 3), (T - 1, N - 1)):
        slot = t * N + i
        np.testing.assert_array_equal(buffer.obs[slot], traj.obs[t, i])
        np.testing.assert_array_equal(buffer.action[slot], traj.action[t, i])
        np.testing.assert_array_equal(buffer.next_obs[slot], traj.next_obs[t, i])
        assert buffer.reward[slot] == traj.reward[t, i] and buffer.done[slot] == traj.done[t, i]
    # sample_sequences with stride N cuts real stretches of one car's driving out of it.
    length = 6
    sample = jax.jit(replay.sample_sequences, static_argnums=(2, 3, 4))
    batch = sample(buffer, jax.random.key(3), 32, length, N)
    for b in range(32):
        t, i = _locate(traj, batch.obs[b, 0], batch.action[b, 0])
        assert t + length <= T
        np.testing.assert_array_equal(batch.obs[b], traj.obs[t : t + length, i])
        np.testing.assert_array_equal(batch.action[b], traj.action[t : t + length, i])
        np.testing.assert_array_equal(batch.reward[b], traj.reward[t : t + length, i])


def _locate(traj, obs, action):
    """(t, i): the one step of the trajectory with this observation and action."""
    hits = np.argwhere(
        np.all(np.asarray(traj.obs) == np.asarray(obs), axis=-1)
        & np.all(np.asarray(traj.action) == np.asarray(action), axis=-1)
    )
    assert len(hits) == 1, f"{len(hits)} steps match"
    return tuple(int(v) for v in hits[0])


def test_windows_align_steps_poses_and_mask(traj):
    length, count = 12, 40
    win = jax.jit(experience.windows, static_argnames=("length", "count"))(
        jax.random.key(4), traj, length=length, count=count
    )
    assert win.batch.obs.shape == (count, length, 6) and win.batch.action.shape == (count, length, 2)
    assert win.car.shape == (count, length + 1, 4) and win.track_id.shape == win.mask.shape[:1] == (count,)
    assert win.mask.shape == (count, length)
    ended = np.asarray(traj.done | traj.truncated)
    starts, crossed = set(), 0
    for b in range(count):
        t, i = _locate(traj, win.batch.obs[b, 0], win.batch.action[b, 0])
        starts.add((t, i))
        steps = slice(t, t + length)
        for field in ("obs", "action", "next_obs", "reward", "done"):
            np.testing.assert_array_equal(getattr(win.batch, field)[b], getattr(traj, field)[steps, i])
        np.testing.assert_array_equal(win.car[b], traj.car[t : t + length + 1, i])
        assert int(win.track_id[b]) == int(traj.track_id[i])
        # In the first episode until a crash or truncation has happened *before* the step.
        expected = np.concatenate([[True], np.cumsum(ended[steps, i])[:-1] == 0])
        np.testing.assert_array_equal(win.mask[b], expected.astype(np.float32))
        crossed += not expected.all()
    assert len(starts) > count // 2 and crossed >= 3  # varied stretches, some across an episode's end
    np.testing.assert_array_equal(win.mask, replay.sequence_mask(win.batch))


@pytest.mark.parametrize("steps, cars", [(10, 300), (1, 3)])
def test_return_until_done_matches_a_python_loop(steps, cars):
    rng = np.random.default_rng(steps)
    reward = rng.normal(size=(steps, cars)).astype(np.float32)
    done = rng.random((steps, cars)) < 0.2  # 300 columns: every place of a first done, and none
    expected = np.zeros(cars, np.float32)
    alive = np.zeros((steps, cars), bool)
    for i in range(cars):
        for t in range(steps):
            alive[t, i] = True
            expected[i] += reward[t, i]
            if done[t, i]:
                break
    np.testing.assert_allclose(experience.return_until_done(reward, done), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(experience.alive(done), alive)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"num_cars": 0}, ValueError),
        ({"num_cars": 2.0}, ValueError),
        ({"num_cars": True}, ValueError),
        ({"num_steps": 0}, ValueError),
        ({"num_steps": -3}, ValueError),
        ({"policy": "random"}, TypeError),
        ({"policy": lambda obs: obs[..., :2]}, TypeError),  # a bare function: wrap it in a Policy
    ],
)
def test_collect_rejects_bad_arguments(kwargs, error):
    args = {"num_cars": 2, "num_steps": 3, "policy": POLICY, **kwargs}
    with pytest.raises(error):
        experience.collect(jax.random.key(0), PARAMS, **args)


def test_collect_needs_auto_reset():
    no_reset = env.EnvParams.from_seeds([0], auto_reset=False)
    with pytest.raises(ValueError, match="auto_reset"):
        experience.collect(jax.random.key(0), no_reset, num_cars=2, num_steps=3, policy=POLICY)


@pytest.mark.parametrize(
    "length, count", [(0, 4), (T + 1, 4), (True, 4), (3.0, 4), (3, 0), (3, -1), (3, 2.5)]
)
def test_windows_rejects_bad_arguments(traj, length, count):
    with pytest.raises(ValueError):
        experience.windows(jax.random.key(0), traj, length=length, count=count)


def test_random_policy_holds_each_draw():
    obs = jnp.zeros((5, 6))
    for hold in (1, 3):
        act = jax.jit(policies.random(jax.random.key(0), throttle_low=-0.5, hold=hold).__call__)
        actions = np.stack([act(obs, jnp.int32(t)) for t in range(12)])  # (12, 5, 2)
        assert actions.shape == (12, 5, 2)
        blocks = actions.reshape(12 // hold, hold, 5, 2)
        np.testing.assert_array_equal(blocks, np.broadcast_to(blocks[:, :1], blocks.shape))  # held
        assert all(not np.array_equal(blocks[k], blocks[k + 1]) for k in range(len(blocks) - 1))  # redrawn
        assert not np.array_equal(actions[0, 0], actions[0, 1])  # each car its own draw
        assert actions[..., 0].min() >= -1.0 and actions[..., 1].min() >= -0.5 and actions.max() <= 1.0
    # Fresh draws every step spread over the whole box.
    many = policies.random(jax.random.key(1), throttle_low=-0.5)(jnp.zeros((4000, 6)), 0)
    assert many[:, 0].min() < -0.95 and many[:, 1].min() < -0.45 and many.max() > 0.95
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="hold"):
            policies.random(jax.random.key(0), hold=bad)
