"""The pretrained agent in ``models/`` loads and laps held-out tracks (see benchmarks/learning.md)."""

from pathlib import Path

import pytest

from carlab.learn import runs
from carlab.learn.config import EVAL_FIRST_SEED
from carlab.learn.evaluation import evaluate

CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "agent.safetensors"
TRACKS = 30
# Measured when the checkpoint was made: LAPS_MEASURED of these 30 held-out tracks lapped (and
# 100 tracks: see benchmarks/learning.md). The margin absorbs float differences between CPUs,
# which can tip a close call at an obstacle.
LAPS_MEASURED = 29 / 30
MARGIN = 0.15


@pytest.fixture(scope="module")
def pretrained():
    if not CHECKPOINT.is_file():
        pytest.fail(f"{CHECKPOINT} is missing: make it with the command in benchmarks/learning.md")
    return runs.load_run(CHECKPOINT)


def test_pretrained_is_a_finished_run(pretrained):
    state, config, history, metadata = pretrained
    assert int(state.env_steps) == metadata["env_steps"] > 0 and history
    assert runs.config_name(config) == "race"


def test_pretrained_laps_held_out_tracks(pretrained):
    state, config, _, _ = pretrained
    result = evaluate(state.params, config, num_tracks=TRACKS, first_seed=EVAL_FIRST_SEED)
    assert result["lap_completion_rate"] >= LAPS_MEASURED - MARGIN, {
        k: result[k] for k in ("lap_completion_rate", "mean_progress", "crash_rate", "mean_steps")
    }
    assert result["mean_progress"] > 0.8
