"""The pretrained agent in ``models/`` loads and laps held-out tracks (see benchmarks/learning.md)."""

from pathlib import Path

import pytest

from carlab.learn import policies, runs
from carlab.learn.config import EVAL_FIRST_SEED
from carlab.learn.evaluation import evaluate

CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "agent.safetensors"
TRACKS = 30
# Measured when the checkpoint was made: LAPS_MEASURED of these 30 held-out tracks lapped (and 97 %
# of 100 tracks: see benchmarks/learning.md). The margin absorbs float differences between CPUs,
# which can tip a close call at an obstacle.
LAPS_MEASURED = 28 / 30
MARGIN = 0.15
# The exact evaluation of the checkpoint (the anchored learner, seed 0, 60k env steps) on those 30
# tracks, recorded on the x86-64 CPU build of XLA: a refactor must not move a single step. (Another
# CPU or a GPU may round differently.)
RECORDED = {
    "lap_completion_rate": 28 / 30,
    "mean_progress": 0.9878522157669067,
    "crash_rate": 2 / 30,
    "mean_return": 114.82130432128906,
    "mean_steps": 326.6333333333333,
}
RECORDED_STEPS = [327, 322, 321, 330, 328, 338, 327, 328, 341, 333, 323, 336, 340, 328, 322]
RECORDED_STEPS += [318, 336, 322, 337, 327, 335, 326, 287, 333, 335, 277, 332, 338, 324, 328]


@pytest.fixture(scope="module")
def pretrained():
    if not CHECKPOINT.is_file():
        pytest.fail(f"{CHECKPOINT} is missing: make it with the command in benchmarks/learning.md")
    return runs.load_run(CHECKPOINT)


@pytest.fixture(scope="module")
def result(pretrained):
    state, config, _, _ = pretrained
    driver = policies.actor(state.params, world_model_config=config.world_model, agent_config=config.agent)
    return evaluate(driver, num_tracks=TRACKS, first_seed=EVAL_FIRST_SEED)


def test_pretrained_is_a_finished_run(pretrained):
    state, config, history, metadata = pretrained
    assert int(state.env_steps) == metadata["env_steps"] > 0 and history
    # Trained with the `default` preset: the anchored learner.
    assert runs.config_name(config) == "default" and config.agent.learner == "anchored"


def test_pretrained_laps_held_out_tracks(result):
    assert result["lap_completion_rate"] >= LAPS_MEASURED - MARGIN, {
        k: result[k] for k in ("lap_completion_rate", "mean_progress", "crash_rate", "mean_steps")
    }
    assert result["mean_progress"] > 0.8


def test_pretrained_evaluates_to_the_recorded_numbers(result):
    for key in ("lap_completion_rate", "crash_rate"):
        assert result[key] == RECORDED[key], key
    for key in ("mean_progress", "mean_return", "mean_steps"):
        assert result[key] == pytest.approx(RECORDED[key], rel=1e-6), key
    assert result["steps"] == RECORDED_STEPS
