"""The learning benchmark and its plot run end to end (tiny preset, a few thousand env steps)."""

import json
import runpy
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def summary_text(tmp_path_factory):
    module = runpy.run_path(str(BENCHMARKS / "learning.py"), run_name="not_main")
    argv = ["--config", "tiny", "--steps", "2000", "--eval-every", "1000", "--tracks", "2", "--json"]
    argv += ["--set", "agent.discount=0.98", "--target", "0.0"]
    summary = module["main"](argv)
    return json.dumps(summary)


def test_learning_benchmark_summary(summary_text):
    summary = json.loads(summary_text)
    assert summary["config"] == "tiny" and summary["overrides"] == ["agent.discount=0.98"]
    # tiny chunks are 400 env steps: it evaluates after the first chunk at or past each 1000
    assert [p["env_steps"] for p in summary["curve"]] == [1200, 2000]
    for point in summary["curve"]:
        assert 0.0 <= point["lap_completion_rate"] <= 1.0 and point["wall_s"] > 0
    # A target of 0 is met at the first evaluation.
    assert summary["reached"] == summary["curve"][0] and summary["final"] == summary["curve"][-1]
    best = summary["best_checkpoint"]
    # the untrained car already creeps forward a little on the validation tracks
    assert 0 < best["env_steps"] <= 2000 and best["val_progress"] > 0
    assert summary["world_model_update_ms"] > 0 and summary["imagination_update_ms"] > 0


def test_learning_benchmark_rejects_a_bad_override():
    module = runpy.run_path(str(BENCHMARKS / "learning.py"), run_name="not_main")
    with pytest.raises(SystemExit):
        module["main"](["--config", "tiny", "--set", "agent.discount"])


def test_plot_learning_draws_the_curves(summary_text, tmp_path):
    first = tmp_path / "s0.json"
    first.write_text("a log line\n" + summary_text + "\n")
    second = json.loads(summary_text)
    second["seed"], second["best_checkpoint"] = 1, None
    (tmp_path / "s1.json").write_text(json.dumps(second))
    module = runpy.run_path(str(BENCHMARKS / "plot_learning.py"), run_name="not_main")
    out = module["main"]([str(first), str(tmp_path / "s1.json"), "--out", str(tmp_path / "curve.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    (tmp_path / "log.txt").write_text("no summary here\n")
    with pytest.raises(SystemExit, match="no JSON summary"):
        module["main"]([str(tmp_path / "log.txt"), "--out", str(tmp_path / "x.png")])


def test_seeds_speed_smoke():
    module = runpy.run_path(str(BENCHMARKS / "seeds_speed.py"), run_name="not_main")
    summary = module["main"](["--quick", "--json"])
    assert summary["config"] == "tiny" and summary["single_steps_per_s"] > 0
    (row,) = summary["rows"]
    assert row["seeds"] == 2 and row["steps_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert summary["ratio_2_seeds"] == pytest.approx(row["steps_per_s"] / summary["single_steps_per_s"])
    # two runs in one call carry exactly twice the arrays of one run: memory is linear in S
    assert row["state_mb"] == pytest.approx(2 * summary["single_state_mb"])
    assert "target_met" not in summary  # the target is about 8 seeds
