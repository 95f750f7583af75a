"""The live view's canvas without a browser: what it sends (the browser test watches what it draws)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pygame
import pytest

from carlab.lab.widgets import race_canvas
from carlab.lab.widgets.race_canvas import FIELDS, RaceCanvas, decode_poses, pose_rows
from carlab.sim import render
from carlab.sim.sensors import RAY_ANGLES_DEG
from carlab.sim.track import make_track

PNG = b"\x89PNG"


@pytest.fixture
def canvas():
    widget = RaceCanvas()
    yield widget
    widget.close()


def _messages(widget) -> list[dict]:
    """Record each state message the widget sends (the keys in it); returns the growing list."""
    sent = []
    real = widget.send_state

    def send_state(key=None):
        sent.append(sorted([key] if isinstance(key, str) else key or []))
        return real(key)

    widget.send_state = send_state
    return sent


def test_poses_round_trip_as_float32_rows():
    cars = np.array([[100.0, 200.0, 3.5, 0.25], [300.0, 400.0, 0.0, -3.0]])
    rays = np.arange(10, dtype=np.float64).reshape(2, 5) * 20.0
    rows = pose_rows(cars, rays)
    assert rows.shape == (2, FIELDS) and rows.dtype == np.float32 and FIELDS == 4 + len(RAY_ANGLES_DEG)
    np.testing.assert_array_equal(
        decode_poses(rows.tobytes()), np.concatenate([cars, rays], 1).astype(np.float32)
    )
    assert len(rows.tobytes()) == 2 * 9 * 4  # a few bytes per car, not a picture


@pytest.mark.parametrize(
    ("cars", "rays", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 5)), r"cars must have shape \(N, 4\)"),
        (np.zeros((2, 4)), np.zeros((3, 5)), r"rays must have shape \(2, 5\), got \(3, 5\)"),
        (np.zeros(4), np.zeros(5), r"cars must have shape \(N, 4\)"),
    ],
)
def test_bad_poses_are_refused_in_one_line(cars, rays, message):
    with pytest.raises(ValueError, match=message):
        pose_rows(cars, rays)


def test_a_bad_size_is_refused():
    with pytest.raises(ValueError, match="width and height must be positive, got 0x600"):
        RaceCanvas(0, 600)


def test_the_track_picture_is_sent_once_per_track(canvas):
    sent = _messages(canvas)
    track = make_track(0)
    assert canvas.show_track(track) is True
    assert canvas.background[:4] == PNG and sent == [["background"]]
    picture = pygame.image.load(io.BytesIO(canvas.background), "track.png")
    assert picture.get_size() == (800, 600)
    # The same picture the pygame renderer draws behind the cars.
    expected = render.surface_to_array(render.Renderer().background(track))
    np.testing.assert_array_equal(render.surface_to_array(picture), expected)

    assert canvas.show_track(make_track(0)) is False and len(sent) == 1  # the same track: nothing sent
    assert canvas.show_track(make_track(1)) is True and len(sent) == 2


def test_cars_go_out_in_one_message_with_the_highlight_and_hud(canvas):
    sent = _messages(canvas)
    cars = np.array([[100.0, 200.0, 3.25, 0.5], [150.0, 250.0, 1.0, 1.0], [10.0, 20.0, 0.0, 0.0]])
    rays = np.full((3, 5), 80.0)
    canvas.show_cars(cars, rays, highlight=1, hud={"mode": "AI", "speed": 3.25})
    assert sent == [["highlight", "hud", "poses"]]  # hold_sync: one message for all three
    np.testing.assert_allclose(decode_poses(canvas.poses)[:, :4], cars)
    assert canvas.highlight == 1 and canvas.hud == ["mode: AI", "speed: 3.25"]
    # A page opened (or reloaded) later gets the newest state from the widget model itself.
    state = canvas.get_state()
    assert state["poses"] == canvas.poses and state["highlight"] == 1


def test_the_browser_draws_with_the_renderers_colours_and_sizes(canvas):
    drawing = canvas.drawing
    assert drawing["colors"]["car"] == list(render.CAR) and drawing["colors"]["other_car"] == list(
        render.OTHER_CAR
    )
    assert drawing["colors"]["ray"] == list(render.RAY)
    assert (drawing["car_length"], drawing["car_width"]) == (render.CAR_LENGTH, render.CAR_WIDTH)
    assert drawing["ray_angles_deg"] == list(RAY_ANGLES_DEG) and drawing["scale"] == 1.0
    assert RaceCanvas(400, 300).drawing["scale"] == 0.5
    assert RaceCanvas(others_alpha=2.0).drawing["others_alpha"] == 1.0
    assert drawing["jump_px"] == race_canvas.JUMP_PX and drawing["max_fps"] == race_canvas.DRAW_FPS >= 30


def test_the_drawing_code_ships_with_the_package():
    esm = Path(race_canvas.__file__).with_name("race_canvas.js")
    code = esm.read_text()
    assert "export default" in code and "requestAnimationFrame" in code
    assert str(RaceCanvas._esm) == code  # anywidget reads the file
    # Every drawing key the browser reads is one the kernel sends.
    used = {
        name for name in ("scale", "car_length", "car_width", "ray_angles_deg", "others_alpha", "jump_px")
    }
    assert all(f"drawing.{name}" in code for name in used) and used <= set(race_canvas.drawing(800, 0.35))
