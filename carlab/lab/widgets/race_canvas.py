"""The live view's canvas: the kernel sends where the cars are, the browser draws them.

A JPEG of the whole 800x600 picture for every move of the cars cost the kernel a render and an encode
and the browser a decode, and the cars could only move on screen when a training round ended (~23
times a second on a 2-core CPU while training), however fast the page could draw. So this widget
(an `anywidget <https://anywidget.dev>`_, its drawing code in ``race_canvas.js``) splits the picture:

* ``background``: the track's static picture, drawn once per track by
  :meth:`carlab.sim.render.Renderer.background` and sent as a PNG;
* ``poses``: one float32 row per car, ``[x, y, speed, angle, ray_0 .. ray_4]`` (track px, rad), a few
  hundred bytes per update;
* ``highlight`` (the car drawn bold, the others faint) and ``hud`` (text lines, top-left).

The browser draws the cars with canvas commands, up to :data:`DRAW_FPS` times a second, and glides
each car from where it is drawn to its newest pose over the time between two updates (render
interpolation, as games draw faster than their physics steps): motion is smooth at the page's frame
rate whatever the training speed, and the picture runs at most one update behind. A car that jumps
further than :data:`JUMP_PX` (a crash and a restart) is put at its new place at once. It draws at
the size the page shows the canvas (not 800x600 scaled down), and only while something moves.
Colours and sizes come from :mod:`carlab.sim.render`, so this draws what
:class:`~carlab.sim.render.Renderer` draws.

    canvas = RaceCanvas()
    canvas.show_track(track)                         # once per track
    canvas.show_cars(cars, rays, highlight=0, hud={"mode": "AI", "speed": 3.2})
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anywidget
import matplotlib.image
import numpy as np
import traitlets

from carlab.sim import render
from carlab.sim.sensors import RAY_ANGLES_DEG
from carlab.sim.track import SCREEN_HEIGHT, SCREEN_WIDTH, Track

FIELDS = 4 + len(RAY_ANGLES_DEG)  # x, y, speed, angle, one distance per ray
JUMP_PX = 40.0  # a car that moved further than this between two updates is not glided (a restart)
DRAW_FPS = 40.0  # the browser draws at most this often: >= 30 with headroom, and CPU left to train


def drawing(width: int, others_alpha: float) -> dict:
    """What the browser needs to draw like :class:`carlab.sim.render.Renderer`: colours, sizes, rays."""
    return {
        "scale": width / SCREEN_WIDTH,
        "car_length": render.CAR_LENGTH,
        "car_width": render.CAR_WIDTH,
        "ray_angles_deg": [float(a) for a in RAY_ANGLES_DEG],
        "others_alpha": float(np.clip(others_alpha, 0.0, 1.0)),
        "jump_px": JUMP_PX,
        "max_fps": DRAW_FPS,
        "colors": {
            "car": list(render.CAR),
            "other_car": list(render.OTHER_CAR),
            "car_edge": list(render.CAR_EDGE),
            "ray": list(render.RAY),
            "grass": list(render.GRASS),
            "hud_text": list(render.HUD_TEXT),
        },
    }


def pose_rows(cars: Any, rays: Any) -> np.ndarray:
    """Cars ``(N, 4)`` ``[x, y, speed, angle]`` and rays ``(N, 5)`` px as the ``(N, 9)`` float32 rows
    :attr:`RaceCanvas.poses` carries."""
    cars = np.asarray(cars, dtype=np.float32)
    rays = np.asarray(rays, dtype=np.float32)
    if cars.ndim != 2 or cars.shape[1] != 4:
        raise ValueError(f"cars must have shape (N, 4) as [x, y, speed, angle], got {cars.shape}")
    if rays.shape != (len(cars), len(RAY_ANGLES_DEG)):
        raise ValueError(f"rays must have shape ({len(cars)}, {len(RAY_ANGLES_DEG)}), got {rays.shape}")
    return np.concatenate([cars, rays], axis=1)


def decode_poses(data: bytes) -> np.ndarray:
    """The ``(N, 9)`` rows of a :attr:`RaceCanvas.poses` value (the inverse of :func:`pose_rows`)."""
    return np.frombuffer(data, dtype=np.float32).reshape(-1, FIELDS)


class RaceCanvas(anywidget.AnyWidget):
    """A track and its cars, drawn in the browser; see the module docstring."""

    _esm = Path(__file__).with_name("race_canvas.js")
    width = traitlets.Int(SCREEN_WIDTH).tag(sync=True)
    height = traitlets.Int(SCREEN_HEIGHT).tag(sync=True)
    background = traitlets.Bytes(b"").tag(sync=True)
    poses = traitlets.Bytes(b"").tag(sync=True)
    highlight = traitlets.Int(0).tag(sync=True)
    hud = traitlets.List(traitlets.Unicode()).tag(sync=True)
    # (not "style": a DOMWidget's view reads a trait of that name as a widget style model)
    drawing = traitlets.Dict().tag(sync=True)

    def __init__(
        self, width: int = SCREEN_WIDTH, height: int = SCREEN_HEIGHT, *, others_alpha=0.35, **kwargs
    ):
        """A ``width`` x ``height`` canvas (track coordinates scaled to fit); ``others_alpha`` is the
        opacity of the cars other than the highlighted one. ``kwargs`` go to the widget (``layout``)."""
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        super().__init__(
            width=int(width), height=int(height), drawing=drawing(int(width), others_alpha), **kwargs
        )
        self._renderer = render.Renderer(int(width), int(height))
        self.track_key: tuple | None = None  # the track last sent
        self._track: Track | None = None  # the track object last asked about

    def show_track(self, track: Track) -> bool:
        """Send ``track``'s picture unless it is the one shown; returns whether it was sent."""
        if track is self._track:  # the live view asks on every update, with the session's own object
            return False
        key = render.track_key(track)
        self._track = track  # (held, so its id is not reused for another track)
        if key == self.track_key:
            return False
        buffer = io.BytesIO()
        picture = render.surface_to_array(self._renderer.background(track))
        matplotlib.image.imsave(buffer, picture, format="png")
        self.background = buffer.getvalue()
        self.track_key = key
        return True

    def show_cars(self, cars: Any, rays: Any, *, highlight: int = 0, hud: Mapping[str, Any] | None = None):
        """Send the cars' newest poses (``cars`` (N, 4), ``rays`` (N, 5) px) in one message."""
        rows = pose_rows(cars, rays)
        with self.hold_sync():
            self.poses = rows.tobytes()
            self.highlight = int(highlight)
            self.hud = [f"{k}: {render.fmt(v)}" for k, v in (hud or {}).items()]


__all__ = ["DRAW_FPS", "FIELDS", "JUMP_PX", "RaceCanvas", "decode_poses", "drawing", "pose_rows"]
