"""The house: four rooms, each with one public face, and dependencies that point one way.

sim <- learn <- course / lab <- cli: the simulator imports nothing of the learner, the learner
nothing of the course or the lab, and nothing but the lab's face imports the widgets.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FACES = ("carlab.sim", "carlab.learn", "carlab.course", "carlab.lab")


@pytest.mark.parametrize("face", FACES)
def test_every_public_name_of_a_face_imports(face):
    module = importlib.import_module(face)
    assert module.__all__, f"{face} lists no public names"
    assert sorted(module.__all__) == list(module.__all__) and len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        value = getattr(module, name)
        assert value is not None, f"{face}.{name}"
        assert not name.startswith("_"), f"{face} exports a private name {name}"
    assert set(module.__all__) <= set(dir(module))
    with pytest.raises(AttributeError, match="has no attribute"):
        module.no_such_name  # noqa: B018


def test_what_a_student_imports_works():
    """The names the README and the notebooks use come from the faces (a star import takes __all__)."""
    from carlab.learn import Config, TrainState, evaluate, train
    from carlab.sim import EnvParams, Renderer, env, make_track

    assert callable(make_track) and hasattr(env, "step") and hasattr(EnvParams, "from_seeds")
    assert callable(evaluate) and callable(train)  # the functions, not their modules
    assert Renderer and Config and TrainState
    import carlab.learn
    import carlab.sim

    for name in ("env", "make_track", "EnvParams", "Renderer"):
        assert name in carlab.sim.__all__
    for name in ("Config", "train", "evaluate", "TrainState", "policies", "Policy"):
        assert name in carlab.learn.__all__


def _imported_by(module: str) -> list[str]:
    """The carlab modules a fresh interpreter has loaded after importing ``module``."""
    code = f"import sys, json, {module}; print(json.dumps(sorted(m for m in sys.modules if m.startswith('carlab'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


SIM_MODULES = [
    "carlab.sim.track",
    "carlab.sim.sensors",
    "carlab.sim.env",
    "carlab.sim.reference",
    "carlab.sim.render",
    "carlab.sim.gym_env",
    "carlab.sim.vector_env",
    "carlab.sim.play",
]


@pytest.mark.parametrize("module", SIM_MODULES)
def test_the_sim_imports_nothing_of_the_other_rooms(module):
    loaded = _imported_by(module)
    assert not [m for m in loaded if m.startswith(("carlab.learn", "carlab.course", "carlab.lab"))], loaded


def test_the_learner_imports_neither_course_nor_lab():
    modules = [
        f"carlab.learn.{p.stem}" for p in (ROOT / "carlab" / "learn").glob("*.py") if p.stem != "__init__"
    ]
    loaded = _imported_by(", ".join(modules))
    assert not [m for m in loaded if m.startswith(("carlab.course", "carlab.lab"))], loaded


def test_the_cli_starts_without_the_learner():
    """`carlab --help` and bad options answer at once: the CLI loads JAX only for the command that runs."""
    loaded = _imported_by("carlab.cli")
    assert "carlab.learn.config" in loaded
    assert not [m for m in loaded if m.startswith(("carlab.learn.loop", "carlab.lab", "carlab.course"))], (
        loaded
    )


def test_no_library_module_is_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "carlab").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, f"split these by concept: {long}"


def test_tests_mirror_the_layout():
    for room in ("sim", "learn", "course", "lab"):
        assert (ROOT / "tests" / room).is_dir(), room
        assert list((ROOT / "tests" / room).glob("test_*.py")), room
