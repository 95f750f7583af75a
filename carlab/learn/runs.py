"""A training run on disk: its checkpoint, its metrics files and its learning-curve picture.

A run checkpoint is a :mod:`carlab.learn.checkpoint` file holding the *whole* :class:`~carlab.learn.loop.TrainState`
(networks, optimiser states, replay buffer, cars, PRNG key, counters), so training resumes exactly
where it stopped. Its metadata::

    {"config": Config.to_dict(), "history": [one record per chunk], "env_steps": ..., "updates": ...,
     "explore_prob": ..., "episodes": ..., "best_progress": ..., "carlab_version": "0.1.0", **extra}

    path = save_run("models/agent.safetensors", state, config, history)
    state, config, history, metadata = load_run(path)
    state, more = loop.train(config, 10_000, state=state)      # continues bit-exactly

Beside a checkpoint ``models/agent.safetensors`` the CLI writes ``agent.metrics.jsonl``,
``agent.metrics.csv`` (one row per chunk) and ``agent.png`` (the learning curves). A set of seeds
(``carlab train --seeds 0-7 --out runs/x.safetensors``) is one such run per seed,
``runs/x-seed3.safetensors`` (:func:`seed_path`), and one figure ``runs/x-seeds.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

import carlab
from carlab.learn import checkpoint, loop, policy_checkpoint
from carlab.learn import config as config_lib
from carlab.learn.checkpoint import CheckpointError
from carlab.learn.config import Config
from carlab.learn.loop import TrainState
from carlab.learn.world_model import LOSS_KEYS as WM_LOSS_KEYS
from carlab.sim import env


def config_name(config: Config) -> str:
    """The first preset ``config`` equals, ignoring the seed ('tiny', 'default'), else 'custom'."""
    return next((name for name in config_lib.PRESETS if is_preset(config, name)), "custom")


def is_preset(config: Config, name: str) -> bool:
    """Whether ``config`` is preset ``name``'s, ignoring the seed (``race`` and ``default`` are one)."""
    return config_lib.with_overrides(config_lib.preset(name), train={"seed": config.train.seed}) == config


def counters(state: TrainState) -> dict:
    """The run's counters as plain Python numbers."""
    return {
        "env_steps": int(state.env_steps),
        "updates": int(state.updates),
        "explore_prob": float(state.explore_prob),
        "episodes": int(state.episodes),
        "best_progress": float(state.best_progress),
        "test_steps": int(state.driver.test_steps),  # env steps the policy-checkpoint tests drove
    }


def save_run(path, state: TrainState, config: Config, history: list[dict], extra: dict | None = None) -> Path:
    """Write the whole ``state`` with the config, history and counters as metadata (atomically)."""
    metadata = {
        "config": config.to_dict(),
        "config_name": config_name(config),
        "history": list(history),
        **counters(state),
        "carlab_version": carlab.__version__,
        **(extra or {}),
    }
    return checkpoint.save_checkpoint(path, state, metadata=metadata)


def read_config(path) -> Config:
    """The config saved in a run checkpoint, read from its metadata alone (no arrays are loaded).

    Raises :class:`carlab.learn.checkpoint.CheckpointError` for a missing, corrupt or foreign file, one
    that is not a training run, or one whose config this carlab cannot rebuild.
    """
    metadata = checkpoint.read_metadata(path)
    if not isinstance(metadata.get("config"), dict):
        raise CheckpointError(f"{path} is a carlab checkpoint but not a training run (no config in it)")
    try:
        return Config.from_dict(metadata["config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has a config this carlab cannot read: {error}") from None


def load_run(path) -> tuple[TrainState, Config, list[dict], dict]:
    """Read a run checkpoint; returns ``(state, config, history, metadata)``.

    Raises :class:`carlab.learn.checkpoint.CheckpointError` for a missing, corrupt or foreign file, or one
    whose config this carlab cannot rebuild.
    """
    config = read_config(path)
    # The template only lends its shapes and dtypes: trace it abstractly (nothing is computed or
    # compiled, ~10x faster), on one track (no shape of the state depends on the number of tracks).
    template = jax.eval_shape(
        lambda: loop.init_state(config, env.EnvParams.from_seeds([config.train.train_first_seed]))
    )
    try:
        state, metadata = checkpoint.load_checkpoint(path, like=template)
    except CheckpointError as error:
        state, metadata = _load_older(path, template, config, error)
    history = metadata.get("history") or []
    return state, config, list(history), metadata


def _load_older(path, template: TrainState, config: Config, error: CheckpointError):
    """A run saved before TrainState had ``hold_key`` (its held draws came from
    ``PRNGKey(config.train.seed)``) or ``driver`` (no test yet: the newest actor drives), filled in as
    they were then, so it resumes exactly. Any other misfit re-raises ``error``."""
    for missing in (("driver",), ("hold_key", "driver"), ("hold_key",)):
        try:
            like = dataclasses.replace(template, **dict.fromkeys(missing))
            state, metadata = checkpoint.load_checkpoint(path, like=like)
        except CheckpointError:
            continue
        if "hold_key" in missing:
            state = dataclasses.replace(state, hold_key=jax.random.PRNGKey(config.train.seed))
        if "driver" in missing:
            state = dataclasses.replace(state, driver=policy_checkpoint.init_driver(state.params))
        return state, metadata
    raise error from None


def load_policy(path) -> Callable[[np.ndarray], np.ndarray]:
    """The deterministic driver of a run checkpoint as NumPy ``obs (6,) -> action (2,)`` in [-1, 1]
    (:func:`carlab.learn.policies.numpy_driver`, for ``carlab play --agent``)."""
    from carlab.learn import policies  # late, as in validate: only drivers need it

    state, config, _, _ = load_run(path)
    return policies.numpy_driver(policy_checkpoint.driver_policy(state, config))


VALIDATION_TRACKS = 32
"""Validation tracks the best-checkpoint rule drives (seeds from ``VALIDATION_FIRST_SEED``)."""


def validate(params, config: Config, *, num_tracks: int = VALIDATION_TRACKS) -> dict:
    """Drive the deterministic actor of ``params`` (``{"world_model", "actor"}``: a run's
    :func:`carlab.learn.policy_checkpoint.driver_params`) once round each validation track (seeds from
    :data:`carlab.learn.config.VALIDATION_FIRST_SEED`, disjoint from training and evaluation tracks).

    Returns ``{"val/laps": lap-completion rate, "val/progress": mean progress}``. After the first
    (compiling) call it costs about 30 ms for 32 tracks on a CPU: cheap next to a chunk of training.
    """
    from carlab.learn import policies
    from carlab.learn.evaluation import evaluate  # carlab.learn.evaluation needs nothing from here

    driver = policies.actor(params, world_model_config=config.world_model, agent_config=config.agent)
    result = evaluate(driver, num_tracks=num_tracks, first_seed=config_lib.VALIDATION_FIRST_SEED)
    return {"val/laps": float(result["lap_completion_rate"]), "val/progress": float(result["mean_progress"])}


def validation_score(record: dict) -> tuple[float, float] | None:
    """``(val/laps, val/progress)`` of a history record, compared as a tuple (None if not validated)."""
    if "val/laps" not in record:
        return None
    return (record["val/laps"], record["val/progress"])


def best_of_run_metadata(score: tuple[float, float]) -> dict:
    """The metadata a best-of-run checkpoint carries beside the run's: its validation score."""
    return {"best_of_run": True, "val/laps": score[0], "val/progress": score[1]}


def best_validation_score(history: list[dict]) -> tuple[float, float]:
    """The best :func:`validation_score` in ``history`` ((0, 0) when none was validated)."""
    return max((s for s in map(validation_score, history) if s is not None), default=(0.0, 0.0))


class BestSaver:
    """A :func:`loop.train` callback that keeps the best driver of a run.

    After each chunk it drives the run's driver (:func:`carlab.learn.policy_checkpoint.driver_params`: the newest
    actor, or its policy checkpoint when the config keeps one) round the validation tracks (:func:`validate`),
    adds ``val/laps`` and ``val/progress`` to the chunk's record, and saves the run to ``path`` when
    the lap rate — ties broken by mean progress — beats the best so far (``path`` None: it only keeps
    ``best_state`` in memory).

    Why not simply keep the last state, or the one with the best training episodes? Learning in
    imagination is not monotonic: the lap rate of a ``race`` run can swing from near 1 to near 0 and
    back within a few hundred thousand env steps (``benchmarks/learning.md``). And training episodes
    are driven *with* exploration noise, which nudges a car out of the spots where the deterministic
    actor stops; in one run the chunk with the best training episodes (2.7 laps each) had an actor
    that completed 35 % of held-out laps, where the validation rule picked a 94 % one.

    It keeps the whole run's history — ``history`` (earlier calls' records) followed by the records
    it is shown, their ``time_s`` shifted to continue the earlier clock — so each saved checkpoint is
    a complete run that can be evaluated or resumed. ``state`` is the newest state it saw (to save
    on an interrupt), ``saves`` how often it wrote, ``best`` the best ``(laps, progress)`` so far,
    ``best_state`` the state that scored it (None until one beats ``best``).
    """

    def __init__(
        self,
        path,
        config: Config,
        *,
        history: list[dict] | None = None,
        best: tuple[float, float] | None = None,
    ):
        self.path = None if path is None else Path(path)
        self.config = config
        self.history = list(history or [])
        self.time_offset = float(self.history[-1].get("time_s", 0.0)) if self.history else 0.0
        self.best = best_validation_score(self.history) if best is None else tuple(best)
        self.state: TrainState | None = None
        self.best_state: TrainState | None = None
        self.saves = 0

    def __call__(self, state: TrainState, record: dict) -> None:
        self.keep(
            state, {**record, **validate(policy_checkpoint.driver_params(state, self.config), self.config)}
        )

    def keep(self, state: TrainState, record: dict) -> None:
        """What a call does, for a ``record`` its caller has validated (it holds ``val/laps`` and
        ``val/progress``): :func:`carlab.learn.seeds.train_seeds` validates every run itself."""
        score = validation_score(record)
        if score is None:
            raise ValueError("BestSaver.keep: the record has no val/laps; call the saver to validate it")
        record = dict(record)
        if "time_s" in record:
            record["time_s"] += self.time_offset
        self.state = state
        self.history.append(record)
        if score > self.best:
            self.best, self.best_state = score, state
            if self.path is not None:
                save_run(self.path, state, self.config, self.history, extra=best_of_run_metadata(score))
                self.saves += 1


def best_path(out) -> Path:
    """``models/agent.safetensors`` -> ``models/agent-best.safetensors``."""
    out = Path(out)
    return out.with_name(f"{out.stem}-best{out.suffix or checkpoint.SUFFIX}")


def seed_path(out, seed: int) -> Path:
    """``runs/x.safetensors`` and seed 3 -> ``runs/x-seed3.safetensors`` (one run of a set of seeds)."""
    out = Path(out)
    return out.with_name(f"{out.stem}-seed{seed}{out.suffix or checkpoint.SUFFIX}")


def seeds_figure_path(out) -> Path:
    """``runs/x.safetensors`` -> ``runs/x-seeds.png`` (the lap rates of a set of seeds)."""
    out = Path(out)
    return out.with_name(f"{out.stem}-seeds.png")


def metrics_prefix(out) -> Path:
    """``models/agent.safetensors`` -> ``models/agent`` (the stem beside the checkpoint)."""
    out = Path(out)
    return out.with_name(out.stem)


def _plain(value):
    """A metric as JSON/CSV-friendly Python: NaN and inf become None (strict JSON has no NaN)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(history: list[dict], path_prefix) -> tuple[Path, Path]:
    """Write ``<prefix>.metrics.jsonl`` (one JSON object per record) and ``<prefix>.metrics.csv``.

    CSV columns are the union of the records' keys (``env_steps`` first); a missing or NaN value is an
    empty cell, and ``null`` in the JSONL. Returns the two paths.
    """
    prefix = Path(path_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    jsonl, csv_path = Path(f"{prefix}.metrics.jsonl"), Path(f"{prefix}.metrics.csv")
    rows = [{k: _plain(v) for k, v in record.items()} for record in history]
    columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "env_steps", k))
    _write_text(jsonl, "".join(json.dumps(row, sort_keys=True, allow_nan=False) + "\n" for row in rows))
    with _atomic_text(csv_path) as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
    return jsonl, csv_path


def _write_text(path: Path, text: str) -> None:
    with _atomic_text(path) as f:
        f.write(text)


class _atomic_text:
    """``with _atomic_text(path) as f:`` writes a text file that appears whole or not at all."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")

    def __enter__(self):
        self.file = open(self.tmp, "w", newline="", encoding="utf-8")
        return self.file

    def __exit__(self, exc_type, exc, tb):
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _series(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env_steps, values) of ``key``, NaN where a record lacks it (matplotlib leaves gaps)."""
    x = np.array([r.get("env_steps", i) for i, r in enumerate(history)], dtype=float)
    values = [_plain(r.get(key)) for r in history]
    return x, np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_learning_curve(
    history: list[dict], png_path, eval_result: dict | None = None, title: str | None = None
) -> Path:
    """Save a 2x2 PNG: return and progress, world-model losses (log), actor/critic losses, and the
    validation lap rate and progress (records from :class:`BestSaver`) with ``explore_prob``.

    Uses a bare :class:`matplotlib.figure.Figure` with the Agg canvas — never pyplot — so it is safe
    from any thread and leaves the notebook's backend alone. ``eval_result`` (from
    :func:`carlab.learn.evaluation.evaluate`) adds its mean progress as a dashed line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not history:
        raise ValueError("plot_learning_curve: the history is empty (train for at least one chunk)")
    fig = Figure(figsize=(11, 7), dpi=100)
    FigureCanvasAgg(fig)
    (ax_ret, ax_wm), (ax_ac, ax_exp) = fig.subplots(2, 2, sharex=True)

    x, ret = _series(history, "env/return")
    ax_ret.plot(x, ret, marker=".", color="tab:blue", label="episode return")
    ax_ret.set_ylabel("episode return", color="tab:blue")
    ax_prog = ax_ret.twinx()
    _, prog = _series(history, "env/progress")
    ax_prog.plot(x, prog, marker=".", color="tab:green", label="mean progress")
    ax_prog.set_ylabel("progress (laps)", color="tab:green")
    if eval_result is not None:
        ax_prog.axhline(
            eval_result["mean_progress"], color="tab:green", linestyle="--", label="eval progress"
        )
        ax_prog.legend(loc="lower right", fontsize="small")
    ax_ret.set_title("episodes (finished in each chunk)")

    for key in WM_LOSS_KEYS:
        _, y = _series(history, key)
        y = np.where(y > 0, y, np.nan)  # a log axis cannot show zeros
        if np.isfinite(y).any():
            ax_wm.plot(x, y, label=key.removeprefix("wm/"), linewidth=2.0 if key == "wm/loss" else 1.0)
    ax_wm.set_yscale("log")
    ax_wm.set_title("world-model losses")
    ax_wm.legend(fontsize="small")

    for key in ("actor/loss", "critic/loss", "actor/imagined_return"):
        ax_ac.plot(*_series(history, key), label=key)
    ax_ac.set_title("actor / critic (imagination)")
    ax_ac.legend(fontsize="small")
    ax_ac.set_xlabel("env steps")

    if any("val/laps" in r for r in history):
        ax_exp.plot(*_series(history, "val/laps"), color="tab:red", label="validation lap rate")
        ax_exp.plot(*_series(history, "val/progress"), color="tab:orange", label="validation progress")
    ax_exp.plot(*_series(history, "explore_prob"), color="tab:purple", linestyle=":", label="explore prob")
    ax_exp.set_ylim(0.0, 1.05)
    ax_exp.set_title("the deterministic driver on validation tracks")
    ax_exp.legend(fontsize="small")
    ax_exp.set_xlabel("env steps")

    heading = title or "carlab run"
    if eval_result is not None:
        heading += (
            f" — eval: {eval_result['lap_completion_rate']:.0%} laps, progress {eval_result['mean_progress']:.2f}"
            f" on {eval_result['num_tracks']} tracks"
        )
    fig.suptitle(heading)
    fig.tight_layout()
    return save_figure(fig, png_path)


def save_figure(fig, png_path) -> Path:
    """Write a matplotlib figure to ``png_path`` as PNG, atomically (folders made as needed)."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = png_path.with_name(f".{png_path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, png_path)
    return png_path
