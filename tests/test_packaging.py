"""What a newcomer relies on: the README's two commands, the Makefile, the entry point, conda, layout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")


@pytest.mark.parametrize("command", ["make lab", "make test"])
def test_readme_gives_the_two_commands(command):
    assert re.search(rf"^\s*{re.escape(command)}\s*$", README, re.MULTILINE), f"README lacks `{command}`"


@pytest.mark.parametrize("target", ["lab", "test", "install", "bench", "clean"])
def test_makefile_defines_target(target):
    assert re.search(rf"^{target}\s*:", MAKEFILE, re.MULTILINE), f"Makefile has no `{target}` target"


def _make_dry_run(*args: str) -> str:
    """What ``make -n ARGS`` would run (no Entering/Leaving lines, even when run under ``make test``)."""
    return subprocess.run(
        ["make", "--no-print-directory", "-n", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MAKEFLAGS": ""},
    ).stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_dry_run_runs_jupyter_and_pytest():
    """`make -n` parses the Makefile and shows what `lab` and `test` would run, without running it."""
    out = _make_dry_run("lab", "test", "LAB_ARGS=--no-browser", "PYTEST_ARGS=-x")
    assert "-m jupyter lab notebooks/ --no-browser" in out
    assert "SDL_VIDEODRIVER=dummy" in out and "-m pytest -x" in out


def test_ci_script_is_executable():
    script = ROOT / ".ci" / "run"
    assert script.is_file() and os.access(script, os.X_OK)


def test_console_script_entry_point():
    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "carlab"]
    assert ep.value == "carlab.cli:main"
    assert callable(ep.load())


def test_environment_yml():
    env = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert env["name"] == "carlab"
    assert "conda-forge" in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    (pip,) = [d["pip"] for d in deps if isinstance(d, dict)]
    # The same extras `make install` takes, so `python -m pytest` finds Ray for the sweep tests.
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    (extras,) = re.findall(r'pip install -e "\.\[([a-z,]+)\]"', makefile)
    assert extras == "dev,sweep" and f"-e .[{extras}]" in pip


def test_readme_links_point_to_files():
    """Every relative link or image in the README names a file that exists."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README) + re.findall(r'src="([^"]+)"', README)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
    assert local, "README links to no local files"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_models_readme_exists():
    assert (ROOT / "models" / "README.md").is_file()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_passes_allow_root_exactly_when_root():
    out = _make_dry_run("-o", ".venv/.carlab-installed", "lab", "LAB_ARGS=--no-browser")
    assert out.strip().endswith(
        "-m jupyter lab notebooks/ --no-browser" + (" --allow-root" if os.geteuid() == 0 else "")
    )
    assert "works as root too" in README and "--allow-root" in README  # and the README says so


def test_readme_documents_every_info_key():
    from carlab.sim.gym_env import INFO_KEYS

    table = README[README.index("The `info` dict") :]
    for key in INFO_KEYS:
        assert f"| `{key}` |" in table, key
    assert "grows past 1 after the first lap" in table


def test_the_wheel_ships_the_live_views_drawing_code(tmp_path):
    """race_canvas.js is not Python: without package data a pip-installed lab would draw nothing."""
    import sys
    import zipfile

    source = tmp_path / "src"
    shutil.copytree(ROOT / "carlab", source / "carlab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)]
    subprocess.run(command, check=True, capture_output=True)  # (build isolation: pyproject's setuptools)
    (wheel,) = tmp_path.glob("carlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "carlab/lab/widgets/race_canvas.js" in names and "carlab/lab/widgets/race_canvas.py" in names
