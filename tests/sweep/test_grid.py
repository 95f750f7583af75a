"""Knobs, values, seeds and steps from ``--set`` and YAML files: good input gives the trials, bad input
one ValueError line."""

from __future__ import annotations

import pytest

from carlab.learn import config as config_lib
from carlab.sweep import grid


def test_parse_set_types_the_values_by_the_config_field():
    assert grid.parse_set("agent.actor_lr=1e-4,3e-4") == ("agent.actor_lr", (1e-4, 3e-4))
    assert grid.parse_set("agent.horizon=5, 15") == ("agent.horizon", (5, 15))
    assert grid.parse_set("agent.actor_hidden=64x32,32") == ("agent.actor_hidden", ((64, 32), (32,)))
    _, values = grid.parse_set("world_model.learning_rate=1")
    assert values == (1.0,) and isinstance(values[0], float)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agent.actor_lr", "write it as section.field=value1,value2"),
        ("agent.actor_lr=", "write it as"),
        ("agnt.actor_lr=1", "the section one of world_model, agent, replay, train"),
        ("actor_lr=1", "name it section.field"),
        ("agent.nope=1", "the agent config has no field 'nope'"),
        ("agent.actor_lr=fast", "bad value 'fast'"),
        ("agent.actor_lr=nan", "finite"),
        ("agent.horizon=1.5", "bad value '1.5'"),
        ("agent.actor_lr=1e-4,1e-4", "appears twice"),
        ("agent.actor_lr=1e-4,,3e-4", "without empty ones"),
        ("train.seed=1,2", "--seeds"),
        ("agent.actor_hidden=64xa", "bad value '64xa'"),
    ],
)
def test_parse_set_refuses_bad_input_in_one_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        grid.parse_set(text)
    assert "\n" not in str(error.value)


def test_a_sweep_is_the_cartesian_product_of_its_knobs():
    sweep = grid.make_sweep(
        knobs={"agent.actor_lr": ["1e-4", "3e-4"], "agent.horizon": [5, 15, 25]},
        seeds="0-2",
        steps=400,
        preset="tiny",
    )
    trials = sweep.trials()
    assert len(trials) == 6 and sweep.seeds == (0, 1, 2)
    assert trials[0] == {"agent.actor_lr": 1e-4, "agent.horizon": 5}
    assert trials[-1] == {"agent.actor_lr": 3e-4, "agent.horizon": 25}
    assert len({grid.trial_name(t) for t in trials}) == 6
    assert grid.trial_name(trials[0]) == "actor_lr=0.0001,horizon=5"


def test_trial_config_sets_the_knobs_on_the_preset():
    config = grid.trial_config("tiny", {"agent.actor_lr": 1e-3, "agent.actor_hidden": [16, 16]})
    expected = config_lib.with_overrides(
        config_lib.tiny(), agent={"actor_lr": 1e-3, "actor_hidden": (16, 16)}
    )
    assert config == expected


def test_load_sweep_reads_a_yaml_file_and_the_command_line_overrides_it(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        "config: tiny\nsteps: 800\nseeds: [0, 1]\nknobs:\n  agent.actor_lr: [1.0e-4, 3e-4]\n  agent.horizon: 5\n"
    )
    sweep = grid.load_sweep(path)
    assert sweep == grid.Sweep(
        knobs={"agent.actor_lr": (1e-4, 3e-4), "agent.horizon": (5,)}, seeds=(0, 1), steps=800, preset="tiny"
    )
    # YAML reads 3e-4 (no dot) as text: the knob's type turns it into the float all the same
    other = grid.load_sweep(path, knobs={"agent.horizon": (10, 20)}, seeds="3-4", steps=None)
    assert other.knobs["agent.horizon"] == (10, 20) and other.seeds == (3, 4) and other.steps == 800


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config: tiny\nknobs: {agent.actor_lr: [1e-4]}\nlearning: fast\n", "unknown keys \\['learning'\\]"),
        ("- 1\n- 2\n", "a sweep file is a mapping"),
        ("knobs: [agent.actor_lr]\n", "knobs must map"),
        ("knobs: {}\n", "sweep at least one knob"),
        ("config: huge\nknobs: {agent.actor_lr: [1e-4]}\n", "config 'huge'"),
        ("steps: 0\nknobs: {agent.actor_lr: [1e-4]}\n", "steps must be an int >= 1"),
        ("seeds: 3-1\nknobs: {agent.actor_lr: [1e-4]}\n", "runs backwards"),
        ("seeds: [0, 0]\nknobs: {agent.actor_lr: [1e-4]}\n", "appears twice"),
        ("seeds: {a: 1}\nknobs: {agent.actor_lr: [1e-4]}\n", "seeds: give a list"),
        ("knobs: {agent.actor_lr: [true]}\n", "bad value True"),
        ("knobs: {agent.actor_lr: [1e-4}\n", "not valid YAML"),
    ],
)
def test_load_sweep_refuses_bad_files_in_one_line(tmp_path, text, message):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        grid.load_sweep(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_load_sweep_of_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read it"):
        grid.load_sweep(tmp_path / "none.yaml")
