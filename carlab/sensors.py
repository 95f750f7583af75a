"""The car's senses and where it is on the track, as pure JAX functions for one car.

* :func:`cast_rays` — five distance rays by exact ray/segment and ray/circle intersection.
* :func:`locate` — which track quad holds the car (so: is it on the track?) and how far along the
  centre line it is.

Both look only at geometry *near the car*: ``locate`` searches the quads around a hint (the quad the
car was in last step; a car moves at most 5 px, less than a quad), and ``cast_rays`` tests only the
boundary segments that :mod:`carlab.track` listed as reachable from the car's quad. That keeps one
step at about 64 segment tests per ray instead of 200. Everything is branch-free, so it jits and
vmaps; batching over cars and tracks is done by the caller (:mod:`carlab.env`).

Angles are in radians in screen coordinates (x right, y down), so a positive angle turns clockwise
on screen. The ray angles are relative to the car's heading.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from carlab.track import CAR_RADIUS, NUM_POINTS, RAY_RANGE

RAY_ANGLES_DEG = (-60.0, -30.0, 0.0, 30.0, 60.0)  # left to right, relative to the heading
RAY_ANGLES = jnp.deg2rad(jnp.asarray(RAY_ANGLES_DEG, dtype=jnp.float32))
NUM_RAYS = len(RAY_ANGLES_DEG)
LOCATE_WINDOW = 2  # quads searched each side of the hint


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def ray_segment_distance(ox, oy, rx, ry, segments):
    """Distance along unit rays ``(rx, ry)`` (R,) from ``(ox, oy)`` to segments (K, 4); inf if missed.

    Returns an (R, K) array.
    """
    qx = segments[:, 0] - ox
    qy = segments[:, 1] - oy
    dx, dy = segments[:, 2], segments[:, 3]
    rx, ry = rx[:, None], ry[:, None]
    denom = _cross(rx, ry, dx, dy)
    safe = jnp.where(denom == 0.0, 1.0, denom)
    t = _cross(qx, qy, dx, dy) / safe
    u = _cross(qx, qy, rx, ry) / safe
    hit = (denom != 0.0) & (t >= 0.0) & (u >= 0.0) & (u <= 1.0)
    return jnp.where(hit, t, jnp.inf)


def ray_circle_distance(ox, oy, rx, ry, circles):
    """Distance along unit rays (R,) to circles (O, 3) ``[x, y, radius]``; 0 inside, inf if missed."""
    qx = circles[:, 0] - ox
    qy = circles[:, 1] - oy
    b = rx[:, None] * qx + ry[:, None] * qy
    c = qx * qx + qy * qy - circles[:, 2] ** 2
    disc = b * b - c
    root = jnp.sqrt(jnp.maximum(disc, 0.0))
    near, far = b - root, b + root
    t = jnp.where(near >= 0.0, near, jnp.where(far >= 0.0, 0.0, jnp.inf))
    return jnp.where(disc >= 0.0, t, jnp.inf)


def cast_rays(near_segments, obstacles, x, y, angle):
    """Distances (NUM_RAYS,) in px from the car to the first boundary or obstacle, capped at RAY_RANGE.

    Args:
        near_segments: (K, 4) boundary segments reachable from the car's quad (``Track.near_segments[i]``).
        obstacles: (O, 3) obstacle circles.
        x, y, angle: the car's position (px) and heading (rad).
    """
    theta = angle + RAY_ANGLES
    rx, ry = jnp.cos(theta), jnp.sin(theta)
    seg = ray_segment_distance(x, y, rx, ry, near_segments).min(axis=1)
    obs = ray_circle_distance(x, y, rx, ry, obstacles).min(axis=1)
    return jnp.minimum(jnp.minimum(seg, obs), RAY_RANGE)


def locate(centre, inner, outer, cum_length, x, y, hint):
    """Find the quad holding ``(x, y)`` among the quads within LOCATE_WINDOW of ``hint``.

    Args:
        centre, inner, outer: (P, 2) the track's polylines. cum_length: (P + 1,).
        x, y: the car's position. hint: int index of the quad the car was in before.

    Returns:
        ``(quad, on_track, fraction)``: the quad index (``hint`` if the car is in none of them),
        whether the car is on the track, and the lap fraction in [0, 1) of its projection on the
        quad's centre segment.
    """
    offsets = jnp.arange(-LOCATE_WINDOW, LOCATE_WINDOW + 1)
    idx = (hint + offsets) % NUM_POINTS
    nxt = (idx + 1) % NUM_POINTS
    corners = jnp.stack([inner[idx], outer[idx], outer[nxt], inner[nxt]], axis=1)  # (W, 4, 2)
    edges = jnp.roll(corners, -1, axis=1) - corners
    rel = jnp.stack([x, y]) - corners
    side = _cross(edges[..., 0], edges[..., 1], rel[..., 0], rel[..., 1])  # (W, 4)
    inside = jnp.all(side >= 0.0, axis=1) | jnp.all(side <= 0.0, axis=1)
    # Prefer the hint itself, then the nearest offsets, so ties on shared edges are stable.
    order = jnp.argsort(jnp.abs(offsets), stable=True)
    first = order[jnp.argmax(inside[order])]
    on_track = inside.any()
    quad = jnp.where(on_track, idx[first], hint)
    return quad, on_track, lap_fraction(centre, cum_length, x, y, quad)


def lap_fraction(centre, cum_length, x, y, quad):
    """Lap fraction in [0, 1) of the point's projection onto centre segment ``quad`` (clipped to it)."""
    a = centre[quad]
    b = centre[(quad + 1) % NUM_POINTS]
    d = b - a
    s = jnp.clip(jnp.dot(jnp.stack([x, y]) - a, d) / jnp.dot(d, d), 0.0, 1.0)
    arc = cum_length[quad] + s * (cum_length[quad + 1] - cum_length[quad])
    return jnp.mod(arc / cum_length[-1], 1.0)


def hits_obstacle(obstacles, x, y):
    """Whether the car's collision circle (CAR_RADIUS) touches any obstacle."""
    d2 = (obstacles[:, 0] - x) ** 2 + (obstacles[:, 1] - y) ** 2
    return jnp.any(d2 < (obstacles[:, 2] + CAR_RADIUS) ** 2)


__all__ = [
    "RAY_ANGLES_DEG",
    "NUM_RAYS",
    "cast_rays",
    "locate",
    "lap_fraction",
    "hits_obstacle",
    "ray_segment_distance",
    "ray_circle_distance",
]
