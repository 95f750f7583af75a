"""The ``carlab`` command line as a package: where ``carlab train`` saves, and what it refuses to touch.

A run without ``--out`` goes to a new ``runs/`` file (never the committed pretrained agent); an
existing file is overwritten only with ``--force``; a destination that cannot be written is refused
in one line before anything is trained.
"""

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from carlab import cli
from carlab.cli import train
from carlab.cli.common import _new_run_path, _unwritable
from carlab.learn import runs
from carlab.learn.checkpoint import read_metadata

ROOT = Path(__file__).resolve().parents[1]
SHORT = ["--config", "tiny", "--steps", "20", "--eval-tracks", "0", "--no-progress"]
STAMP = r"\d{8}-\d{6}"  # YYYYmmdd-HHMMSS


def test_every_command_module_is_listed_and_declares_its_parser():
    assert {"play", "train", "eval"} <= set(cli.COMMANDS) and len(set(cli.COMMANDS)) == len(cli.COMMANDS)
    parser = cli.build_parser()
    for name in cli.COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([name, "--help"])
        assert exit_info.value.code == 0


def test_train_help_names_the_default_destination_and_force():
    result = subprocess.run(
        [sys.executable, "-m", "carlab", "train", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert "runs/<preset>-seed<S>" in result.stdout and "--force" in result.stdout


def test_train_without_out_saves_a_new_run_and_leaves_the_pretrained_agent(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pretrained = tmp_path / "models" / "agent.safetensors"
    pretrained.parent.mkdir()
    pretrained.write_bytes((ROOT / "models" / "agent.safetensors").read_bytes())
    before = pretrained.read_bytes(), pretrained.stat().st_mtime_ns
    assert cli.main(["train", *SHORT]) == 0
    assert (pretrained.read_bytes(), pretrained.stat().st_mtime_ns) == before
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["agent.safetensors"]
    saved = [p for p in (tmp_path / "runs").glob("*.safetensors") if not p.stem.endswith("-best")]
    assert len(saved) == 1 and re.fullmatch(f"tiny-seed0-{STAMP}", saved[0].stem), saved
    out = Path("runs") / saved[0].name
    assert read_metadata(out)["env_steps"] == 20
    stdout = capsys.readouterr().out
    assert f"saving to {out}" in stdout and f"saved {out}" in stdout


def _refusal(argv, capsys) -> str:
    """Run ``carlab train argv``, expect exit 2 and return its one line on stderr."""
    assert cli.main(["train", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err
    assert captured.out == "" and err.startswith("carlab train: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


def test_an_existing_out_is_refused_without_force_and_replaced_with_it(tmp_path, capsys):
    out, best = tmp_path / "a.safetensors", tmp_path / "a-best.safetensors"
    out.write_bytes(b"an older run")
    best.write_bytes(b"an older run's best")
    err = _refusal([*SHORT, "--out", str(out)], capsys)
    assert err == (
        f"carlab train: {out} exists; pass --force to overwrite it (or --resume {out} to continue it)"
    )
    assert out.read_bytes() == b"an older run" and sorted(tmp_path.iterdir()) == [best, out]
    out.unlink()
    err = _refusal([*SHORT, "--out", str(out)], capsys)  # the -best sibling alone is guarded too
    assert err == f"carlab train: {best} exists; pass --force to overwrite it"
    out.write_bytes(b"an older run")
    assert cli.main(["train", *SHORT, "--out", str(out), "--force"]) == 0
    assert read_metadata(out)["env_steps"] == 20
    # The older run's best must not pass for this run's: it is gone or this run's own.
    assert not best.exists() or read_metadata(best)["best_of_run"] is True


def test_train_seeds_refuses_to_overwrite_any_run_of_the_set(tmp_path, capsys):
    out = tmp_path / "s.safetensors"
    runs.seed_path(out, 1).write_bytes(b"seed 1 of an older set")
    err = _refusal([*SHORT, "--seeds", "0-1", "--out", str(out)], capsys)
    assert err == (
        f"carlab train: {runs.seed_path(out, 1)} exists; pass --force to overwrite it "
        f"(or --resume {out} to continue the set)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["s-seed1.safetensors"]


def _args(**given) -> argparse.Namespace:
    """``carlab train``'s parsed options with ``given`` ones."""
    return argparse.Namespace(**{**vars(cli.build_parser().parse_args(["train", *SHORT])), **given})


def test_resuming_into_the_same_file_is_not_an_overwrite(tmp_path):
    out = tmp_path / "a.safetensors"
    out.write_bytes(b"a run")
    runs.best_path(out).write_bytes(b"its best")
    assert train._check_out(_args(out=str(out), resume=str(out)), out, None) is None
    same = tmp_path / "x" / ".." / "a.safetensors"  # the same file by another name
    (tmp_path / "x").mkdir()
    assert train._check_out(_args(out=str(same), resume=str(out)), same, None) is None
    assert "exists" in train._check_out(
        _args(out=str(out), resume=str(tmp_path / "b.safetensors")), out, None
    )


def test_the_default_destination_of_a_set_of_seeds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, problem = train._prepare_out(_args(seeds="0-3,8"), "tiny-seeds0-8", [0, 1, 2, 3, 8])
    assert problem is None and out.parent == Path("runs") and (tmp_path / "runs").is_dir()
    assert re.fullmatch(f"tiny-seeds0-8-{STAMP}", out.stem)
    assert runs.seed_path(out, 8).name == f"{out.stem}-seed8.safetensors"


def test_a_new_run_path_never_names_an_existing_run(tmp_path):
    taken = tmp_path / "taken"
    taken.write_bytes(b"")

    def targets(path):  # the first two candidates collide with an existing file
        return [taken] if not path.stem.endswith("-3") else [tmp_path / "free"]

    path = _new_run_path("tiny-seed0", targets, folder=str(tmp_path))
    assert path.parent == tmp_path and re.fullmatch(f"tiny-seed0-{STAMP}-3", path.stem)


def _unwritable_outs(tmp_path: Path) -> list[tuple[str, str]]:
    """``(--out, what the refusal says)`` for destinations that cannot be written here."""
    (tmp_path / "afile").write_bytes(b"in the way")
    (tmp_path / "adir.safetensors").mkdir()  # a folder where the checkpoint goes
    (tmp_path / "adir-seed0.safetensors").mkdir()  # ... and where seed 0's goes
    outs = [
        (str(tmp_path / "afile" / "x.safetensors"), f"{tmp_path / 'afile'} is not a folder"),
        (str(tmp_path / "afile" / "deeper" / "x.safetensors"), f"{tmp_path / 'afile'} is not a folder"),
        (str(tmp_path / "adir.safetensors"), "it is not a file"),
    ]
    if Path("/proc/self").is_dir():  # Linux: nothing can be created in /proc, not even by root
        outs.append(("/proc/x.safetensors", "no file can be created in /proc"))
    if os.geteuid() != 0:  # root writes into a read-only folder anyway
        readonly = tmp_path / "readonly"
        readonly.mkdir()
        readonly.chmod(0o555)
        outs.append((str(readonly / "x.safetensors"), f"no file can be created in {readonly}"))
    return outs


@pytest.mark.parametrize("seeds", [[], ["--seeds", "0-1"]], ids=["one seed", "seeds"])
def test_an_unwritable_out_is_refused_in_one_line_before_training(tmp_path, capsys, seeds):
    outs = _unwritable_outs(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    for out, message in outs:
        err = _refusal([*SHORT, *seeds, "--out", out, "--force"], capsys)
        assert err.startswith("carlab train: cannot write ") and message in err, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing trained, nothing written


def test_unwritable_makes_missing_folders_and_leaves_no_probe(tmp_path):
    out = tmp_path / "new" / "deeper" / "x.safetensors"
    assert _unwritable([out, runs.best_path(out)]) is None
    assert (tmp_path / "new" / "deeper").is_dir() and not list((tmp_path / "new" / "deeper").iterdir())
