"""The dream env: the real env's ``reset``/``step`` interface, with the world model as the world.

A person, the actor or a Gymnasium wrapper can drive in it exactly as in :mod:`carlab.sim.env`::

    params = dream.DreamParams.from_env(wm_params, env_params, wm_config)
    obs, state = dream.reset(key, params, track_id=0)
    obs, state, reward, terminated, truncated, info = dream.step(key, state, action, params)

One step is one step of the world model: ``z' = dynamics(z, action)``; the observation is
``decode(z')``, the reward ``reward_head(z')``, and the episode *terminates* when the continue head's
P(not crashed) falls below ``crash_threshold`` — the dream's idea of a crash. It is the same maths as
:func:`carlab.learn.world_model.open_loop`, one step at a time.

The model knows nothing of positions: a latent holds what the car senses, not where it is. So that a
dream can be drawn on a track, the state also carries a *dead-reckoned* pose: the heading turns with the
steering exactly as the real car's does, and the car moves by the speed the model predicts. Where the
model's speed is right, the pose is too; the rays drawn around it are the model's belief.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, NamedTuple

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces

from carlab.learn.config import WorldModelConfig
from carlab.learn.world_model import make_world_model
from carlab.sim import env as real_env

_STATIC = ("config", "max_speed", "turn_rate", "crash_threshold", "max_steps", "auto_reset")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DreamState:
    """Where a dream is: the model's latent plus a dead-reckoned pose for drawing."""

    latent: jax.Array  # (Z,) the world model's state
    x: jax.Array  # px, dead-reckoned from the predicted speed
    y: jax.Array  # px
    speed: jax.Array  # px per step, the model's (decoded) speed
    angle: jax.Array  # rad, turned by the steering exactly like the real car
    time: jax.Array  # int32, steps since reset
    track_id: jax.Array  # int32, the track whose start line the dream began on

    @property
    def car(self) -> jax.Array:
        """``[x, y, speed, angle]`` as the renderer takes it."""
        return jnp.stack([self.x, self.y, self.speed, self.angle], axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DreamParams:
    """The world model's params (arrays) and the start of each track; the rest is static."""

    wm_params: Any  # the world model's haiku params
    start_obs: jax.Array  # (M, 6) the real observation on each track's start line
    start_pose: jax.Array  # (M, 3) [x, y, angle] of each start line
    config: WorldModelConfig = dataclasses.field(default=WorldModelConfig(), metadata={"static": True})
    max_speed: float = dataclasses.field(default=5.0, metadata={"static": True})  # px per step
    turn_rate: float = dataclasses.field(default=0.0873, metadata={"static": True})  # rad per step
    crash_threshold: float = dataclasses.field(
        default=0.5, metadata={"static": True}
    )  # P(continue) below: crash
    max_steps: int = dataclasses.field(default=1000, metadata={"static": True})  # steps before truncation
    auto_reset: bool = dataclasses.field(default=True, metadata={"static": True})  # reset inside `step`

    @classmethod
    def from_env(
        cls,
        wm_params,
        env_params: real_env.EnvParams,
        config: WorldModelConfig = WorldModelConfig(),
        **overrides,
    ) -> DreamParams:
        """Dream on the start lines of ``env_params``' tracks, with its physics constants and step limit."""
        starts = jax.vmap(real_env.start_state, in_axes=(None, 0))(
            env_params, jnp.arange(env_params.num_tracks)
        )
        poses = jnp.stack([starts.x, starts.y, starts.angle], axis=-1)
        fields = {
            "max_speed": env_params.max_speed,
            "turn_rate": env_params.turn_rate,
            "max_steps": env_params.max_steps,
            "auto_reset": env_params.auto_reset,
            **overrides,
        }
        return cls(
            wm_params=wm_params, start_obs=env_params.start_obs, start_pose=poses, config=config, **fields
        )

    @property
    def num_tracks(self) -> int:
        """M, the number of start lines."""
        return self.start_obs.shape[0]


def dream_from(obs, car, params: DreamParams, track_id=0) -> tuple[jax.Array, DreamState]:
    """Start dreaming from any real observation ``obs`` (6,) and car pose ``[x, y, speed, angle]``.

    Returns ``(decode(encode(obs)), state)``: the first observation is already the model's belief.
    """
    wm = make_world_model(params.config)
    z = wm.encode(params.wm_params, jnp.asarray(obs, jnp.float32))
    car = jnp.asarray(car, jnp.float32)
    state = DreamState(
        latent=z,
        x=car[0],
        y=car[1],
        speed=car[2],
        angle=car[3],
        time=jnp.zeros((), jnp.int32),
        track_id=jnp.asarray(track_id, jnp.int32),
    )
    return wm.decode(params.wm_params, z), state


def reset(key, params: DreamParams, track_id=None) -> tuple[jax.Array, DreamState]:
    """Start a dream on the start line of ``track_id`` (drawn with ``key`` when None), car at rest."""
    if track_id is None:
        track_id = jax.random.randint(key, (), 0, params.num_tracks)
    x, y, angle = params.start_pose[track_id]
    return dream_from(params.start_obs[track_id], jnp.stack([x, y, 0.0, angle]), params, track_id)


def step_env(key, state: DreamState, action, params: DreamParams):
    """One world-model step without auto-reset: ``(obs, state, reward, terminated, truncated, info)``.

    ``info["continue_prob"]`` is the model's P(not crashed) after the step.
    """
    del key  # the world model is deterministic; the key is part of the interface
    wm = make_world_model(params.config)
    action = real_env.sanitize_action(action)
    steering = action[..., 0]
    z = wm.dynamics(params.wm_params, state.latent, action)
    obs = wm.decode(params.wm_params, z)
    reward = wm.reward(params.wm_params, z)
    continue_prob = jax.nn.sigmoid(wm.continue_logit(params.wm_params, z))
    speed = jnp.clip(obs[..., -1], 0.0, 1.0) * params.max_speed
    angle = jnp.mod(state.angle + steering * params.turn_rate + jnp.pi, 2 * jnp.pi) - jnp.pi
    time = state.time + 1
    state = DreamState(
        latent=z,
        x=state.x + speed * jnp.cos(angle),
        y=state.y + speed * jnp.sin(angle),
        speed=speed,
        angle=angle,
        time=time,
        track_id=state.track_id,
    )
    terminated = continue_prob < params.crash_threshold
    truncated = (time >= params.max_steps) & ~terminated
    return obs, state, reward, terminated, truncated, {"continue_prob": continue_prob}


def step(key, state: DreamState, action, params: DreamParams):
    """:func:`step_env`, then, if ``params.auto_reset``, restart finished dreams on their start line."""
    result = step_env(key, state, action, params)
    return real_env.auto_reset(reset, key, params, result) if params.auto_reset else result


class DreamRollout(NamedTuple):
    """B dreams of T steps, time-major, with no reset: read ``alive`` for where each one ended."""

    obs: jax.Array  # (T, B, 6) decoded observation after each step
    action: jax.Array  # (T, B, 2)
    reward: jax.Array  # (T, B) predicted reward of each step
    continue_prob: jax.Array  # (T, B) predicted P(not crashed) after each step
    alive: jax.Array  # (T, B) bool, the dream had not predicted a crash before this step
    car: jax.Array  # (T + 1, B, 4) dead-reckoned [x, y, speed, angle], the start first
    latent: jax.Array  # (T + 1, B, Z), the start first


def rollout(params: DreamParams, obs, car, act, num_steps: int) -> DreamRollout:
    """Dream ``num_steps`` steps from real observations ``obs`` (B, 6) and poses ``car`` (B, 4).

    ``act(latent (B, Z), t) -> actions (B, 2)`` chooses the actions: the actor
    (``lambda z, t: agent.act(actor_params, z)``), or replayed real ones (``lambda z, t: actions[t]``).
    Jit it from outside (``act`` and ``num_steps`` static) when called often.
    """
    _, state = jax.vmap(dream_from, in_axes=(0, 0, None))(obs, car, params)
    vstep = jax.vmap(step_env, in_axes=(None, 0, 0, None))

    def body(carry, t):
        state, alive = carry
        action = act(state.latent, t)
        obs, state, reward, terminated, _, info = vstep(None, state, action, params)
        out = (obs, env_action(action), reward, info["continue_prob"], alive, state.car, state.latent)
        return (state, alive & ~terminated), out

    alive = jnp.ones(state.x.shape, bool)
    start = (state.car, state.latent)
    _, (obs, action, reward, prob, alive, cars, latents) = jax.lax.scan(
        body, (state, alive), jnp.arange(num_steps, dtype=jnp.int32)
    )
    return DreamRollout(
        obs=obs,
        action=action,
        reward=reward,
        continue_prob=prob,
        alive=alive,
        car=jnp.concatenate([start[0][None], cars]),
        latent=jnp.concatenate([start[1][None], latents]),
    )


def env_action(action) -> jax.Array:
    """The action as the env applies it (NaN -> 0, clipped to [-1, 1])."""
    return real_env.sanitize_action(action)


_jit_step_env = jax.jit(step_env)
_jit_reset = jax.jit(reset)
_KEY = jax.random.key(0)


class DreamRaceEnv(gymnasium.Env):
    """Drive one car inside a world model's dream: ``gymnasium.make("carlab/Dream-v0", checkpoint=...)``.

    ## Description
    The same task as ``carlab/Race-v0``, but every transition comes from a trained world model
    (:mod:`carlab.learn.world_model`), not from the simulator: the observation is the model's decoded
    belief, the reward its predicted reward, and the episode ends when it predicts a crash. Use it to
    see what a model has learned, or to let a policy act in a model.

    ## Action Space
    ``Box(-1, 1, (2,), float32)``: ``[steering, throttle]``, as in ``carlab/Race-v0``. A wrong shape
    or a non-finite value raises ``ValueError``.

    ## Observation Space
    ``Box(0, 1, (6,), float32)``: the decoded ``[5 rays / 150, speed / 5]``, clipped to [0, 1] as
    the real sensors are (a decoder's raw output can stray a little outside; the functional
    :func:`step` returns it unclipped).

    ## Rewards
    The reward head's prediction for the step.

    ## Starting State
    The encoded real observation of the car at rest on the start line of ``track_seed``.

    ## Episode Termination
    Terminated when the continue head's P(not crashed) drops below ``crash_threshold`` (0.5).
    Truncated after ``max_steps`` steps.

    ## Arguments
    * ``checkpoint`` (path): a run saved by ``carlab train`` or the lab; its world model dreams. Or
      ``wm_params`` and ``wm_config`` directly.
    * ``track_seed`` (int, default 0): whose start line the dream begins on.
    * ``render_mode``: None or ``"rgb_array"`` (the dream car, dead-reckoned, drawn on the real
      track with the rays the model believes in).
    * ``max_steps`` (int, default 1000), ``crash_threshold`` (float, default 0.5).

    ## Version History
    * v0: first version.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(
        self,
        checkpoint=None,
        wm_params=None,
        wm_config: WorldModelConfig | None = None,
        track_seed: int = 0,
        render_mode: str | None = None,
        max_steps: int = 1000,
        crash_threshold: float = 0.5,
    ):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        if (checkpoint is None) == (wm_params is None):
            raise ValueError(
                "pass either checkpoint=PATH or wm_params=... (with wm_config), not both or neither"
            )
        if checkpoint is not None:
            from carlab.learn.runs import load_run  # late: the run module pulls in the whole learner

            state, config, _, _ = load_run(checkpoint)
            wm_params, wm_config = state.params["world_model"], config.world_model
        self.render_mode = render_mode
        self.env_params = real_env.EnvParams.from_seeds([track_seed], max_steps=max_steps, auto_reset=False)
        self.params = DreamParams.from_env(
            wm_params, self.env_params, wm_config or WorldModelConfig(), crash_threshold=crash_threshold
        )
        self.track_seed = int(track_seed)
        self.observation_space = spaces.Box(0.0, 1.0, (real_env.OBS_SIZE,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (real_env.ACTION_SIZE,), np.float32)
        self.state: DreamState | None = None
        self._obs: np.ndarray | None = None
        self._renderer = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start dreaming on the track's start line (deterministic)."""
        super().reset(seed=seed)
        obs, self.state = _jit_reset(_KEY, self.params, 0)
        self._obs = np.clip(np.asarray(obs, dtype=np.float32), 0.0, 1.0)
        return self._obs.copy(), {"time": 0}

    def step(self, action):
        """One dreamed step. Returns ``(obs, reward, terminated, truncated, info)``."""
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        obs, self.state, reward, terminated, truncated, info = _jit_step_env(
            _KEY, self.state, real_env.check_action(action), self.params
        )
        obs, reward, terminated, truncated, prob, time = jax.device_get(
            (obs, reward, terminated, truncated, info["continue_prob"], self.state.time)
        )
        self._obs = np.clip(np.asarray(obs, dtype=np.float32), 0.0, 1.0)
        info = {"continue_prob": float(prob), "time": int(time)}
        return self._obs.copy(), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        """The dream car (dead-reckoned) on the real track with the rays the model believes in."""
        if self.render_mode is None:
            gymnasium.logger.warn("render() called without a render_mode; pass render_mode='rgb_array'")
            return None
        if self.state is None:
            raise RuntimeError("call reset() before render()")
        from carlab.sim.render import Renderer  # late: pygame only when drawing

        if self._renderer is None:
            self._renderer = Renderer()
        car = np.asarray(self.state.car, dtype=np.float64)
        return self._renderer.draw(
            self.env_params.track(0),
            car,
            rays=real_env.rays_px(self._obs),
            hud={"dream step": int(self.state.time)},
        )


__all__ = [
    "DreamParams",
    "DreamRaceEnv",
    "DreamRollout",
    "DreamState",
    "dream_from",
    "reset",
    "rollout",
    "step",
    "step_env",
]
