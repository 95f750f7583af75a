"""Many seeds in one jitted call: each run is its seed's single run; sets save, load and resume exactly."""

import jax
import numpy as np
import pytest

from carlab.learn import config as config_lib
from carlab.learn import loop, optim, runs, seed_runs, seeds

CONFIG = config_lib.tiny()
SEEDS = [0, 3]
STEPS = 400  # tiny: 20 rounds (one chunk), past the 100-transition warm-up: the networks train


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _identical(a, b) -> bool:
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module")
def trained():
    """The set trained together, and each seed trained alone."""
    states, histories = seeds.train_seeds(CONFIG, SEEDS, STEPS, progress=False)
    singles = []
    for seed in SEEDS:
        saver = runs.BestSaver(None, seeds.seed_config(CONFIG, seed))  # carlab train's validation
        state, _ = loop.train(seeds.seed_config(CONFIG, seed), STEPS, callback=saver, progress=False)
        singles.append((state, saver.history))
    return states, histories, singles


def test_init_states_are_the_single_inits_and_memory_is_linear():
    states = seeds.init_states(CONFIG, [0, 3, 5])
    assert seeds.num_runs(states) == 3
    for i, seed in enumerate([0, 3, 5]):
        assert _identical(seeds.seed_state(states, i), loop.init_state(seeds.seed_config(CONFIG, seed)))
    one = sum(x.nbytes for x in _leaves(loop.init_state(CONFIG)))
    assert sum(x.nbytes for x in _leaves(states)) == 3 * one


def test_each_run_is_its_single_run(trained):
    """Per-seed states and records equal the single runs' up to float rounding (vmapped matrix
    products may sum in another order); integers (counters, ring positions, track ids) exactly."""
    states, histories, singles = trained
    for i, (single, single_history) in enumerate(singles):
        run = seeds.seed_state(states, i)
        assert int(run.env_steps) == STEPS and int(run.updates) == int(single.updates) > 0
        for x, y in zip(_leaves(run), _leaves(single), strict=True):
            if np.issubdtype(x.dtype, np.floating):
                np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4)
            else:
                np.testing.assert_array_equal(x, y)
        assert len(histories[i]) == len(single_history) == 1
        for record, alone in zip(histories[i], single_history):
            assert record.keys() == alone.keys()
            for name in record.keys() - {"time_s"}:
                np.testing.assert_allclose(record[name], alone[name], rtol=1e-3, atol=1e-5, err_msg=name)


def test_seeds_differ(trained):
    states, histories, _ = trained
    first, second = seeds.seed_state(states, 0), seeds.seed_state(states, 1)
    assert all(not np.array_equal(x, y) for x, y in zip(_leaves(first.params), _leaves(second.params)))
    assert not np.array_equal(np.asarray(first.buffer.action), np.asarray(second.buffer.action))
    assert histories[0][0]["wm/loss"] != histories[1][0]["wm/loss"]


def test_a_saved_set_loads_and_resumes_exactly(trained, tmp_path):
    states, histories, _ = trained
    out = tmp_path / "set.safetensors"
    finals = [seeds.seed_state(states, i) for i in range(len(SEEDS))]
    png = seed_runs.save_seeds(out, finals, CONFIG, SEEDS, histories)
    assert png == tmp_path / "set-seeds.png" and png.read_bytes()[:4] == b"\x89PNG"
    # each file is a plain run of its seed
    state, config, history, _ = runs.load_run(tmp_path / "set-seed3.safetensors")
    assert config == seeds.seed_config(CONFIG, 3) and _identical(state, finals[1]) and history == histories[1]
    assert (tmp_path / "set-seed3.metrics.jsonl").is_file()
    loaded, config, loaded_histories = seed_runs.load_seeds(out, SEEDS)
    assert config == loop.seedless(CONFIG) and loaded_histories == histories
    assert _identical(loaded, states)
    more, _ = seeds.train_seeds(CONFIG, SEEDS, 100, states=states, validate=False, progress=False)
    again, _ = seeds.train_seeds(config, SEEDS, 100, states=loaded, validate=False, progress=False)
    assert _identical(more, again) and int(more.env_steps[0]) == STEPS + 100
    (tmp_path / "set-seed3.safetensors").replace(tmp_path / "set-seed0.safetensors")
    with pytest.raises(ValueError, match="is a run of seed 3, not 0"):
        seed_runs.load_seeds(out, [0])


def test_learning_rates_are_per_run():
    states = seeds.init_states(CONFIG, [0, 0], learning_rates={"actor": [1e-4, 1e-3]})
    rates = [optim.learning_rate(seeds.seed_state(states, i).opt_state["actor"]) for i in range(2)]
    assert rates == pytest.approx([1e-4, 1e-3])
    critic = optim.learning_rate(seeds.seed_state(states, 1).opt_state["critic"])
    assert critic == pytest.approx(CONFIG.agent.critic_lr)
    with pytest.raises(ValueError, match="2 values for 3 runs"):
        seeds.init_states(CONFIG, [0, 1, 2], learning_rates={"actor": [1e-4, 1e-3]})
    with pytest.raises(ValueError, match="unknown optimiser"):
        seeds.with_learning_rates(states, {"decoder": [1e-3, 1e-3]})
    with pytest.raises(ValueError, match="positive and finite"):
        seeds.with_learning_rates(states, {"critic": [1e-3, float("nan")]})


@pytest.mark.parametrize(
    "text, expected", [("0-7", list(range(8))), ("0,3,5", [0, 3, 5]), ("0-3,8", [0, 1, 2, 3, 8]), ("4", [4])]
)
def test_parse_seeds(text, expected):
    assert seed_runs.parse_seeds(text) == expected


@pytest.mark.parametrize("text", ["", "a", "0-", "-1", "3-1", "0,0", "1-2-3", "0-2,1", "1.5"])
def test_parse_seeds_refuses_bad_lists(text):
    with pytest.raises(ValueError, match="--seeds"):
        seed_runs.parse_seeds(text)


def test_train_seeds_checks_its_arguments():
    with pytest.raises(TypeError, match="sequence of ints"):
        seeds.train_seeds(CONFIG, "0-3", 10)
    with pytest.raises(ValueError, match="at least one seed"):
        seeds.train_seeds(CONFIG, [], 10)
    with pytest.raises(ValueError, match="savers needs validate"):
        seeds.train_seeds(CONFIG, [0], 10, savers=[runs.BestSaver(None, CONFIG)], validate=False)
