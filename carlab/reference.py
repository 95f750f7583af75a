"""A plain NumPy reference of the sensors, the on-track test and track progress: the tests' oracle.

It is written for clarity, not speed: it looks at *every* boundary segment, obstacle and quad of
the track in float64, with Python loops, and shares no code with :mod:`carlab.sensors`. The jitted
environment must agree with it (see ``tests/test_sensors.py``).
"""

from __future__ import annotations

import math

import numpy as np

from carlab.sensors import RAY_ANGLES_DEG
from carlab.track import CAR_RADIUS, RAY_RANGE, Track


def _cross(a, b) -> float:
    return a[0] * b[1] - a[1] * b[0]


def cast_rays(track: Track, x: float, y: float, angle: float) -> np.ndarray:
    """Ray distances (5,) in px against all boundary segments and obstacles, capped at RAY_RANGE."""
    origin = np.array([x, y], dtype=np.float64)
    segments = track.boundary_segments.astype(np.float64)
    out = []
    for offset in RAY_ANGLES_DEG:
        theta = angle + math.radians(offset)
        ray = np.array([math.cos(theta), math.sin(theta)])
        best = RAY_RANGE
        for x0, y0, dx, dy in segments:
            d = np.array([dx, dy])
            denom = _cross(ray, d)
            if denom == 0.0:
                continue  # parallel: a grazing ray along a boundary never counts as a hit
            q = np.array([x0, y0]) - origin
            t = _cross(q, d) / denom
            u = _cross(q, ray) / denom
            if t >= 0.0 and 0.0 <= u <= 1.0:
                best = min(best, t)
        for cx, cy, radius in track.obstacles.astype(np.float64):
            q = np.array([cx, cy]) - origin
            b = float(q @ ray)
            disc = b * b - (float(q @ q) - radius**2)
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
    p = np.array([x, y], dtype=np.float64)
    n = len(track.centre)
    for i in range(n):
        j = (i + 1) % n
        corners = [track.inner[i], track.outer[i], track.outer[j], track.inner[j]]
        corners = [np.asarray(c, dtype=np.float64) for c in corners]
        sides = [_cross(corners[(k + 1) % 4] - corners[k], p - corners[k]) for k in range(4)]
        if all(s >= 0.0 for s in sides) or all(s <= 0.0 for s in sides):
            return i
    return None


def is_on_track(track: Track, x: float, y: float) -> bool:
    """True when the car's centre is on the track and its collision circle touches no obstacle."""
    if containing_quad(track, x, y) is None:
        return False
    for cx, cy, radius in track.obstacles:
        if math.hypot(cx - x, cy - y) < radius + CAR_RADIUS:
            return False
    return True


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
    a, b = centre[quad], centre[(quad + 1) % n]
    s = np.clip((p - a) @ (b - a) / ((b - a) @ (b - a)), 0.0, 1.0)
    seg_lengths = np.linalg.norm(np.roll(centre, -1, axis=0) - centre, axis=1)
    arc = seg_lengths[:quad].sum() + s * seg_lengths[quad]
    return float(arc / seg_lengths.sum() % 1.0)
