"""A Gymnasium view of the functional race env for one car: ``gymnasium.make("carlab/Race-v0")``.

The jitted step is module-level and takes :class:`carlab.sim.env.EnvParams` as an argument, so every
RaceEnv instance, every track and every switch of track share one compilation per set of physics
constants. What one step costs from Python is mostly not the physics (a few us) but getting data in
and out: each array a jitted call takes or returns costs dispatch time, and each leaf fetched from
the device is a transfer. So the car's state lives on the host as one packed float32 row, and one
jitted call takes the action and the row's state as one array and returns the next row, fetched
with one transfer::

    row = [obs (6), reward, terminated, truncated, x, y, speed, angle, progress, best_progress,
           quad, checkpoints, time, track_id]        # the last four are int32 bits (exact)

Built tracks are kept in a small LRU cache keyed by seed (and physics), so a reset that switches
between known tracks costs what a same-track reset costs. :mod:`carlab.sim.vector_env` steps N such
rows in one call.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from carlab.checks import is_int
from carlab.sim import env as core

# pygame comes through carlab.sim.render, which sets the SDL defaults before importing it.
from carlab.sim.render import Renderer, open_window, pygame, surface_to_array
from carlab.sim.track import NUM_CHECKPOINTS, Track

OBS = slice(0, core.OBS_SIZE)  # where each part sits in a packed row
REWARD, TERMINATED, TRUNCATED = 6, 7, 8
STATE = slice(9, 19)
ROW_SIZE = 19
TRACK_CACHE_SIZE = 64  # built tracks kept (about 40 kB each)

# The keys of every info dict, in order (documented on RaceEnv, "Info").
INFO_KEYS = ("track_seed", "track_progress", "progress", "laps", "checkpoints", "speed", "time", "crashed")


def pack_state(state: core.EnvState) -> jax.Array:
    """The state as one ``(..., 10)`` float32 array (the int32 counters bit-cast, so exact)."""
    counters = jax.lax.bitcast_convert_type(state.counters, jnp.float32)
    return jnp.concatenate([state.car, state.lap, counters], axis=-1)


def unpack_state(packed) -> core.EnvState:
    """The inverse of :func:`pack_state` (for JAX arrays; see :func:`host_state` for NumPy)."""
    counters = jax.lax.bitcast_convert_type(packed[..., 6:10], jnp.int32)
    return core.EnvState.tree_unflatten(None, (packed[..., 0:4], packed[..., 4:6], counters))


def host_state(rows: np.ndarray) -> core.EnvState:
    """An EnvState of NumPy copies read from packed rows ``(..., ROW_SIZE)``, for inspection."""
    state = np.array(rows[..., STATE])
    return core.EnvState.tree_unflatten(
        None, (state[..., 0:4], state[..., 4:6], state[..., 6:10].view(np.int32))
    )


def step_row(packed_state, action, params: core.EnvParams) -> jax.Array:
    """One step without auto-reset from a packed state (a row's ``STATE`` part) to the next row."""
    obs, state, reward, terminated, truncated, _ = core.step_env(
        None, unpack_state(packed_state), action, params
    )
    flags = jnp.stack([reward, terminated.astype(jnp.float32), truncated.astype(jnp.float32)])
    return jnp.concatenate([obs, flags, pack_state(state)])


@jax.jit
def _start_row(params: core.EnvParams) -> jax.Array:
    """The row of a car at rest on the start line of track 0 (reward 0, not done)."""
    state = core.start_state(params, 0)
    return jnp.concatenate([params.start_obs[0], jnp.zeros(3, jnp.float32), pack_state(state)])


@jax.jit
def _step(action_and_state, params: core.EnvParams) -> jax.Array:
    # One input array rather than two: each array passed in costs a few us of dispatch.
    return step_row(action_and_state[core.ACTION_SIZE :], action_and_state[: core.ACTION_SIZE], params)


class BuiltTrack(NamedTuple):
    """One track ready to drive: its params (one track), start row and drawing arrays."""

    params: core.EnvParams
    start_row: np.ndarray  # (ROW_SIZE,) float32, read-only
    track: Track  # NumPy arrays, what the renderer draws


@functools.lru_cache(maxsize=TRACK_CACHE_SIZE)
def _built(track_seed, overrides: tuple) -> BuiltTrack:
    params = core.EnvParams.from_seeds([track_seed], **dict(overrides))
    start_row = np.asarray(_start_row(params))
    start_row.flags.writeable = False  # shared by every env on this track
    return BuiltTrack(params, start_row, params.track(0))


def build_track(track_seed: int, **overrides) -> BuiltTrack:
    """Track ``track_seed`` with the physics ``overrides`` (EnvParams fields), built once and cached."""
    key = tuple(sorted(overrides.items()))
    if is_int(track_seed):
        return _built(int(track_seed), key)
    return _built.__wrapped__(track_seed, key)  # make_track explains what is wrong with it


def info_of(row: np.ndarray, track_seed: int) -> dict[str, Any]:
    """The ``info`` dict of a packed row (see :class:`RaceEnv`, "Info")."""
    progress, best = row[13], row[14]
    counters = row[15:19].view(np.int32)
    checkpoints = int(counters[1])
    return {
        "track_seed": track_seed,
        "track_progress": float(np.mod(progress, 1.0)),
        "progress": float(best),
        "laps": checkpoints // NUM_CHECKPOINTS,
        "checkpoints": checkpoints,
        "speed": float(row[11]),
        "time": int(counters[2]),
        "crashed": bool(row[TERMINATED]),  # the core terminates on crashes only
    }


class RaceEnv(gymnasium.Env):
    """Drive one car round a procedurally generated track, seeing it only through five rays.

    ## Description
    A car starts at rest on the start line of a closed track 40 px wide, generated from
    ``track_seed`` (a Perlin-noise loop on an 800x600 px screen, with five round obstacles). The
    goal is to drive laps without leaving the track or touching an obstacle. Physics per step (one
    step is a frame at 30 FPS): speed loses 2 % to friction, gains ``throttle * 0.2`` px/step
    (``* 0.3`` when braking) and stays in [0, 5] px/step; the heading turns by
    ``steering * 5`` degrees.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: ``[steering, throttle]``. Steering -1 turns left and +1 right
    (clockwise on screen); throttle +1 accelerates and -1 brakes (the car never reverses).
    Finite values outside [-1, 1] are clipped. An action of another shape, of another kind than real
    numbers (complex, a dict, a string, None), or holding NaN or inf, raises ``ValueError``.

    ## Observation Space
    ``Box(0, 1, (6,), float32)``: five ray distances to the nearest boundary or obstacle at -60,
    -30, 0, 30 and 60 degrees from the heading, divided by the 150 px sensor range (1 = nothing in
    range), then the speed divided by ``max_speed``.

    ## Rewards
    * +100 per lap of *new* best progress along the centre line (reversing and re-driving old ground
      earn nothing),
    * +1 for each checkpoint reached (every 10 % of the lap, in order),
    * +10 for each lap completed,
    * -1 on a crash (leaving the track or touching an obstacle),
    * -0.01 every step.

    ## Info
    ``reset`` and ``step`` return a fresh dict of Python scalars:

    * ``track_seed`` (int): the track driven.
    * ``track_progress`` (float in [0, 1)): where the car is along the lap now (0 = the start line).
    * ``progress`` (float): the best progress of this episode, in laps of the centre line; it grows
      past 1 after the first lap (2.5 = two and a half laps), and never falls when the car reverses.
      The progress reward is paid on its growth.
    * ``laps`` (int): laps completed (all ten checkpoints passed), ``checkpoints // 10``.
    * ``checkpoints`` (int): checkpoints passed in order this episode (10 per lap).
    * ``speed`` (float): px per step, in [0, max_speed].
    * ``time`` (int): steps taken this episode.
    * ``crashed`` (bool): whether the last step crashed (then ``terminated`` is True).

    ## Starting State
    At rest (speed 0) on centre point 0 of the track, facing along it. Reset is deterministic:
    the seed passed to ``reset`` only seeds ``np_random``.

    ## Episode Termination
    Terminated when the car crashes. Truncated after ``max_steps`` steps (default 1000).

    ## Arguments
    * ``track_seed`` (int, default 0): which track; ``reset(options={"track_seed": n})`` switches
      (the last 64 tracks built are cached, so switching back and forth costs no rebuild).
    * ``render_mode``: None, ``"rgb_array"`` (an (600, 800, 3) uint8 frame with the car, its rays
      and a HUD) or ``"human"`` (a pygame window, updated on every step).
    * ``max_steps`` (int, default 1000): truncation length.
    * ``**env_params``: other :class:`carlab.sim.env.EnvParams` fields (``max_speed``, ``crash_penalty``...);
      ``auto_reset`` is always off (Gymnasium users call ``reset`` themselves).

    ## Version History
    * v0: first version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["human", "rgb_array"], "render_fps": 30}

    def __init__(
        self, track_seed: int = 0, render_mode: str | None = None, max_steps: int = 1000, **env_params
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}"
            )
        self.render_mode = render_mode
        self._overrides = dict(env_params, auto_reset=False, max_steps=max_steps)
        self._set_track(track_seed)
        self.observation_space = spaces.Box(0.0, 1.0, (core.OBS_SIZE,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (core.ACTION_SIZE,), np.float32)
        self._row: np.ndarray | None = None  # the packed row of the last reset or step (host)
        self._episode_reward = 0.0
        self._renderer: Renderer | None = None
        self._window = None
        self._clock = None

    def _set_track(self, track_seed: int) -> None:
        built = build_track(track_seed, **self._overrides)
        self.params, self._start, self.track = built.params, built.start_row, built.track
        self.track_seed = int(track_seed)

    @property
    def state(self) -> core.EnvState | None:
        """The car's state now (NumPy copies; None before the first reset)."""
        return None if self._row is None else host_state(self._row)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Put the car on the start line; ``options={"track_seed": n}`` switches to track ``n`` first."""
        super().reset(seed=seed)
        if options and "track_seed" in options:
            self._set_track(options["track_seed"])
        self._row = self._start
        self._episode_reward = 0.0
        if self.render_mode == "human":
            self.render()
        return self._row[OBS].copy(), info_of(self._row, self.track_seed)

    def step(self, action):
        """Advance one frame. Returns ``(obs, reward, terminated, truncated, info)``."""
        if self._row is None:
            raise RuntimeError("call reset() before step()")
        # The core would also clip (and map NaN to 0); checking here keeps the documented contract
        # independent of it, and rejecting NaN catches a broken policy at the API boundary.
        action = core.check_action(action)
        action_and_state = np.concatenate([action, self._row[STATE]])
        row = self._row = np.asarray(_step(action_and_state, self.params))  # one transfer
        reward = float(row[REWARD])
        self._episode_reward += reward
        if self.render_mode == "human":
            self.render()
        info = info_of(row, self.track_seed)
        return row[OBS].copy(), reward, info["crashed"], bool(row[TRUNCATED]), info

    @property
    def car(self) -> np.ndarray:
        """The car as ``[x, y, speed, angle]`` (float64), for rendering and inspection."""
        return self._row[9:13].astype(np.float64)

    def hud(self) -> dict[str, Any]:
        """The HUD text shown by :meth:`render`."""
        info = info_of(self._row, self.track_seed)
        return {
            "speed": info["speed"],
            "progress": f"{100 * info['track_progress']:.0f} %",
            "laps": info["laps"],
            "reward": self._episode_reward,
            "track": self.track_seed,
        }

    def frame(self, hud: dict[str, Any] | None = None) -> np.ndarray:
        """The current frame (600, 800, 3) uint8 with the car, its rays and ``hud`` (default :meth:`hud`)."""
        return surface_to_array(self.draw_surface(hud))

    def draw_surface(self, hud: dict[str, Any] | None = None):
        """The current frame as the renderer's reused pygame Surface (see :meth:`frame`)."""
        if self._row is None:
            raise RuntimeError("call reset() before render()")
        if self._renderer is None:
            self._renderer = Renderer()
        return self._renderer.draw_surface(
            self.track, self.car, rays=core.rays_px(self._row[OBS]), hud=self.hud() if hud is None else hud
        )

    def render(self):
        """``rgb_array``: return the frame; ``human``: show it in a pygame window; None: nothing."""
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self.render_mode == "rgb_array":
            return self.frame()
        surface = self.draw_surface(None)
        if self._window is None:
            self._window = open_window(*surface.get_size(), caption=f"carlab: track {self.track_seed}")
            self._clock = pygame.time.Clock()
        pygame.event.pump()  # keeps the window responsive; events are the caller's business
        self._window.blit(surface, (0, 0))
        pygame.display.flip()
        self._clock.tick(self.metadata["render_fps"])
        return None

    def close(self):
        """Close the window if ``human`` rendering opened one (safe to call twice)."""
        if self._window is not None:
            pygame.display.quit()
            self._window = None
            self._clock = None
