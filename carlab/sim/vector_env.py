"""N cars through Gymnasium's vector API, all stepped in one jitted call.

    envs = gymnasium.make_vec("carlab/Race-v0", num_envs=16, track_seed=range(16))
    obs, info = envs.reset(seed=0)                      # obs (16, 6)
    obs, rewards, terminated, truncated, info = envs.step(envs.action_space.sample())

It gives exactly what ``gymnasium.vector.SyncVectorEnv`` over 16 :class:`carlab.sim.gym_env.RaceEnv`
gives (observations, rewards, flags, infos and their ``_key`` masks, in each autoreset mode), but
the cars are rows of one packed ``(N, 19)`` array (:mod:`carlab.sim.gym_env`) stepped by one
``jax.vmap``-ed jitted call, so N cars cost far less than N steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from carlab.checks import check_int
from carlab.sim import env as core
from carlab.sim.gym_env import OBS, REWARD, STATE, TERMINATED, TRUNCATED, build_track, step_row
from carlab.sim.track import NUM_CHECKPOINTS

_step_rows = jax.jit(jax.vmap(step_row, in_axes=(0, 0, None)))
_TRACK_ID = STATE.start + 9  # where a row keeps its track_id (int32 bits)


def _autoreset_mode(value) -> AutoresetMode:
    """An AutoresetMode from itself, its value ("SameStep") or its name in any case ("same_step")."""
    for mode in AutoresetMode:
        if value in (mode, mode.value) or (isinstance(value, str) and value.upper() == mode.name):
            return mode
    names = [m.name.lower() for m in AutoresetMode]
    raise ValueError(f"autoreset_mode must be one of {names} (or an AutoresetMode), got {value!r}")


class RaceVectorEnv(VectorEnv):
    """``num_envs`` cars, car i on track ``track_seed[i]`` (or all on one track), one jitted step.

    The task, spaces of one car, rewards and ``info`` keys are those of
    :class:`carlab.sim.gym_env.RaceEnv`; each ``info`` value is an array over the cars, with its
    ``_key`` mask, as Gymnasium's vector envs give them.

    ## Autoreset
    ``autoreset_mode`` (an ``AutoresetMode``, or its name: ``"same_step"``; in
    ``metadata["autoreset_mode"]``) says what happens to a car whose episode ended:

    * ``"next_step"`` (default, Gymnasium's): the next ``step`` puts it back on the start line and
      ignores its action (reward 0, not terminated or truncated).
    * ``"same_step"``: the same ``step`` returns its start observation; what it finished with is in
      ``info["final_obs"]`` (an object array, None for cars still driving) and
      ``info["final_info"]``, with masks ``_final_obs`` and ``_final_info``.
    * ``"disabled"``: nothing; reset finished cars with ``reset(options={"reset_mask": mask})``.

    ## Arguments
    * ``num_envs`` (int): how many cars.
    * ``track_seed`` (int or a sequence of ``num_envs`` ints, default 0): the track of each car;
      ``reset(options={"track_seed": ...})`` changes them (built tracks are cached, as for RaceEnv).
    * ``max_steps`` (int, default 1000) and ``**env_params``: as for RaceEnv.
    * ``render_mode``: only None (draw a car with ``RaceEnv(render_mode=...)``).
    """

    def __init__(
        self,
        num_envs: int = 1,
        *,
        track_seed: int | Sequence[int] = 0,
        max_steps: int = 1000,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **env_params,
    ):
        self.num_envs = check_int(num_envs, "num_envs", low=1, where="RaceVectorEnv")
        mode = _autoreset_mode(autoreset_mode)
        if render_mode is not None:
            raise ValueError(
                f"RaceVectorEnv does not render (render_mode {render_mode!r}); draw one car with "
                "RaceEnv(render_mode=...)"
            )
        self.render_mode = None
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.single_observation_space = spaces.Box(0.0, 1.0, (core.OBS_SIZE,), np.float32)
        self.single_action_space = spaces.Box(-1.0, 1.0, (core.ACTION_SIZE,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._overrides = dict(env_params, auto_reset=False, max_steps=max_steps)
        self.track_seeds: tuple[int, ...] = ()
        self._set_tracks(track_seed)
        self._rows: np.ndarray | None = None  # (N, ROW_SIZE) float32 packed rows, on the host
        self._finished = np.zeros(self.num_envs, bool)  # ended at the last step (next_step mode)

    def _set_tracks(self, track_seed) -> None:
        seeds = [track_seed] * self.num_envs if np.ndim(track_seed) == 0 else list(track_seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"track_seed must be one seed or {self.num_envs} seeds, got {len(seeds)}")
        if tuple(seeds) == self.track_seeds:
            return
        built = [build_track(seed, **self._overrides) for seed in seeds]
        # One track slot per car (repeats included), so the shapes, and the compilation, depend on
        # num_envs only.
        tracks = jax.tree.map(lambda *fields: jnp.concatenate(fields), *(b.params.tracks for b in built))
        start_obs = jnp.concatenate([b.params.start_obs for b in built])
        self.params = core.EnvParams(tracks=tracks, start_obs=start_obs, **self._overrides)
        start = np.stack([b.start_row for b in built])
        start[:, _TRACK_ID] = np.arange(self.num_envs, dtype=np.int32).view(np.float32)
        self._start = start
        self.track_seeds = tuple(int(seed) for seed in seeds)
        self._seed_array = np.array(self.track_seeds, dtype=np.int64)

    def reset(self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None):
        """Put the cars on their start lines. ``options``: ``track_seed`` (one or ``num_envs``
        seeds) moves every car to new tracks; ``reset_mask`` (bool array ``(num_envs,)``) resets
        only those cars."""
        super().reset(seed=seed if not isinstance(seed, list) else None)
        options = options or {}
        mask = options.get("reset_mask")
        if mask is not None:
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (self.num_envs,):
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},)")
            if "track_seed" in options:
                raise ValueError("options['track_seed'] moves every car: reset without a reset_mask")
        if "track_seed" in options:
            self._set_tracks(options["track_seed"])
        if mask is None or self._rows is None:
            mask = np.ones(self.num_envs, bool)
        rows = self._start if self._rows is None else np.where(mask[:, None], self._start, self._rows)
        self._rows = rows
        self._finished &= ~mask
        return rows[:, OBS].copy(), self._infos(rows, mask)

    def step(self, actions):
        """Step every car in one jitted call. Returns ``(obs, rewards, terminated, truncated, info)``."""
        if self._rows is None:
            raise RuntimeError("call reset() before step()")
        actions = core.check_action(actions, num_cars=self.num_envs)
        stepped = np.asarray(_step_rows(self._rows[:, STATE], actions, self.params))
        mode = self.metadata["autoreset_mode"]
        if mode == AutoresetMode.NEXT_STEP:
            stepped = np.where(self._finished[:, None], self._start, stepped)
        terminated, truncated = stepped[:, TERMINATED] != 0, stepped[:, TRUNCATED] != 0
        done = terminated | truncated
        rewards = stepped[:, REWARD].astype(np.float64)
        self._rows = stepped
        infos = {}
        if mode == AutoresetMode.SAME_STEP and done.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(done):
                final_obs[i] = stepped[i, OBS].copy()
            infos = {"final_obs": final_obs, "_final_obs": done, "final_info": self._infos(stepped, done)}
            infos["_final_info"] = done.copy()
            self._rows = np.where(done[:, None], self._start, stepped)
        self._finished = done
        infos.update(self._infos(self._rows, np.ones(self.num_envs, bool)))
        return self._rows[:, OBS].copy(), rewards, terminated, truncated, infos

    def _infos(self, rows: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """RaceEnv's info keys as arrays over the cars (zero where ``mask`` is False), with masks."""
        counters = rows[:, STATE.start + 6 :].view(np.int32)
        checkpoints = counters[:, 1].astype(np.int64)
        values = {
            "track_seed": self._seed_array,
            "track_progress": np.mod(rows[:, 13], 1.0).astype(np.float64),
            "progress": rows[:, 14].astype(np.float64),
            "laps": checkpoints // NUM_CHECKPOINTS,
            "checkpoints": checkpoints,
            "speed": rows[:, 11].astype(np.float64),
            "time": counters[:, 2].astype(np.int64),
            "crashed": rows[:, TERMINATED] != 0,
        }
        infos = {}
        for key, value in values.items():
            infos[key] = np.where(mask, value, np.zeros((), value.dtype))
            infos[f"_{key}"] = mask.copy()
        return infos


__all__ = ["RaceVectorEnv"]
