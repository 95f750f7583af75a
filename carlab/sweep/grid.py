"""What a sweep runs: knobs of the config, their values, the seeds and the steps, from the command
line (``--set agent.actor_lr=1e-4,3e-4``) or a small YAML file, as a list of trials.

A *knob* is a field of the config named ``section.field`` (``agent.actor_lr``,
``replay.batch_size``); a *trial* is one value of every knob (the grid's cartesian product), trained
for every seed of the sweep in one call (:func:`carlab.learn.seeds.train_seeds`). The YAML file::

    config: tiny            # the preset every trial starts from
    steps: 20000            # env steps each run collects
    seeds: 0-3              # or [0, 1, 2, 3]
    knobs:
      agent.actor_lr: [1.0e-4, 3.0e-4]
      agent.horizon: [5, 15]

Values are checked against the field's type (a float field takes ``1e-4``, an int field ``5``, a
bool ``true``, a tuple of ints ``64x32`` on the command line or ``[64, 32]`` in YAML). Bad input is
a ``ValueError`` of one line. Nothing here imports JAX until the seeds are parsed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

from carlab.checks import check_int
from carlab.learn import config as config_lib

_DEFAULTS = config_lib.Config()
YAML_KEYS = ("config", "steps", "seeds", "knobs")
"""The keys a sweep's YAML file may hold."""
DEFAULT_PRESET, DEFAULT_SEEDS, DEFAULT_STEPS = "default", "0-3", 100_000
"""What a sweep trains when neither the file nor the command line says."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """A grid of knob values over a preset, each trial trained for every seed."""

    knobs: dict[str, tuple]
    """Knob (``section.field``) -> the values it takes, in order."""
    seeds: tuple[int, ...]
    """The seeds every trial trains (vmapped, in one call)."""
    steps: int
    """Env steps each run collects."""
    preset: str = "default"
    """The preset every trial starts from (:data:`carlab.learn.config.PRESETS`)."""

    def trials(self) -> list[dict]:
        """One dict ``{knob: value}`` per trial: the cartesian product of the knobs' values."""
        names = list(self.knobs)
        return [dict(zip(names, values)) for values in itertools.product(*self.knobs.values())]

    def to_dict(self) -> dict:
        """The sweep as plain JSON-ready data (what a Ray trial is given)."""
        knobs = {k: list(v) for k, v in self.knobs.items()}
        return {"knobs": knobs, "seeds": list(self.seeds), "steps": self.steps, "preset": self.preset}


def check_knob(knob: str) -> tuple[str, str]:
    """``"agent.actor_lr"`` -> ``("agent", "actor_lr")``, or ``ValueError`` if no config field is named so."""
    section, dot, name = knob.partition(".")
    part = getattr(_DEFAULTS, section, None) if dot else None
    if not dataclasses.is_dataclass(part):
        sections = ", ".join(f.name for f in dataclasses.fields(_DEFAULTS))
        raise ValueError(f"knob {knob!r}: name it section.field, the section one of {sections}")
    if name not in {f.name for f in dataclasses.fields(part)}:
        raise ValueError(f"knob {knob!r}: the {section} config has no field {name!r}")
    if knob == "train.seed":
        raise ValueError("knob 'train.seed': give the seeds with --seeds (every trial trains all of them)")
    return section, name


def knob_value(knob: str, value):
    """``value`` (text from the command line, or YAML data) as the type of the config field ``knob``."""
    section, name = check_knob(knob)
    default = getattr(getattr(_DEFAULTS, section), name)
    try:
        if isinstance(default, bool):
            return _as_bool(value)
        if isinstance(default, int):
            return check_int(int(value) if isinstance(value, str) else value, "it")
        if isinstance(default, float):
            return _as_float(value)
        if isinstance(default, tuple):
            parts = value.split("x") if isinstance(value, str) else value
            if isinstance(parts, (list, tuple)) and parts:
                return tuple(check_int(int(p) if isinstance(p, str) else p, "each size") for p in parts)
            raise ValueError("wanted sizes like 64x32 (or a YAML list [64, 32])")
    except ValueError as error:
        raise ValueError(f"knob {knob}: bad value {value!r} ({error})") from None
    raise ValueError(f"knob {knob}: a {type(default).__name__} field cannot be swept")


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError("wanted true or false")


def _as_float(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("wanted a number")  # noqa: TRY004 (bad input is a ValueError)
    number = float(value)  # ValueError for text that is not a number
    if not math.isfinite(number):
        raise ValueError("wanted a finite number")
    return number


def parse_set(text: str) -> tuple[str, tuple]:
    """``"agent.actor_lr=1e-4,3e-4"`` -> ``("agent.actor_lr", (0.0001, 0.0003))`` (``--set`` of ``carlab sweep``)."""
    knob, equals, values = text.partition("=")
    knob = knob.strip()
    if not equals or not knob or not values.strip():
        raise ValueError(f"--set {text!r}: write it as section.field=value1,value2")
    return knob, _values(knob, [v.strip() for v in values.split(",")])


def _values(knob: str, values: list) -> tuple:
    if not values or any(v == "" for v in values):
        raise ValueError(f"knob {knob}: give at least one value, without empty ones")
    values = tuple(knob_value(knob, v) for v in values)
    if len(set(values)) != len(values):
        raise ValueError(f"knob {knob}: a value appears twice in {list(values)}")
    return values


def _seeds(value) -> tuple[int, ...]:
    from carlab.learn.seed_runs import parse_seeds  # imported late: carlab.learn.loop pulls in JAX

    if isinstance(value, str):
        return tuple(parse_seeds(value))
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"seeds: give a list like [0, 1] or a range like 0-3, got {value!r}")  # noqa: TRY004 (bad input is a ValueError)
    return tuple(parse_seeds(",".join(str(check_int(s, "every seed", low=0, where="seeds")) for s in value)))


def make_sweep(
    *, knobs: dict, seeds=DEFAULT_SEEDS, steps: int = DEFAULT_STEPS, preset: str = DEFAULT_PRESET
) -> Sweep:
    """A checked :class:`Sweep`: ``knobs`` maps knob names to lists of values (text or data),
    ``seeds`` is ``"0-3"`` or a list of ints."""
    if preset not in config_lib.PRESETS:
        raise ValueError(f"config {preset!r}: choose one of {sorted(config_lib.PRESETS)}")
    if not isinstance(knobs, dict) or not knobs:
        raise ValueError("knobs: sweep at least one knob (--set section.field=v1,v2)")
    checked = {}
    for knob, values in knobs.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        checked[str(knob)] = _values(str(knob), values)
    steps = check_int(steps, "steps", low=1, where="sweep")
    return Sweep(knobs=checked, seeds=_seeds(seeds), steps=steps, preset=preset)


def load_sweep(path, **overrides) -> Sweep:
    """The :class:`Sweep` a YAML file describes (:data:`YAML_KEYS`); ``overrides`` (``knobs=``,
    ``seeds=``, ``steps=``, ``preset=``) replace what the file says, knob by knob for ``knobs``."""
    import yaml  # in the dev and sweep extras

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read it ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a sweep file is a mapping with keys {', '.join(YAML_KEYS)}")  # noqa: TRY004 (bad input is a ValueError)
    unknown = sorted(set(data) - set(YAML_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}; a sweep file has {', '.join(YAML_KEYS)}")
    knobs = data.get("knobs") or {}
    if not isinstance(knobs, dict):
        raise ValueError(f"{path}: knobs must map section.field to a list of values")  # noqa: TRY004 (bad input is a ValueError)
    spec = {"preset": data.get("config", DEFAULT_PRESET), "seeds": data.get("seeds", DEFAULT_SEEDS)}
    spec["steps"] = data.get("steps", DEFAULT_STEPS)
    spec.update({k: v for k, v in overrides.items() if k != "knobs" and v is not None})
    try:
        return make_sweep(knobs={**knobs, **(overrides.get("knobs") or {})}, **spec)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def trial_config(preset: str, knobs: dict) -> config_lib.Config:
    """The config of one trial: ``preset`` with each ``section.field`` of ``knobs`` set."""
    sections: dict[str, dict] = {}
    for knob, value in knobs.items():
        section, name = check_knob(knob)
        sections.setdefault(section, {})[name] = tuple(value) if isinstance(value, list) else value
    return config_lib.with_overrides(config_lib.preset(preset), **sections)


def trial_name(knobs: dict) -> str:
    """A short readable name of a trial: ``actor_lr=0.0001,horizon=5``."""
    return ",".join(f"{knob.partition('.')[2]}={_text(value)}" for knob, value in knobs.items())


def _text(value) -> str:
    if isinstance(value, (tuple, list)):
        return "x".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)
