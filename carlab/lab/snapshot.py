"""The trainer's snapshot: the one dict a :class:`~carlab.lab.trainer.Trainer` publishes for UIs.

The worker thread (:class:`carlab.lab.worker.Worker`) builds a fresh one after every unit of work
and swaps it in whole under the shared lock, so a reader never sees half an update; the dashboard,
the live view and scripts (``trainer.snapshot()``) only read it.
"""

from __future__ import annotations

from carlab.lab import manual
from carlab.learn.config import Config


def empty_snapshot(config: Config) -> dict:
    """The snapshot's keys, with the values shown before the run exists."""
    return {
        # initialising, compiling, loading, resetting, new track (a helper at work), paused,
        # stepping (paused, running step(n)'s rounds), running, manual, stopped (no worker)
        "status": "initialising",
        "running": False,
        "mode": "ai",
        "env_steps": 0,
        "updates": 0,
        "episodes": 0,
        "steps_per_s": 0.0,  # env steps (all cars) per second, over the last 2 s
        "explore_prob": float("nan"),
        "best_progress": 0.0,  # the most laps any finished episode drove
        "buffer_size": 0,
        "losses": {},  # the newest history record's losses ("wm/loss", "actor/loss", ...)
        "history": (),  # the newest history records (dicts from loop.summarize, plus time_s)
        "cars": None,  # (N, 4) float32 [x, y, speed, angle] of every car
        "track_ids": None,  # (N,) int32 track slot of every car
        "rays": None,  # (N, 5) float32 ray lengths in px
        "shown_car": manual.SHOWN_CAR,
        "track": None,  # the shown car's Track (NumPy arrays, drawing fields only)
        "frame": 0,  # grows whenever the cars move
        "hyper": {},  # every live hyperparameter now in effect (carlab.lab.hyperparams.current)
        "config": config,  # the Config the newest call ran with
        "error": None,  # the last error in the worker: "Type: message\ntraceback"
        "message": "",  # the last thing done ("saved ...", "loaded ...")
        "manual_action": (0.0, 0.0),  # [steering, throttle] car 0 takes in manual mode
        "rounds_per_call": 1,
        "busy_detail": "",  # what the helper at work is for ("the training step for horizon=3")
        "busy_since": None,  # time.monotonic() when it started (None: no helper at work)
        # The run's loop.TrainState as of this snapshot (JAX arrays, never mutated: replaced by the
        # next call), for scripts and tests; UIs draw from the NumPy fields above.
        "state": None,
    }


__all__ = ["empty_snapshot"]
