"""Live hyperparameters: the knobs a student may turn while training runs, checked and applied.

Two kinds, because they live in different places:

* **state** knobs live in the :class:`~carlab.learn.loop.TrainState` as arrays, so changing one costs
  nothing: the learning rates sit in the optax ``inject_hyperparams`` states
  (:func:`carlab.learn.optim.with_learning_rate`) and ``explore_prob`` is a float32 scalar.
* **config** knobs are static fields of the :class:`~carlab.learn.config.Config` that ``train_rounds`` is
  compiled for (the imagination horizon is a ``lax.scan`` length, the batch size an array shape, ...).
  Changing one means a new config, hence one compile per distinct value (cached afterwards).

    values = validate({"horizon": 7, "world_model_lr": 3e-4}, config)   # ValueError if bad
    state = apply_to_state(state, values)
    config = apply_to_config(config, values)

Validation happens where the change is asked for (the UI thread), so a bad value is refused with a
clear message there and never reaches the trainer thread.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax.numpy as jnp

from carlab.learn import optim
from carlab.learn.config import Config, with_overrides


class Knob(NamedTuple):
    """One live hyperparameter: its type, valid closed range and where it lives."""

    kind: type  # int or float
    low: float
    high: float
    where: str  # "state": an array in the TrainState; "config": a static Config field (recompiles)
    target: str  # the optimiser-state name ("world_model", ...) or the config "section.field"
    log: bool  # shown on a log scale
    doc: str


KNOBS: dict[str, Knob] = {
    "world_model_lr": Knob(float, 1e-6, 1.0, "state", "world_model", True, "world-model Adam step size"),
    "actor_lr": Knob(float, 1e-6, 1.0, "state", "actor", True, "actor Adam step size"),
    "critic_lr": Knob(float, 1e-6, 1.0, "state", "critic", True, "critic Adam step size"),
    "explore_prob": Knob(float, 0.0, 1.0, "state", "explore_prob", False, "P(noise on an action); decays"),
    "explore_noise": Knob(
        float, 0.0, 2.0, "config", "agent.explore_noise", False, "std of exploration noise"
    ),
    "horizon": Knob(int, 1, 100, "config", "agent.horizon", False, "imagined steps per rollout"),
    "train_every": Knob(int, 1, 100, "config", "train.train_every", False, "env steps between updates"),
    "batch_size": Knob(int, 1, None, "config", "replay.batch_size", False, "transitions per WM update"),
    "target_entropy": Knob(
        float,
        -10.0,
        2.0,
        "config",
        "agent.target_entropy",
        False,
        "policy spread the anchored learner's temperature aims for",
    ),
}
"""Every live hyperparameter by name. ``batch_size``'s upper bound is the replay capacity."""


def bounds(name: str, config: Config) -> tuple[float, float]:
    """The closed valid range of ``name`` under ``config``."""
    knob = KNOBS[name]
    high = config.replay.capacity if name == "batch_size" else knob.high
    # The anchored learner's actor may look no steps ahead (SAC on the model's latents); the dream
    # learner needs at least one imagined step to learn anything.
    low = 0 if name == "horizon" and config.agent.learner == "anchored" else knob.low
    return low, high


def tunes_temperature(config: Config) -> bool:
    """Whether ``target_entropy`` steers anything in this run: only the anchored learner's temperature
    tunes itself towards it, and only while ``agent.tune_temperature`` is on."""
    return config.agent.learner == "anchored" and config.agent.tune_temperature


def validate(values: dict[str, Any], config: Config) -> dict[str, int | float]:
    """Check every ``name: value``; return them as plain ints/floats or raise ValueError saying why."""
    if not isinstance(values, dict):
        raise TypeError(f"hyperparameters must be given as a dict, got {type(values).__name__}")
    clean = {}
    for name, value in values.items():
        if name not in KNOBS:
            raise ValueError(f"unknown hyperparameter {name!r}; live ones are: {', '.join(KNOBS)}")
        if name == "target_entropy" and not tunes_temperature(config):
            if config.agent.learner != "anchored":
                raise ValueError(
                    "target_entropy steers the anchored learner's temperature; this run's learner is "
                    f"{config.agent.learner!r} (its entropy bonus is agent.entropy_scale, fixed at start)"
                )
            raise ValueError(
                "target_entropy steers a self-tuning temperature; this run's is fixed at "
                f"agent.init_temperature = {config.agent.init_temperature:g} (agent.tune_temperature is off)"
            )
        knob = KNOBS[name]
        low, high = bounds(name, config)
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
            raise ValueError(f"{name} must be a number, got {type(value).__name__} {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        if not low <= number <= high:
            raise ValueError(f"{name} must be in [{low:g}, {high:g}] ({knob.doc}), got {value!r}")
        if knob.kind is int and number != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value) if knob.kind is int else number
        clean[name] = value
    return clean


def _is_numpy_number(value) -> bool:
    return hasattr(value, "dtype") and getattr(value, "shape", None) == () and value.dtype.kind in "iuf"


def apply_to_state(state, values: dict[str, int | float]):
    """A copy of the TrainState with the *state* knobs among ``values`` set (no recompilation)."""
    opt_state = dict(state.opt_state)
    changes = {}
    for name, value in values.items():
        knob = KNOBS[name]
        if knob.where != "state":
            continue
        if name == "explore_prob":
            changes["explore_prob"] = jnp.asarray(value, jnp.float32)
        else:
            opt_state[knob.target] = optim.with_learning_rate(opt_state[knob.target], value)
    return dataclasses.replace(state, opt_state=opt_state, **changes)


def apply_to_config(config: Config, values: dict[str, int | float]) -> Config:
    """A new Config with the *config* knobs among ``values`` replaced (same object if none changes)."""
    sections: dict[str, dict] = {}
    for name, value in values.items():
        knob = KNOBS[name]
        if knob.where == "config":
            section, field = knob.target.split(".")
            if getattr(getattr(config, section), field) != value:
                sections.setdefault(section, {})[field] = value
    return with_overrides(config, **sections) if sections else config


def current(state, config: Config, *, where: str | None = None) -> dict[str, int | float]:
    """Every knob's value now in effect: state knobs read from ``state``, config knobs from ``config``
    (only the knobs living ``where`` = "state" or "config", if given; ``state`` may then be None)."""
    out = {}
    for name, knob in KNOBS.items():
        if where is not None and knob.where != where:
            continue
        if knob.where == "config":
            section, field = knob.target.split(".")
            out[name] = getattr(getattr(config, section), field)
        elif name == "explore_prob":
            out[name] = float(state.explore_prob)
        else:
            out[name] = optim.learning_rate(state.opt_state[knob.target])
    return out
