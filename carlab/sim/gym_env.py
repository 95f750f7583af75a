"""A Gymnasium view of the functional race env for one car: ``gymnasium.make("carlab/Race-v0")``.

The jitted step and reset are module-level and take :class:`carlab.sim.env.EnvParams` as an argument,
so every RaceEnv instance, every track and every switch of track share one compilation per set of
physics constants.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium
import jax
import numpy as np
from gymnasium import spaces

from carlab.sim import env as core

# pygame comes through carlab.sim.render, which sets the SDL defaults before importing it.
from carlab.sim.render import Renderer, open_window, pygame, surface_to_array
from carlab.sim.track import NUM_CHECKPOINTS

_step_env = jax.jit(core.step_env)
_reset = jax.jit(core.reset)
# The start state is deterministic (the car at rest on the start line), so reset needs no randomness;
# the key is only part of the gymnax interface.
_KEY = jax.random.key(0)


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
    Finite values outside [-1, 1] are clipped. An action of another shape, or holding NaN or inf,
    raises ``ValueError``.

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

    ## Starting State
    At rest (speed 0) on centre point 0 of the track, facing along it. Reset is deterministic:
    the seed passed to ``reset`` only seeds ``np_random``.

    ## Episode Termination
    Terminated when the car crashes. Truncated after ``max_steps`` steps (default 1000).

    ## Arguments
    * ``track_seed`` (int, default 0): which track; ``reset(options={"track_seed": n})`` switches.
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
        self.params = core.EnvParams.from_seeds([track_seed], **self._overrides)
        self.track_seed = int(track_seed)
        self.track = self.params.track(0)
        self.observation_space = spaces.Box(0.0, 1.0, (core.OBS_SIZE,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (core.ACTION_SIZE,), np.float32)
        self.state: core.EnvState | None = None  # on the device
        self._host: core.EnvState | None = None  # the same, as NumPy, for info and drawing
        self._crashed = False
        self._obs: np.ndarray | None = None
        self._episode_reward = 0.0
        self._renderer: Renderer | None = None
        self._window = None
        self._clock = None

    def _set_track(self, track_seed: int) -> None:
        if track_seed != self.track_seed:
            # Rebuilt rather than dataclasses.replace(tracks=...): EnvParams derives arrays from
            # its tracks (e.g. start_obs), which a replace would leave stale.
            self.params = core.EnvParams.from_seeds([track_seed], **self._overrides)
            self.track_seed = int(track_seed)
            self.track = self.params.track(0)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Put the car on the start line; ``options={"track_seed": n}`` switches to track ``n`` first."""
        super().reset(seed=seed)
        if options and "track_seed" in options:
            self._set_track(options["track_seed"])
        obs, self.state = _reset(_KEY, self.params, 0)
        obs, self._host = jax.device_get((obs, self.state))
        self._obs = np.array(obs, dtype=np.float32)
        self._crashed = False
        self._episode_reward = 0.0
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), self._info()

    def step(self, action):
        """Advance one frame. Returns ``(obs, reward, terminated, truncated, info)``."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        # The core would also clip (and map NaN to 0); checking here keeps the documented contract
        # independent of it, and rejecting NaN catches a broken policy at the API boundary.
        action = core.check_action(action)
        obs, self.state, reward, terminated, truncated, _ = _step_env(_KEY, self.state, action, self.params)
        # One transfer for everything, instead of a device sync per scalar.
        obs, self._host, reward, terminated, truncated = jax.device_get(
            (obs, self.state, reward, terminated, truncated)
        )
        self._obs = np.array(obs, dtype=np.float32)
        self._crashed = bool(terminated)  # the core terminates on crashes only
        self._episode_reward += float(reward)
        if self.render_mode == "human":
            self.render()
        return self._obs.copy(), float(reward), bool(terminated), bool(truncated), self._info()

    def _info(self) -> dict[str, Any]:
        """A fresh dict of Python scalars describing the current state."""
        s = self._host
        return {
            "track_seed": self.track_seed,
            "track_progress": float(np.mod(s.progress, 1.0)),
            "progress": float(s.best_progress),
            "laps": int(s.checkpoints) // NUM_CHECKPOINTS,
            "checkpoints": int(s.checkpoints),
            "speed": float(s.speed),
            "time": int(s.time),
            "crashed": self._crashed,
        }

    @property
    def car(self) -> np.ndarray:
        """The car as ``[x, y, speed, angle]`` (float64), for rendering and inspection."""
        s = self._host
        return np.array([s.x, s.y, s.speed, s.angle], dtype=np.float64)

    def hud(self) -> dict[str, Any]:
        """The HUD text shown by :meth:`render`."""
        info = self._info()
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
        if self.state is None:
            raise RuntimeError("call reset() before render()")
        if self._renderer is None:
            self._renderer = Renderer()
        return self._renderer.draw_surface(
            self.track, self.car, rays=core.rays_px(self._obs), hud=self.hud() if hud is None else hud
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
