"""``carlab train``, ``carlab eval`` and ``carlab play --agent`` end to end (tiny preset, in-process)."""

import contextlib
import io
import json

import pytest

from carlab import cli
from carlab.learn import runs
from carlab.learn.checkpoint import read_metadata

EVAL_KEYS = {
    "lap_completion_rate",
    "mean_progress",
    "crash_rate",
    "mean_return",
    "mean_steps",
    "num_tracks",
    "first_seed",
    "checkpoint",
    "env_steps",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One ``carlab train`` run shared by the tests: (checkpoint path, its stdout)."""
    out = tmp_path_factory.mktemp("cli") / "a.safetensors"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):  # capsys is per test; this fixture is per module
        code = cli.main(
            [
                "train",
                "--config",
                "tiny",
                "--steps",
                "2000",
                "--out",
                str(out),
                "--eval-tracks",
                "3",
                "--no-progress",
            ]
        )
    assert code == 0
    return out, stdout.getvalue()


def test_train_writes_checkpoint_metrics_and_png(trained):
    out, stdout = trained
    stem = out.with_suffix("")
    for path in (
        out,
        stem.with_suffix(".png"),
        out.with_name("a.metrics.jsonl"),
        out.with_name("a.metrics.csv"),
    ):
        assert path.is_file() and path.stat().st_size > 0, path
    assert out.with_name("a.png").read_bytes()[:4] == b"\x89PNG"
    rows = out.with_name("a.metrics.jsonl").read_text().splitlines()
    assert len(rows) == 5 and json.loads(rows[-1])["env_steps"] == 2000  # 100 rounds in chunks of 20
    metadata = read_metadata(out)
    assert metadata["env_steps"] == 2000 and metadata["config_name"] == "tiny"
    assert metadata["eval"]["num_tracks"] == 3 and len(metadata["eval"]["progress"]) == 3
    assert len(metadata["history"]) == 5
    assert "lap completion rate" in stdout and f"saved {out}" in stdout


def test_train_saves_the_best_validated_checkpoint(trained):
    out, stdout = trained
    best = runs.best_path(out)
    assert best.is_file() and f"best checkpoint {best}" in stdout
    metadata = read_metadata(best)
    records = [json.loads(line) for line in out.with_name("a.metrics.jsonl").read_text().splitlines()]
    scores = [(r["val/laps"], r["val/progress"]) for r in records]  # validated after every chunk
    # The best file holds the first state with the best validation score of the whole run.
    first_best = scores.index(max(scores))
    assert metadata["best_of_run"] is True and max(scores) > (0.0, 0.0)
    assert (metadata["val/laps"], metadata["val/progress"]) == max(scores)
    assert metadata["env_steps"] == records[first_best]["env_steps"]
    assert len(metadata["history"]) == first_best + 1


def test_eval_json(trained, capsys):
    out, _ = trained
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--tracks", "3", "--json"]) == 0
    stdout = capsys.readouterr().out
    result = json.loads(stdout)  # exactly one JSON object and nothing else
    assert EVAL_KEYS <= set(result)
    assert result["num_tracks"] == 3 and result["first_seed"] == 1_000_000
    assert result["checkpoint"] == str(out) and result["env_steps"] == 2000
    for key in ("lap_completion_rate", "mean_progress", "crash_rate"):
        assert 0.0 <= result[key] <= 1.0
    assert 1.0 <= result["mean_steps"] <= 1000.0
    # The same tracks as the evaluation stored by `carlab train`.
    assert result["mean_progress"] == pytest.approx(read_metadata(out)["eval"]["mean_progress"])


def test_eval_table(trained, capsys):
    out, _ = trained
    assert cli.main(["eval", str(out), "--tracks", "2", "--first-seed", "5000000"]) == 0
    stdout = capsys.readouterr().out
    assert "mean progress" in stdout and "tiny config" in stdout and "seeds 5000000..5000001" in stdout


@pytest.mark.parametrize("content", [None, b"", b"\x80\x04garbage", b"not a checkpoint at all" * 10])
def test_eval_bad_checkpoint_exits_2(tmp_path, capsys, content):
    path = tmp_path / "bad.safetensors"
    if content is not None:
        path.write_bytes(content)
    assert cli.main(["eval", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("carlab eval: ") and str(path) in err
    assert "\n" not in err and "Traceback" not in err


def test_eval_usage_errors():
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "x.safetensors", "--tracks", "0"])
    assert exit_info.value.code == 2


def test_play_with_agent(trained, capsys):
    out, _ = trained
    assert cli.main(["play", "--agent", str(out), "--headless", "--frames", "20"]) == 0
    assert "frames 20" in capsys.readouterr().out


def test_play_with_missing_agent(tmp_path, capsys):
    assert (
        cli.main(["play", "--agent", str(tmp_path / "none.safetensors"), "--headless", "--frames", "5"]) == 2
    )
    assert "no checkpoint" in capsys.readouterr().err


def test_resume_continues_the_run(trained, tmp_path, capsys):
    out, _ = trained
    more = tmp_path / "b.safetensors"
    argv = [
        "train",
        "--resume",
        str(out),
        "--steps",
        "400",
        "--out",
        str(more),
        "--eval-tracks",
        "0",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    metadata, before = read_metadata(more), read_metadata(out)
    assert metadata["env_steps"] == 2400 and metadata["updates"] > before["updates"]
    assert len(metadata["history"]) == len(before["history"]) + 1
    assert metadata["history"][-1]["time_s"] > before["history"][-1]["time_s"]
    assert "eval" not in metadata


@pytest.mark.parametrize(
    "extra, message",
    [(["--seed", "3"], "--seed 3 disagrees"), (["--config", "default"], "--config default disagrees")],
)
def test_resume_refuses_contradicting_options(trained, tmp_path, capsys, extra, message):
    out, _ = trained
    argv = ["train", "--resume", str(out), "--steps", "20", "--out", str(tmp_path / "c.safetensors"), *extra]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c.safetensors").exists()


def test_resume_allows_agreeing_options(trained, tmp_path):
    out, _ = trained
    argv = [
        "train",
        "--resume",
        str(out),
        "--steps",
        "20",
        "--out",
        str(tmp_path / "d.safetensors"),
        "--seed",
        "0",
        "--config",
        "tiny",
        "--eval-tracks",
        "0",
        "--no-progress",
    ]
    assert cli.main(argv) == 0


def test_train_usage_errors(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "model.pkl"), "--config", "tiny"]) == 2
    assert "--out must end in .safetensors" in capsys.readouterr().err
    assert (
        cli.main(
            [
                "train",
                "--resume",
                str(tmp_path / "gone.safetensors"),
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )
        == 2
    )
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--steps", "0"])
    with pytest.raises(SystemExit):
        cli.main(["train", "--config", "huge"])


@pytest.fixture(scope="module")
def trained_seeds(tmp_path_factory):
    """One ``carlab train --seeds 0-1`` set shared by the tests: (the --out path, its stdout)."""
    out = tmp_path_factory.mktemp("seeds") / "s.safetensors"
    stdout = io.StringIO()
    argv = ["train", "--config", "tiny", "--steps", "400", "--seeds", "0-1", "--out", str(out)]
    with contextlib.redirect_stdout(stdout):
        assert cli.main([*argv, "--eval-tracks", "2", "--no-progress"]) == 0
    return out, stdout.getvalue()


def test_train_seeds_writes_one_run_per_seed_and_one_figure(trained_seeds, capsys):
    out, stdout = trained_seeds
    for seed in (0, 1):
        run = runs.seed_path(out, seed)
        assert run.name == f"s-seed{seed}.safetensors" and f"seed {seed}: saved {run}" in stdout
        for path in (run, out.with_name(f"s-seed{seed}.metrics.jsonl")):
            assert path.is_file(), path
        metadata = read_metadata(run)
        # A -best checkpoint exactly when a validation drove somewhere (a fresh stochastic actor's
        # mean action may stand still: 0 laps, progress 0 beats nothing), and the output says which.
        scores = [(h["val/laps"], h["val/progress"]) for h in metadata["history"]]
        if max(scores) > (0.0, 0.0):
            assert read_metadata(runs.best_path(run))["val/progress"] == max(scores)[1]
        else:
            assert not runs.best_path(run).exists() and f"seed {seed}: no -best checkpoint" in stdout
        assert metadata["config"]["train"]["seed"] == seed and metadata["env_steps"] == 400
        assert metadata["eval"]["num_tracks"] == 2 and "val/laps" in metadata["history"][-1]
        capsys.readouterr()
        assert cli.main(["eval", str(run), "--tracks", "2", "--json"]) == 0  # a plain run checkpoint
        assert json.loads(capsys.readouterr().out)["env_steps"] == 400
    figure = out.with_name("s-seeds.png")
    assert figure.read_bytes()[:4] == b"\x89PNG" and f"figure {figure}" in stdout
    assert "median" in stdout
    assert (
        read_metadata(runs.seed_path(out, 0))["history"] != read_metadata(runs.seed_path(out, 1))["history"]
    )


def test_train_seeds_resumes_the_set(trained_seeds, tmp_path):
    out, _ = trained_seeds
    more = tmp_path / "t.safetensors"
    argv = ["train", "--seeds", "0-1", "--resume", str(out), "--steps", "400", "--out", str(more)]
    assert cli.main([*argv, "--eval-tracks", "0", "--no-progress"]) == 0
    for seed in (0, 1):
        metadata, before = read_metadata(runs.seed_path(more, seed)), read_metadata(runs.seed_path(out, seed))
        assert metadata["env_steps"] == 800 and len(metadata["history"]) == len(before["history"]) + 1
        assert metadata["config"]["train"]["seed"] == seed and "eval" not in metadata


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "3-1"], "runs backwards"),
        (["--seeds", "0-"], "is not a seed or a range"),
        (["--seeds", "0,x"], "is not a seed or a range"),
        (["--seeds", "0-2,2"], "seed 2 appears twice"),
        (["--seeds", "0-1", "--seed", "1"], "--seed and --seeds contradict"),
    ],
)
def test_train_seeds_usage_errors_give_one_line(tmp_path, capsys, extra, message):
    assert cli.main(["train", "--config", "tiny", "--out", str(tmp_path / "x.safetensors"), *extra]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == "" and err.startswith("carlab train: ") and message in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_train_seeds_resume_needs_every_seed(trained_seeds, tmp_path, capsys):
    out, _ = trained_seeds
    argv = ["train", "--seeds", "0-2", "--resume", str(out), "--out", str(tmp_path / "u.safetensors")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "s-seed2.safetensors" in err and "\n" not in err
