"""The vector env: the same as Gymnasium's SyncVectorEnv over RaceEnv, in one jitted call."""

import re

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import carlab  # noqa: F401  (registers carlab/Race-v0 with its vector entry point)
from carlab.sim.gym_env import RaceEnv
from carlab.sim.vector_env import RaceVectorEnv

SEEDS = (0, 3, 3, 8, 1)  # a repeated track too
MAX_STEPS = 30  # short episodes, so truncations happen as well as crashes


def _actions(rng, n):
    """Mostly forward with hard steering now and then: crashes and truncations both happen."""
    actions = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
    actions[:, 1] = np.abs(actions[:, 1])
    return actions


def _sync(mode):
    fns = [lambda seed=seed: RaceEnv(track_seed=seed, max_steps=MAX_STEPS) for seed in SEEDS]
    return SyncVectorEnv(fns, autoreset_mode=mode)


def _assert_same(a, b, what):
    assert data_equivalence(a, b, exact=True), f"{what} differ:\n{a}\n{b}"


@pytest.mark.parametrize("mode", ["next_step", "same_step", "disabled"])
def test_matches_sync_vector_env_of_race_envs_exactly(mode):
    ours = gymnasium.make_vec(
        "carlab/Race-v0", num_envs=len(SEEDS), track_seed=SEEDS, max_steps=MAX_STEPS, autoreset_mode=mode
    )
    assert isinstance(ours, RaceVectorEnv) and ours.metadata["autoreset_mode"] == AutoresetMode[mode.upper()]
    reference = _sync(AutoresetMode[mode.upper()])
    _assert_same(ours.reset(seed=1), reference.reset(seed=1), "reset")
    rng = np.random.default_rng(0)
    ended = 0
    for t in range(120):
        actions = _actions(rng, len(SEEDS))
        a, b = ours.step(actions), reference.step(actions)
        for name, x, y in zip(("obs", "rewards", "terminated", "truncated", "info"), a, b):
            _assert_same(x, y, f"step {t} {name}")
        done = a[2] | a[3]
        ended += done.sum()
        if mode == "disabled" and done.any():
            options = {"reset_mask": done}
            _assert_same(
                ours.reset(options=dict(options)), reference.reset(options=dict(options)), "reset_mask"
            )
    assert ended >= len(SEEDS), "too few episodes ended to test the autoreset"
    reference.close()
    ours.close()


def test_same_step_final_obs_is_where_the_car_ended():
    envs = RaceVectorEnv(2, track_seed=(0, 1), autoreset_mode="same_step")
    envs.reset()
    straight = np.tile([0.0, 1.0], (2, 1)).astype(np.float32)
    for _ in range(500):
        obs, _, terminated, _, info = envs.step(straight)
        if terminated.any():
            break
    (i,) = np.flatnonzero(terminated)[:1]
    assert info["_final_obs"][i] and info["final_info"]["crashed"][i] and info["final_info"]["_crashed"][i]
    assert info["final_obs"][i][-1] > 0 and obs[i][-1] == 0.0  # it was moving; now at rest on the start
    assert info["time"][i] == 0 and info["final_info"]["time"][i] > 0


def test_spaces_and_default_mode():
    envs = gymnasium.make_vec("carlab/Race-v0", num_envs=3)
    assert isinstance(envs, RaceVectorEnv) and envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.single_observation_space == gymnasium.spaces.Box(0.0, 1.0, (6,), np.float32)
    assert envs.observation_space.shape == (3, 6) and envs.action_space.shape == (3, 2)
    obs, info = envs.reset(seed=0)
    assert obs in envs.observation_space and obs.dtype == np.float32
    assert info["track_seed"].tolist() == [0, 0, 0] and info["_track_seed"].all()
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())
    assert truncated.dtype == np.bool_ and not truncated.any()
    assert obs.shape == (3, 6) and rewards.dtype == np.float64 and terminated.dtype == np.bool_
    assert sorted(k for k in info if not k.startswith("_")) == sorted(
        ["track_seed", "track_progress", "progress", "laps", "checkpoints", "speed", "time", "crashed"]
    )


def test_reset_switches_tracks_like_single_envs():
    envs = RaceVectorEnv(2, track_seed=0)
    obs, info = envs.reset(options={"track_seed": [4, 6]})
    assert envs.track_seeds == (4, 6) and info["track_seed"].tolist() == [4, 6]
    for i, seed in enumerate((4, 6)):
        np.testing.assert_array_equal(obs[i], RaceEnv(track_seed=seed).reset()[0])
    with pytest.raises(ValueError, match="one seed or 2 seeds, got 3"):
        envs.reset(options={"track_seed": [1, 2, 3]})


@pytest.mark.parametrize(
    "actions, message",
    [
        (np.zeros((3, 2)), re.escape("shape (2, 2)")),
        (np.zeros(2), re.escape("shape (2, 2)")),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), "finite"),
        (np.zeros((2, 2), np.complex64), "real numbers"),
        ({"steering": 0.0}, "real numbers"),
        ("go", "real numbers"),
        (None, "real numbers"),
    ],
)
def test_bad_actions_are_one_clear_value_error(actions, message):
    envs = RaceVectorEnv(2)
    envs.reset()
    before = envs._rows.copy()
    with pytest.raises(ValueError, match=message):
        envs.step(actions)
    np.testing.assert_array_equal(envs._rows, before)  # nothing happened


def test_bad_arguments():
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        RaceVectorEnv(2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="does not render"):
        RaceVectorEnv(2, render_mode="rgb_array")
    with pytest.raises(ValueError, match="num_envs"):
        RaceVectorEnv(0)
    with pytest.raises(RuntimeError, match="reset"):
        RaceVectorEnv(2).step(np.zeros((2, 2), np.float32))
    envs = RaceVectorEnv(2)
    envs.reset()
    with pytest.raises(ValueError, match="reset_mask"):
        envs.reset(options={"reset_mask": np.ones(3, bool)})
