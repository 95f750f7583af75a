"""Procedural race tracks: a Perlin-noise loop around the screen centre, as plain arrays.

A track is a closed centre line of ``NUM_POINTS`` points whose radius around the screen centre is
varied by 2-D Perlin noise sampled on a circle (so the loop closes seamlessly). The inner and outer
boundaries are *mitre* offsets of the centre line: every boundary segment is parallel to its centre
segment at exactly ``TRACK_WIDTH / 2`` px, so the drivable region is the union of ``NUM_POINTS``
quads ``(inner[i], outer[i], outer[i+1], inner[i+1])`` and the track is 40 px wide everywhere.

Everything returned is a NumPy array inside a :class:`Track` NamedTuple, so tracks can be stacked
(:func:`stack_tracks`) and indexed inside jitted code. Generation is deterministic in the seed and
uses bounded retries: each retry damps the noise, and the last attempt is a plain ellipse, which is
always valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import noise
import numpy as np

from carlab.checks import is_int

SCREEN_WIDTH = 800  # px
SCREEN_HEIGHT = 600  # px
NUM_POINTS = 100  # centre-line points (and quads) per loop
TRACK_WIDTH = 40.0  # px, boundary to boundary
NUM_OBSTACLES = 5
OBSTACLE_RADIUS = 7.0  # px
OBSTACLE_MIN_OFFSET = 13.0  # px, least sideways offset of an obstacle's centre from the centre line
OBSTACLE_MAX_OFFSET = 15.0  # px, most sideways offset
CAR_RADIUS = 5.0  # px, the car's collision circle against obstacles
CHECKPOINT_INTERVAL = 0.1  # fraction of a lap between checkpoints
NUM_CHECKPOINTS = round(1.0 / CHECKPOINT_INTERVAL)
RAY_RANGE = 150.0  # px, sensor range (used to build the per-quad segment table)
NEAR_MARGIN = 10.0  # px, extra reach so rays from a car just off its quad (a crash) stay exact
NEAR_SEGMENTS = 40  # boundary segments kept per quad and ray-direction bucket (padded)
DIRECTION_BUCKETS = 16  # the segment table is split by ray direction (22.5 degrees each)

BASE_RADIUS = 200.0  # px, mean radius of the loop before the horizontal stretch
RADIUS_AMPLITUDE = 0.25  # noise moves the radius within +-25 % of BASE_RADIUS
X_STRETCH = 1.4  # the loop is widened to use the 4:3 screen
NOISE_SCALE = 1.2  # radius of the circle sampled in noise space (higher = wigglier)
MAX_ATTEMPTS = 6  # bounded retries; the last one has no noise at all
MARGIN = 8.0  # px kept free between the track and the screen edge
DRIVE_TRACK = 21
"""The track the hand-driving views (``DriveView``, ``DreamView``, ``carlab play``) open on: of tracks
0-39 its start line faces the longest straight (held full throttle stays on the road for 71 steps,
2.4 s; on track 0 a car crashes after 23). A student pressing ↑ first should see the car go, not crash."""


class Track(NamedTuple):
    """One track (or a stack of them, with a leading track axis). All arrays are float32/int32.

    Attributes:
        centre: (P, 2) centre-line points, clockwise on screen, point 0 is the start line.
        inner: (P, 2) inner boundary (mitre offset towards the loop centre).
        outer: (P, 2) outer boundary.
        quads: (P, 4, 2) corners of the drivable quads ``inner[i], outer[i], outer[i+1], inner[i+1]``
            (redundant with inner/outer, stored so the env gathers one block per step).
        obstacles: (O, 3) ``[x, y, radius]`` circles placed on the track.
        checkpoints: (C, 2, 2) checkpoint gates ``[inner end, outer end]`` across the track, gate k
            exactly where the lap fraction is k / C (gate 0 is the start/finish line): the env pays
            checkpoint k when the car's best progress reaches k / C.
        cum_length: (P + 1,) arc length of the centre line from point 0 to point i (i = P closes the loop).
        near_segments: (P, B, 4, K) for each quad and ray-direction bucket (bucket b covers angles
            ``-pi + b * 2pi/B`` to the next), the rows ``x0, y0, dx, dy`` of every boundary segment
            that a ray of ``RAY_RANGE`` px cast from inside that quad in such a direction could hit,
            padded with zero-length segments (never hit).
        seed: () the seed the track was generated from.
    """

    centre: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    quads: np.ndarray
    obstacles: np.ndarray
    checkpoints: np.ndarray
    cum_length: np.ndarray
    near_segments: np.ndarray
    seed: np.ndarray

    @property
    def length(self):
        """Total centre-line length in px."""
        return self.cum_length[..., -1]

    @property
    def boundary_segments(self) -> np.ndarray:
        """(2P, 4) all boundary segments ``[x0, y0, dx, dy]``: inner ones first, then outer."""
        segs = [np.concatenate([b, np.roll(b, -1, axis=-2) - b], axis=-1) for b in (self.inner, self.outer)]
        return np.concatenate(segs, axis=-2)


class TrackError(ValueError):
    """Raised for an unusable seed (negative or too large)."""


def _centre_line(seed: int, amplitude: float) -> np.ndarray:
    """Centre line for ``seed``: radius noise sampled on a circle in noise space, so it closes."""
    rng = np.random.default_rng(seed)
    ox, oy = rng.uniform(0.0, 500.0, size=2)
    base = int(rng.integers(0, 256))
    # A seed-dependent start angle: even the noiseless fallback ellipse differs between seeds.
    theta = rng.uniform(0.0, 2.0 * np.pi) + 2.0 * np.pi * np.arange(NUM_POINTS) / NUM_POINTS
    n = np.array(
        [
            noise.pnoise2(ox + NOISE_SCALE * np.cos(t), oy + NOISE_SCALE * np.sin(t), octaves=2, base=base)
            for t in theta
        ]
    )
    # pnoise2 stays within about +-0.7; normalise so the amplitude means what it says.
    radius = BASE_RADIUS * (1.0 + amplitude * np.clip(n / 0.7, -1.0, 1.0))
    # Screen y grows downwards, so increasing theta runs clockwise on screen.
    x = SCREEN_WIDTH / 2 + X_STRETCH * radius * np.cos(theta)
    y = SCREEN_HEIGHT / 2 + radius * np.sin(theta)
    return np.stack([x, y], axis=-1)


def _mitre_boundaries(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offset the closed polyline by +-TRACK_WIDTH/2 with mitre joins (segments stay parallel)."""
    seg = np.roll(centre, -1, axis=0) - centre
    seg /= np.linalg.norm(seg, axis=1, keepdims=True)
    # (dy, -dx) points away from the loop centre for a loop that runs clockwise on screen.
    normal = np.stack([seg[:, 1], -seg[:, 0]], axis=1)
    prev_normal = np.roll(normal, 1, axis=0)
    bisector = normal + prev_normal
    bisector /= np.linalg.norm(bisector, axis=1, keepdims=True)
    cos_half = np.sum(bisector * normal, axis=1, keepdims=True)
    offset = bisector * (TRACK_WIDTH / 2) / cos_half
    return centre - offset, centre + offset  # inner, outer


def _segments_intersect(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Pairwise proper-intersection matrix of segment sets p (A,4) and q (B,4) as [x0,y0,dx,dy]."""
    a0, ad = p[:, None, :2], p[:, None, 2:]
    b0, bd = q[None, :, :2], q[None, :, 2:]
    denom = ad[..., 0] * bd[..., 1] - ad[..., 1] * bd[..., 0]
    diff = b0 - a0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (diff[..., 0] * bd[..., 1] - diff[..., 1] * bd[..., 0]) / denom
        u = (diff[..., 0] * ad[..., 1] - diff[..., 1] * ad[..., 0]) / denom
    return (np.abs(denom) > 1e-12) & (t > 1e-9) & (t < 1 - 1e-9) & (u > 1e-9) & (u < 1 - 1e-9)


def _point_segment_distance(points: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """Distances (A, B) from points (A, 2) to segments (B, 4)."""
    p0, d = segs[None, :, :2], segs[None, :, 2:]
    rel = points[:, None, :] - p0
    t = np.clip(np.sum(rel * d, -1) / np.maximum(np.sum(d * d, -1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(rel - t[..., None] * d, axis=-1)


def _is_valid(centre: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> bool:
    """Inside the screen, no self-intersection or fold, and no part of the loop pinching another."""
    pts = np.concatenate([inner, outer])
    if pts[:, 0].min() < MARGIN or pts[:, 0].max() > SCREEN_WIDTH - MARGIN:
        return False
    if pts[:, 1].min() < MARGIN or pts[:, 1].max() > SCREEN_HEIGHT - MARGIN:
        return False
    centre_seg = np.roll(centre, -1, axis=0) - centre
    for boundary in (inner, outer):
        seg = np.roll(boundary, -1, axis=0) - boundary
        # A fold (boundary segment running backwards) means curvature tighter than the half-width.
        if np.any(np.sum(seg * centre_seg, axis=1) <= 0.2 * np.sum(centre_seg**2, axis=1)):
            return False
    segs = np.concatenate([np.concatenate([b, np.roll(b, -1, axis=0) - b], axis=1) for b in (inner, outer)])
    if _segments_intersect(segs, segs).any():
        return False
    # No pinch: centre points far apart along the loop must stay a full track width + car apart.
    dist = np.linalg.norm(centre[:, None] - centre[None], axis=-1)
    idx = np.arange(NUM_POINTS)
    gap = np.abs(idx[:, None] - idx[None])
    gap = np.minimum(gap, NUM_POINTS - gap)
    return bool(np.all(dist[gap >= 8] > TRACK_WIDTH + 4 * CAR_RADIUS))


def _place_obstacles(seed: int, centre: np.ndarray) -> np.ndarray:
    """Five obstacles spread around the loop, each pushed to one side by noise, leaving one lane.

    Each obstacle's centre sits ``OBSTACLE_MIN_OFFSET``-``OBSTACLE_MAX_OFFSET`` px to one side of the
    centre line (the side and distance come from Perlin noise), so it closes that side of the track:
    the gap between it and the near boundary is at most ``TRACK_WIDTH/2 - OBSTACLE_MIN_OFFSET -
    OBSTACLE_RADIUS`` = 0 px. On the far side it leaves ``TRACK_WIDTH/2 + OBSTACLE_MIN_OFFSET -
    OBSTACLE_RADIUS`` = 26 px or more, far wider than the car's 10 px collision circle: a car in the
    middle of the road just clears it (by 1 px or more), a car hugging the wrong side does not. Obstacles are 16 centre points apart (about 250 px), so no two of them form a wall,
    and the first and last 10 points stay free for the start.
    """
    rng = np.random.default_rng([seed, 1])
    phase = rng.uniform(0.0, 100.0)
    spacing = (NUM_POINTS - 20) // NUM_OBSTACLES
    seg = np.roll(centre, -1, axis=0) - centre
    seg /= np.linalg.norm(seg, axis=1, keepdims=True)
    normal = np.stack([seg[:, 1], -seg[:, 0]], axis=1)
    out = []
    for k in range(NUM_OBSTACLES):
        jitter = np.clip(noise.pnoise1(phase + 0.37 * k, octaves=2) / 0.7, -1.0, 1.0)
        index = 10 + spacing * k + spacing // 2 + round(jitter * (spacing // 2 - 4))
        side = noise.pnoise1(phase + 50.0 + 0.61 * k, octaves=2)  # sign: which side; size: how far
        depth = min(abs(side) / 0.5, 1.0)
        lateral = np.sign(side or 1.0) * (
            OBSTACLE_MIN_OFFSET + depth * (OBSTACLE_MAX_OFFSET - OBSTACLE_MIN_OFFSET)
        )
        pos = 0.5 * (centre[index] + centre[(index + 1) % NUM_POINTS]) + lateral * normal[index]
        out.append([pos[0], pos[1], OBSTACLE_RADIUS])
    return np.asarray(out)


def _checkpoint_gates(centre: np.ndarray, cum_length: np.ndarray) -> np.ndarray:
    """Gate k: the line across the track, perpendicular to the centre line, at lap fraction k/C."""
    arcs = np.arange(NUM_CHECKPOINTS) / NUM_CHECKPOINTS * cum_length[-1]
    index = np.searchsorted(cum_length, arcs, side="right") - 1
    seg = np.roll(centre, -1, axis=0)[index] - centre[index]
    s = (arcs - cum_length[index]) / np.linalg.norm(seg, axis=1)
    unit = seg / np.linalg.norm(seg, axis=1, keepdims=True)
    normal = np.stack([unit[:, 1], -unit[:, 0]], axis=1)  # outwards, as in _mitre_boundaries
    middle = centre[index] + s[:, None] * seg
    half = TRACK_WIDTH / 2 * normal
    return np.stack([middle - half, middle + half], axis=1)


def _quads(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    return np.stack([inner, outer, np.roll(outer, -1, 0), np.roll(inner, -1, 0)], axis=1)


def _wrap(angle):
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _near_segments(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """For every quad and ray direction bucket, the boundary segments a ray could hit (a superset).

    A ray cast from a point p inside quad i (within ``circum`` of its centroid c) with a direction
    in bucket b travels at most RAY_RANGE px inside the cone of that bucket. A segment is kept when
    (1) its distance to c minus ``circum`` is at most RAY_RANGE (+ NEAR_MARGIN for a car that has
    just left its quad), and (2) the directions from c to the segment — an arc, widened by
    ``asin(circum / distance)`` to cover every p in the quad — overlap the bucket's cone. Both tests only ever keep too much, so casting against the kept
    segments gives exactly the same answer as casting against all of them.
    """
    segs = np.concatenate([np.concatenate([b, np.roll(b, -1, axis=0) - b], axis=1) for b in (inner, outer)])
    quads = _quads(inner, outer)
    centroid = quads.mean(axis=1)
    circum = np.linalg.norm(quads - centroid[:, None], axis=-1).max(axis=1)
    reach = circum + NEAR_MARGIN  # the car is within this distance of the centroid, even at a crash
    dist = _point_segment_distance(centroid, segs)  # (P, S)
    in_range = dist - reach[:, None] <= RAY_RANGE

    rel0 = segs[None, :, :2] - centroid[:, None]
    rel1 = rel0 + segs[None, :, 2:]
    a0 = np.arctan2(rel0[..., 1], rel0[..., 0])
    span = _wrap(np.arctan2(rel1[..., 1], rel1[..., 0]) - a0)
    seg_centre = a0 + span / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        widen = np.arcsin(np.clip(reach[:, None] / dist, 0.0, 1.0))
    close = dist <= reach[:, None] + 1e-6  # the segment touches the car's disc: any direction
    seg_half = np.where(close, np.pi, np.abs(span) / 2 + widen + 1e-3)

    bucket_width = 2 * np.pi / DIRECTION_BUCKETS
    cone_half = bucket_width / 2
    table = np.zeros((NUM_POINTS, DIRECTION_BUCKETS, 4, NEAR_SEGMENTS))
    for b in range(DIRECTION_BUCKETS):
        cone_centre = -np.pi + (b + 0.5) * bucket_width
        facing = np.abs(_wrap(seg_centre - cone_centre)) <= seg_half + cone_half
        for i in range(NUM_POINTS):
            keep = np.flatnonzero(in_range[i] & facing[i])
            if len(keep) > NEAR_SEGMENTS:
                raise _TooManySegments
            # Pad with zero-length segments at the quad itself: a ray never hits those.
            table[i, b, :, : len(keep)] = segs[keep].T
            table[i, b, :2, len(keep) :] = centroid[i][:, None]
    return table


class _TooManySegments(Exception):
    pass


def make_track(seed: int) -> Track:
    """Generate the track for ``seed`` (a non-negative int below 2**31).

    Same seed gives a bit-identical track; every seed gives a valid one (see module docstring).
    """
    if not is_int(seed):
        raise TrackError(f"track seed must be an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**31:
        raise TrackError(f"track seed must be in [0, 2**31), got {seed}")
    seed = int(seed)
    for attempt in range(MAX_ATTEMPTS):
        amplitude = RADIUS_AMPLITUDE * (1.0 - attempt / (MAX_ATTEMPTS - 1))  # last attempt: an ellipse
        centre = _centre_line(seed, amplitude)
        inner, outer = _mitre_boundaries(centre)
        if not _is_valid(centre, inner, outer):
            continue
        try:
            near = _near_segments(inner, outer)
        except _TooManySegments:
            continue
        break
    else:  # pragma: no cover - the ellipse is always valid; this guards future edits of the constants
        raise RuntimeError(f"no valid track for seed {seed} after {MAX_ATTEMPTS} attempts")
    seg_len = np.linalg.norm(np.roll(centre, -1, axis=0) - centre, axis=1)
    cum_length = np.concatenate([[0.0], np.cumsum(seg_len)])
    checkpoints = _checkpoint_gates(centre, cum_length)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    return Track(
        centre=f32(centre),
        inner=f32(inner),
        outer=f32(outer),
        quads=f32(_quads(inner, outer)),
        obstacles=f32(_place_obstacles(seed, centre)),
        checkpoints=f32(checkpoints),
        cum_length=f32(cum_length),
        near_segments=f32(near),
        seed=np.asarray(seed, dtype=np.int32),
    )


def stack_tracks(tracks: Sequence[Track]) -> Track:
    """Stack tracks along a new leading axis so one jitted env can drive on all of them."""
    if len(tracks) == 0:
        raise ValueError("stack_tracks needs at least one track")
    return Track(*(np.stack(field) for field in zip(*tracks)))


def make_tracks(seeds: Sequence[int]) -> Track:
    """Generate and stack the tracks for ``seeds``."""
    return stack_tracks([make_track(s) for s in seeds])
