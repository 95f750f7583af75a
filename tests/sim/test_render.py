"""The offscreen renderer: frames show what they are given, where they are given it."""

import math
import time

import jax.numpy as jnp
import numpy as np
import pytest

from carlab.sim import render
from carlab.sim.env import EnvParams
from carlab.sim.gym_env import RaceEnv
from carlab.sim.render import CAR_LENGTH, Renderer, render_frame, save_png
from carlab.sim.sensors import RAY_ANGLES_DEG
from carlab.sim.track import make_track

TRACK = make_track(0)
REACH = CAR_LENGTH / 2 * math.sqrt(1.25) + 3  # px: half diagonal of the car plus line width


@pytest.fixture(scope="module")
def renderer():
    return Renderer()


def _changed(a, b):
    """(row, col) coordinates of pixels that differ between two frames."""
    return np.argwhere(np.any(a != b, axis=-1))


def _near(coords, x, y, radius):
    return np.hypot(coords[:, 1] - x, coords[:, 0] - y) <= radius


def _start_car(track=TRACK):
    env = RaceEnv(track_seed=int(track.seed))
    env.reset()
    return env


def test_frame_shape_and_dtype(renderer):
    frame = renderer.draw(TRACK, _start_car().car)
    assert frame.shape == (600, 800, 3) and frame.dtype == np.uint8
    assert frame.flags.writeable and frame.flags.c_contiguous
    assert Renderer(400, 300).draw(TRACK, _start_car().car).shape == (300, 400, 3)


def test_car_pixels_move_with_the_car(renderer):
    env = _start_car()
    before_car = env.car
    before = renderer.draw(TRACK, before_car)
    for _ in range(25):
        env.step(np.array([0.0, 1.0], np.float32))
    after_car = env.car
    after = renderer.draw(TRACK, after_car)
    assert np.hypot(*(after_car[:2] - before_car[:2])) > 2 * REACH  # the two drawings do not overlap
    coords = _changed(before, after)
    near_old = _near(coords, *before_car[:2], REACH)
    near_new = _near(coords, *after_car[:2], REACH)
    assert near_old.sum() > 50 and near_new.sum() > 50  # a 20x10 car is 200 px
    assert np.all(near_old | near_new), "pixels changed away from the car"


def test_car_is_drawn_on_the_background(renderer):
    env = _start_car()
    x, y = env.car[:2]
    frame = renderer.draw(TRACK, env.car)
    empty = renderer.draw(TRACK, np.array([-100.0, -100.0, 0.0, 0.0]))  # off screen
    assert np.any(frame[int(y), int(x)] != empty[int(y), int(x)])
    assert np.array_equal(empty, render.surface_to_array(renderer.background(TRACK)))


def test_env_state_and_jax_arrays_are_accepted(renderer):
    env = _start_car()
    from_rows = renderer.draw(TRACK, env.car)
    from_state = renderer.draw(TRACK, env.state)
    jax_track = type(TRACK)(*(jnp.asarray(f) for f in TRACK))
    from_jax = renderer.draw(jax_track, jnp.asarray(env.car))
    np.testing.assert_array_equal(from_rows, from_state)
    np.testing.assert_array_equal(from_rows, from_jax)


def test_rays_end_at_their_hit_points(renderer):
    env = _start_car()
    x, y, _, angle = env.car
    distances = np.array([40.0, 60.0, 80.0, 60.0, 40.0])
    plain = renderer.draw(TRACK, env.car)
    with_rays = renderer.draw(TRACK, env.car, rays=distances)
    coords = _changed(plain, with_rays)
    for offset, dist in zip(RAY_ANGLES_DEG, distances):
        theta = angle + math.radians(offset)
        end = (x + dist * math.cos(theta), y + dist * math.sin(theta))
        assert _near(coords, *end, 2).any(), f"no ray drawn to {end}"
        beyond = (x + (dist + 12) * math.cos(theta), y + (dist + 12) * math.sin(theta))
        assert not _near(coords, *beyond, 3).any(), "ray drawn past its hit point"


def test_multiple_cars_highlight_one(renderer):
    cars = np.array([[200.0, 100.0, 0, 0.0], [400.0, 120.0, 0, 1.0], [600.0, 100.0, 0, -1.0]])
    frame = renderer.draw(TRACK, cars, highlight=0, others_alpha=0.35)
    background = render.surface_to_array(renderer.background(TRACK))
    assert tuple(frame[100, 200]) == render.CAR  # the highlighted car is opaque
    for x, y in cars[1:, :2].astype(int):
        pixel, grass = frame[y, x].astype(int), background[y, x].astype(int)
        expected = grass + 0.35 * (np.array(render.OTHER_CAR) - grass)  # blended, not opaque
        assert np.abs(pixel - expected).max() <= 3
    # Highlighting another car swaps who is bold.
    swapped = renderer.draw(TRACK, cars, highlight=1)
    assert tuple(swapped[120, 400]) == render.CAR and tuple(swapped[100, 200]) != render.CAR


def test_other_cars_rays_are_faint(renderer):
    cars = np.array([[200.0, 100.0, 0, 0.0], [600.0, 100.0, 0, 0.0]])
    rays = np.full((2, 5), 50.0)
    frame = renderer.draw(TRACK, cars, rays=rays, highlight=0)
    tip = lambda x: (100, int(x + 50))
    assert tuple(frame[tip(200)]) == render.RAY
    background = render.surface_to_array(renderer.background(TRACK))[tip(600)].astype(int)
    expected = background + 0.35 * (np.array(render.RAY) - background)
    assert np.abs(frame[tip(600)].astype(int) - expected).max() <= 3
    with pytest.raises(ValueError, match="rays"):
        renderer.draw(TRACK, cars, rays=np.zeros((3, 5)))


def test_polyline_overlay(renderer):
    env = _start_car()
    plain = renderer.draw(TRACK, env.car)
    points = np.stack([np.linspace(100, 300, 20), np.full(20, 300.0)], axis=1)
    overlaid = renderer.draw(TRACK, env.car, polylines=[(points, (0, 255, 255))])
    coords = _changed(plain, overlaid)
    assert len(coords) > 150
    assert np.all(np.abs(coords[:, 0] - 300) <= 2) and coords[:, 1].min() >= 98 and coords[:, 1].max() <= 302
    assert tuple(overlaid[300, 200]) == (0, 255, 255)
    # Non-finite points (a diverged imagination) are dropped, not drawn at random places.
    points[5] = np.nan
    renderer.draw(TRACK, env.car, polylines=[(points, (0, 255, 255)), (points[:1], (255, 0, 0))])


def test_ghost_is_a_translucent_outline(renderer):
    env = _start_car()
    ghost = np.array([400.0, 300.0, 0.0, 0.5])  # the infield, far from the car
    plain = renderer.draw(TRACK, env.car)
    with_ghost = renderer.draw(TRACK, env.car, ghost=ghost)
    coords = _changed(plain, with_ghost)
    assert len(coords) > 30 and np.all(_near(coords, 400, 300, REACH))
    assert np.array_equal(with_ghost[300, 400], plain[300, 400])  # outline only: the middle is untouched
    assert not any(tuple(with_ghost[r, c]) == render.GHOST for r, c in coords)  # translucent


def test_hud_draws_top_left_only(renderer):
    env = _start_car()
    plain = renderer.draw(TRACK, env.car)
    with_hud = renderer.draw(TRACK, env.car, hud={"speed": 1.234, "laps": 2})
    coords = _changed(plain, with_hud)
    assert len(coords) > 100 and coords[:, 0].max() < 60 and coords[:, 1].max() < 200


def test_background_is_cached_per_track(renderer):
    assert renderer.background(TRACK) is renderer.background(make_track(0))
    other = make_track(1)
    assert renderer.background(other) is not renderer.background(TRACK)
    assert np.any(renderer.draw(other, _start_car().car) != renderer.draw(TRACK, _start_car().car))


def test_draw_is_fast(renderer):
    cars = np.array([[200.0, 100.0, 0, 0.0], [400.0, 120.0, 0, 1.0]])
    renderer.draw(TRACK, cars, rays=np.full((2, 5), 50.0), hud={"a": 1})
    start = time.perf_counter()
    for _ in range(20):
        renderer.draw(TRACK, cars, rays=np.full((2, 5), 50.0), hud={"a": 1})
    # About 4 ms here; the bound is loose because the test machine's CPUs are shared.
    assert (time.perf_counter() - start) / 20 < 0.05


def test_bad_cars_are_rejected(renderer):
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        renderer.draw(TRACK, np.zeros((2, 3)))


def test_render_frame_and_save_png(tmp_path):
    env = _start_car()
    frame = render_frame(TRACK, env.car, hud={"x": 1})
    path = tmp_path / "frame.png"
    save_png(frame, path)
    loaded = render.pygame.surfarray.array3d(render.pygame.image.load(str(path))).transpose(1, 0, 2)
    np.testing.assert_array_equal(loaded, frame)


def test_params_track_renders_like_the_generated_one(renderer):
    params_track = type(TRACK)(*(np.asarray(f[0]) for f in EnvParams.from_seeds([0]).tracks))
    car = _start_car().car
    np.testing.assert_array_equal(renderer.draw(params_track, car), renderer.draw(TRACK, car))


def test_open_window_falls_back_to_the_dummy_driver(monkeypatch):
    # As if carlab (not the user) had chosen the dummy driver: open_window tries a real display first.
    monkeypatch.setattr(render, "_DUMMY_VIDEO_IS_OURS", True)
    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):  # never pop up a real window from a test
        monkeypatch.delenv(name, raising=False)
    try:
        window = render.open_window(320, 240, "test")
        assert window.get_size() == (320, 240) and render.pygame.display.get_init()
    finally:
        render.pygame.display.quit()


# ---------------------------------------------------------------- model overlays: predicted rays, ghost rays, senses

INFIELD_CAR = np.array([400.0, 300.0, 0.0, 0.3])  # on the grass inside track 0, far from every edge


def _tips(car, distances):
    """Screen (x, y) of each ray's end, in track px (the renderer is 800x600: one px each)."""
    x, y, _, angle = car
    return [
        (x + d * math.cos(angle + math.radians(a)), y + d * math.sin(angle + math.radians(a)))
        for a, d in zip(RAY_ANGLES_DEG, distances)
    ]


def test_predicted_rays_are_drawn_in_the_predicted_colour(renderer):
    # The real rays reach further, so their ends are not covered by the predicted ones.
    real, predicted = np.full(5, 110.0), np.array([60.0, 70.0, 80.0, 70.0, 60.0])
    plain = renderer.draw(TRACK, INFIELD_CAR, rays=real)
    frame = renderer.draw(TRACK, INFIELD_CAR, rays=real, predicted_rays=predicted)
    for x, y in _tips(INFIELD_CAR, predicted):
        assert tuple(frame[round(y), round(x)]) == render.PREDICTED_RAY
    for x, y in _tips(INFIELD_CAR, real):  # the real rays still end where they did, in their colour
        assert tuple(frame[round(y), round(x)]) == render.RAY
    coords = _changed(plain, frame)
    assert len(coords) > 50
    # Only along the predicted rays: nothing beyond their ends, nothing away from the car.
    assert np.all(_near(coords, *INFIELD_CAR[:2], predicted.max() + 4))
    for x, y in _tips(INFIELD_CAR, predicted + 12):
        assert not _near(coords, x, y, 3).any()
    colours = {tuple(frame[r, c]) for r, c in coords}
    assert render.PREDICTED_RAY in colours and render.RAY not in colours


def test_predicted_rays_belong_to_the_highlighted_car_only(renderer):
    cars = np.stack([INFIELD_CAR, [200.0, 100.0, 0.0, 0.0]])
    predicted = np.full((2, 5), 50.0)
    frame = renderer.draw(TRACK, cars, predicted_rays=predicted, highlight=1)
    plain = renderer.draw(TRACK, cars, highlight=1)
    coords = _changed(plain, frame)
    assert len(coords) > 30 and np.all(_near(coords, 200, 100, 55))
    assert tuple(frame[100, 250]) == render.PREDICTED_RAY  # the straight-ahead ray of car 1


def test_ghost_rays_start_from_the_ghost_and_are_translucent(renderer):
    ghost = np.array([420.0, 280.0, 0.0, -0.4])
    distances = np.full(5, 45.0)
    with_ghost = renderer.draw(TRACK, _start_car().car, ghost=ghost)
    with_rays = renderer.draw(TRACK, _start_car().car, ghost=ghost, ghost_rays=distances)
    coords = _changed(with_ghost, with_rays)
    assert len(coords) > 30 and np.all(_near(coords, *ghost[:2], 45 + 4))
    background = render.surface_to_array(renderer.background(TRACK)).astype(int)
    for x, y in _tips(ghost, distances):
        r, c = round(y), round(x)
        expected = background[r, c] + 170 / 255 * (np.array(render.PREDICTED_RAY) - background[r, c])
        assert np.abs(with_rays[r, c].astype(int) - expected).max() <= 3  # blended, not opaque


def test_overlay_arguments_are_checked(renderer):
    car = _start_car().car
    with pytest.raises(ValueError, match="ghost"):
        renderer.draw(TRACK, car, ghost_rays=np.full(5, 40.0))
    with pytest.raises(ValueError, match="predicted_rays"):
        renderer.draw(TRACK, car, predicted_rays=np.full(4, 40.0))
    with pytest.raises(ValueError, match="predicted_rays"):
        renderer.draw(TRACK, np.stack([car, car]), predicted_rays=np.full((3, 5), 40.0))
    with pytest.raises(ValueError, match="ghost_rays"):
        renderer.draw(TRACK, car, ghost=INFIELD_CAR, ghost_rays=np.full((2, 5), 40.0))
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        renderer.draw(TRACK, car, ghost=np.zeros(3))


def _senses_tips(senses, distances):
    """Pixel (row, col) of each ray's end in a senses view: the car at (W/2, 0.72 H), heading up."""
    height, width = senses.height, senses.width
    reach = 0.62 * height  # px on screen for the full sensor range
    return [
        (
            round(0.72 * height - d / render.RAY_RANGE_PX * reach * math.cos(math.radians(a))),
            round(width / 2 + d / render.RAY_RANGE_PX * reach * math.sin(math.radians(a))),
        )
        for a, d in zip(RAY_ANGLES_DEG, distances)
    ]


def test_draw_senses_draws_rays_ahead_of_the_car():
    senses = Renderer(400, 300)
    rays, predicted = np.array([150.0, 100.0, 150.0, 140.0, 120.0]), np.array([60.0, 40.0, 90.0, 130.0, 30.0])
    frame = senses.draw_senses(rays, predicted, speed=2.5, predicted_speed=5.0)
    assert frame.shape == (300, 400, 3) and frame.dtype == np.uint8
    for r, c in _senses_tips(senses, rays):
        assert tuple(frame[r, c]) == render.RAY
    for r, c in _senses_tips(senses, predicted):
        assert tuple(frame[r, c]) == render.PREDICTED_RAY
    # Speed bars at the bottom, as long as the speed is a fraction of the top speed (5 px/step).
    bar = 300 - 14 + 2
    assert tuple(frame[bar, 10 + int(0.5 * 380) - 3]) == render.RAY
    assert tuple(frame[bar, 10 + int(0.5 * 380) + 3]) == render.SENSES_BACKGROUND
    assert tuple(frame[bar - 8, 10 + 380 - 3]) == render.PREDICTED_RAY
    # Nothing but the car and its senses: the corners are the plain dark ground.
    assert tuple(frame[0, 0]) == tuple(frame[150, 399]) == render.SENSES_BACKGROUND


def test_draw_senses_shows_what_it_is_given():
    senses = Renderer()
    rays = np.full(5, 100.0)
    base = senses.draw_senses(rays)
    assert base.shape == (600, 800, 3) and base.dtype == np.uint8
    shorter = senses.draw_senses(np.array([100.0, 100.0, 40.0, 100.0, 100.0]))
    coords = _changed(base, shorter)
    # Only the straight-ahead ray changed: everything that differs is on the line above the car.
    assert len(coords) > 20 and np.all(np.abs(coords[:, 1] - 400) <= 4)
    assert not np.array_equal(senses.draw_senses(rays, predicted_rays=rays * 0.5), base)
    assert not np.array_equal(senses.draw_senses(rays, speed=3.0), base)
    nothing = senses.draw_senses(None)  # just the car and the range ring
    assert not np.array_equal(nothing, base)
    np.testing.assert_array_equal(senses.draw_senses(None, speed=float("nan")), nothing)
    with_hud = _changed(base, senses.draw_senses(rays, hud={"dream step": 3}))
    assert len(with_hud) > 50 and with_hud[:, 0].max() < 60 and with_hud[:, 1].max() < 200
    # It does not disturb the track frames drawn after it.
    car = _start_car().car
    np.testing.assert_array_equal(senses.draw(TRACK, car), Renderer().draw(TRACK, car))
    for bad in (np.zeros(4), np.zeros((2, 5))):
        with pytest.raises(ValueError, match="rays"):
            senses.draw_senses(bad)
        with pytest.raises(ValueError, match="rays"):
            senses.draw_senses(rays, predicted_rays=bad)
