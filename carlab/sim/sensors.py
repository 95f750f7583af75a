"""The car's senses and where it is on the track, as pure JAX functions for one car.

* :func:`cast_rays` — five distance rays by exact ray/segment and ray/circle intersection.
* :func:`locate` — which track quad holds the car (so: is it on the track?) and how far along the
  centre line it is.

Both look only at geometry *near the car*: ``locate`` searches the quads around a hint (the quad the
car was in last step; a car moves at most 5 px, less than a quad), and ``cast_rays`` tests only the
boundary segments that :mod:`carlab.sim.track` listed as reachable from the car's quad in the ray's
direction. That keeps one step at 40 segment tests per ray instead of 200. Everything is
branch-free, so it jits and vmaps; batching over cars is done by the caller (:mod:`carlab.sim.env`).
Each function takes the stacked tracks and the car's ``track_id`` and gathers only the rows it
needs, so a batch of cars on many tracks never copies whole tracks.

Some code here is shaped for XLA's CPU backend, where the env is benchmarked (see
``benchmarks/env_speed.py``): sines and cosines come from :func:`sincos` (multiply-adds, not library
calls), small per-car loops (obstacles, quad edges) are written out so that vmapped they stay
(N,)-shaped vectors, and one car reads its segment rows by dynamic slices (:func:`_segment_rows`).
The maths is the same; the comments at each place say what the plain form cost.

Angles are in radians in screen coordinates (x right, y down), so a positive angle turns clockwise
on screen. The ray angles are relative to the car's heading.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from carlab.sim.track import CAR_RADIUS, DIRECTION_BUCKETS, NUM_POINTS, RAY_RANGE, Track

RAY_ANGLES_DEG = (-60.0, -30.0, 0.0, 30.0, 60.0)  # left to right, relative to the heading
RAY_ANGLES = jnp.deg2rad(jnp.asarray(RAY_ANGLES_DEG, dtype=jnp.float32))
NUM_RAYS = len(RAY_ANGLES_DEG)
LOCATE_WINDOW = 2  # quads searched each side of the hint
JOINT_SLACK = 1e-4  # fraction of a segment's length (< 0.01 px) by which segments overlap at joints
EDGE_SLACK = 1e-2  # px^2, tolerance of the inside-quad cross products (see locate)


def _cross(ax, ay, bx, by):
    return ax * by - ay * bx


def ray_segment_distance(ox, oy, rx, ry, segments):
    """Distance along unit rays ``(rx, ry)`` (R,) from ``(ox, oy)`` to segments; inf if missed.

    ``segments`` is (R, 4, K): for each ray its own K segments as rows ``x0, y0, dx, dy``.
    Returns an (R, K) array.
    """
    qx = segments[:, 0] - ox
    qy = segments[:, 1] - oy
    dx, dy = segments[:, 2], segments[:, 3]
    rx, ry = rx[:, None], ry[:, None]
    # A ray parallel to a segment (or a zero-length pad segment) has denominator 0, so ``inv`` is
    # +-inf and ``t``, ``u`` are +-inf or NaN: never a finite hit, with no test of its own.
    inv = 1.0 / _cross(rx, ry, dx, dy)
    t = _cross(qx, qy, dx, dy) * inv
    u = _cross(qx, qy, rx, ry) * inv
    # The slack on u closes float32 pinholes at the joint of two segments: a ray through the shared
    # point could otherwise land just past the end of one and just before the start of the other.
    hit = (t >= 0.0) & (u >= -JOINT_SLACK) & (u <= 1.0 + JOINT_SLACK)
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


_PIO2 = tuple(np.float32(v) for v in (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8))
_SIN = tuple(np.float32(v) for v in (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4))
_COS = tuple(np.float32(v) for v in (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5))


def sincos(angle):
    """``(sin(angle), cos(angle))`` in float32 to within 1e-7, from plain multiply-adds.

    XLA's CPU ``sin``/``cos`` are library calls costing ~3 ns each per element, and XLA copies such
    expensive producers into every fusion that uses them. These polynomials (Cephes ``sinf``/``cosf``
    after a three-part Cody-Waite reduction to [-pi/4, pi/4]) vectorise and are cheap to copy.
    """
    k = jnp.round(angle * np.float32(2 / np.pi))
    r = ((angle - k * _PIO2[0]) - k * _PIO2[1]) - k * _PIO2[2]
    r2 = r * r
    sin_r = r + r * r2 * (_SIN[0] + r2 * (_SIN[1] + r2 * _SIN[2]))
    cos_r = 1.0 - 0.5 * r2 + r2 * r2 * (_COS[0] + r2 * (_COS[1] + r2 * _COS[2]))
    quadrant = k - 4.0 * jnp.floor(k * 0.25)  # k mod 4, in float so that huge angles stay finite
    odd = (quadrant == 1.0) | (quadrant == 3.0)
    sin = jnp.where(odd, cos_r, sin_r)
    cos = jnp.where(odd, sin_r, cos_r)
    return jnp.where(quadrant >= 2.0, -sin, sin), jnp.where((quadrant == 1.0) | (quadrant == 2.0), -cos, cos)


_RAY_COS = np.cos(np.deg2rad(RAY_ANGLES_DEG)).astype(np.float32)
_RAY_SIN = np.sin(np.deg2rad(RAY_ANGLES_DEG)).astype(np.float32)


def cast_rays(tracks: Track, track_id, quad, x, y, angle):
    """Distances (NUM_RAYS,) in px from the car to the first boundary or obstacle, capped at RAY_RANGE.

    Args:
        tracks: stacked tracks (leading axis M); track_id: which one the car is on.
        quad: the quad holding the car: only the boundary segments listed for it are tested.
        x, y, angle: the car's position (px) and heading (rad).
    """
    sin, cos = sincos(angle)
    return cast_rays_sincos(tracks, track_id, quad, x, y, angle, sin, cos)


def cast_rays_sincos(tracks: Track, track_id, quad, x, y, angle, sin, cos):
    """:func:`cast_rays` given ``sin(angle), cos(angle)`` (the env has them from moving the car)."""
    theta = angle + RAY_ANGLES
    # The ray directions are the heading rotated by each ray's (constant) angle.
    rx, ry = cos * _RAY_COS - sin * _RAY_SIN, sin * _RAY_COS + cos * _RAY_SIN
    # Each ray tests only the segments listed for its quad and direction bucket.
    buckets = jnp.floor((theta + jnp.pi) * (DIRECTION_BUCKETS / (2 * jnp.pi))).astype(jnp.int32)
    near = _segment_rows(tracks.near_segments, track_id, quad, buckets % DIRECTION_BUCKETS)  # (R, 4, K)
    seg = ray_segment_distance(x, y, rx, ry, near).min(axis=1)
    obs = _nearest_obstacle(x, y, rx, ry, tracks.obstacles[track_id])
    return jnp.minimum(jnp.minimum(seg, obs), RAY_RANGE)


def _table_rows(table, track_id, quad, buckets):
    """``table[track_id, quad, buckets]``: the (R, 4, K) segment rows of one car's rays."""
    return table[track_id, quad, buckets]


@jax.custom_batching.custom_vmap
def _segment_rows(table, track_id, quad, buckets):
    """:func:`_table_rows`, as R dynamic slices for one car and as one gather for a batch.

    For a single car XLA splits a gather fusion from this (large) table over two threads, and the
    hand-off costs more than the whole rest of a step (~10 us); dynamic slices are not split. For a
    batch of cars the gather is the fast form (slices would be batched into R gathers).
    """
    size = (1, 1, 1) + table.shape[3:]
    rows = [jax.lax.dynamic_slice(table, (track_id, quad, buckets[r], 0, 0), size) for r in range(NUM_RAYS)]
    return jnp.concatenate(rows, axis=2)[0, 0]


@_segment_rows.def_vmap
def _segment_rows_batched(axis_size, in_batched, table, track_id, quad, buckets):
    del axis_size
    in_axes = tuple(0 if batched else None for batched in in_batched)
    return jax.vmap(_table_rows, in_axes=in_axes)(table, track_id, quad, buckets), True


def _nearest_obstacle(x, y, rx, ry, circles):
    """:func:`ray_circle_distance` already reduced over the circles, written one circle at a time.

    Same maths, but every intermediate is a (R,) vector rather than (R, O): vmapped over cars,
    XLA's CPU code for the (N, R, O) form, or even for (N, R, 1) slices, took 1.5-3x as long.
    """
    best = None
    for j in range(circles.shape[0]):
        qx, qy, radius = circles[j, 0] - x, circles[j, 1] - y, circles[j, 2]
        b = rx * qx + ry * qy
        disc = b * b - (qx * qx + qy * qy - radius**2)
        root = jnp.sqrt(jnp.maximum(disc, 0.0))
        near, far = b - root, b + root
        t = jnp.where(near >= 0.0, near, jnp.where(far >= 0.0, 0.0, jnp.inf))
        t = jnp.where(disc >= 0.0, t, jnp.inf)
        best = t if best is None else jnp.minimum(best, t)
    return best


# Quads are tried in this order of offsets from the hint (0, -1, +1, -2, +2), so a point on an
# edge shared by two quads is given to the one nearer the hint, the same way every time.
_OFFSETS = np.array(sorted(range(-LOCATE_WINDOW, LOCATE_WINDOW + 1), key=lambda o: (abs(o), o)))


def locate(tracks: Track, track_id, x, y, hint):
    """Find the quad holding ``(x, y)`` among the quads within LOCATE_WINDOW of ``hint``.

    Args:
        tracks: stacked tracks (leading axis M); track_id: which one the car is on.
        x, y: the car's position. hint: int index of the quad the car was in before.

    Returns:
        ``(quad, on_track, fraction)``: the quad index (``hint`` if the car is in none of them),
        whether the car is on the track, and the lap fraction in [0, 1) of its projection on the
        quad's centre segment.
    """
    idx = (hint + _OFFSETS) % NUM_POINTS
    corners = tracks.quads[track_id, idx]  # (W, 4, 2)
    cx, cy = corners[..., 0], corners[..., 1]  # (W, 4)
    # side[j]: which side of edge j (corner j to corner j + 1) the point is on. Written edge by edge
    # rather than with jnp.roll over the corners: vmapped, XLA materialised the rolled copy.
    side = [
        _cross(cx[:, k] - cx[:, j], cy[:, k] - cy[:, j], x - cx[:, j], y - cy[:, j])
        for j, k in ((0, 1), (1, 2), (2, 3), (3, 0))
    ]  # 4 x (W,)
    # A little slack (EDGE_SLACK px^2, i.e. < 1e-3 px) so a point exactly on a shared edge, like the
    # start position, is inside at least one quad even when XLA's fused multiply-adds round both
    # cross products the wrong way (it did on track 8: the car at rest crashed under jit).
    all_left = (side[0] >= -EDGE_SLACK) & (side[1] >= -EDGE_SLACK)
    all_left &= (side[2] >= -EDGE_SLACK) & (side[3] >= -EDGE_SLACK)
    all_right = (side[0] <= EDGE_SLACK) & (side[1] <= EDGE_SLACK)
    all_right &= (side[2] <= EDGE_SLACK) & (side[3] <= EDGE_SLACK)
    inside = all_left | all_right
    on_track = inside.any()
    quad = jnp.where(on_track, idx[jnp.argmax(inside)], hint)
    return quad, on_track, lap_fraction(tracks, track_id, x, y, quad)


def lap_fraction(tracks: Track, track_id, x, y, quad):
    """Lap fraction in [0, 1) of the point's projection onto centre segment ``quad`` (clipped to it)."""
    # Written out rather than as jnp.dot: XLA's CPU backend sends a dot of two 2-vectors to a
    # library call, which cost more than the rest of this function.
    ax, ay = tracks.centre[track_id, quad, 0], tracks.centre[track_id, quad, 1]
    nxt = (quad + 1) % NUM_POINTS
    dx, dy = tracks.centre[track_id, nxt, 0] - ax, tracks.centre[track_id, nxt, 1] - ay
    s = jnp.clip(((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    start, end = tracks.cum_length[track_id, quad], tracks.cum_length[track_id, quad + 1]
    return jnp.mod((start + s * (end - start)) / tracks.cum_length[track_id, -1], 1.0)


def hits_obstacle(tracks: Track, track_id, x, y):
    """Whether the car's collision circle (CAR_RADIUS) touches any obstacle."""
    obstacles = tracks.obstacles[track_id]
    d2 = (obstacles[:, 0] - x) ** 2 + (obstacles[:, 1] - y) ** 2
    return jnp.any(d2 < (obstacles[:, 2] + CAR_RADIUS) ** 2)
