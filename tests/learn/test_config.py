"""Presets: `default` is the anchored learner `carlab train` uses, `dream` (`race`) the tuned dream
learner it replaced, `seed` keeps the seed's exact settings."""

import pytest

from carlab.learn import config as config_lib


def test_seed_preset_is_the_dataclass_defaults_the_seed_gave():
    seed = config_lib.preset("seed")
    assert seed == config_lib.Config()
    # The architecture guide's numbers.
    assert seed.replay.capacity == 10_000 and seed.replay.batch_size == 32
    assert seed.agent.explore_noise == 0.2 and seed.agent.explore_hold == 1
    assert seed.train.num_cars == 16 and seed.train.train_every == 10


def test_dream_keeps_the_seeds_network_shapes_and_changes_what_it_got_wrong():
    dream, seed = config_lib.preset("dream"), config_lib.preset("seed")
    assert dream.world_model == seed.world_model and dream.agent.learner == seed.agent.learner == "dream"
    shapes = ("actor_hidden", "critic_hidden", "horizon", "imagine_batch")
    assert all(getattr(dream.agent, f) == getattr(seed.agent, f) for f in shapes)
    assert dream.replay.capacity > seed.replay.capacity and dream.replay.crash_memory > 0
    assert (dream.agent.explore_noise, dream.agent.explore_hold) != (0.2, 1)
    assert config_lib.preset("race") == dream  # its older name


def test_default_is_the_anchored_learner_with_the_seeds_network_shapes():
    default, dream = config_lib.preset("default"), config_lib.preset("dream")
    assert default.agent.learner == "anchored" and default.agent.stochastic
    assert default.world_model == dream.world_model and default.replay == dream.replay
    for field in ("actor_hidden", "critic_hidden", "discount", "explore_noise", "explore_hold"):
        assert getattr(default.agent, field) == getattr(dream.agent, field), field
    per_env_step = default.train.updates_per_round / (default.train.num_cars * default.train.train_every)
    assert per_env_step == 2.0  # two updates per env step


NEW_OPTIONS = {
    "agent": [
        "stochastic",
        "std_min",
        "std_max",
        "entropy_scale",
        "reinforce",
        "return_norm_rate",
        "return_norm_limit",
        "pessimism",
        "cautious_continue",
        "real_critic_weight",
        "learner",
        "target_entropy",
        "real_steps",
        "layer_norm",
        "explore_sample",
        "init_temperature",
        "tune_temperature",
    ],
    "world_model": ["ensemble"],
}


def test_a_config_saved_before_the_new_learner_options_means_what_it_meant():
    """Checkpoints written before the stochastic actor, return normalisation and the ensemble existed
    load with the deterministic actor, raw returns and one dynamics network they were trained with."""
    saved = config_lib.preset("dream").to_dict()
    for section, names in NEW_OPTIONS.items():
        for name in names:
            del saved[section][name]
    config = config_lib.Config.from_dict(saved)
    assert config == config_lib.preset("dream")
    assert (
        config.agent.learner == "dream"
        and not config.agent.stochastic
        and config.agent.return_norm_rate == 0.0
    )
    assert config.world_model.ensemble == 1 and config.agent.pessimism == 0.0


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="default.*dream.*race.*seed.*tiny"):
        config_lib.preset("fast")


def test_a_run_of_the_dream_preset_is_also_a_race_run():
    """`carlab train --resume X --config race` must accept a run trained with `dream` (one preset),
    and a run saved when `default` was the dream learner still loads as `dream`, not `default`."""
    from carlab.learn import runs

    config = config_lib.with_overrides(config_lib.preset("dream"), train={"seed": 7})
    assert runs.config_name(config) == "dream"
    assert runs.is_preset(config, "race") and runs.is_preset(config, "dream")
    assert not runs.is_preset(config, "default") and not runs.is_preset(config, "seed")
    assert runs.config_name(config_lib.with_overrides(config, agent={"horizon": 3})) == "custom"
    assert runs.config_name(config_lib.with_overrides(config_lib.default(), train={"seed": 3})) == "default"
