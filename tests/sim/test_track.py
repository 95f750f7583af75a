"""Track generation: deterministic, valid for every seed, different across seeds, strict about seeds.

The validity checks use their own geometry (written here, not imported from carlab.sim.track), so a bug
in the generator's private checks cannot hide itself.
"""

from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import numpy as np
import pytest

from carlab.sim import reference
from carlab.sim.track import (
    CAR_RADIUS,
    NUM_CHECKPOINTS,
    NUM_OBSTACLES,
    NUM_POINTS,
    OBSTACLE_RADIUS,
    SCREEN_HEIGHT,
    SCREEN_WIDTH,
    TRACK_WIDTH,
    Track,
    TrackError,
    make_track,
    make_tracks,
    stack_tracks,
)

VALIDITY_SEEDS = range(500)
WIDTH_TOL = 0.01  # px; float32 corners of ~800 px carry ~5e-5 px of rounding each
APART_ARC = 150.0  # px of centre line beyond which two points count as distinct parts of the loop


class _Geometry(NamedTuple):
    """The fields of a Track the validity tests read (the ray tables are large; 500 stay cached)."""

    centre: np.ndarray
    inner: np.ndarray
    outer: np.ndarray
    obstacles: np.ndarray
    checkpoints: np.ndarray
    cum_length: np.ndarray
    seed: np.ndarray


@functools.cache
def _track(seed: int) -> _Geometry:
    track = make_track(seed)
    return _Geometry(*(getattr(track, name) for name in _Geometry._fields))


def _tracks(seeds) -> list[_Geometry]:
    return [_track(s) for s in seeds]


# ------------------------------------------------------------------------------------------------
# Independent geometry (float64).


def _segments(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end points (P, 2) of the closed polyline's segments."""
    return points, np.roll(points, -1, axis=0)


def _orient(a, b, c):
    """Twice the signed area of triangles (a, b, c), broadcast."""
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (
        c[..., 0] - a[..., 0]
    )


def _closed_segments_meet(a0, a1, b0, b1) -> np.ndarray:
    """Whether closed segments a (A,) and b (B,) share any point (touching counts). Returns (A, B)."""
    a0, a1 = a0[:, None], a1[:, None]
    b0, b1 = b0[None], b1[None]
    o1, o2 = _orient(a0, a1, b0), _orient(a0, a1, b1)
    o3, o4 = _orient(b0, b1, a0), _orient(b0, b1, a1)
    straddle = (o1 * o2 <= 0) & (o3 * o4 <= 0)
    # Collinear segments straddle trivially; they meet only if their bounding boxes overlap.
    lo_a, hi_a = np.minimum(a0, a1), np.maximum(a0, a1)
    lo_b, hi_b = np.minimum(b0, b1), np.maximum(b0, b1)
    boxes = np.all((lo_a <= hi_b) & (lo_b <= hi_a), axis=-1)
    return straddle & boxes


def _loop_gap(n: int) -> np.ndarray:
    """(n, n) distance between indices around a loop of n."""
    idx = np.arange(n)
    gap = np.abs(idx[:, None] - idx[None])
    return np.minimum(gap, n - gap)


def _point_in_convex_quads(points: np.ndarray, quads: np.ndarray) -> np.ndarray:
    """(N, Q) whether each point lies inside (or on) each convex quad (Q, 4, 2)."""
    a = quads[None]  # (1, Q, 4, 2)
    b = np.roll(quads, -1, axis=1)[None]
    p = points[:, None, None, :]  # (N, 1, 1, 2)
    side = _orient(a, b, np.broadcast_to(p, np.broadcast_shapes(p.shape, a.shape)))
    return np.all(side >= 0, axis=-1) | np.all(side <= 0, axis=-1)


def _quads(track) -> np.ndarray:
    inner, outer = track.inner.astype(np.float64), track.outer.astype(np.float64)
    return np.stack([inner, outer, np.roll(outer, -1, 0), np.roll(inner, -1, 0)], axis=1)


def _point_to_segments(points: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """(N, S) distances from points (N, 2) to segments p0 -> p1 (S, 2)."""
    d = p1 - p0
    rel = points[:, None] - p0[None]
    s = np.clip(np.sum(rel * d, -1) / np.maximum(np.sum(d * d, -1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(rel - s[..., None] * d, axis=-1)


# ------------------------------------------------------------------------------------------------
# Determinism and variety.


FIELDS = Track._fields


@pytest.mark.parametrize("seed", [0, 1, 17, 123456, 2**31 - 1])
def test_same_seed_gives_bit_identical_track(seed):
    a, b = make_track(seed), make_track(seed)
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"field {name} differs between two runs of seed {seed}"


def test_numpy_integer_seed_equals_python_int_seed():
    a, b = make_track(7), make_track(np.int64(7))
    assert all(getattr(a, n).tobytes() == getattr(b, n).tobytes() for n in FIELDS)


def test_different_seeds_give_different_tracks():
    seeds = range(200)
    centres = np.stack([_track(s).centre for s in seeds]).reshape(len(seeds), -1)
    same = np.all(centres[:, None] == centres[None], axis=-1)
    np.fill_diagonal(same, False)
    assert not same.any(), f"identical centre lines for seed pairs {np.argwhere(same)[:5].tolist()}"
    # Not just bitwise different: the shapes really differ (max point distance between any two).
    diff = np.abs(centres[:, None] - centres[None]).max(axis=-1)
    np.fill_diagonal(diff, np.inf)
    assert diff.min() > 1.0
    obstacles = np.stack([_track(s).obstacles for s in seeds]).reshape(len(seeds), -1)
    same_obs = np.all(obstacles[:, None] == obstacles[None], axis=-1)
    np.fill_diagonal(same_obs, False)
    assert not same_obs.any()


# ------------------------------------------------------------------------------------------------
# Shapes, dtypes, seeds.


def test_shapes_and_dtypes():
    t = make_track(3)
    assert t.centre.shape == t.inner.shape == t.outer.shape == (NUM_POINTS, 2) == (100, 2)
    assert t.obstacles.shape == (NUM_OBSTACLES, 3)
    assert t.checkpoints.shape == (NUM_CHECKPOINTS, 2, 2) == (10, 2, 2)
    assert t.cum_length.shape == (NUM_POINTS + 1,)
    assert t.seed.shape == () and int(t.seed) == 3
    for name in FIELDS:  # float32 geometry and int32 indices, so tracks jit without conversion
        assert getattr(t, name).dtype in (np.float32, np.int32), name
    for name in ("centre", "inner", "outer", "obstacles", "cum_length", "checkpoints"):
        assert getattr(t, name).dtype == np.float32, name
    assert t.seed.dtype == np.int32
    assert t.boundary_segments.shape == (2 * NUM_POINTS, 4)
    for name in FIELDS:
        assert np.all(np.isfinite(getattr(t, name))), name


def test_stack_tracks_shapes():
    tracks = [make_track(s) for s in (0, 1, 2)]
    stacked = stack_tracks(tracks)
    for name in FIELDS:
        single = getattr(tracks[0], name)
        assert getattr(stacked, name).shape == (3, *single.shape), name
        np.testing.assert_array_equal(getattr(stacked, name)[2], getattr(tracks[2], name))
    assert stacked.length.shape == (3,)
    np.testing.assert_array_equal(stacked.seed, [0, 1, 2])
    assert stacked.boundary_segments.shape == (3, 2 * NUM_POINTS, 4)
    np.testing.assert_array_equal(stacked.boundary_segments[1], tracks[1].boundary_segments)
    made = make_tracks([0, 1, 2])
    assert all(getattr(made, n).tobytes() == getattr(stacked, n).tobytes() for n in FIELDS)
    with pytest.raises(ValueError):
        stack_tracks([])


@pytest.mark.parametrize(
    "seed, words",
    [(-1, "[0, 2**31)"), (2**31, "[0, 2**31)"), (1.5, "int"), ("a", "int"), (True, "int"), (None, "int")],
)
def test_bad_seeds_raise_track_error(seed, words):
    with pytest.raises(TrackError) as info:
        make_track(seed)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "seed" in message and words in message


def test_largest_seed_is_accepted():
    assert int(make_track(2**31 - 1).seed) == 2**31 - 1


# ------------------------------------------------------------------------------------------------
# Validity over many seeds.


def test_centre_line_and_lengths():
    for track in _tracks(VALIDITY_SEEDS):
        c = track.centre.astype(np.float64)
        seg = np.linalg.norm(np.roll(c, -1, 0) - c, axis=1)
        assert seg.min() > 1.0  # no repeated points
        np.testing.assert_allclose(track.cum_length[1:], np.cumsum(seg), rtol=1e-5)
        assert track.cum_length[0] == 0.0
        # Clockwise on screen (y down) means a positive shoelace area.
        area = 0.5 * np.sum(c[:, 0] * np.roll(c[:, 1], -1) - np.roll(c[:, 0], -1) * c[:, 1])
        assert area > 0, int(track.seed)


def test_everything_inside_the_screen():
    tracks = _tracks(VALIDITY_SEEDS)
    pts = np.stack([np.concatenate([t.centre, t.inner, t.outer]) for t in tracks])
    assert pts[..., 0].min() >= 0 and pts[..., 0].max() <= SCREEN_WIDTH
    assert pts[..., 1].min() >= 0 and pts[..., 1].max() <= SCREEN_HEIGHT
    obs = np.stack([t.obstacles for t in tracks])
    assert np.all(obs[..., 0] - obs[..., 2] >= 0) and np.all(obs[..., 0] + obs[..., 2] <= SCREEN_WIDTH)
    assert np.all(obs[..., 1] - obs[..., 2] >= 0) and np.all(obs[..., 1] + obs[..., 2] <= SCREEN_HEIGHT)


def test_boundaries_are_simple_and_never_cross():
    n = NUM_POINTS
    gap = _loop_gap(n)
    for track in _tracks(VALIDITY_SEEDS):
        inner, outer = track.inner.astype(np.float64), track.outer.astype(np.float64)
        for name, boundary in (("inner", inner), ("outer", outer)):
            meets = _closed_segments_meet(*_segments(boundary), *_segments(boundary))
            bad = meets & (gap > 1)  # neighbours share an endpoint by construction
            assert not bad.any(), f"seed {int(track.seed)}: {name} segments {np.argwhere(bad)[0]} meet"
        cross = _closed_segments_meet(*_segments(inner), *_segments(outer))
        assert not cross.any(), f"seed {int(track.seed)}: inner meets outer at {np.argwhere(cross)[0]}"


def test_every_quad_is_forty_px_wide_and_convex():
    for track in _tracks(VALIDITY_SEEDS):
        c = track.centre.astype(np.float64)
        inner, outer = track.inner.astype(np.float64), track.outer.astype(np.float64)
        d = np.roll(c, -1, 0) - c
        unit = d / np.linalg.norm(d, axis=1, keepdims=True)
        normal = np.stack([-unit[:, 1], unit[:, 0]], axis=1)
        # Signed distance of each quad's four corners from its centre segment's line.
        for corner, sign in (
            (inner, 1.0),
            (np.roll(inner, -1, 0), 1.0),
            (outer, -1.0),
            (np.roll(outer, -1, 0), -1.0),
        ):
            dist = np.sum((corner - c) * normal, axis=1)
            np.testing.assert_allclose(
                sign * dist, TRACK_WIDTH / 2, atol=WIDTH_TOL, err_msg=str(int(track.seed))
            )
        # Boundary segments run the same way as the centre segment (no fold, no zero-length quad side).
        for boundary in (inner, outer):
            along = np.sum((np.roll(boundary, -1, 0) - boundary) * unit, axis=1)
            assert along.min() > 0.5, int(track.seed)
        quads = _quads(track)
        turn = _orient(quads, np.roll(quads, -1, 1), np.roll(quads, -2, 1))  # (P, 4)
        assert np.all(turn > 0) or np.all(turn < 0), f"seed {int(track.seed)}: a quad is not convex"


def test_distinct_parts_of_the_loop_stay_apart():
    for track in _tracks(VALIDITY_SEEDS):
        c = track.centre.astype(np.float64)
        arc = np.asarray(track.cum_length[:-1], dtype=np.float64)
        along = np.abs(arc[:, None] - arc[None])
        along = np.minimum(along, track.cum_length[-1] - along)
        dist = np.linalg.norm(c[:, None] - c[None], axis=-1)
        far = along > APART_ARC
        assert dist[far].min() > TRACK_WIDTH + 4 * CAR_RADIUS, f"seed {int(track.seed)} pinches"
        # And the drivable quads of distant parts never touch.
        quads = _quads(track)
        for part in (track.inner, track.outer):
            pts = part.astype(np.float64)
            inside = _point_in_convex_quads(pts, quads)  # (P, P): boundary point i in quad j
            gap = _loop_gap(NUM_POINTS)
            assert not (inside & (gap > 2)).any(), f"seed {int(track.seed)}: quads overlap"


def test_obstacles_are_on_the_track_and_leave_a_lane():
    for track in _tracks(VALIDITY_SEEDS):
        seed = int(track.seed)
        obs = track.obstacles.astype(np.float64)
        np.testing.assert_array_equal(obs[:, 2], OBSTACLE_RADIUS)
        inside = _point_in_convex_quads(obs[:, :2], _quads(track))
        assert inside.any(axis=1).all(), f"seed {seed}: an obstacle centre is off the track"
        inner = _point_to_segments(obs[:, :2], *_segments(track.inner.astype(np.float64))).min(axis=1)
        outer = _point_to_segments(obs[:, :2], *_segments(track.outer.astype(np.float64))).min(axis=1)
        lane = np.maximum(inner, outer) - OBSTACLE_RADIUS
        assert lane.min() > 2 * CAR_RADIUS, f"seed {seed}: lane of {lane.min():.2f} px"
        # Obstacles never combine into a wall: any two are more than a track width apart.
        pair = np.linalg.norm(obs[:, None, :2] - obs[None, :, :2], axis=-1)
        np.fill_diagonal(pair, np.inf)
        assert pair.min() > TRACK_WIDTH + 2 * OBSTACLE_RADIUS, seed
        # The start line is clear: a car at rest there touches nothing, even a few steps ahead.
        start = track.centre[:3].astype(np.float64)
        gap = np.linalg.norm(start[:, None] - obs[None, :, :2], axis=-1)
        assert gap.min() > OBSTACLE_RADIUS + CAR_RADIUS + 10, seed


def test_ten_checkpoints_every_tenth_of_a_lap():
    for track in _tracks(VALIDITY_SEEDS):
        gates = track.checkpoints.astype(np.float64)
        assert gates.shape == (NUM_CHECKPOINTS, 2, 2) == (10, 2, 2)
        # Gate 0 is the start/finish line through centre point 0.
        assert np.allclose(gates[0].mean(axis=0), track.centre[0], atol=1e-3)
        # Each gate sits where the env pays the checkpoint (floor(best_progress * 10), by arc
        # length): its midpoint has lap fraction k/10, and it spans the 40 px track.
        for k, gate in enumerate(gates):
            middle = gate.mean(axis=0)
            fraction = reference.track_progress(track, *middle)
            error = min(abs(fraction - k / NUM_CHECKPOINTS), 1 - abs(fraction - k / NUM_CHECKPOINTS))
            assert error < 1e-5, f"seed {int(track.seed)} gate {k}: lap fraction {fraction:.5f}"
            assert abs(np.linalg.norm(gate[1] - gate[0]) - 40.0) < 1e-3


def test_all_pairs_checked_helper_catches_a_crossing():
    """The geometry helpers above can fail: a figure-eight is caught, a square is not."""
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    eight = np.array([[0.0, 0.0], [1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    gap = _loop_gap(4)
    assert not (_closed_segments_meet(*_segments(square), *_segments(square)) & (gap > 1)).any()
    assert (_closed_segments_meet(*_segments(eight), *_segments(eight)) & (gap > 1)).any()
    assert list(
        itertools.chain(*_point_in_convex_quads(np.array([[0.5, 0.5], [2.0, 0.5]]), square[None]))
    ) == [
        True,
        False,
    ]
