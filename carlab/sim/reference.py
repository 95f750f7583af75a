"""A plain NumPy reference of the sensors, the on-track test, track progress and one env step: the oracle.

It is written for clarity, not speed: it looks at *every* boundary segment, obstacle and quad of
the track in float64, with Python loops, and shares no code with :mod:`carlab.sim.sensors` or
:mod:`carlab.sim.env`. The jitted environment must agree with it (see ``tests/test_sensors.py`` and
``tests/test_env.py``).

* :func:`cast_rays`, :func:`containing_quad`, :func:`is_on_track`, :func:`track_progress`: one point.
* :func:`cast_rays_batch`, :func:`containing_quad_batch`, :func:`track_progress_batch`: the same brute
  force broadcast over many points with NumPy (for tests over thousands of states).
* :class:`RefCar`, :func:`start_car`, :func:`step`: one car driving, step by step, as
  :func:`carlab.sim.env.step_env` does.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from carlab.sim.sensors import RAY_ANGLES_DEG
from carlab.sim.track import CAR_RADIUS, NUM_CHECKPOINTS, RAY_RANGE, Track


def _cross(a, b) -> float:
    return a[0] * b[1] - a[1] * b[0]


def boundary_segments(track: Track) -> np.ndarray:
    """(2P, 4) float64 ``[x0, y0, dx, dy]`` of every boundary segment, inner ones first.

    Built from the float64 corner points, so each segment ends exactly where the next begins and no
    ray can slip through a joint (``Track.boundary_segments`` rounds ``dx, dy`` to float32).
    """
    segs = []
    for boundary in (track.inner, track.outer):
        start = np.asarray(boundary, dtype=np.float64)
        segs.append(np.concatenate([start, np.roll(start, -1, axis=0) - start], axis=1))
    return np.concatenate(segs)


def cast_rays(track: Track, x: float, y: float, angle: float) -> np.ndarray:
    """Ray distances (5,) in px against all boundary segments and obstacles, capped at RAY_RANGE."""
    segments = boundary_segments(track).tolist()
    obstacles = track.obstacles.astype(np.float64).tolist()
    out = []
    for offset in RAY_ANGLES_DEG:
        theta = angle + math.radians(offset)
        rx, ry = math.cos(theta), math.sin(theta)
        best = RAY_RANGE
        for x0, y0, dx, dy in segments:
            denom = _cross((rx, ry), (dx, dy))
            if denom == 0.0:
                continue  # parallel: a grazing ray along a boundary never counts as a hit
            q = (x0 - x, y0 - y)
            t = _cross(q, (dx, dy)) / denom  # distance along the ray
            u = _cross(q, (rx, ry)) / denom  # position along the segment, 0..1
            if t >= 0.0 and 0.0 <= u <= 1.0:
                best = min(best, t)
        for cx, cy, radius in obstacles:
            qx, qy = cx - x, cy - y
            b = qx * rx + qy * ry
            disc = b * b - (qx * qx + qy * qy - radius**2)
            if disc < 0.0:
                continue
            near, far = b - math.sqrt(disc), b + math.sqrt(disc)
            if near >= 0.0:
                best = min(best, near)
            elif far >= 0.0:
                best = 0.0  # the car is inside the obstacle
        out.append(best)
    return np.asarray(out)


def containing_quad(track: Track, x: float, y: float) -> int | None:
    """Index of the track quad holding the point, or None when the point is off the track."""
    inner = track.inner.astype(np.float64).tolist()
    outer = track.outer.astype(np.float64).tolist()
    n = len(inner)
    for i in range(n):
        j = (i + 1) % n
        corners = [inner[i], outer[i], outer[j], inner[j]]
        sides = []
        for k in range(4):
            (ax, ay), (bx, by) = corners[k], corners[(k + 1) % 4]
            sides.append(_cross((bx - ax, by - ay), (x - ax, y - ay)))
        if all(s >= 0.0 for s in sides) or all(s <= 0.0 for s in sides):
            return i
    return None


def is_on_track(track: Track, x: float, y: float) -> bool:
    """True when the car's centre is on the track and its collision circle touches no obstacle."""
    return containing_quad(track, x, y) is not None and not touches_obstacle(track, x, y)


def touches_obstacle(track: Track, x: float, y: float) -> bool:
    """True when the car's collision circle (CAR_RADIUS) overlaps any obstacle."""
    for cx, cy, radius in track.obstacles.astype(np.float64):
        if math.hypot(cx - x, cy - y) < radius + CAR_RADIUS:
            return True
    return False


def track_progress(track: Track, x: float, y: float) -> float:
    """Lap fraction in [0, 1) of the point: its projection on the centre segment of its quad.

    Off the track, the nearest centre segment is used instead.
    """
    p = np.array([x, y], dtype=np.float64)
    centre = track.centre.astype(np.float64)
    n = len(centre)
    quad = containing_quad(track, x, y)
    if quad is None:
        dists = []
        for i in range(n):
            a, b = centre[i], centre[(i + 1) % n]
            s = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
            dists.append(np.linalg.norm(p - (a + s * (b - a))))
        quad = int(np.argmin(dists))
    return quad_progress(track, quad, x, y)


def quad_progress(track: Track, quad: int, x: float, y: float) -> float:
    """Lap fraction in [0, 1) of the point's projection on centre segment ``quad`` (clipped to it)."""
    p = np.array([x, y], dtype=np.float64)
    centre = track.centre.astype(np.float64)
    n = len(centre)
    a, b = centre[quad], centre[(quad + 1) % n]
    s = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    seg_lengths = np.linalg.norm(np.roll(centre, -1, axis=0) - centre, axis=1)
    arc = seg_lengths[:quad].sum() + s * seg_lengths[quad]
    return float(arc / seg_lengths.sum() % 1.0)


# --------------------------------------------------------------------------------------------------
# Batched oracles: the same brute force (every segment, every quad, float64), broadcast with NumPy
# over many points at once, so tests can check ten thousand states in well under a second.


def cast_rays_batch(track: Track, xs, ys, angles) -> np.ndarray:
    """Ray distances (N, 5) in px for N cars, against all boundary segments and obstacles.

    The vectorised twin of :func:`cast_rays`: same float64 brute force, same rules.
    """
    xs, ys, angles = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (xs, ys, angles))
    theta = angles[:, None] + np.deg2rad(np.asarray(RAY_ANGLES_DEG, dtype=np.float64))  # (N, R)
    rx, ry = np.cos(theta)[..., None], np.sin(theta)[..., None]  # (N, R, 1)
    seg = boundary_segments(track)  # (S, 4)
    qx = seg[:, 0] - xs[:, None, None]  # (N, 1, S)
    qy = seg[:, 1] - ys[:, None, None]
    dx, dy = seg[:, 2], seg[:, 3]
    denom = rx * dy - ry * dx  # (N, R, S)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (qx * dy - qy * dx) / denom
        u = (qx * ry - qy * rx) / denom
    hit = (denom != 0.0) & (t >= 0.0) & (u >= 0.0) & (u <= 1.0)
    best = np.where(hit, t, np.inf).min(axis=-1)  # (N, R)

    circles = track.obstacles.astype(np.float64)  # (O, 3)
    cx = circles[:, 0] - xs[:, None, None]  # (N, 1, O)
    cy = circles[:, 1] - ys[:, None, None]
    b = rx * cx + ry * cy  # (N, R, O)
    disc = b * b - (cx * cx + cy * cy - circles[:, 2] ** 2)
    root = np.sqrt(np.maximum(disc, 0.0))
    near, far = b - root, b + root
    t_obs = np.where(near >= 0.0, near, np.where(far >= 0.0, 0.0, np.inf))
    t_obs = np.where(disc >= 0.0, t_obs, np.inf).min(axis=-1)
    return np.minimum(np.minimum(best, t_obs), RAY_RANGE)


def containing_quad_batch(track: Track, xs, ys) -> np.ndarray:
    """Index (N,) of the first quad holding each point, or -1 off the track (as :func:`containing_quad`)."""
    xs, ys = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (xs, ys))
    inner, outer = track.inner.astype(np.float64), track.outer.astype(np.float64)
    corners = np.stack([inner, outer, np.roll(outer, -1, 0), np.roll(inner, -1, 0)], axis=1)  # (P, 4, 2)
    edges = np.roll(corners, -1, axis=1) - corners
    rel_x = xs[:, None, None] - corners[..., 0]  # (N, P, 4)
    rel_y = ys[:, None, None] - corners[..., 1]
    sides = edges[..., 0] * rel_y - edges[..., 1] * rel_x
    inside = np.all(sides >= 0.0, axis=-1) | np.all(sides <= 0.0, axis=-1)  # (N, P)
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)


def track_progress_batch(track: Track, xs, ys) -> np.ndarray:
    """Lap fractions (N,) in [0, 1), as :func:`track_progress` (nearest centre segment off the track)."""
    xs, ys = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (xs, ys))
    centre = track.centre.astype(np.float64)
    a = centre
    d = np.roll(centre, -1, axis=0) - centre  # (P, 2)
    rel = np.stack([xs, ys], axis=-1)[:, None, :] - a  # (N, P, 2)
    s = np.clip(np.sum(rel * d, -1) / np.sum(d * d, -1), 0.0, 1.0)  # (N, P)
    nearest = np.argmin(np.linalg.norm(rel - s[..., None] * d, axis=-1), axis=1)
    quad = containing_quad_batch(track, xs, ys)
    quad = np.where(quad >= 0, quad, nearest)
    seg_lengths = np.linalg.norm(d, axis=1)
    start = np.concatenate([[0.0], np.cumsum(seg_lengths)])[quad]
    arc = start + s[np.arange(len(xs)), quad] * seg_lengths[quad]
    return arc / seg_lengths.sum() % 1.0


# --------------------------------------------------------------------------------------------------
# One environment step for one car, mirroring carlab.sim.env.step_env in plain Python floats.


@dataclasses.dataclass(frozen=True)
class RefCar:
    """One car's episode state, as in :class:`carlab.sim.env.EnvState` (without the track id)."""

    x: float  # px
    y: float  # px
    speed: float  # px per step, in [0, max_speed]
    angle: float  # rad, wrapped to [-pi, pi)
    quad: int  # index of the quad the car is in (the last one it was in, once off the track)
    progress: float  # laps driven, unwrapped (negative when reversing)
    best_progress: float  # the most progress reached this episode
    checkpoints: int  # checkpoints reached in order (10 per lap)
    time: int  # steps taken this episode

    @property
    def laps(self) -> int:
        """Laps completed."""
        return self.checkpoints // NUM_CHECKPOINTS


def start_car(track: Track) -> RefCar:
    """The car at rest on centre point 0, facing centre point 1 (as :func:`carlab.sim.env.start_state`)."""
    (x0, y0), (x1, y1) = track.centre[0].astype(np.float64), track.centre[1].astype(np.float64)
    return RefCar(
        x=float(x0),
        y=float(y0),
        speed=0.0,
        angle=math.atan2(y1 - y0, x1 - x0),
        quad=0,
        progress=0.0,
        best_progress=0.0,
        checkpoints=0,
        time=0,
    )


def sanitize(value: float) -> float:
    """An action component clipped to [-1, 1]; NaN becomes 0 and +-inf becomes +-1."""
    value = float(value)
    if math.isnan(value):
        return 0.0
    return min(max(value, -1.0), 1.0)


def observe(track: Track, car: RefCar, params) -> np.ndarray:
    """Observation (6,): the five rays over RAY_RANGE, then speed over ``params.max_speed``."""
    rays = cast_rays(track, car.x, car.y, car.angle)
    return np.concatenate([rays / RAY_RANGE, [car.speed / params.max_speed]])


def step(track: Track, car: RefCar, action, params) -> tuple[RefCar, np.ndarray, float, bool, bool]:
    """One step of :func:`carlab.sim.env.step_env` for one car, without auto-reset.

    Args:
        track: the car's (single, unstacked) track.
        car: the state before the step.
        action: ``(steering, throttle)``; sanitised like the env's.
        params: an :class:`carlab.sim.env.EnvParams` (only its physics and reward constants are read).

    Returns:
        ``(car, obs, reward, terminated, truncated)`` after the step.
    """
    steering, throttle = (sanitize(a) for a in action)

    rate = params.acceleration if throttle >= 0.0 else params.brake
    speed = min(max(car.speed * (1.0 - params.friction) + throttle * rate, 0.0), params.max_speed)
    angle = (car.angle + steering * params.turn_rate + math.pi) % (2.0 * math.pi) - math.pi
    x = car.x + speed * math.cos(angle)
    y = car.y + speed * math.sin(angle)

    quad = containing_quad(track, x, y)
    crashed = quad is None or touches_obstacle(track, x, y)
    if quad is None:
        quad = car.quad  # off the track: keep the last quad (the car is crashing anyway)
    progress = car.progress
    if not crashed:
        # Unwrap: a car moves far less than half a lap in one step.
        delta = (quad_progress(track, quad, x, y) - car.progress % 1.0 + 0.5) % 1.0 - 0.5
        progress = car.progress + delta
    best = max(car.best_progress, progress)
    checkpoints = math.floor(best * NUM_CHECKPOINTS)
    new_laps = checkpoints // NUM_CHECKPOINTS - car.checkpoints // NUM_CHECKPOINTS
    time = car.time + 1

    reward = (
        params.progress_reward * (best - car.best_progress)
        + params.checkpoint_bonus * (checkpoints - car.checkpoints)
        + params.lap_bonus * new_laps
        - params.crash_penalty * crashed
        - params.time_cost
    )
    car = RefCar(
        x=x,
        y=y,
        speed=speed,
        angle=angle,
        quad=quad,
        progress=progress,
        best_progress=best,
        checkpoints=checkpoints,
        time=time,
    )
    truncated = time >= params.max_steps and not crashed
    return car, observe(track, car, params), float(reward), crashed, truncated
