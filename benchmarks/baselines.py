"""Model-free baselines: unmodified Stable-Baselines3 SAC and PPO on ``carlab/Race-v0``, scored as carlab is.

What a world model has to beat on sample efficiency (issue 13). Each learner trains with SB3's
default hyperparameters on ``gymnasium.make("carlab/Race-v0")`` behind :class:`TrackRotation`, which
puts each new episode on the next of carlab's training tracks (0-63, as ``carlab train`` uses); PPO
drives 8 such envs in a ``DummyVecEnv`` (each starting at another track), SAC one. Every
``--eval-every`` env steps (of all envs) an SB3 callback drives the deterministic policy once round
``--tracks`` held-out tracks from :data:`carlab.learn.config.EVAL_FIRST_SEED` (:func:`score`: the same
episode ends and metrics as :func:`carlab.learn.evaluation.evaluate`, so the three learners are
scored alike). Wall time counts training only, not the evaluations, as in ``benchmarks/learning.py``.

    pip install -e ".[bench]"     # SB3 and the CPU build of torch; CI does not install them
    python benchmarks/baselines.py --algo sac --steps 60000 --seeds 0-2 --json > benchmarks/results/sac.json
    python benchmarks/baselines.py --algo ppo --steps 600000 --out benchmarks/results/ppo.json

``--out`` rewrites its file after every evaluation (``"finished": false`` until the end), so a run
stopped early keeps what it measured; every evaluation is also logged to stderr as a JSON line.

Each seed's result has the format of one ``benchmarks/learning.py --json`` summary (``config`` is the
algorithm), so ``benchmarks/plot_baselines.py`` draws them beside carlab's. Results: ``benchmarks/baselines.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import gymnasium
import numpy as np

import carlab  # noqa: F401  (registers carlab/Race-v0)
from carlab.learn.config import EVAL_FIRST_SEED, TrainConfig

ALGOS = ("sac", "ppo")
NUM_ENVS = {"sac": 1, "ppo": 8}  # PPO's 8 envs as in issue 13; SAC's off-policy default is one
DEFAULT_EVAL_EVERY = {"sac": 5_000, "ppo": 25_000}
_TRAIN = TrainConfig()
TRAIN_TRACKS = range(_TRAIN.train_first_seed, _TRAIN.train_first_seed + _TRAIN.num_train_tracks)
SUMMARY = ("lap_completion_rate", "mean_progress", "crash_rate", "mean_steps")


class TrackRotation(gymnasium.Wrapper):
    """Each reset moves the car to the next track of ``tracks`` (cyclic), starting at index ``start``."""

    def __init__(self, env: gymnasium.Env, *, tracks: Sequence[int] = TRAIN_TRACKS, start: int = 0):
        super().__init__(env)
        if len(tracks) == 0:
            raise ValueError("TrackRotation: tracks is empty")
        self.tracks = tuple(int(t) for t in tracks)
        self.episodes = 0  # resets so far: the next episode drives tracks[(start + episodes) % M]
        self.start = int(start)

    def reset(self, *, seed=None, options=None):
        """Reset onto the next track (an explicit ``options["track_seed"]`` is overridden)."""
        track = self.tracks[(self.start + self.episodes) % len(self.tracks)]
        self.episodes += 1
        return self.env.reset(seed=seed, options={**(options or {}), "track_seed": track})


def make_env(rank: int = 0, num_envs: int = 1, *, tracks: Sequence[int] = TRAIN_TRACKS) -> gymnasium.Env:
    """``carlab/Race-v0`` rotating over ``tracks``; env ``rank`` of ``num_envs`` starts its own share in."""
    return TrackRotation(
        gymnasium.make("carlab/Race-v0"), tracks=tracks, start=rank * len(tracks) // num_envs
    )


@functools.lru_cache(maxsize=4)
def _eval_envs(first_seed: int, num_tracks: int, max_steps: int):
    # Built once: 50 track builds would cost more than a whole evaluation.
    return gymnasium.make_vec(
        "carlab/Race-v0",
        num_envs=num_tracks,
        track_seed=range(first_seed, first_seed + num_tracks),
        max_steps=max_steps,
        autoreset_mode="disabled",
    )


def score(
    act: Callable[[np.ndarray], np.ndarray],
    *,
    num_tracks: int = 50,
    first_seed: int = EVAL_FIRST_SEED,
    max_steps: int = 1000,
) -> dict:
    """Drive ``act`` (obs ``(N, 6)`` -> actions ``(N, 2)``) once round each held-out track, one car each.

    The episode ends and the metrics are :func:`carlab.learn.evaluation.evaluate`'s: a car stops at
    its first crash, its first full lap (the env's ``info["laps"] >= 1`` without a crash) or
    ``max_steps``; ``progress`` is ``min(info["progress"], 1)`` at that step. Returns evaluate's keys.
    """
    envs = _eval_envs(int(first_seed), int(num_tracks), int(max_steps))
    obs, _ = envs.reset()
    alive = np.ones(num_tracks, bool)
    lapped, crashed = np.zeros(num_tracks, bool), np.zeros(num_tracks, bool)
    progress = np.zeros(num_tracks)
    ret = np.zeros(num_tracks, np.float32)  # summed in float32, as evaluate's scan sums them
    steps = np.zeros(num_tracks, np.int64)
    for _ in range(max_steps):
        obs, reward, terminated, truncated, info = envs.step(np.asarray(act(obs), np.float32))
        ret += np.where(alive, reward.astype(np.float32), np.float32(0.0))
        steps += alive
        progress = np.where(alive, np.minimum(info["progress"], 1.0), progress)
        crashed |= alive & terminated
        now_lapped = alive & ~terminated & (info["laps"] >= 1)
        lapped |= now_lapped
        alive &= ~terminated & ~truncated & ~now_lapped
        if not alive.any():
            break
    return {
        "lap_completion_rate": float(lapped.mean()),
        "mean_progress": float(progress.mean()),
        "crash_rate": float(crashed.mean()),
        "mean_return": float(ret.mean()),
        "mean_steps": float(steps.mean()),
        "num_tracks": int(num_tracks),
        "first_seed": int(first_seed),
        "max_steps": int(max_steps),
        "progress": progress.tolist(),
        "lapped": lapped.tolist(),
        "crashed": crashed.tolist(),
        "return": ret.tolist(),
        "steps": steps.tolist(),
    }


class Evaluator:
    """Scores ``act`` at every multiple of ``every`` env steps and keeps the curve (training time only)."""

    def __init__(self, *, every: int, num_tracks: int = 50, max_steps: int = 1000):
        self.every, self.num_tracks, self.max_steps = every, num_tracks, max_steps
        self.next_eval = every
        self.curve: list[dict] = []
        self.eval_s = 0.0
        self.start = time.perf_counter()

    def __call__(self, env_steps: int, act: Callable[[np.ndarray], np.ndarray]) -> dict | None:
        """Evaluate if ``env_steps`` reached the next multiple of ``every``; the new point or None."""
        if env_steps < self.next_eval:
            return None
        while self.next_eval <= env_steps:
            self.next_eval += self.every
        return self._evaluate(env_steps, act)

    def finish(self, env_steps: int, act: Callable[[np.ndarray], np.ndarray]) -> dict | None:
        """Evaluate at the end of training unless the last point already is there."""
        if self.curve and self.curve[-1]["env_steps"] >= env_steps:
            return None
        return self._evaluate(env_steps, act)

    def _evaluate(self, env_steps: int, act) -> dict:
        wall_s = time.perf_counter() - self.start - self.eval_s
        t = time.perf_counter()
        result = score(act, num_tracks=self.num_tracks, max_steps=self.max_steps)
        self.eval_s += time.perf_counter() - t
        point = {"env_steps": int(env_steps), "wall_s": round(wall_s, 1)}
        point.update({k: round(result[k], 3) for k in SUMMARY})
        self.curve.append(point)
        return point


def _sb3_callback(evaluator: Evaluator, bar, report: Callable[[dict], None]):
    """An SB3 callback feeding ``evaluator``, the bar and ``report`` (SB3 imported here, not at the top)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class EvalCallback(BaseCallback):
        def _on_step(self) -> bool:
            bar.update(self.num_timesteps - bar.n)
            point = evaluator(self.num_timesteps, self.act)
            if point is not None:
                report(point)
            return True

        def act(self, obs):
            return self.model.predict(obs, deterministic=True)[0]

    return EvalCallback()


def _monitored(monitor, rank: int, num_envs: int):
    return monitor(make_env(rank, num_envs))


def _write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n")
    os.replace(tmp, path)


def _summary(algo: str, seed: int, target: float, curve: list[dict]) -> dict:
    """One seed's curve as a ``benchmarks/learning.py --json`` summary (``config`` is the algorithm)."""
    return {
        "config": algo,
        "overrides": [],
        "seed": seed,
        "target": target,
        "reached": next((p for p in curve if p["lap_completion_rate"] >= target), None),
        "final": curve[-1] if curve else None,
        "best_checkpoint": None,
        "curve": list(curve),
    }


def run(
    algo: str,
    *,
    seed: int,
    steps: int,
    every: int,
    num_tracks: int,
    target: float,
    on_point: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``algo`` (SB3 defaults) for ``steps`` env steps from ``seed``; one learning.py-style summary.

    ``on_point`` gets the summary so far after every evaluation.
    """
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv
    from tqdm import tqdm

    n = NUM_ENVS[algo]
    # What make_vec_env builds (a Monitor on each env, DummyVecEnv), but each env gets its rank, so
    # the 8 envs start on different tracks.
    envs = DummyVecEnv([functools.partial(_monitored, Monitor, i, n) for i in range(n)])
    model = {"sac": SAC, "ppo": PPO}[algo]("MlpPolicy", envs, seed=seed, device="cpu", verbose=0)
    evaluator = Evaluator(every=every, num_tracks=num_tracks)
    with tqdm(total=steps, unit="step", desc=f"{algo} seed {seed}", file=sys.stderr) as bar:

        def report(point: dict) -> None:
            bar.set_postfix(laps=point["lap_completion_rate"])
            bar.write(json.dumps({"seed": seed, **point}), file=sys.stderr)  # a log that survives a stop
            if on_point is not None:
                on_point(_summary(algo, seed, target, evaluator.curve))

        callback = _sb3_callback(evaluator, bar, report)
        model.learn(total_timesteps=steps, callback=callback)
        # learn() may overshoot the last eval point (PPO collects whole rollouts): score the end once.
        point = evaluator.finish(model.num_timesteps, callback.act)
        if point is not None:
            report(point)
    envs.close()
    return _summary(algo, seed, target, evaluator.curve)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", required=True, choices=ALGOS)
    parser.add_argument("--steps", type=int, default=60_000, help="env steps per seed (all envs together)")
    parser.add_argument("--seeds", default="0", help="seeds: 0-2, 0,3,5 or 0-3,8")
    parser.add_argument(
        "--eval-every", type=int, default=None, help="env steps between evaluations (SAC 5000, PPO 25000)"
    )
    parser.add_argument("--tracks", type=int, default=50, help="held-out tracks per evaluation")
    parser.add_argument("--target", type=float, default=0.9, help="lap rate whose first hit is reported")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: SB3's small MLPs gain little from more, and on a shared 2-core "
        "CPU torch's one-thread-per-core pool contends with the env and with other work)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="also write the JSON here, rewritten after every evaluation (survives a stop)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object at the end")
    args = parser.parse_args(argv)
    from carlab.learn.seed_runs import parse_seeds

    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as error:
        parser.error(str(error))
    every = args.eval_every or DEFAULT_EVAL_EVERY[args.algo]
    for name, value in (("--steps", args.steps), ("--eval-every", every), ("--tracks", args.tracks)):
        if value < 1:
            parser.error(f"{name} must be at least 1, got {value}")
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    try:
        import stable_baselines3
        import torch
    except ImportError as error:
        parser.error(f"needs the bench extra (pip install -e '.[bench]'): {error}")
    torch.set_num_threads(args.threads)

    summary = {
        "algo": args.algo,
        "num_envs": NUM_ENVS[args.algo],
        "steps": args.steps,
        "eval_every": every,
        "tracks": args.tracks,
        "first_seed": EVAL_FIRST_SEED,
        "train_tracks": [TRAIN_TRACKS.start, TRAIN_TRACKS.stop - 1],
        "torch_threads": args.threads,
        "versions": {"stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__},
        "finished": False,  # True once every seed ran all its steps
        "runs": [],
    }

    def save(partial: dict | None = None) -> None:
        if args.out is not None:
            _write_json(args.out, {**summary, "runs": summary["runs"] + ([partial] if partial else [])})

    kwargs = {"steps": args.steps, "every": every, "num_tracks": args.tracks, "target": args.target}
    for seed in seeds:
        summary["runs"].append(run(args.algo, seed=seed, on_point=save, **kwargs))
    summary["finished"] = True
    save()
    if args.json:
        print(json.dumps(summary))
    else:
        for result in summary["runs"]:
            print(f"seed {result['seed']}: first at >= {args.target:.0%} laps {result['reached']}")
    return summary


if __name__ == "__main__":
    main()
