"""``carlab sweep``'s answers that need no Ray running: no Ray installed, no cluster there, bad options,
and a ``--help`` that loads neither Ray nor JAX."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from carlab.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["sweep", "--config", "tiny", "--set", "agent.actor_lr=1e-4,3e-4", "--seeds", "0-1", "--steps", "400"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _carlab(*args, timeout=120):
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    code = "import sys; from carlab.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_without_ray_it_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # importlib finds no module called ray
    assert main([*TINY, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == 'carlab sweep: Ray is not installed; install the sweep extra: pip install -e ".[sweep]"'
    )
    assert not (tmp_path / "out").exists()


def test_a_cluster_that_is_not_there_is_one_line_not_a_hang(tmp_path):
    address = f"ray://127.0.0.1:{_free_port()}"
    # Ray's own client would retry for about a minute; the timeout here only turns a hang into a failure.
    done = _carlab(*TINY, "--address", address, "--out", str(tmp_path / "out"), timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"carlab sweep: no Ray cluster at {address} (") and "ray start --head" in line
    assert not (tmp_path / "out" / "tune").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["sweep", "--set", "agent.nope=1"],
            "carlab sweep: knob 'agent.nope': the agent config has no field 'nope'",
        ),
        (["sweep", "--seeds", "0-3"], "carlab sweep: give the knobs to sweep"),
        (["sweep", "--set", "agent.actor_lr=1e-4", "--seeds", "3-1"], "the range 3-1 runs backwards"),
        (
            ["sweep", "--set", "agent.actor_lr=1e-4", "--address", "nowhere"],
            "give ray://host:port, host:port or auto",
        ),
        (["sweep", "--set", "agent.actor_lr=1e-4", "--cpus-per-trial", "100000"], "this machine has"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(args, message, capsys, tmp_path):
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("carlab sweep: ")


def test_a_yaml_file_that_is_not_there(capsys, tmp_path):
    assert main(["sweep", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read it" in capsys.readouterr().err


def test_help_loads_neither_ray_nor_jax():
    code = (
        "import sys, json, contextlib, io\nfrom carlab.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try: main(['sweep', '--help'])\n    except SystemExit: pass\n"
        "print(json.dumps([sorted(m for m in ('ray', 'jax', 'yaml') if m in sys.modules), out.getvalue()]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    loaded, text = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [] and "--scheduler {fifo,asha}" in text and "--address ADDR" in text
