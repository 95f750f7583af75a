"""Drive the real car and the world model's dream of it with the same actions, side by side (no widgets).

    from carlab.course.dream_drive import DreamDrive
    drive = DreamDrive(wm_params, wm_config, track_seed=3)
    record = drive.step([0.0, 1.0])          # both worlds, one jitted call; what happened
    records = drive.run(policy, 240)         # a scripted drive, stacked into arrays (T, ...)

:class:`DreamDrive` holds the real simulator (:func:`carlab.sim.env.step_env`) and the world model's
dream (:func:`carlab.course.dream.step_env`), started from the same observation and stepped with the
*same* actions in one jitted call. After every step it knows the **divergence** —
:func:`divergence`, the mean absolute difference over the six observation entries between what the
dream believes the car senses and what the real car senses — the **pose gap** (px between the real
car and the dream's dead-reckoned car) and the steps since the two were last synced.

What happens at a crash: when the *real* car crashes, both worlds restart together on the start line
(the real one as the env does; the dream re-synced to it), because a comparison with a car that has
left the road means nothing. The crash is counted and :attr:`DreamDrive.last_crash` remembers whether
the dream saw it coming (its P(crash) at that step). When only the *dream* thinks it crashed (its
continue head's P(not crashed) below 0.5), nothing restarts: the dream drives on and its P(crash) is
shown, so you can see where the model expects trouble that reality does not have.

:class:`carlab.lab.widgets.dream_view.DreamView` puts a :class:`DreamDrive` on a canvas, driven by keys.
"""

from __future__ import annotations

import jax
import numpy as np

from carlab.course import dream
from carlab.learn.config import WorldModelConfig
from carlab.sim import env
from carlab.sim.track import DRIVE_TRACK


def obs_error(dream_obs, real_obs) -> np.ndarray:
    """|dream obs − real obs| per entry (..., 6), the dream's clipped to [0, 1] as the sensors are."""
    dream_obs = np.clip(np.asarray(dream_obs, np.float64), 0.0, 1.0)
    return np.abs(dream_obs - np.asarray(real_obs, np.float64))


def divergence(dream_obs, real_obs) -> np.ndarray:
    """The mean of :func:`obs_error` over the 6 entries: how far the dream's beliefs are from reality.

    Args:
        dream_obs: (..., 6) the world model's decoded observation.
        real_obs: (..., 6) the simulator's observation.

    Returns:
        (...) in [0, 1]: 0.1 means the beliefs are off by a tenth of the range on average (15 px of ray).
    """
    return np.mean(obs_error(dream_obs, real_obs), axis=-1)


@jax.jit
def _step_both(real_state, dream_state, action, env_params, dream_params):
    """One step of reality and of the dream under the same (sanitised) action."""
    action = env.sanitize_action(action)
    obs, real_state, _, crashed, _, _ = env.step_env(None, real_state, action, env_params)
    dream_obs, dream_state, _, _, _, info = dream.step_env(None, dream_state, action, dream_params)
    return action, obs, real_state, crashed, dream_obs, dream_state, info["continue_prob"]


_dream_from = jax.jit(dream.dream_from)


class DreamDrive:
    """The real simulator and the world model's dream of it, driven by the same actions (no widgets).

    Everything it exposes is a NumPy copy: ``real_obs`` / ``dream_obs`` (6,), ``real_car`` /
    ``dream_car`` (4,) ``[x, y, speed, angle]``, ``continue_prob`` (the dream's P(not crashed)),
    ``steps_since_sync``, ``crashes``, ``last_action`` (the sanitised action both worlds got last).
    """

    def __init__(
        self, wm_params, wm_config: WorldModelConfig = WorldModelConfig(), *, track_seed: int = DRIVE_TRACK
    ):
        """Args:
        wm_params: the world model's haiku params (``state.params["world_model"]`` of a run).
        wm_config: its :class:`carlab.learn.config.WorldModelConfig` (``config.world_model``).
        track_seed: the track both worlds drive on (the dream draws its car on it).
        """
        self.track_seed = int(track_seed)
        # No auto-reset: a real crash is handled here (both worlds restart), not inside the env.
        self.env_params = env.EnvParams.from_seeds([self.track_seed], auto_reset=False)
        self.dream_params = dream.DreamParams.from_env(
            wm_params, self.env_params, wm_config, auto_reset=False
        )
        self.track = self.env_params.track(0)
        self.reset()

    # ------------------------------------------------------------------ reset and sync
    def reset(self) -> None:
        """Both cars back on the start line at rest, the dream synced, the crash count cleared."""
        self.crashes = 0
        self.last_crash: dict | None = None
        self._restart()

    def _restart(self) -> None:
        obs, self._real = env.reset(None, self.env_params, 0)
        self.real_obs, self.real_car = (np.asarray(a) for a in jax.device_get((obs, self._real.car)))
        self.sync()

    def sync(self) -> None:
        """Start the dream again from what the real car senses now, at its pose ("sync to reality")."""
        dream_obs, self._dream = _dream_from(self.real_obs, self.real_car, self.dream_params, 0)
        self.dream_obs, self.dream_car = (np.asarray(a) for a in jax.device_get((dream_obs, self._dream.car)))
        self.continue_prob = 1.0
        self.steps_since_sync = 0
        self.last_action = np.zeros(env.ACTION_SIZE, np.float32)

    # ------------------------------------------------------------------ stepping
    @property
    def divergence(self) -> float:
        """:func:`divergence` of the current dream and real observations."""
        return float(divergence(self.dream_obs, self.real_obs))

    @property
    def pose_gap(self) -> float:
        """px between the real car and the dream's dead-reckoned car."""
        return float(np.hypot(*(self.dream_car[:2] - self.real_car[:2])))

    def step(self, action) -> dict:
        """Step both worlds with ``action`` ``[steering, throttle]``; returns what happened.

        The record holds ``action``, ``real_obs``, ``dream_obs``, ``obs_error`` (per entry),
        ``divergence``, ``pose_gap``, ``continue_prob``, ``steps_since_sync`` and ``crashed`` of this
        step, all before any restart a real crash causes (so a crash's record shows the crash).
        """
        # A wrong shape raises here; NaN and out-of-range values are sanitised once, for both worlds.
        action = env.check_action(action, finite=False)
        out = _step_both(self._real, self._dream, action, self.env_params, self.dream_params)
        applied, real_obs, self._real, crashed, dream_obs, self._dream, prob = out
        fetched = jax.device_get((applied, real_obs, self._real.car, dream_obs, self._dream.car))
        self.last_action, self.real_obs, self.real_car, self.dream_obs, self.dream_car = map(
            np.asarray, fetched
        )
        self.continue_prob, crashed = float(prob), bool(crashed)
        self.steps_since_sync += 1
        record = {
            "action": self.last_action.copy(),
            "real_obs": self.real_obs.copy(),
            "dream_obs": self.dream_obs.copy(),
            "obs_error": obs_error(self.dream_obs, self.real_obs),
            "divergence": self.divergence,
            "pose_gap": self.pose_gap,
            "continue_prob": self.continue_prob,
            "steps_since_sync": self.steps_since_sync,
            "crashed": crashed,
        }
        if crashed:
            self.crashes += 1
            self.last_crash = {"steps": self.steps_since_sync, "dream_crash_prob": 1.0 - self.continue_prob}
            self._restart()
        return record

    def run(self, policy, num_steps: int) -> dict[str, np.ndarray]:
        """Drive ``num_steps`` steps, ``policy(real_obs (6,)) -> action (2,)`` choosing each action
        from what the real car senses; returns the step records stacked into arrays (T, ...)."""
        records = [self.step(policy(self.real_obs)) for _ in range(int(num_steps))]
        if not records:
            raise ValueError(f"run: num_steps must be at least 1, got {num_steps!r}")
        return {name: np.stack([r[name] for r in records]) for name in records[0]}


__all__ = ["DreamDrive", "divergence", "obs_error"]
