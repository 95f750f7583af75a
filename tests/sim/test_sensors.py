"""The jitted sensors agree with the brute-force NumPy oracle in carlab.sim.reference.

States are drawn inside random quads of many tracks; the jitted functions run on all of them in one
vmapped call, the oracle looks at every segment, obstacle and quad in float64.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.sim import reference, sensors
from carlab.sim.env import EnvParams, EnvState, get_obs
from carlab.sim.track import CAR_RADIUS, NUM_POINTS, RAY_RANGE, TRACK_WIDTH, make_track, make_tracks

NUM_TRACKS = 50
STATES_PER_TRACK = 200
RAY_TOL = 1e-3  # px
PERTURB_PX = 1e-4  # px, a few float32 roundings of a coordinate near 800 px
PERTURB_RAD = 2e-6  # rad, a few float32 roundings of a heading near pi, plus cos/sin error
PROGRESS_TOL = 1e-5  # lap fraction (float32 arc lengths of ~1600 px)


@functools.cache
def _track(seed):
    return make_track(seed)


def _quad_point(track, quad, u, v):
    """Bilinear point of quad ``quad``: u across (inner -> outer), v along (i -> i + 1)."""
    j = (quad + 1) % NUM_POINTS
    inner, outer = track.inner.astype(np.float64), track.outer.astype(np.float64)
    a = (1 - u)[:, None] * inner[quad] + u[:, None] * outer[quad]
    b = (1 - u)[:, None] * inner[j] + u[:, None] * outer[j]
    return (1 - v)[:, None] * a + v[:, None] * b


@functools.cache
def _states():
    """(track_id, quad, x, y, angle) for NUM_TRACKS x STATES_PER_TRACK random states, as float32."""
    rng = np.random.default_rng(2024)
    n = NUM_TRACKS * STATES_PER_TRACK
    track_id = np.repeat(np.arange(NUM_TRACKS), STATES_PER_TRACK)
    quad = rng.integers(0, NUM_POINTS, size=n)
    u, v = rng.uniform(0.02, 0.98, size=(2, n))
    xy = np.concatenate(
        [
            _quad_point(_track(t), quad[track_id == t], u[track_id == t], v[track_id == t])
            for t in range(NUM_TRACKS)
        ]
    )
    angle = rng.uniform(-np.pi, np.pi, size=n)
    f32 = lambda a: np.asarray(a, dtype=np.float32)
    return track_id.astype(np.int32), quad.astype(np.int32), f32(xy[:, 0]), f32(xy[:, 1]), f32(angle)


@functools.cache
def _tracks():
    return jax.tree.map(jnp.asarray, make_tracks(range(NUM_TRACKS)))


def _per_track(fn, track_id, *arrays):
    """Run the NumPy oracle ``fn(track, *arrays)`` track by track and put the results back in order."""
    parts = [fn(_track(t), *(a[track_id == t] for a in arrays)) for t in np.unique(track_id)]
    return np.concatenate(parts)


@jax.jit
@functools.partial(jax.vmap, in_axes=(None, 0, 0, 0, 0, 0))
def _jit_rays(tracks, track_id, quad, x, y, angle):
    return sensors.cast_rays(tracks, track_id, quad, x, y, angle)


@jax.jit
@functools.partial(jax.vmap, in_axes=(None, 0, 0, 0, 0))
def _jit_locate(tracks, track_id, hint, x, y):
    return sensors.locate(tracks, track_id, x, y, hint)


@jax.jit
@functools.partial(jax.vmap, in_axes=(None, 0, 0, 0))
def _jit_hits(tracks, track_id, x, y):
    return sensors.hits_obstacle(tracks, track_id, x, y)


_rays1 = jax.jit(sensors.cast_rays)


@functools.cache
def _oracle_rays():
    track_id, _, x, y, angle = _states()
    return _per_track(reference.cast_rays_batch, track_id, x, y, angle)


def _rounding_explains(track, x, y, angle, ray, got) -> bool:
    """Whether ``got`` is the exact answer for an input within float32 rounding of (x, y, angle).

    A ray that grazes a wall or an obstacle at a shallow angle turns a 1e-5 px rounding of its
    origin into a larger change of its length; such a ray is still right if the oracle, shifted by
    up to PERTURB_PX / PERTURB_RAD, spans the jitted value. A ray that slips through a wall is not:
    moving it by 1e-4 px changes nothing about the wall it must hit.
    """
    steps = np.array([-1.0, 0.0, 1.0])
    dx, dy, da = (a.ravel() for a in np.meshgrid(steps * PERTURB_PX, steps * PERTURB_PX, steps * PERTURB_RAD))
    values = reference.cast_rays_batch(track, x + dx, y + dy, angle + da)[:, ray]
    return bool(values.min() - RAY_TOL <= got <= values.max() + RAY_TOL)


def _check_rays(track_ids, quads, x, y, angle, got, want, *, max_rounded_fraction=1e-3) -> float:
    """Assert jitted rays equal the oracle to RAY_TOL px, or to within float32 rounding of the input
    for a few ill-conditioned (grazing) rays. Returns the largest raw error."""
    err = np.abs(np.asarray(got, np.float64) - want)
    for i, ray in np.argwhere(err > RAY_TOL):
        t = int(track_ids[i])
        assert _rounding_explains(_track(t), float(x[i]), float(y[i]), float(angle[i]), ray, got[i, ray]), (
            f"ray {ray} of the car on track {t}, quad {quads[i]}, x={x[i]!r}, y={y[i]!r}, angle={angle[i]!r}: "
            f"got {got[i, ray]}, oracle {want[i, ray]} (off by {err[i, ray]:.3g} px)"
        )
    assert np.mean(err > RAY_TOL) <= max_rounded_fraction
    return float(err.max())


def _progress_error(a, b):
    """Distance between lap fractions, mod 1."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)) % 1.0
    return np.minimum(d, 1.0 - d)


# ------------------------------------------------------------------------------------------------
# The oracle itself: the batched path equals the scalar one.


def test_batched_oracle_equals_scalar_oracle():
    track_id, quad, x, y, angle = _states()
    rays = _oracle_rays()
    picks = np.random.default_rng(0).choice(len(x), size=25, replace=False)
    for i in picks:
        track = _track(int(track_id[i]))
        scalar = reference.cast_rays(track, float(x[i]), float(y[i]), float(angle[i]))
        np.testing.assert_allclose(rays[i], scalar, atol=1e-9)
        assert reference.containing_quad(track, float(x[i]), float(y[i])) == quad[i]
        batch_quad = reference.containing_quad_batch(track, x[i : i + 1], y[i : i + 1])
        assert batch_quad[0] == quad[i]
        progress = reference.track_progress_batch(track, x[i : i + 1], y[i : i + 1])[0]
        assert progress == pytest.approx(reference.track_progress(track, float(x[i]), float(y[i])), abs=1e-12)
    # Off the track both fall back to the nearest centre segment, and agree.
    track = _track(0)
    for px, py in [(5.0, 5.0), (400.0, 300.0), (790.0, 20.0)]:
        assert reference.containing_quad(track, px, py) is None
        assert reference.containing_quad_batch(track, [px], [py])[0] == -1
        assert reference.track_progress_batch(track, [px], [py])[0] == pytest.approx(
            reference.track_progress(track, px, py), abs=1e-12
        )


# ------------------------------------------------------------------------------------------------
# Rays.


def test_rays_agree_with_oracle_on_ten_thousand_states():
    track_id, quad, x, y, angle = _states()
    assert len(x) >= 10_000
    got = np.asarray(_jit_rays(_tracks(), track_id, quad, x, y, angle), dtype=np.float64)
    want = _oracle_rays()
    assert got.shape == want.shape == (len(x), sensors.NUM_RAYS)
    _check_rays(track_id, quad, x, y, angle, got, want)
    # The states are not trivial: rays hit walls at many ranges, obstacles, and sometimes nothing.
    assert (want < RAY_RANGE).mean() > 0.5 and (want == RAY_RANGE).any() and want.min() < 5.0


def test_env_get_obs_agrees_with_oracle():
    track_id, quad, x, y, angle = _states()
    rng = np.random.default_rng(5)
    speed = rng.uniform(0.0, 5.0, size=len(x)).astype(np.float32)
    zeros = np.zeros(len(x), np.float32)
    state = EnvState(
        x=jnp.asarray(x),
        y=jnp.asarray(y),
        speed=jnp.asarray(speed),
        angle=jnp.asarray(angle),
        quad=jnp.asarray(quad),
        progress=jnp.asarray(zeros),
        best_progress=jnp.asarray(zeros),
        checkpoints=jnp.zeros(len(x), jnp.int32),
        time=jnp.zeros(len(x), jnp.int32),
        track_id=jnp.asarray(track_id),
    )
    params = EnvParams(tracks=_tracks())
    obs = np.asarray(jax.jit(jax.vmap(get_obs, in_axes=(0, None)))(state, params))
    assert obs.shape == (len(x), 6) and obs.dtype == np.float32
    _check_rays(track_id, quad, x, y, angle, obs[:, :5].astype(np.float64) * RAY_RANGE, _oracle_rays())
    np.testing.assert_allclose(obs[:, 5], speed / 5.0, atol=1e-7)
    assert obs.min() >= 0.0 and obs.max() <= 1.0


def test_cast_rays_jit_equals_no_jit():
    track_id, quad, x, y, angle = _states()
    tracks = _tracks()
    for i in range(0, len(x), len(x) // 5):
        args = (tracks, track_id[i], quad[i], x[i], y[i], angle[i])
        jitted = _rays1(*args)
        with jax.disable_jit():
            plain = sensors.cast_rays(*args)
        # XLA may fuse (and so round) differently from op-by-op execution: agree to RAY_TOL.
        np.testing.assert_allclose(np.asarray(jitted), np.asarray(plain), rtol=0, atol=RAY_TOL)
        _check_rays(
            track_id[i : i + 1],
            quad[i : i + 1],
            x[i : i + 1],
            y[i : i + 1],
            angle[i : i + 1],
            np.asarray(plain, np.float64)[None],
            _oracle_rays()[i : i + 1],
            max_rounded_fraction=1.0,
        )


def test_rays_from_quad_corners_at_bucket_edges_agree_with_oracle():
    """Adversarial states for any per-quad/per-direction segment table: every quad's four corners
    (nudged 0.01 px inside), with ray directions on and next to multiples of 11.25 and 45 degrees."""
    rng = np.random.default_rng(11)
    seeds = range(0, NUM_TRACKS, 2)
    edges = np.deg2rad(np.arange(-180.0, 180.0, 11.25))
    for seed in seeds:
        track = _track(seed)
        quad = np.repeat(np.arange(NUM_POINTS), 4)
        u = np.tile([0.0, 1.0, 1.0, 0.0], NUM_POINTS)
        v = np.tile([0.0, 0.0, 1.0, 1.0], NUM_POINTS)
        centre = _quad_point(track, quad, np.full_like(u, 0.5), np.full_like(v, 0.5))
        corner = _quad_point(track, quad, u, v)
        towards = centre - corner
        xy = corner + 0.01 * towards / np.linalg.norm(towards, axis=1, keepdims=True)
        # Put one of the five rays (at random) on a bucket edge, or 1e-5 rad either side of one.
        ray = np.deg2rad(np.asarray(sensors.RAY_ANGLES_DEG))[rng.integers(0, sensors.NUM_RAYS, len(quad))]
        jitter = rng.choice([-1e-5, 0.0, 1e-5], size=len(quad))
        angle = edges[rng.integers(0, len(edges), len(quad))] - ray + jitter
        angle = (angle + np.pi) % (2 * np.pi) - np.pi
        x, y, angle = (np.asarray(a, dtype=np.float32) for a in (xy[:, 0], xy[:, 1], angle))
        assert np.all(reference.containing_quad_batch(track, x, y) >= 0)
        # The oracle's own quad may be a neighbour on a shared edge; the env uses the generating one.
        ids = np.full(len(quad), seed, dtype=np.int32)
        got = np.asarray(_jit_rays(_tracks(), ids, quad.astype(np.int32), x, y, angle), dtype=np.float64)
        want = reference.cast_rays_batch(track, x, y, angle)
        _check_rays(ids, quad, x, y, angle, got, want, max_rounded_fraction=1e-2)


def test_rays_aimed_exactly_at_wall_joints_do_not_slip_through():
    """Rays aimed (in float32) straight at the joints between boundary segments still hit the wall.

    A joint is where float32 rounding could leave both neighbouring segments "missed" (u just above
    1 on one and just below 0 on the next), letting the ray see through a closed wall.
    """
    rng = np.random.default_rng(12)
    rays = np.deg2rad(np.asarray(sensors.RAY_ANGLES_DEG))
    for seed in range(0, NUM_TRACKS, 5):
        track = _track(seed)
        n = 1000
        quad = rng.integers(0, NUM_POINTS, size=n)
        origin = _quad_point(track, quad, *rng.uniform(0.05, 0.95, size=(2, n))).astype(np.float32)
        # A joint a few quads ahead or behind on either wall, well within range.
        wall = np.where(rng.uniform(size=n) < 0.5, 0, 1)
        joint_index = (quad + rng.integers(-6, 7, size=n)) % NUM_POINTS
        joints = np.stack([track.inner, track.outer])[wall, joint_index].astype(np.float64)
        ray = rng.integers(0, sensors.NUM_RAYS, size=n)
        to_joint = joints - origin
        angle = np.arctan2(to_joint[:, 1], to_joint[:, 0]) - rays[ray]
        angle = ((angle + np.pi) % (2 * np.pi) - np.pi).astype(np.float32)
        x, y = origin[:, 0], origin[:, 1]
        ids = np.full(n, seed, dtype=np.int32)
        got = np.asarray(_jit_rays(_tracks(), ids, quad.astype(np.int32), x, y, angle), dtype=np.float64)
        want = reference.cast_rays_batch(track, x, y, angle)
        # Rays at joints that are silhouette corners graze them: many are ill-conditioned.
        _check_rays(ids, quad, x, y, angle, got, want, max_rounded_fraction=5e-2)


def test_obs_after_a_crash_agree_with_oracle():
    """A car that just left the track keeps its last quad; its final observation must still be exact.

    The car moves at most max_speed (5 px) per step, so it ends at most 5 px beyond a wall of the
    quad it was in (or of the next quads, when it leaves through a corner).
    """
    rng = np.random.default_rng(3)
    seeds = range(0, NUM_TRACKS, 2)
    for seed in seeds:
        track = _track(seed)
        n = 400
        quad = rng.integers(0, NUM_POINTS, size=n)
        v = rng.uniform(0.0, 1.0, size=n)
        u = rng.choice([0.0, 1.0], size=n)  # on the inner or the outer wall
        on_wall = _quad_point(track, quad, u, v)
        inside = _quad_point(track, quad, np.full(n, 0.5), v)
        away = on_wall - inside
        away /= np.linalg.norm(away, axis=1, keepdims=True)
        xy = on_wall + rng.uniform(0.01, 5.0, size=(n, 1)) * away
        x, y = (np.asarray(a, dtype=np.float32) for a in (xy[:, 0], xy[:, 1]))
        angle = rng.uniform(-np.pi, np.pi, size=n).astype(np.float32)
        assert np.all(reference.containing_quad_batch(track, x, y) == -1)
        ids = np.full(n, seed, dtype=np.int32)
        got = np.asarray(_jit_rays(_tracks(), ids, quad.astype(np.int32), x, y, angle), dtype=np.float64)
        want = reference.cast_rays_batch(track, x, y, angle)
        _check_rays(ids, quad, x, y, angle, got, want, max_rounded_fraction=1e-2)


def test_ray_straight_at_an_obstacle_has_the_analytic_length():
    """A car 10 px short of an obstacle's edge, heading at its centre, sees it 10 px away ahead."""
    checked = 0
    tracks = _tracks()
    for seed in range(10):
        track = _track(seed)
        c = track.centre.astype(np.float64)
        for cx, cy, radius in track.obstacles.astype(np.float64):
            # Approach along the track direction at the obstacle, so the walls are far down the ray.
            quad = reference.containing_quad(track, cx, cy)
            direction = c[(quad + 1) % NUM_POINTS] - c[quad]
            heading = math.atan2(direction[1], direction[0])
            gap = 10.0
            x = cx - (radius + gap) * math.cos(heading)
            y = cy - (radius + gap) * math.sin(heading)
            car_quad = reference.containing_quad(track, x, y)
            assert car_quad is not None
            got = np.asarray(
                _rays1(tracks, seed, car_quad, np.float32(x), np.float32(y), np.float32(heading))
            )
            want = reference.cast_rays(track, x, y, heading)
            assert got[2] == pytest.approx(gap, abs=1e-3)
            assert want[2] == pytest.approx(gap, abs=1e-9)
            # Inside the obstacle every ray reads zero.
            inside = _rays1(tracks, seed, quad, np.float32(cx), np.float32(cy), np.float32(heading))
            np.testing.assert_array_equal(np.asarray(inside), 0.0)
            np.testing.assert_array_equal(reference.cast_rays(track, cx, cy, heading), 0.0)
            checked += 1
    assert checked == 10 * 5


def test_ray_square_on_to_a_wall_reads_half_the_track_width():
    """From the centre line, facing a wall square-on, the middle ray reads TRACK_WIDTH / 2."""
    tracks = _tracks()
    checked = 0
    for seed in range(5):
        track = _track(seed)
        c = track.centre.astype(np.float64)
        for i in range(NUM_POINTS):
            mid = 0.5 * (c[i] + c[(i + 1) % NUM_POINTS])
            if np.linalg.norm(track.obstacles[:, :2] - mid, axis=1).min() < 2 * TRACK_WIDTH:
                continue  # an obstacle might be in the way
            d = c[(i + 1) % NUM_POINTS] - c[i]
            for heading in (math.atan2(-d[0], d[1]), math.atan2(d[0], -d[1])):  # outer, inner wall
                got = _rays1(tracks, seed, i, *np.float32([*mid, heading]))
                assert float(got[2]) == pytest.approx(TRACK_WIDTH / 2, abs=1e-3), (seed, i)
                checked += 1
    assert checked > 300


# ------------------------------------------------------------------------------------------------
# Where the car is.


def test_locate_agrees_with_oracle_quad_and_progress():
    track_id, quad, x, y, _ = _states()
    found, on_track, fraction = _jit_locate(_tracks(), track_id, quad, x, y)
    assert np.all(np.asarray(on_track))
    want_quad = _per_track(reference.containing_quad_batch, track_id, x, y)
    np.testing.assert_array_equal(want_quad, quad)  # the generator really put the points in those quads
    np.testing.assert_array_equal(np.asarray(found), quad)
    want = _per_track(reference.track_progress_batch, track_id, x, y)
    err = _progress_error(fraction, want)
    assert err.max() <= PROGRESS_TOL, f"max progress error {err.max():.3g}"
    fraction = np.asarray(fraction)
    assert fraction.min() >= 0.0 and fraction.max() < 1.0


def test_locate_finds_the_quad_from_a_nearby_hint():
    """The hint may be up to LOCATE_WINDOW quads off (a car crosses quads while moving)."""
    track_id, quad, x, y, _ = _states()
    rng = np.random.default_rng(1)
    offset = rng.integers(-sensors.LOCATE_WINDOW, sensors.LOCATE_WINDOW + 1, size=len(x))
    hint = ((quad + offset) % NUM_POINTS).astype(np.int32)
    found, on_track, fraction = _jit_locate(_tracks(), track_id, hint, x, y)
    assert np.all(np.asarray(on_track))
    np.testing.assert_array_equal(np.asarray(found), quad)
    want = _per_track(reference.track_progress_batch, track_id, x, y)
    assert _progress_error(fraction, want).max() <= PROGRESS_TOL


def test_lap_fraction_agrees_with_oracle():
    track_id, quad, x, y, _ = _states()
    tracks = _tracks()
    fn = jax.jit(jax.vmap(sensors.lap_fraction, in_axes=(None, 0, 0, 0, 0)))
    got = fn(tracks, track_id, x, y, quad)
    want = _per_track(reference.track_progress_batch, track_id, x, y)
    assert _progress_error(got, want).max() <= PROGRESS_TOL
    # The start of every centre segment sits at cum_length / length.
    for seed in (0, 9):
        track = _track(seed)
        i = np.arange(NUM_POINTS, dtype=np.int32)
        ids = np.full(NUM_POINTS, seed, dtype=np.int32)
        got = fn(tracks, ids, track.centre[:, 0], track.centre[:, 1], i)
        want = track.cum_length[:-1].astype(np.float64) / track.cum_length[-1]
        assert _progress_error(got, want).max() <= PROGRESS_TOL


@pytest.mark.parametrize("side", ["outer", "inner"])
def test_just_off_the_track_is_off_in_both(side):
    """Points half a pixel beyond a wall are off the track for locate and the oracle; just inside, on."""
    n = 0
    for seed in range(10):
        track = _track(seed)
        wall = getattr(track, side).astype(np.float64)
        c = track.centre.astype(np.float64)
        mid_wall = 0.5 * (wall + np.roll(wall, -1, 0))
        mid_centre = 0.5 * (c + np.roll(c, -1, 0))
        away = mid_wall - mid_centre
        away /= np.linalg.norm(away, axis=1, keepdims=True)
        for beyond, expect in ((0.5, False), (-0.5, True)):
            pts = (mid_wall + beyond * away).astype(np.float32)
            ids = np.full(NUM_POINTS, seed, dtype=np.int32)
            hints = np.arange(NUM_POINTS, dtype=np.int32)
            _, on_track, _ = _jit_locate(_tracks(), ids, hints, pts[:, 0], pts[:, 1])
            assert np.all(np.asarray(on_track) == expect), (seed, side, beyond)
            oracle = reference.containing_quad_batch(track, pts[:, 0], pts[:, 1]) >= 0
            assert np.all(oracle == expect), (seed, side, beyond)
            n += len(pts)
    assert n == 10 * 2 * NUM_POINTS


def test_far_off_the_track_keeps_the_hint():
    quad, on_track, _ = sensors.locate(_tracks(), 2, jnp.float32(400.0), jnp.float32(300.0), 17)
    assert not bool(on_track) and int(quad) == 17
    assert reference.containing_quad(_track(2), 400.0, 300.0) is None


def test_obstacle_collisions_agree():
    """Around every obstacle: inside or within CAR_RADIUS of it is a crash, 0.1 px further is not."""
    rng = np.random.default_rng(7)
    for seed in range(20):
        track = _track(seed)
        points, crash = [], []
        for cx, cy, radius in track.obstacles.astype(np.float64):
            for dist, expect in (
                (0.0, True),
                (radius, True),
                (radius + CAR_RADIUS - 0.1, True),
                (radius + CAR_RADIUS + 0.1, False),
            ):
                for theta in rng.uniform(-np.pi, np.pi, size=8):
                    points.append((cx + dist * math.cos(theta), cy + dist * math.sin(theta)))
                    crash.append(expect)
        points, crash = np.asarray(points), np.asarray(crash)
        ids = np.full(len(points), seed, dtype=np.int32)
        got = np.asarray(_jit_hits(_tracks(), ids, *points.astype(np.float32).T))
        np.testing.assert_array_equal(got, crash)
        oracle = np.array([reference.touches_obstacle(track, px, py) for px, py in points])
        np.testing.assert_array_equal(oracle, crash)
        assert not any(reference.is_on_track(track, px, py) for px, py in points[crash])


def test_hits_obstacle_on_random_states_agrees_with_oracle():
    track_id, _, x, y, _ = _states()
    got = np.asarray(_jit_hits(_tracks(), track_id, x, y))
    want = np.array(
        [
            reference.touches_obstacle(_track(int(t)), float(px), float(py))
            for t, px, py in zip(track_id, x, y)
        ]
    )
    np.testing.assert_array_equal(got, want)
    assert want.any() and not want.all()
