"""The jitted environment: deterministic, batchable, equal to the plain-Python reference, robust to bad
actions, and strict about what earns reward (new ground only; a lap only after all ten checkpoints).
"""

from __future__ import annotations

import functools
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carlab.sim import env, reference
from carlab.sim.env import EnvParams, EnvState
from carlab.sim.track import NUM_CHECKPOINTS, NUM_POINTS, RAY_RANGE, make_track

LAP_SEEDS = (0, 1, 2)  # tracks the pursuit controller below laps without crashing
KEY = jax.random.PRNGKey(0)
FIELDS = ("x", "y", "speed", "angle", "quad", "progress", "best_progress", "checkpoints", "time", "track_id")


@functools.cache
def _params(seeds: tuple[int, ...], **overrides) -> EnvParams:
    return EnvParams.from_seeds(list(seeds), **overrides)


@functools.cache
def _track(seed: int):
    return make_track(seed)


def _fields(state: EnvState) -> dict[str, np.ndarray]:
    return {name: np.asarray(getattr(state, name)) for name in FIELDS}


def _assert_states_close(a: EnvState, b: EnvState, atol=1e-5, names=FIELDS):
    fa, fb = _fields(a), _fields(b)
    for name in names:
        np.testing.assert_allclose(fa[name], fb[name], atol=atol, rtol=0, err_msg=name)


def _with(state: EnvState, **fields) -> EnvState:
    """A copy of ``state`` with some fields replaced (works whatever the state's storage)."""
    values = _fields(state)
    values.update(fields)
    return EnvState(**values)


# ------------------------------------------------------------------------------------------------
# A driver that laps: pure pursuit of a lane that swings out around every obstacle.


def _lane(track, offset=17.0, hold=3, ramp=4) -> np.ndarray:
    """(P, 2) the centre line, shifted ``offset`` px to the free side near each obstacle."""
    c = track.centre.astype(np.float64)
    d = np.roll(c, -1, 0) - c
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    outward = np.stack([d[:, 1], -d[:, 0]], axis=1)
    lateral = np.zeros(NUM_POINTS)
    idx = np.arange(NUM_POINTS)
    for ox, oy, _ in track.obstacles.astype(np.float64):
        q = int(np.argmin(np.linalg.norm(c - [ox, oy], axis=1)))
        side = -np.sign(np.dot([ox, oy] - c[q], outward[q])) or 1.0
        gap = np.abs((idx - q + NUM_POINTS // 2) % NUM_POINTS - NUM_POINTS // 2)
        weight = np.clip((hold + ramp - gap) / ramp, 0.0, 1.0)
        lateral = np.where(weight > 0, side * offset * weight, lateral)
    return (c + lateral[:, None] * outward).astype(np.float32)


def _pursuit(state: EnvState, lane, params: EnvParams, look=2, speed=3.0, xp=jnp):
    """Steer at the lane point ``look`` quads ahead (behind if negative); hold ``speed``."""
    target = lane[(state.quad + look) % NUM_POINTS]
    want = xp.arctan2(target[1] - state.y, target[0] - state.x)
    error = xp.mod(want - state.angle + xp.pi, 2 * xp.pi) - xp.pi
    steering = xp.clip(error / params.turn_rate, -1.0, 1.0)
    throttle = xp.clip((speed - state.speed) * 3.0, -1.0, 1.0)
    return xp.stack([steering, throttle]).astype(xp.float32)


@functools.partial(jax.jit, static_argnames=("steps", "look", "speed"))
def _drive(state, lane, params, steps, look=2, speed=3.0):
    """``steps`` steps of step_env under pursuit; returns per-step (state, reward, terminated, truncated)."""

    def body(state, _):
        action = _pursuit(state, lane, params, look, speed)
        _, state, reward, terminated, truncated, _ = env.step_env(None, state, action, params)
        return state, (state, reward, terminated, truncated)

    return jax.lax.scan(body, state, None, length=steps)[1]


# ------------------------------------------------------------------------------------------------
# Reset, determinism, jit, vmap, scan.


def test_reset_is_deterministic_and_at_the_start_line():
    params = _params((0, 1, 2))
    for track_id in range(3):
        obs_a, state_a = env.reset(KEY, params, track_id)
        obs_b, state_b = env.reset(jax.random.PRNGKey(99), params, track_id)
        np.testing.assert_array_equal(obs_a, obs_b)
        _assert_states_close(state_a, state_b, atol=0)
        track = _track(track_id)
        car = reference.start_car(track)
        assert float(state_a.x) == pytest.approx(car.x) and float(state_a.y) == pytest.approx(car.y)
        assert float(state_a.angle) == pytest.approx(car.angle, abs=1e-6)
        assert int(state_a.quad) == 0 and int(state_a.track_id) == track_id
        assert float(state_a.speed) == 0 and float(state_a.progress) == 0 and int(state_a.checkpoints) == 0
        np.testing.assert_allclose(obs_a, reference.observe(track, car, params), atol=1e-5)
    # With no track_id the key picks one, the same one for the same key, and all of them eventually.
    picked = {int(env.reset(jax.random.PRNGKey(k), params)[1].track_id) for k in range(40)}
    assert picked == {0, 1, 2}
    assert int(env.reset(KEY, params)[1].track_id) == int(env.reset(KEY, params)[1].track_id)


def test_jit_equals_no_jit_for_a_short_rollout():
    params = _params((0, 1))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(6, 2)).astype(np.float32)
    actions[:, 1] = 1.0
    _, state = env.reset(KEY, params, 1)
    jitted = jax.jit(env.step)
    s_jit = s_plain = state
    for action in actions:
        o_jit, s_jit, r_jit, *_ = jitted(KEY, s_jit, action, params)
        with jax.disable_jit():
            o_plain, s_plain, r_plain, *_ = env.step(KEY, s_plain, action, params)
        np.testing.assert_allclose(o_jit, o_plain, atol=1e-5)
        np.testing.assert_allclose(r_jit, r_plain, atol=1e-5)
        _assert_states_close(s_jit, s_plain, atol=1e-4)
    assert float(s_jit.progress) > 0.001  # it really drove somewhere


def test_vmap_over_cars_and_tracks_equals_each_car_alone():
    """12 cars on 4 tracks in one jitted call == each car stepped alone on a one-track env."""
    seeds = (3, 5, 8, 13)
    params = _params(seeds)
    num_cars, steps = 12, 40
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1, 1, size=(steps, num_cars, 2)).astype(np.float32)
    # Steering from hard left (car 0) to hard right (car 11), jittered: the outer cars crash.
    actions[..., 0] = 0.2 * actions[..., 0] + np.linspace(-1, 1, num_cars)
    actions[..., 1] = 0.5 + 0.5 * np.abs(actions[..., 1])

    _, batch = env.reset_batch(KEY, params, num_cars)
    np.testing.assert_array_equal(np.asarray(batch.track_id), np.arange(num_cars) % len(seeds))
    batch_step = jax.jit(jax.vmap(env.step, in_axes=(0, 0, 0, None)))
    keys = jax.random.split(KEY, num_cars)
    batch_out = []
    for t in range(steps):
        obs, batch, reward, terminated, _, _ = batch_step(keys, batch, actions[t], params)
        batch_out.append((np.asarray(obs), np.asarray(reward), np.asarray(terminated), _fields(batch)))

    single_step = jax.jit(env.step)
    for car in range(num_cars):
        alone = _params((seeds[car % len(seeds)],))
        _, state = env.reset(KEY, alone, 0)
        for t in range(steps):
            obs, state, reward, terminated, _, _ = single_step(KEY, state, actions[t, car], alone)
            b_obs, b_reward, b_term, b_fields = batch_out[t]
            np.testing.assert_allclose(obs, b_obs[car], atol=1e-5, err_msg=f"car {car} step {t}")
            np.testing.assert_allclose(reward, b_reward[car], atol=1e-5)
            assert bool(terminated) == bool(b_term[car])
            for name, value in _fields(state).items():
                if name != "track_id":
                    np.testing.assert_allclose(value, b_fields[name][car], atol=1e-4, err_msg=name)
    # The run was not trivial: cars crashed (and were reset) at different steps, so every batched
    # step mixed finished and running cars.
    terminated = np.stack([out[2] for out in batch_out])
    first_crash = np.where(terminated.any(axis=0), terminated.argmax(axis=0), -1)
    assert len(set(first_crash.tolist()) - {-1}) >= 4


def test_scan_rollout_equals_python_loop():
    params = _params((0, 1, 2, 3))
    steps = 60
    actions = np.random.default_rng(2).uniform(-1, 1, size=(steps, 2)).astype(np.float32)
    _, start = env.reset(KEY, params, 2)

    def body(state, action):
        obs, state, reward, terminated, _, _ = env.step(KEY, state, action, params)
        return state, (obs, reward, terminated, state.x, state.progress)

    final, (obs_s, reward_s, term_s, x_s, prog_s) = jax.jit(lambda s, a: jax.lax.scan(body, s, a))(
        start, actions
    )
    stepper = jax.jit(env.step)
    state = start
    for t in range(steps):
        obs, state, reward, terminated, *_ = stepper(KEY, state, actions[t], params)
        np.testing.assert_allclose(obs, obs_s[t], atol=1e-5)
        np.testing.assert_allclose(reward, reward_s[t], atol=1e-5)
        assert bool(terminated) == bool(term_s[t])
        np.testing.assert_allclose(state.x, x_s[t], atol=1e-4)
        np.testing.assert_allclose(state.progress, prog_s[t], atol=1e-6)
    _assert_states_close(state, final, atol=1e-4)


# ------------------------------------------------------------------------------------------------
# The env equals the plain-Python reference.


def _ref_from_state(state: EnvState) -> reference.RefCar:
    f = _fields(state)
    return reference.RefCar(
        x=float(f["x"]),
        y=float(f["y"]),
        speed=float(f["speed"]),
        angle=float(f["angle"]),
        quad=int(f["quad"]),
        progress=float(f["progress"]),
        best_progress=float(f["best_progress"]),
        checkpoints=int(f["checkpoints"]),
        time=int(f["time"]),
    )


def _near_checkpoint(best: float) -> bool:
    """Whether float32 rounding could put ``best`` on either side of a checkpoint."""
    scaled = best * NUM_CHECKPOINTS
    return abs(scaled - round(scaled)) < 1e-4


@pytest.mark.parametrize("seed", [0, 4, 7])
def test_env_rollout_matches_reference_rollout(seed):
    """200 steps of a track-following driver (then a swerve into the wall) on the env and on
    reference.step, fed the same actions: states, observations, rewards and flags agree."""
    params = _params((seed,))
    track = _track(seed)
    lane = jnp.asarray(_lane(track))
    stepper = jax.jit(env.step_env)
    policy = jax.jit(functools.partial(_pursuit, params=params))
    _, state = env.reset(KEY, params, 0)
    car = reference.start_car(track)
    crashed_at = None
    for t in range(260):
        action = np.asarray(policy(state, lane))
        if t >= 200:
            action = np.array([1.0, 1.0], np.float32)  # swerve right at full throttle: crash
        before = _ref_from_state(state)
        obs, state, reward, terminated, truncated, _ = stepper(None, state, action, params)
        car, ref_obs, ref_reward, ref_term, ref_trunc = reference.step(track, car, action, params)
        # One step from the env's own state: tight agreement.
        one, one_obs, one_reward, one_term, one_trunc = reference.step(track, before, action, params)
        f = _fields(state)
        msg = f"seed {seed} step {t}"
        for name in ("x", "y", "speed"):
            assert f[name] == pytest.approx(getattr(one, name), abs=1e-3), (msg, name)
        assert abs(math.remainder(float(f["angle"]) - one.angle, 2 * math.pi)) < 1e-5, msg
        assert int(f["quad"]) == one.quad, msg
        assert f["progress"] == pytest.approx(one.progress, abs=1e-5), msg
        assert bool(terminated) == one_term and bool(truncated) == one_trunc, msg
        np.testing.assert_allclose(obs, one_obs, atol=5e-5, err_msg=msg)  # 5e-5 * RAY_RANGE = 7.5e-3 px
        if not _near_checkpoint(one.best_progress):
            assert int(f["checkpoints"]) == one.checkpoints, msg
            assert float(reward) == pytest.approx(one_reward, abs=1e-3), msg
        # The independent reference rollout stays with the env too (float32 drift only).
        assert f["x"] == pytest.approx(car.x, abs=0.05) and f["y"] == pytest.approx(car.y, abs=0.05), msg
        assert f["best_progress"] == pytest.approx(car.best_progress, abs=1e-4), msg
        assert bool(terminated) == ref_term and bool(truncated) == ref_trunc, msg
        np.testing.assert_allclose(obs[5], ref_obs[5], atol=1e-5)
        if terminated:
            crashed_at = t
            assert float(reward) == pytest.approx(ref_reward, abs=1e-3)
            assert float(reward) <= -params.crash_penalty
            break
    assert crashed_at is not None and crashed_at >= 200, f"seed {seed}: crashed at {crashed_at}"
    assert car.best_progress > 0.25  # it drove a quarter lap before the swerve


# ------------------------------------------------------------------------------------------------
# Bad actions.

SPECIAL = [np.nan, np.inf, -np.inf, 1e30, -1e30, -3.4e38, 3.4e38, 0.0, -0.0, 1.0, -1.0, 0.5, 1e-30]


@functools.cache
def _fuzz_runner():
    params = _params(tuple(range(8)), max_steps=25)

    @jax.jit
    def run(track_ids, speeds, actions):
        _, state = jax.vmap(env.reset, in_axes=(None, None, 0))(KEY, params, track_ids)
        state = _with_speed(state, speeds)

        def body(state, action):
            obs, state, reward, _, _, info = jax.vmap(env.step, in_axes=(None, 0, 0, None))(
                KEY, state, action, params
            )
            return state, (
                obs,
                reward,
                state.speed,
                state.x,
                state.y,
                state.angle,
                state.progress,
                info["final_obs"],
            )

        return jax.lax.scan(body, state, actions)[1]

    return run


def _with_speed(state, speeds):
    return EnvState(**{**{name: getattr(state, name) for name in FIELDS}, "speed": speeds})


@settings(max_examples=25, deadline=None)
@given(
    track_ids=hnp.arrays(np.int32, 6, elements=st.integers(0, 7)),
    speeds=hnp.arrays(np.float32, 6, elements=st.floats(0.0, 5.0, width=32)),
    actions=hnp.arrays(
        np.float32,
        (40, 6, 2),
        elements=st.one_of(
            st.sampled_from(SPECIAL), st.floats(width=32, allow_nan=True, allow_infinity=True)
        ),
    ),
)
def test_fuzzed_actions_never_break_the_state(track_ids, speeds, actions):
    obs, reward, speed, x, y, angle, progress, final_obs = _fuzz_runner()(track_ids, speeds, actions)
    for name, value in (
        ("obs", obs),
        ("reward", reward),
        ("speed", speed),
        ("x", x),
        ("y", y),
        ("angle", angle),
        ("progress", progress),
        ("final_obs", final_obs),
    ):
        assert np.all(np.isfinite(np.asarray(value))), name
    obs, final_obs = np.asarray(obs), np.asarray(final_obs)
    assert obs.min() >= 0.0 and obs.max() <= 1.0
    assert final_obs.min() >= 0.0 and final_obs.max() <= 1.0
    speed = np.asarray(speed)
    assert speed.min() >= 0.0 and speed.max() <= 5.0
    angle = np.asarray(angle)
    assert angle.min() >= -np.pi - 1e-6 and angle.max() <= np.pi + 1e-6
    # A step earns at most a checkpoint, a lap bonus and 5 px of progress; it loses at most a crash.
    reward = np.asarray(reward)
    assert reward.max() < 1.0 + 10.0 + 1.0 and reward.min() >= -10.0 - 0.01 - 1e-4


def test_sanitize_action():
    got = np.asarray(env.sanitize_action(jnp.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.25, -0.5, 2.0])))
    np.testing.assert_array_equal(got, np.float32([0.0, 1.0, -1.0, 1.0, -1.0, 0.25, -0.5, 1.0]))
    assert env.sanitize_action(jnp.array([0.1, 0.2])).dtype == jnp.float32
    # NaN steering and NaN throttle act exactly like zeros; inf like full.
    params = _params((0,))
    _, state = env.reset(KEY, params, 0)
    state = _with(state, speed=np.float32(2.0))
    stepper = jax.jit(env.step_env)
    for bad, good in (
        ((np.nan, np.nan), (0.0, 0.0)),
        ((np.inf, np.inf), (1.0, 1.0)),
        ((-np.inf, 1e30), (-1.0, 1.0)),
    ):
        a = stepper(None, state, jnp.array(bad, jnp.float32), params)
        b = stepper(None, state, jnp.array(good, jnp.float32), params)
        _assert_states_close(a[1], b[1], atol=0)
        np.testing.assert_array_equal(a[0], b[0])
    # The reference sanitises the same way.
    assert [reference.sanitize(v) for v in (np.nan, np.inf, -np.inf, 1e30, 0.25)] == [
        0.0,
        1.0,
        -1.0,
        1.0,
        0.25,
    ]


# ------------------------------------------------------------------------------------------------
# What earns reward.


def test_reversing_never_earns_reward_nor_checkpoints():
    """A car turned round at the start line drives the track backwards: no reward, no checkpoint."""
    for seed in range(10):  # the first track the backwards driver gets round without crashing
        params = _params((seed,))
        lane = jnp.asarray(_lane(_track(seed)))
        _, state = env.reset(KEY, params, 0)
        backwards = float(state.angle) + math.pi
        state = _with(state, angle=np.float32(math.remainder(backwards, 2 * math.pi)), speed=np.float32(2.0))
        states, reward, terminated, _ = _drive(state, lane, params, 600, look=-2, speed=3.0)
        if not np.asarray(terminated).any():
            break
    else:
        pytest.fail("the reversing driver crashed on tracks 0-9; the test needs one it gets round")
    reward, progress = np.asarray(reward), np.asarray(states.progress)
    assert progress.min() < -1.0  # a whole lap backwards, across the start line twice
    np.testing.assert_allclose(reward, -params.time_cost, atol=1e-6)
    assert np.all(np.asarray(states.best_progress) == 0.0)
    assert np.all(np.asarray(states.checkpoints) == 0) and np.all(np.asarray(states.laps) == 0)
    # The wrapped position went round past the finish line (0.99...) without it counting.
    assert np.asarray(states.track_progress).max() > 0.9


def test_reverse_over_the_start_then_forward_gets_no_lap():
    """Back over the start line, then forward again to 0.05 past it: only the 0.05 is new ground."""
    seed = LAP_SEEDS[0]
    params = _params((seed,))
    lane = jnp.asarray(_lane(_track(seed)))
    _, state = env.reset(KEY, params, 0)
    state = _with(
        state,
        angle=np.float32(math.remainder(float(state.angle) + math.pi, 2 * math.pi)),
        speed=np.float32(2.0),
    )
    states, reward, terminated, _ = _drive(state, lane, params, 80, look=-2)
    assert not np.asarray(terminated).any()
    back = jax.tree.map(lambda a: a[-1], states)
    assert float(back.progress) < -0.05
    # Turn the car round where it stands (the env does not care how the heading changed).
    turned = _with(back, angle=np.float32(math.remainder(float(back.angle) + math.pi, 2 * math.pi)))
    states, reward, terminated, _ = _drive(turned, lane, params, 200)
    progress = np.asarray(states.progress)
    assert not np.asarray(terminated).any()
    stop = int(np.argmax(progress >= 0.05))
    assert progress[stop] >= 0.05 and progress[:stop].min() < 0.0
    reward = np.asarray(reward)[: stop + 1]
    # Nothing until the car is past the start line again; then only the new ground is paid for.
    before = progress[: stop + 1] <= 0.0
    np.testing.assert_allclose(reward[before], -params.time_cost, atol=1e-6)
    earned = reward.sum() + params.time_cost * (stop + 1)
    assert earned == pytest.approx(params.progress_reward * progress[stop], abs=1e-3)
    assert np.all(np.asarray(states.checkpoints)[: stop + 1] == 0)
    assert np.all(np.asarray(states.laps) == 0)


def test_circling_earns_nothing_after_the_first_bit():
    """Full right lock at low speed: the car circles inside the track and earns no more progress."""
    seed = LAP_SEEDS[0]
    params = _params((seed,))
    _, state = env.reset(KEY, params, 0)

    @jax.jit
    def circle(state):
        def body(state, _):
            action = jnp.stack([1.0, jnp.clip((0.7 - state.speed) * 3.0, -1.0, 1.0)])
            _, state, reward, terminated, _, _ = env.step_env(None, state, action, params)
            return state, (state, reward, terminated)

        return jax.lax.scan(body, state, None, length=400)[1]

    states, reward, terminated = circle(state)
    reward = np.asarray(reward)
    assert not np.asarray(terminated).any()
    progress = np.asarray(states.progress)
    assert progress.max() - progress.min() < 0.02  # it stayed in one place
    # After the first turn the circle only creeps (72 steps of 5 degrees overshoot a full turn by
    # 0.14 degrees), so at most a few millionths of a lap of new ground are ever paid for again.
    one_turn = math.ceil(2 * math.pi / params.turn_rate) + 5
    earned = reward + params.time_cost
    assert np.all(earned[one_turn:] >= -1e-6)
    assert earned[one_turn:].sum() < params.progress_reward * 1e-5
    assert earned[:one_turn].sum() > 0 and earned.sum() < params.progress_reward * 0.02
    assert np.all(np.asarray(states.checkpoints) == 0)


@pytest.mark.parametrize("seed", LAP_SEEDS)
def test_a_lap_pays_each_checkpoint_once_in_order_then_the_lap_bonus_once(seed):
    params = _params((seed,))
    lane = jnp.asarray(_lane(_track(seed)))
    _, state = env.reset(KEY, params, 0)
    states, reward, terminated, _ = _drive(state, lane, params, 700)
    terminated = np.asarray(terminated)
    checkpoints = np.asarray(states.checkpoints)
    best = np.asarray(states.best_progress)
    reward = np.asarray(reward)
    end = int(np.argmax(terminated)) if terminated.any() else len(reward)
    lap_step = int(np.argmax(checkpoints >= NUM_CHECKPOINTS))
    assert checkpoints[lap_step] == NUM_CHECKPOINTS and lap_step < end, f"seed {seed}: no clean lap"
    cp = np.concatenate([[0], checkpoints[: lap_step + 1]])
    # Checkpoints rise one at a time, 1, 2, ..., 10, each exactly once, each at progress k/10.
    assert set(np.diff(cp).tolist()) <= {0, 1}
    steps_of = [int(np.argmax(cp[1:] == k)) for k in range(1, NUM_CHECKPOINTS + 1)]
    assert steps_of == sorted(steps_of) and len(set(steps_of)) == NUM_CHECKPOINTS
    for k, t in enumerate(steps_of, start=1):
        assert best[t] >= k / NUM_CHECKPOINTS and (t == 0 or best[t - 1] < k / NUM_CHECKPOINTS)
    # The lap bonus is paid once, on the step that reached checkpoint 10, and laps becomes 1 there.
    big = np.flatnonzero(reward[: lap_step + 1] > params.lap_bonus)
    assert big.tolist() == [lap_step]
    assert np.asarray(states.laps)[lap_step] == 1 and np.asarray(states.laps)[lap_step - 1] == 0
    bonus = (
        reward[lap_step] - params.progress_reward * (best[lap_step] - best[lap_step - 1]) + params.time_cost
    )
    assert bonus == pytest.approx(params.checkpoint_bonus + params.lap_bonus, abs=1e-3)
    # Over the lap: a full lap of progress, ten checkpoints, one lap bonus, minus the time cost.
    total = reward[: lap_step + 1].sum()
    expected = (
        params.progress_reward * best[lap_step]
        + NUM_CHECKPOINTS * params.checkpoint_bonus
        + params.lap_bonus
        - (lap_step + 1) * params.time_cost
    )
    assert total == pytest.approx(expected, abs=0.05)


# ------------------------------------------------------------------------------------------------
# Episode ends.


def test_truncation_at_max_steps_and_auto_reset():
    params = _params((0,), max_steps=50)
    obs0, state = env.reset(KEY, params, 0)
    stepper = jax.jit(env.step)
    idle = jnp.zeros(2, jnp.float32)
    for t in range(1, 51):
        obs, state, reward, terminated, truncated, info = stepper(KEY, state, idle, params)
        assert not bool(terminated)
        assert bool(truncated) == (t == 50), t
        np.testing.assert_allclose(reward, -params.time_cost, atol=1e-7)
    # Auto-reset put the car back at the start; final_obs was the observation before the reset.
    _assert_states_close(state, env.reset(KEY, params, 0)[1], atol=0)
    np.testing.assert_array_equal(obs, obs0)
    np.testing.assert_allclose(info["final_obs"], obs0, atol=1e-6)  # it never moved


def test_truncation_without_auto_reset():
    params = _params((0,), max_steps=50, auto_reset=False)
    _, state = env.reset(KEY, params, 0)
    stepper = jax.jit(env.step)
    for t in range(1, 52):
        _, state, _, terminated, truncated, _ = stepper(KEY, state, jnp.zeros(2), params)
        assert not bool(terminated) and bool(truncated) == (t >= 50)
    assert int(state.time) == 51


@pytest.mark.parametrize("seed", [0, 6])
def test_crash_terminates_with_the_penalty_and_auto_resets(seed):
    params = _params((seed,))
    obs0, start = env.reset(KEY, params, 0)
    stepper = jax.jit(env.step)
    plain = jax.jit(env.step_env)
    state = start
    full_right = jnp.array([1.0, 1.0], jnp.float32)
    for t in range(200):
        pre = state
        obs, state, reward, terminated, truncated, info = stepper(KEY, state, full_right, params)
        if bool(terminated):
            break
        assert float(reward) > -1.0
    else:
        pytest.fail("full right lock at full throttle never crashed")
    assert not bool(truncated)
    # The crash step pays the penalty and no progress (progress freezes on a crash).
    no_reset = plain(None, pre, full_right, params)
    assert float(reward) == pytest.approx(-params.crash_penalty - params.time_cost, abs=1e-5)
    assert float(no_reset[1].progress) == float(pre.progress)
    np.testing.assert_array_equal(info["final_obs"], no_reset[0])
    # ... and the oracle agrees it was a crash.
    car, *_ = reference.step(_track(seed), _ref_from_state(pre), np.asarray(full_right), params)
    assert not reference.is_on_track(_track(seed), car.x, car.y)
    # The car is back on the start line, and the returned obs is the start observation.
    _assert_states_close(state, start, atol=0)
    np.testing.assert_array_equal(obs, obs0)
    assert not np.array_equal(np.asarray(info["final_obs"]), np.asarray(obs0))


def test_observation_layout():
    params = _params((0,))
    obs, state = env.reset(KEY, params, 0)
    assert obs.shape == (env.OBS_SIZE,) == (6,) and obs.dtype == jnp.float32
    state = _with(state, speed=np.float32(2.5))
    obs = np.asarray(jax.jit(env.get_obs)(state, params))
    assert obs[5] == pytest.approx(0.5)
    np.testing.assert_allclose(
        obs[:5] * RAY_RANGE,
        reference.cast_rays(_track(0), float(state.x), float(state.y), float(state.angle)),
        atol=1e-3,
    )


# ---------------------------------------------------------------- the env contract, written once


def test_rays_px_clips_to_the_sensor_range():
    obs = np.array([-0.5, 0.0, 0.5, 1.0, 1.5, 0.3])
    np.testing.assert_allclose(env.rays_px(obs), [0.0, 0.0, 0.5 * RAY_RANGE, RAY_RANGE, RAY_RANGE])
    assert env.rays_px(np.zeros((4, 6))).shape == (4, 5)


def test_obs_labels_name_the_six_entries():
    assert len(env.OBS_LABELS) == env.OBS_SIZE
    assert env.OBS_LABELS[0] == "ray \u221260°" and env.OBS_LABELS[2] == "ray +0°"
    assert env.OBS_LABELS[-1] == "speed"


@pytest.mark.parametrize(
    "action, message",
    [([0.0], "shape"), ([[0.0, 1.0]], "shape"), ([np.nan, 0.0], "finite"), ([0.0, np.inf], "finite")],
)
def test_check_action_rejects_with_one_clear_error(action, message):
    with pytest.raises(ValueError, match=message):
        env.check_action(action)


def test_check_action_clips_finite_values_and_can_leave_nan_to_the_step():
    np.testing.assert_array_equal(env.check_action([3.0, -0.5]), np.float32([1.0, -0.5]))
    assert env.check_action([3.0, -0.5]).dtype == np.float32
    kept = env.check_action([np.nan, 2.0], finite=False)
    assert np.isnan(kept[0]) and kept[1] == 2.0


def test_auto_reset_restarts_only_finished_cars_and_keeps_the_final_obs():
    params = env.EnvParams.from_seeds([0, 1])
    obs, state = env.reset_batch(jax.random.PRNGKey(0), params, 2)
    moved = state.replace(x=state.x + 3.0, time=jnp.array([5, 7]))
    result = (obs + 0.25, moved, jnp.zeros(2), jnp.array([True, False]), jnp.array([False, False]), {})
    keys = jax.random.split(jax.random.PRNGKey(1), 2)
    out = jax.vmap(env.auto_reset, in_axes=(None, 0, None, (0, 0, 0, 0, 0, None)))(
        env.reset, keys, params, result
    )
    new_obs, new_state, _, _, _, info = out
    np.testing.assert_array_equal(new_obs[0], params.start_obs[0])  # crashed: back on the start line
    np.testing.assert_array_equal(new_obs[1], obs[1] + 0.25)  # still driving: untouched
    assert int(new_state.time[0]) == 0 and int(new_state.time[1]) == 7
    np.testing.assert_array_equal(info["final_obs"], obs + 0.25)


def test_params_track_gives_the_numpy_track_of_the_stack():
    params = env.EnvParams.from_seeds([3, 4])
    track = params.track(1)
    want = make_track(4)
    np.testing.assert_allclose(track.centre, want.centre, rtol=1e-6)
    assert isinstance(track.centre, np.ndarray)
    with pytest.raises(ValueError, match=r"EnvParams.track: track_id must be an int in \[0, 1\], got 2"):
        params.track(2)
    with pytest.raises(ValueError, match="track_id must be an int"):
        params.track(0.5)
