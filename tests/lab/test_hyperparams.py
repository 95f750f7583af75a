"""Live hyperparameters: validation at the call, and where each change lands."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carlab.lab import hyperparams
from carlab.learn import config as config_lib
from carlab.learn import loop, optim

CONFIG = config_lib.tiny()


def test_every_knob_reads_back_what_was_applied():
    state = loop.init_state(CONFIG)
    values = {
        "world_model_lr": 2e-3,
        "actor_lr": 1e-4,
        "critic_lr": 5e-4,
        "explore_prob": 0.25,
        "explore_noise": 0.4,
        "horizon": 9,
        "train_every": 3,
        "batch_size": 64,
        "target_entropy": -1.5,
    }
    clean = hyperparams.validate(values, CONFIG)
    assert clean == values and set(clean) == set(hyperparams.KNOBS)
    state = hyperparams.apply_to_state(state, clean)
    config = hyperparams.apply_to_config(CONFIG, clean)
    assert hyperparams.current(state, config) == pytest.approx(values)
    assert optim.learning_rate(state.opt_state["world_model"]) == pytest.approx(2e-3)
    assert (config.agent.horizon, config.train.train_every, config.replay.batch_size) == (9, 3, 64)
    assert config.agent.target_entropy == -1.5
    assert config.world_model == CONFIG.world_model  # nothing else changed


def test_state_knobs_leave_the_config_alone_and_the_shapes_too():
    state = loop.init_state(CONFIG)
    assert hyperparams.apply_to_config(CONFIG, {"world_model_lr": 1e-2, "explore_prob": 0.5}) is CONFIG
    new = hyperparams.apply_to_state(state, {"explore_prob": 0.5})
    assert float(new.explore_prob) == 0.5 and new.explore_prob.dtype == state.explore_prob.dtype
    assert hyperparams.apply_to_config(CONFIG, {"horizon": CONFIG.agent.horizon}) is CONFIG


def test_numpy_numbers_are_accepted():
    import numpy as np

    assert hyperparams.validate({"horizon": np.int64(7), "critic_lr": np.float32(1e-3)}, CONFIG) == {
        "horizon": 7,
        "critic_lr": pytest.approx(1e-3),
    }


def test_batch_size_is_bounded_by_the_replay_capacity():
    capacity = CONFIG.replay.capacity
    assert hyperparams.validate({"batch_size": capacity}, CONFIG) == {"batch_size": capacity}
    with pytest.raises(ValueError, match=rf"batch_size must be in \[1, {capacity}\]"):
        hyperparams.validate({"batch_size": capacity + 1}, CONFIG)


def test_target_entropy_is_the_anchored_learners_knob_only():
    assert hyperparams.validate({"target_entropy": -3}, CONFIG) == {"target_entropy": -3.0}
    dream = config_lib.with_overrides(CONFIG, agent={"learner": "dream", "horizon": 5})
    with pytest.raises(ValueError, match="target_entropy steers the anchored learner.*'dream'"):
        hyperparams.validate({"target_entropy": -3}, dream)
    fixed = config_lib.with_overrides(CONFIG, agent={"tune_temperature": False})
    assert not hyperparams.tunes_temperature(fixed) and hyperparams.tunes_temperature(CONFIG)
    with pytest.raises(ValueError, match="temperature; this run's is fixed at agent.init_temperature = 1"):
        hyperparams.validate({"target_entropy": -3}, fixed)


def test_horizon_zero_only_for_the_anchored_learner():
    assert hyperparams.validate({"horizon": 0}, CONFIG) == {"horizon": 0}
    dream = config_lib.with_overrides(CONFIG, agent={"learner": "dream", "horizon": 5})
    with pytest.raises(ValueError, match=r"horizon must be in \[1, 100\]"):
        hyperparams.validate({"horizon": 0}, dream)


def test_not_a_dict_is_a_type_error():
    with pytest.raises(TypeError):
        hyperparams.validate([("horizon", 3)], CONFIG)


@given(
    name=st.sampled_from(sorted(hyperparams.KNOBS)),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.text(max_size=5),
        st.none(),
        st.booleans(),
        st.lists(st.integers(), max_size=2),
    ),
)
def test_any_value_is_either_accepted_in_range_or_refused_with_a_value_error(name, value):
    try:
        clean = hyperparams.validate({name: value}, CONFIG)
    except ValueError as error:
        assert name in str(error)
        return
    low, high = hyperparams.bounds(name, CONFIG)
    accepted = clean[name]
    assert math.isfinite(accepted) and low <= accepted <= high
    assert isinstance(accepted, hyperparams.KNOBS[name].kind)
