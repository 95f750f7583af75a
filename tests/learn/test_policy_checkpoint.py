"""TD7's policy checkpoints (config.train.checkpoint_tracks): the sequential test's score against hand
counts, the test against evaluate() on the same tracks, the promotion rule, and that the checkpoint
never touches training (same newest actor, same tests whatever the calls' sizes, vmapped seeds, old
runs, the lab's manual steps)."""

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors

from carlab.lab import manual
from carlab.learn import config as config_lib
from carlab.learn import evaluation, loop, policies, policy_checkpoint, runs, seeds
from carlab.learn.checkpoint import save_checkpoint

# tiny: 4 cars x 5 steps = 20 env steps per round; a test every 100 env steps (5 rounds), 2 tracks
# first and 1 more only when both lap (the tiny preset trains on 4 tracks).
OFF = config_lib.tiny()
ON = config_lib.with_overrides(
    OFF, train={"checkpoint_tracks": 2, "checkpoint_more_tracks": 1, "checkpoint_every": 100}
)
STEPS = 400  # 20 rounds: past the 100-transition warm-up, four tests
PRETRAINED = Path(__file__).resolve().parents[2] / "models" / "agent.safetensors"


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _identical(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(la, lb)
    )


def _training(state: loop.TrainState) -> loop.TrainState:
    """Everything of a run but its checkpoint: what training reads."""
    return dataclasses.replace(state, driver=None)


@pytest.mark.parametrize(
    ("lapped", "steps", "first", "laps", "cost"),
    [
        # all of the first two lap: the third track is driven and counted
        ([1, 1, 0], [300, 310, 40], 2, 2, 650),
        ([1, 1, 1], [300, 310, 320], 2, 3, 930),
        # one of the first two crashes: the rest is never driven, its steps are not spent
        ([1, 0, 1], [300, 25, 320], 2, 1, 325),
        ([0, 0, 1], [12, 25, 320], 2, 0, 37),
        # no second stage: all tracks count
        ([1, 0, 1], [300, 25, 320], 3, 2, 645),
    ],
)
def test_sequential_score_is_the_hand_count(lapped, steps, first, laps, cost):
    got_laps, got_cost = policy_checkpoint.sequential_score(
        jnp.asarray(lapped, bool), jnp.asarray(steps, jnp.int32), first
    )
    assert (int(got_laps), int(got_cost)) == (laps, cost)


def test_the_test_is_evaluate_on_the_training_tracks():
    """The pretrained agent tested on 6 + 10 training tracks: the laps and steps evaluate() counts
    on training tracks 0..15 (another code path: tracks built from their seeds, not sliced from the
    training stack), scored by hand; it becomes the driver (no driver yet); an unbeaten driver stays."""
    state, config, _, _ = runs.load_run(PRETRAINED)
    config = config_lib.with_overrides(config, train={"checkpoint_tracks": 6, "checkpoint_more_tracks": 10})
    params = loop.env_params(config)
    actor = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
    ref = evaluation.evaluate(actor, num_tracks=16, first_seed=0, max_steps=config.train.max_episode_steps)
    lapped, steps = np.array(ref["lapped"]), np.array(ref["steps"])
    laps = lapped[:6].sum() + (lapped[6:].sum() if lapped[:6].all() else 0)
    cost = steps[:6].sum() + (steps[6:].sum() if lapped[:6].all() else 0)
    assert laps >= 12, "the pretrained agent laps training tracks: this test needs a lapping driver"

    tested = jax.jit(policy_checkpoint.checkpoint_test, static_argnames="config")(state, params, config)
    ck = tested.driver
    assert (int(ck.laps), int(ck.newest_laps), int(ck.tests), int(ck.test_steps)) == (laps, laps, 1, cost)
    assert int(ck.env_steps) == int(state.env_steps)
    assert _identical(ck.params, {k: state.params[k] for k in policy_checkpoint.DRIVER_KEYS})
    assert _identical(_training(tested), _training(state)), "a test changed the run"

    # A driver that lapped more on its own test is kept; the newest actor's laps are still recorded.
    unbeaten = dataclasses.replace(
        state, driver=dataclasses.replace(state.driver, laps=jnp.int32(17), env_steps=jnp.int32(5))
    )
    kept = jax.jit(policy_checkpoint.checkpoint_test, static_argnames="config")(
        unbeaten, params, config
    ).driver
    assert (int(kept.laps), int(kept.env_steps), int(kept.newest_laps)) == (17, 5, laps)
    assert int(kept.test_steps) == cost and int(kept.tests) == 1
    assert _identical(kept.params, state.driver.params)


@pytest.fixture(scope="module")
def runs_on_and_off():
    on, on_history = loop.train(ON, STEPS, progress=False)
    off, off_history = loop.train(OFF, STEPS, progress=False)
    return on, on_history, off, off_history


def test_checkpoints_leave_training_untouched(runs_on_and_off):
    """The same newest actor, buffer and keys with checkpoints on or off: the driver is one of the
    run's own actors, and turning checkpoints on changes no run."""
    on, on_history, off, off_history = runs_on_and_off
    assert _identical(_training(on), _training(off))
    for a, b in zip(on_history, off_history, strict=True):
        assert a["wm/loss"] == b["wm/loss"] and a["env_steps"] == b["env_steps"]
    assert int(off.driver.tests) == 0 and off_history[-1]["test_steps"] == 0
    assert "driver/laps" not in off_history[-1]


def test_a_test_at_every_multiple_of_checkpoint_every(runs_on_and_off):
    on, on_history, _, _ = runs_on_and_off
    ck = on.driver
    assert int(ck.tests) == STEPS // 100
    # no tiny actor laps at 400 env steps: each test drives the first 2 tracks only, to a crash or
    # the 300-step truncation; every test beats the "no driver yet" score -1, the later ones tie 0
    assert int(ck.laps) == int(ck.newest_laps) == 0 and int(ck.env_steps) == STEPS
    assert 0 < int(ck.test_steps) <= (STEPS // 100) * 2 * ON.train.max_episode_steps
    last = on_history[-1]
    assert last["test_steps"] == int(ck.test_steps) and last["driver/laps"] == 0
    assert last["driver/env_steps"] == STEPS


def test_kept_ties_keep_the_first_driver_below_a_full_score(runs_on_and_off):
    """No tiny actor laps at 400 env steps: every test scores 0 of 3. Ties replace by default (the
    driver is the actor of the last test, above); with ties kept it stays the first test's."""
    keep = config_lib.with_overrides(ON, train={"checkpoint_keep_ties": True})
    state, _ = loop.train(keep, STEPS, progress=False)
    ck = state.driver
    assert (int(ck.laps), int(ck.newest_laps), int(ck.tests), int(ck.env_steps)) == (0, 0, 4, 100)
    on = runs_on_and_off[0]
    assert int(ck.test_steps) == int(on.driver.test_steps) and int(on.driver.env_steps) == STEPS
    assert _identical(_training(state), _training(on))


def test_the_tests_do_not_depend_on_the_calls_sizes():
    """20 rounds in one call or as 3 + 9 + 8: the same tests at the same env steps, the same run."""
    params = loop.env_params(ON)
    state = loop.init_state(ON, params)
    whole, _ = loop.train_rounds(state, jnp.int32(20), params, ON)
    split = state
    for rounds in (3, 9, 8):
        split, _ = loop.train_rounds(split, jnp.int32(rounds), params, ON)
    assert _identical(whole, split)


def test_the_driver_is_the_checkpoint_once_tested():
    params = loop.env_params(ON)
    state = loop.init_state(ON, params)
    newest = {k: state.params[k] for k in policy_checkpoint.DRIVER_KEYS}
    assert _identical(policy_checkpoint.driver_params(state, ON), newest), (
        "no test yet: the newest actor drives"
    )
    # 6 rounds = 120 env steps: one test at 100 (after 5 rounds), then one more round of training
    state, _ = loop.train_rounds(state, jnp.int32(6), params, ON)
    assert int(state.driver.tests) == 1
    driver = policy_checkpoint.driver_params(state, ON)
    assert _identical(driver, state.driver.params)
    assert not _identical(driver, {k: state.params[k] for k in policy_checkpoint.DRIVER_KEYS}), (
        "the round after trained"
    )
    assert _identical(
        policy_checkpoint.driver_params(state, OFF),
        {k: state.params[k] for k in policy_checkpoint.DRIVER_KEYS},
    )


def test_seeds_test_their_runs_as_single_runs_do():
    states, histories = seeds.train_seeds(ON, [0, 3], STEPS, validate=False, progress=False)
    for i, seed in enumerate([0, 3]):
        single, single_history = loop.train(seeds.seed_config(ON, seed), STEPS, progress=False)
        run = seeds.seed_state(states, i).driver
        for name in ("laps", "env_steps", "newest_laps", "tests", "test_steps"):
            assert int(getattr(run, name)) == int(getattr(single.driver, name)), name
        for x, y in zip(_leaves(run.params), _leaves(single.driver.params), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
        assert histories[i][-1]["test_steps"] == single_history[-1]["test_steps"]
    # the driver validated and saved per seed is each run's checkpoint
    driver = jax.tree.map(lambda x: x[1], policy_checkpoint.driver_params(states, ON))
    assert _identical(driver, jax.tree.map(lambda x: x[1], states.driver.params))


def test_a_run_saved_before_checkpoints_loads_and_resumes_exactly(runs_on_and_off, tmp_path):
    """Runs saved before TrainState had a checkpoint (the pretrained agent is one) load with none
    (the newest actor drives) and resume as they would have."""
    _, _, off, history = runs_on_and_off
    new = runs.save_run(tmp_path / "new.safetensors", off, OFF, history)
    state, _, _, metadata = runs.load_run(new)
    old = save_checkpoint(tmp_path / "old.safetensors", dataclasses.replace(state, driver=None), metadata)
    with safetensors.safe_open(old, "np") as f:
        names = set(f.keys())
    assert names and not any(k.startswith(".driver") for k in names)
    loaded, _, _, _ = runs.load_run(old)
    assert _identical(_training(loaded), _training(state))
    # no driver yet (its weights, never driven before a test, are the run's own)
    assert int(loaded.driver.laps) == -1 and int(loaded.driver.tests) == 0
    assert _identical(loaded.driver.params, {k: state.params[k] for k in policy_checkpoint.DRIVER_KEYS})
    resumed, _ = loop.train(ON, 200, state=loaded, progress=False)
    straight, _ = loop.train(ON, 200, state=state, progress=False)
    assert _identical(resumed, straight) and int(resumed.driver.tests) == 2


def test_the_saved_driver_is_the_checkpoint(tmp_path):
    """carlab play --agent and carlab eval drive the checkpoint, not the newest actor."""
    params = loop.env_params(ON)
    state, _ = loop.train_rounds(loop.init_state(ON, params), jnp.int32(6), params, ON)
    path = runs.save_run(tmp_path / "run.safetensors", state, ON, [])
    drive = runs.load_policy(path)
    obs = np.asarray(params.start_obs[1])
    want = policies.actor(state.driver.params, world_model_config=ON.world_model, agent_config=ON.agent)
    newest = policies.actor(state.params, world_model_config=ON.world_model, agent_config=ON.agent)
    np.testing.assert_allclose(drive(obs), np.asarray(want(obs[None], 0))[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.asarray(newest(obs[None], 0))[0], np.asarray(want(obs[None], 0))[0])


def test_manual_steps_test_as_rounds_do():
    """The lab's one-step calls cross a test mark as the rounds do (drive=False: the actor drives)."""
    params = loop.env_params(ON)
    state = loop.init_state(ON, params)
    by_round, _ = loop.train_rounds(state, jnp.int32(6), params, ON)
    step = state
    for _ in range(6 * ON.train.train_every):
        step, _ = manual.manual_step(step, jnp.zeros(2), params, ON, drive=False)
    assert int(step.driver.tests) == 1
    assert _identical(step.driver, by_round.driver)


@pytest.mark.parametrize(
    ("train", "match"),
    [
        (
            {"checkpoint_tracks": 3, "checkpoint_more_tracks": 2},
            "3 \\+ 2 training tracks but there are only 4",
        ),
        ({"checkpoint_more_tracks": 2}, "needs train.checkpoint_tracks > 0"),
        ({"checkpoint_tracks": -1}, "must be >= 0"),
        ({"checkpoint_tracks": 1, "checkpoint_every": 0}, "checkpoint_every >= 1"),
    ],
)
def test_a_test_that_does_not_fit_is_refused_in_one_line(train, match):
    with pytest.raises(ValueError, match=match) as error:
        loop.init_state(config_lib.with_overrides(OFF, train=train))
    assert "\n" not in str(error.value)
