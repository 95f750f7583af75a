"""The race as a functional JAX environment, in the style of gymnax.

The environment holds no changing state: an :class:`EnvState` pytree carries the car(s), and an
:class:`EnvParams` carries the physics constants (static) and the stacked tracks (arrays).

    params = EnvParams.from_seeds(range(8))           # 8 tracks
    obs, state = reset(key, params)                   # one car on a random one of them
    obs, state, reward, terminated, truncated, info = step(key, state, action, params)

Batch with ``jax.vmap``: ``jax.vmap(step, in_axes=(0, 0, 0, None))`` steps N cars, each on the track
named by its ``state.track_id`` — N cars on M tracks in one jitted call (see :func:`reset_batch`).

Car physics, per step (one step is one frame at 30 FPS):

* ``action = [steering, throttle]``, clipped to [-1, 1]; NaN counts as 0, +-inf as +-1.
* ``speed = speed * (1 - friction) + throttle * acceleration`` (``brake`` when throttle < 0),
  clipped to ``[0, max_speed]``.
* ``angle += steering * turn_rate`` (positive steering turns right, i.e. clockwise on screen).
* ``x += speed * cos(angle)``, ``y += speed * sin(angle)`` (screen coordinates, y down).

Rewards (documented again on :class:`carlab.sim.gym_env.RaceEnv`):

* ``progress_reward`` times the gain in *best* lap progress (a full lap is worth ``progress_reward``).
  Only new ground counts: reversing, circling or driving back over ground already covered earns nothing.
* ``checkpoint_bonus`` for each checkpoint (every 10 % of the lap) reached beyond the best so far;
  because best progress only grows continuously, checkpoints are necessarily passed in order, and a
  lap counts only once all ten were passed (``lap_bonus`` then).
* ``-crash_penalty`` when the car leaves the track or touches an obstacle (the episode terminates).
* ``-time_cost`` every step.

The episode is truncated after ``max_steps`` steps. With ``auto_reset=True`` (the default) a finished
car is put back on the start line of the same track in the same call, gymnax style, and
``info["final_obs"]`` holds the observation it finished with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from carlab.checks import check_int
from carlab.sim import sensors
from carlab.sim.track import NUM_CHECKPOINTS, RAY_RANGE, Track, make_tracks

OBS_SIZE = sensors.NUM_RAYS + 1  # 5 rays + speed
ACTION_SIZE = 2  # steering, throttle
OBS_LABELS = (*(f"ray {a:+.0f}°".replace("-", "−") for a in sensors.RAY_ANGLES_DEG), "speed")
"""What each of the six observation entries is, for tables and plot axes (``ray −60°`` ... ``speed``)."""


def _pytree_dataclass(cls=None, *, static: Sequence[str] = ()):
    """A frozen dataclass registered as a pytree; fields named in ``static`` are compile-time constants."""

    def wrap(cls):
        cls = dataclasses.dataclass(frozen=True)(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        data = [n for n in names if n not in static]
        return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(static))

    return wrap if cls is None else wrap(cls)


@jax.tree_util.register_pytree_node_class
class EnvState:
    """Everything that changes during an episode, for one car (add a leading axis for many).

    The fields are stored packed in three arrays — ``car = [x, y, speed, angle]``,
    ``lap = [progress, best_progress]`` and ``counters = [quad, checkpoints, time, track_id]`` —
    because every array a jitted call returns costs about 1 us of dispatch on the CPU, and one
    single-car step must stay within 20 us. Read and build it through the named fields:

    * ``x, y`` — px, screen coordinates (x right, y down).
    * ``speed`` — px per step, in ``[0, max_speed]``.
    * ``angle`` — rad, heading in screen coordinates (clockwise positive), wrapped to ``[-pi, pi)``.
    * ``progress`` — laps driven, unwrapped: 1.25 is a lap and a quarter; negative when reversing.
    * ``best_progress`` — the most ``progress`` reached this episode (rewards only beyond it).
    * ``quad`` — index of the track quad the car is in.
    * ``checkpoints`` — checkpoints reached in order this episode (10 per lap).
    * ``time`` — steps taken this episode.
    * ``track_id`` — which of ``EnvParams.tracks`` the car drives on.
    """

    FLOATS = ("x", "y", "speed", "angle")
    LAP = ("progress", "best_progress")
    COUNTERS = ("quad", "checkpoints", "time", "track_id")

    def __init__(self, x, y, speed, angle, quad, progress, best_progress, checkpoints, time, track_id):
        f32 = lambda *v: jnp.stack(jnp.broadcast_arrays(*v), axis=-1).astype(jnp.float32)
        self.car = f32(x, y, speed, angle)
        self.lap = f32(progress, best_progress)
        self.counters = jnp.stack(jnp.broadcast_arrays(quad, checkpoints, time, track_id), -1).astype(
            jnp.int32
        )

    def tree_flatten(self):
        return (self.car, self.lap, self.counters), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        state = object.__new__(cls)
        state.car, state.lap, state.counters = children
        return state

    def replace(self, **fields) -> EnvState:
        """A copy with some named fields replaced."""
        values = {name: getattr(self, name) for name in self.FLOATS + self.LAP + self.COUNTERS}
        values.update(fields)
        return EnvState(**values)

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)}" for n in self.FLOATS + self.LAP + self.COUNTERS)
        return f"EnvState({fields})"

    x = property(lambda self: self.car[..., 0], doc="px, screen x")
    y = property(lambda self: self.car[..., 1], doc="px, screen y (down)")
    speed = property(lambda self: self.car[..., 2], doc="px per step")
    angle = property(lambda self: self.car[..., 3], doc="rad, clockwise on screen")
    progress = property(lambda self: self.lap[..., 0], doc="laps driven, unwrapped")
    best_progress = property(lambda self: self.lap[..., 1], doc="most progress reached this episode")
    quad = property(lambda self: self.counters[..., 0], doc="track quad holding the car")
    checkpoints = property(lambda self: self.counters[..., 1], doc="checkpoints reached in order")
    time = property(lambda self: self.counters[..., 2], doc="steps taken this episode")
    track_id = property(lambda self: self.counters[..., 3], doc="index into EnvParams.tracks")

    @property
    def track_progress(self):
        """Position along the lap in [0, 1)."""
        return jnp.mod(self.progress, 1.0)

    @property
    def laps(self):
        """Laps completed (all checkpoints passed in order)."""
        return self.checkpoints // NUM_CHECKPOINTS


_PHYSICS = (
    "max_speed",
    "acceleration",
    "brake",
    "friction",
    "turn_rate",
    "progress_reward",
    "checkpoint_bonus",
    "lap_bonus",
    "crash_penalty",
    "time_cost",
    "max_steps",
    "auto_reset",
)


@_pytree_dataclass(static=_PHYSICS)
class EnvParams:
    """Physics and reward constants (static: changing one recompiles) plus the tracks (arrays)."""

    tracks: Track  # stacked tracks with a leading axis M (see carlab.sim.track.make_tracks)
    max_speed: float = 5.0  # px per step
    acceleration: float = 0.2  # px per step^2 at full throttle
    brake: float = 0.3  # px per step^2 at full reverse throttle (the car never drives backwards)
    friction: float = 0.02  # fraction of speed lost per step (rolling drag; coasting slows down)
    turn_rate: float = 0.0873  # rad per step at full steering (5 degrees)
    progress_reward: float = 100.0  # reward per lap of new progress
    checkpoint_bonus: float = 1.0  # reward per checkpoint reached
    lap_bonus: float = 10.0  # reward per lap completed
    crash_penalty: float = 1.0  # subtracted when the episode ends in a crash
    time_cost: float = 0.01  # subtracted every step
    max_steps: int = 1000  # steps before truncation
    auto_reset: bool = True  # reset finished cars inside `step`
    start_obs: jax.Array | None = None  # (M, 6) observation at each track's start; derived if None

    def __post_init__(self):
        if self.start_obs is None:
            # The start pose depends only on the track, so its rays are cast once here rather than
            # inside every auto-resetting step.
            object.__setattr__(self, "start_obs", _start_obs(self.tracks))

    @classmethod
    def from_seeds(cls, seeds: Sequence[int] | int = (0,), **overrides) -> EnvParams:
        """Params for the tracks generated from ``seeds`` (an int means ``range(seeds)``)."""
        if isinstance(seeds, (int, np.integer)):
            seeds = range(int(seeds))
        tracks = jax.tree.map(jnp.asarray, make_tracks(list(seeds)))
        return cls(tracks=tracks, **overrides)

    @property
    def num_tracks(self) -> int:
        """M, the number of stacked tracks."""
        return self.tracks.centre.shape[0]

    def track(self, track_id: int = 0) -> Track:
        """Track ``track_id`` of the stack as NumPy arrays: what the renderer draws."""
        track_id = check_int(track_id, "track_id", low=0, high=self.num_tracks - 1, where="EnvParams.track")
        return Track(*(np.asarray(field[track_id]) for field in self.tracks))


def sanitize_action(action: jax.Array) -> jax.Array:
    """Clip an action to [-1, 1]; NaN becomes 0 (no steering, no throttle), +-inf becomes +-1."""
    action = jnp.asarray(action, dtype=jnp.float32)
    return jnp.clip(jnp.where(jnp.isnan(action), 0.0, action), -1.0, 1.0)


def check_action(action, *, finite: bool = True, num_cars: int | None = None) -> np.ndarray:
    """An action from outside (a Gymnasium user, a keyboard) as a (2,) (or ``(num_cars, 2)``) float32
    NumPy array in [-1, 1]: the API boundary's check, written once. Anything but real numbers
    (complex, a dict, a string, None) or a wrong shape raises ``ValueError``, and so does NaN or inf
    unless ``finite=False`` (then :func:`sanitize_action` maps them inside the step). Finite values
    outside [-1, 1] are clipped."""
    shape = (ACTION_SIZE,) if num_cars is None else (num_cars, ACTION_SIZE)
    try:
        array = np.asarray(action)
    except (TypeError, ValueError):  # ragged nested lists
        array = np.asarray(None)
    if array.dtype.kind not in "biuf":
        raise ValueError(
            f"action must be real numbers of shape {shape} as [steering, throttle], "
            f"got {type(action).__name__} {action!r:.60}"
        )
    array = array.astype(np.float32, copy=False)
    if array.shape != shape:
        raise ValueError(f"action must have shape {shape} as [steering, throttle], got shape {array.shape}")
    if not finite:
        return array
    if not np.isfinite(array).all():
        raise ValueError(f"action must be finite, got {array.tolist()}")
    return np.minimum(np.maximum(array, -1.0), 1.0)  # np.clip, at a third of its cost on 2 numbers


def rays_px(obs) -> np.ndarray:
    """The five ray distances in px from observations ``(..., 6)`` (real or dreamed), clipped to the
    sensor range: what the renderer draws."""
    return np.clip(np.asarray(obs, dtype=np.float64)[..., : sensors.NUM_RAYS], 0.0, 1.0) * RAY_RANGE


def _observe(state: EnvState, params: EnvParams) -> jax.Array:
    rays = sensors.cast_rays(params.tracks, state.track_id, state.quad, state.x, state.y, state.angle)
    return jnp.concatenate([rays / RAY_RANGE, (state.speed / params.max_speed)[None]]).astype(jnp.float32)


@jax.jit
def _start_obs(tracks: Track) -> jax.Array:
    """(M, 6) the observation of a car at rest on each track's start line."""

    def one(track_id):
        x, y, angle = _start_pose(tracks.centre[track_id])
        rays = sensors.cast_rays(tracks, track_id, 0, x, y, angle)
        return jnp.concatenate([rays / RAY_RANGE, jnp.zeros(1)])

    return jax.vmap(one)(jnp.arange(tracks.centre.shape[0]))


def _start_pose(centre):
    """Start line position and heading: centre point 0, facing centre point 1."""
    heading = centre[1] - centre[0]
    return centre[0, 0], centre[0, 1], _arctan2(heading[1], heading[0])


_ATAN = tuple(
    np.float32(c) for c in (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1)
)


def _arctan2(y, x):
    """``arctan2(y, x)`` in float32 to within 2e-7 rad, from multiply-adds and one division.

    Every auto-resetting step computes the start heading of every car (and then keeps it only for
    the cars that finished); XLA's CPU ``atan2`` is a slow library call (~7% of a batched step).
    Cephes ``atanf`` on the octant ``min / max`` in [0, 1], then unfolded. ``(0, 0)`` gives 0.
    """
    ax, ay = jnp.abs(x), jnp.abs(y)
    big, small = jnp.maximum(ax, ay), jnp.minimum(ax, ay)
    t = small / jnp.where(big == 0.0, 1.0, big)
    # Above tan(pi/8), atan(t) = pi/4 + atan((t - 1) / (t + 1)).
    reduce = t > np.float32(0.41421356237309503)
    z = jnp.where(reduce, (t - 1.0) / (t + 1.0), t)
    z2 = z * z
    c0, c1, c2, c3 = _ATAN
    poly = ((c0 * z2 + c1) * z2 + c2) * z2 + c3
    angle = poly * z2 * z + z + jnp.where(reduce, np.float32(np.pi / 4), 0.0)
    angle = jnp.where(ay > ax, np.float32(np.pi / 2) - angle, angle)
    angle = jnp.where(x < 0.0, np.float32(np.pi) - angle, angle)
    return jnp.where(y < 0.0, -angle, angle)


def get_obs(state: EnvState, params: EnvParams) -> jax.Array:
    """Observation (6,) float32 in [0, 1]: ``[5 rays / RAY_RANGE, speed / max_speed]``."""
    return _observe(state, params)


def start_state(params: EnvParams, track_id) -> EnvState:
    """The car at rest on the start line (centre point 0) of ``track_id``, facing along the track."""
    x, y, angle = _start_pose(params.tracks.centre[track_id])
    return EnvState(
        x=x,
        y=y,
        speed=0.0,
        angle=angle,
        quad=0,
        progress=0.0,
        best_progress=0.0,
        checkpoints=0,
        time=0,
        track_id=track_id,
    )


def reset(key: jax.Array, params: EnvParams, track_id=None) -> tuple[jax.Array, EnvState]:
    """Start an episode on ``track_id``, or on a track drawn uniformly with ``key`` when it is None."""
    if track_id is None:
        track_id = jax.random.randint(key, (), 0, params.num_tracks)
    return params.start_obs[track_id], start_state(params, track_id)


def reset_batch(key: jax.Array, params: EnvParams, num_cars: int) -> tuple[jax.Array, EnvState]:
    """Reset ``num_cars`` cars spread round-robin over the tracks (car i drives track i % M)."""
    track_ids = jnp.arange(num_cars, dtype=jnp.int32) % params.num_tracks
    keys = jax.random.split(key, num_cars)
    return jax.vmap(reset, in_axes=(0, None, 0))(keys, params, track_ids)


def step_env(key, state: EnvState, action, params: EnvParams):
    """One step without auto-reset. Returns ``(obs, state, reward, terminated, truncated, info)``."""
    del key  # the dynamics are deterministic; the key is part of the gymnax interface
    steering, throttle = sanitize_action(action)
    tracks, tid = params.tracks, state.track_id

    rate = jnp.where(throttle >= 0.0, params.acceleration, params.brake)
    speed = jnp.clip(state.speed * (1.0 - params.friction) + throttle * rate, 0.0, params.max_speed)
    angle = jnp.mod(state.angle + steering * params.turn_rate + jnp.pi, 2 * jnp.pi) - jnp.pi
    sin, cos = sensors.sincos(angle)
    x = state.x + speed * cos
    y = state.y + speed * sin

    quad, on_track, fraction = sensors.locate(tracks, tid, x, y, state.quad)
    crashed = ~on_track | sensors.hits_obstacle(tracks, tid, x, y)

    # Unwrap progress: a car moves far less than half a lap per step.
    delta = jnp.mod(fraction - jnp.mod(state.progress, 1.0) + 0.5, 1.0) - 0.5
    progress = jnp.where(crashed, state.progress, state.progress + delta)
    best = jnp.maximum(state.best_progress, progress)
    checkpoints = jnp.floor(best * NUM_CHECKPOINTS).astype(jnp.int32)
    new_checkpoints = checkpoints - state.checkpoints
    new_laps = checkpoints // NUM_CHECKPOINTS - state.checkpoints // NUM_CHECKPOINTS
    time = state.time + 1

    reward = (
        params.progress_reward * (best - state.best_progress)
        + params.checkpoint_bonus * new_checkpoints
        + params.lap_bonus * new_laps
        - params.crash_penalty * crashed
        - params.time_cost
    ).astype(jnp.float32)
    state = EnvState(
        x=x,
        y=y,
        speed=speed,
        angle=angle,
        quad=quad,
        progress=progress,
        best_progress=best,
        checkpoints=checkpoints,
        time=time,
        track_id=tid,
    )
    terminated = crashed
    truncated = (time >= params.max_steps) & ~crashed
    rays = sensors.cast_rays_sincos(tracks, tid, quad, x, y, angle, sin, cos)
    obs = jnp.concatenate([rays / RAY_RANGE, (speed / params.max_speed)[None]]).astype(jnp.float32)
    # Progress, laps and checkpoints are in the state (state.track_progress, state.laps, ...);
    # info stays empty because each returned array costs dispatch time.
    return obs, state, reward, terminated, truncated, {}


def step(key, state: EnvState, action, params: EnvParams):
    """:func:`step_env`, then, if ``params.auto_reset``, restart finished cars on the same track."""
    result = step_env(key, state, action, params)
    return auto_reset(reset, key, params, result) if params.auto_reset else result


def auto_reset(reset_fn, key, params, result):
    """gymnax's auto-reset, for any env with this module's interface (the race, the dream).

    Takes ``step_env``'s ``result = (obs, state, reward, terminated, truncated, info)`` and puts a
    finished car back where ``reset_fn(key, params, state.track_id)`` starts it, in the same call;
    ``info["final_obs"]`` keeps the observation it finished with. A reset is cheap and branch-free:
    it is computed always, then selected.
    """
    obs, state, reward, terminated, truncated, info = result
    done = terminated | truncated
    info = {**info, "final_obs": obs}
    reset_obs, reset_state = reset_fn(key, params, state.track_id)
    state = jax.tree.map(lambda r, s: jnp.where(done, r, s), reset_state, state)
    obs = jnp.where(done, reset_obs, obs)
    return obs, state, reward, terminated, truncated, info
