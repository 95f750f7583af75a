"""Draw the race into an offscreen pygame Surface and hand it back as an (H, W, 3) uint8 array.

Rendering happens outside jit, from arrays: a :class:`carlab.sim.track.Track` and the cars as
``[x, y, speed, angle]`` rows (or an :class:`carlab.sim.env.EnvState`). No window is opened and
``pygame.init()`` is never called: only the font module is initialised (for the HUD), so importing
this module never starts audio, which would print ALSA noise on machines without a sound card.

    frame = Renderer().draw(track, cars, rays=rays, highlight=0, hud={"speed": 3.2})

The static part of a track (grass, asphalt, kerbs, checkpoints, obstacles) is drawn once per track
and cached, so a frame costs a blit plus the cars: a few milliseconds.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Before pygame is imported: no real display or sound device is needed to draw offscreen. The
# dummy video driver is only a default: open_window drops it again to show a real window.
_DUMMY_VIDEO_IS_OURS = "SDL_VIDEODRIVER" not in os.environ
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame

from carlab.sim.sensors import RAY_ANGLES_DEG
from carlab.sim.track import RAY_RANGE as RAY_RANGE_PX
from carlab.sim.track import SCREEN_HEIGHT, SCREEN_WIDTH, Track

MAX_SPEED_PX = 5.0  # px per step: the speed bars of draw_senses are full here (EnvParams.max_speed)

CAR_LENGTH = 20.0  # px, drawn size only (the collision circle is track.CAR_RADIUS)
CAR_WIDTH = 10.0  # px

GRASS = (58, 122, 52)
GRASS_STRIPE = (64, 132, 57)
ASPHALT = (82, 82, 88)
KERB = (235, 235, 235)
CHECKPOINT = (230, 200, 40)
START_LINE = (250, 250, 250)
OBSTACLE = (150, 60, 40)
OBSTACLE_EDGE = (40, 20, 15)
CAR = (220, 40, 40)
OTHER_CAR = (40, 90, 220)
CAR_EDGE = (20, 20, 20)
RAY = (255, 230, 90)
PREDICTED_RAY = (70, 220, 255)  # what a world model believes the rays read
GHOST = (255, 255, 255)
IMAGINED_PATH = (70, 220, 255)
SENSES_BACKGROUND = (24, 26, 32)
HUD_TEXT = (255, 255, 255)

_COLORKEY = (255, 0, 255)  # marks "nothing drawn" on the translucent layer
_CACHE_SIZE = 16  # cached track backgrounds per renderer


def _car_rows(cars: Any) -> np.ndarray:
    """Cars as an (N, 4) float array ``[x, y, speed, angle]`` from rows or an EnvState."""
    if all(hasattr(cars, name) for name in ("x", "y", "speed", "angle")):
        cars = np.stack(
            [np.asarray(getattr(cars, n), dtype=np.float64) for n in ("x", "y", "speed", "angle")], -1
        )
    rows = np.asarray(cars, dtype=np.float64)
    if rows.ndim == 1:
        rows = rows[None]
    if rows.ndim != 2 or rows.shape[1] != 4:
        raise ValueError(f"cars must have shape (N, 4) or (4,) as [x, y, speed, angle], got {rows.shape}")
    return rows


def track_key(track: Track) -> tuple:
    """Cache key for a track: its seed plus a digest of its geometry (ids are reused after GC)."""
    centre = np.ascontiguousarray(np.asarray(track.centre, dtype=np.float32))
    return int(np.asarray(track.seed)), hash(centre.tobytes())


class Renderer:
    """Offscreen pygame renderer of one track with any number of cars; see the module docstring."""

    def __init__(self, width: int = SCREEN_WIDTH, height: int = SCREEN_HEIGHT):
        """Frames are ``(height, width, 3)``; track coordinates (800x600 px) are scaled to fit."""
        if width <= 0 or height <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.scale = min(self.width / SCREEN_WIDTH, self.height / SCREEN_HEIGHT)
        self.surface = pygame.Surface((self.width, self.height))
        # Translucent things are drawn opaque on this colour-keyed layer, then blitted with surface
        # alpha: much cheaper than per-pixel-alpha surfaces and it blends against the real frame.
        self._layer = pygame.Surface((self.width, self.height))
        self._layer.set_colorkey(_COLORKEY)
        self._backgrounds: OrderedDict[tuple, pygame.Surface] = OrderedDict()
        self._font = None

    # ---------------------------------------------------------------- geometry helpers
    def _px(self, points) -> list[tuple[float, float]]:
        """Track coordinates (..., 2) to a list of screen points, dropping non-finite rows."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) * self.scale
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        return [tuple(p) for p in pts]

    def _car_corners(self, x, y, angle, length=CAR_LENGTH, width=CAR_WIDTH) -> np.ndarray:
        """The four corners (4, 2) of a car rectangle centred on (x, y) and rotated by ``angle``."""
        c, s = math.cos(angle), math.sin(angle)
        half = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
        rot = np.array([[c, -s], [s, c]])
        return (half @ rot.T + [x, y]) * self.scale

    # ---------------------------------------------------------------- static background
    def background(self, track: Track) -> pygame.Surface:
        """The static track drawing, built once per track and cached (least recently used dropped)."""
        key = track_key(track)
        if key in self._backgrounds:
            self._backgrounds.move_to_end(key)
            return self._backgrounds[key]
        surf = pygame.Surface((self.width, self.height))
        surf.fill(GRASS)
        stripe = max(1, int(40 * self.scale))
        for y in range(0, self.height, 2 * stripe):  # mown-lawn stripes give a sense of speed
            surf.fill(GRASS_STRIPE, pygame.Rect(0, y, self.width, stripe))
        inner = np.asarray(track.inner, dtype=np.float64)
        outer = np.asarray(track.outer, dtype=np.float64)
        n = len(inner)
        for i in range(n):
            j = (i + 1) % n
            pygame.draw.polygon(surf, ASPHALT, self._px([inner[i], outer[i], outer[j], inner[j]]))
        for boundary in (inner, outer):
            pygame.draw.lines(surf, KERB, True, self._px(boundary), max(1, int(2 * self.scale)))
        for k, (a, b) in enumerate(np.asarray(track.checkpoints, dtype=np.float64)):
            if k == 0:
                self._draw_start_line(surf, a, b)
            else:
                pygame.draw.line(surf, CHECKPOINT, *self._px([a, b]), 1)
        for ox, oy, radius in np.asarray(track.obstacles, dtype=np.float64):
            centre, r = (ox * self.scale, oy * self.scale), max(1, round(radius * self.scale))
            pygame.draw.circle(surf, OBSTACLE, centre, r)
            pygame.draw.circle(surf, OBSTACLE_EDGE, centre, r, 1)
        self._backgrounds[key] = surf
        if len(self._backgrounds) > _CACHE_SIZE:
            self._backgrounds.popitem(last=False)
        return surf

    def _draw_start_line(self, surf, a, b, squares: int = 8) -> None:
        """A chequered start/finish line from ``a`` to ``b`` (distinct from the white kerbs)."""
        ends = np.linspace(a, b, squares + 1)
        width = max(3, int(5 * self.scale))
        for k in range(squares):
            p, q = self._px(ends[k : k + 2])
            pygame.draw.line(surf, START_LINE if k % 2 == 0 else (15, 15, 15), p, q, width)

    # ---------------------------------------------------------------- dynamic parts
    def _draw_car(self, surf, row, color, outline_only=False, size=1.0) -> None:
        x, y, _, angle = row
        if not np.all(np.isfinite(row)):
            return  # a diverged car (or imagined state) is simply not drawn
        corners = [tuple(p) for p in self._car_corners(x, y, angle, CAR_LENGTH * size, CAR_WIDTH * size)]
        if outline_only:
            pygame.draw.polygon(surf, color, corners, 2)
            return
        pygame.draw.polygon(surf, color, corners)
        pygame.draw.polygon(surf, CAR_EDGE, corners, 1)
        # Heading mark: a bright bar across the nose, so direction reads at a glance.
        nose = self._car_corners(x, y, angle, length=CAR_LENGTH * 0.6 * size, width=CAR_WIDTH * 0.8 * size)[
            :2
        ]
        pygame.draw.line(surf, (255, 255, 255), tuple(nose[0]), tuple(nose[1]), 2)

    def _draw_rays(self, surf, row, distances, color) -> None:
        x, y, _, angle = row
        if not np.all(np.isfinite(row)):
            return
        for offset, dist in zip(RAY_ANGLES_DEG, distances):
            if not np.isfinite(dist):
                continue
            theta = angle + math.radians(offset)
            start = (x * self.scale, y * self.scale)
            end = ((x + dist * math.cos(theta)) * self.scale, (y + dist * math.sin(theta)) * self.scale)
            pygame.draw.line(surf, color, start, end, 1)
            pygame.draw.circle(surf, color, end, 3)

    def _draw_hud(self, surf, hud: Mapping[str, Any]) -> None:
        if self._font is None:
            pygame.font.init()  # only the font module: pygame.init() would start audio too
            self._font = pygame.font.Font(None, 22)
        lines = [self._font.render(f"{k}: {fmt(v)}", True, HUD_TEXT) for k, v in hud.items()]
        if not lines:
            return
        box = pygame.Surface((max(l.get_width() for l in lines) + 12, 18 * len(lines) + 8))
        box.set_alpha(150)
        box.fill((0, 0, 0))
        surf.blit(box, (4, 4))
        for i, line in enumerate(lines):
            surf.blit(line, (10, 8 + 18 * i))

    def draw_surface(
        self,
        track: Track,
        cars: Any,
        *,
        rays=None,
        highlight: int = 0,
        others_alpha: float = 0.35,
        polylines: Sequence[tuple[Any, Sequence[int]]] = (),
        ghost=None,
        ghost_rays=None,
        predicted_rays=None,
        hud: Mapping[str, Any] | None = None,
    ) -> pygame.Surface:
        """Like :meth:`draw` but returns the renderer's own Surface (reused on the next call)."""
        rows = _car_rows(cars)
        ray_rows = _ray_rows(rays, len(rows), "rays")
        predicted_rows = _ray_rows(predicted_rays, len(rows), "predicted_rays")
        ghost_ray_rows = _ray_rows(ghost_rays, 1, "ghost_rays")
        if ghost_ray_rows is not None and ghost is None:
            raise ValueError("ghost_rays needs a ghost car to start from")
        surf = self.surface
        surf.blit(self.background(track), (0, 0))

        others = [i for i in range(len(rows)) if i != highlight]
        if others:
            self._layer.fill(_COLORKEY)
            for i in others:
                if ray_rows is not None:
                    self._draw_rays(self._layer, rows[i], ray_rows[i], RAY)
                self._draw_car(self._layer, rows[i], OTHER_CAR)
            self._layer.set_alpha(int(255 * np.clip(others_alpha, 0.0, 1.0)))
            surf.blit(self._layer, (0, 0))

        for points, color in polylines:
            pts = self._px(points)
            if len(pts) >= 2:
                pygame.draw.lines(surf, tuple(int(c) for c in color[:3]), False, pts, 2)

        if ghost is not None:
            ghost_row = _car_rows(ghost)[0]
            self._layer.fill(_COLORKEY)
            if ghost_ray_rows is not None:
                self._draw_rays(self._layer, ghost_row, ghost_ray_rows[0], PREDICTED_RAY)
            self._draw_car(self._layer, ghost_row, GHOST, outline_only=True)
            self._layer.set_alpha(170)
            surf.blit(self._layer, (0, 0))

        if 0 <= highlight < len(rows):
            if ray_rows is not None:
                self._draw_rays(surf, rows[highlight], ray_rows[highlight], RAY)
            if predicted_rows is not None:
                self._draw_rays(surf, rows[highlight], predicted_rows[highlight], PREDICTED_RAY)
            self._draw_car(surf, rows[highlight], CAR)
        if hud:
            self._draw_hud(surf, hud)
        return surf

    def draw_senses(
        self,
        rays,
        predicted_rays=None,
        speed=None,
        predicted_speed=None,
        hud: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """The car's own view: the car in the middle, heading up, and its rays on a dark ground.

        This is all a world model ever knows of the track. ``rays`` (5,) px are drawn in yellow and
        ``predicted_rays`` (5,) in cyan; ``speed`` and ``predicted_speed`` (px/step) as bars at the
        bottom; ``hud`` text top-left. Either ray set may be None. Returns a new (H, W, 3) uint8 array.
        """
        surf = self.surface
        surf.fill(SENSES_BACKGROUND)
        centre = np.array([self.width / 2, self.height * 0.72])
        reach = 0.62 * self.height  # px on screen for the full sensor range
        ring = [
            tuple(centre + reach * np.array([np.sin(np.radians(a)), -np.cos(np.radians(a))]))
            for a in range(-70, 71, 5)
        ]
        pygame.draw.lines(surf, (60, 64, 76), False, ring, 1)  # the sensors' range
        row = np.array([centre[0] / self.scale, centre[1] / self.scale, 0.0, -np.pi / 2])  # heading up
        unit = reach / self.scale / RAY_RANGE_PX  # track px -> drawn px, in track units
        for distances, color in ((rays, RAY), (predicted_rays, PREDICTED_RAY)):
            if distances is None:
                continue
            distances = np.asarray(distances, dtype=np.float64).reshape(-1)
            if distances.shape != (len(RAY_ANGLES_DEG),):
                raise ValueError(f"rays must have shape ({len(RAY_ANGLES_DEG)},), got {distances.shape}")
            self._draw_rays(surf, row, distances * unit, color)
        self._draw_car(surf, row, CAR, size=max(1.0, 0.5 / self.scale))  # big enough to read
        bar_y = self.height - 14
        for k, (value, color) in enumerate(((speed, RAY), (predicted_speed, PREDICTED_RAY))):
            if value is None or not np.isfinite(value):
                continue
            width = (self.width - 20) * float(np.clip(value / MAX_SPEED_PX, 0.0, 1.0))
            pygame.draw.rect(surf, color, pygame.Rect(10, bar_y - 8 * k, int(width), 5))
        if hud:
            self._draw_hud(surf, hud)
        return surface_to_array(surf)

    def draw(self, track: Track, cars: Any, **kwargs) -> np.ndarray:
        """Draw one frame and return it as a new (H, W, 3) uint8 array.

        Args:
            track: a single :class:`carlab.sim.track.Track` (NumPy or JAX arrays).
            cars: (N, 4) or (4,) ``[x, y, speed, angle]`` (angle in rad, clockwise on screen), or an
                EnvState with fields x, y, speed, angle (scalar or batched).
            rays: optional (N, 5) or (5,) ray distances in px, at ``sensors.RAY_ANGLES_DEG``.
            highlight: index of the car drawn bold (its rays opaque); the others are translucent.
            others_alpha: opacity of the other cars and their rays, in [0, 1].
            polylines: ``(points (T, 2), rgb)`` overlays, e.g. imagined trajectories.
            ghost: optional ``[x, y, speed, angle]`` drawn as a translucent outline (e.g. where a
                dream thinks the car is).
            ghost_rays: optional (5,) ray distances drawn from the ghost, in the predicted colour.
            predicted_rays: optional (N, 5) or (5,) ray distances a model predicts, drawn in cyan over
                the real ``rays`` of the highlighted car, so belief and truth can be compared.
            hud: optional ``{label: value}`` text shown top-left.
        """
        return surface_to_array(self.draw_surface(track, cars, **kwargs))


def _ray_rows(rays, count: int, name: str) -> np.ndarray | None:
    """Ray distances as a (count, 5) float array, or None."""
    if rays is None:
        return None
    rows = np.atleast_2d(np.asarray(rays, dtype=np.float64))
    if rows.shape != (count, len(RAY_ANGLES_DEG)):
        raise ValueError(f"{name} must have shape ({count}, {len(RAY_ANGLES_DEG)}), got {rows.shape}")
    return rows


def fmt(value: Any) -> str:
    """HUD formatting: short floats, everything else as str."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.2f}"
    return str(value)


def surface_to_array(surface: pygame.Surface) -> np.ndarray:
    """A new, writable (H, W, 3) uint8 copy of a Surface's pixels."""
    # tobytes is row-major (H, W, 3) already, and several times cheaper than surfarray.array3d's
    # column-major array plus a transposed copy.
    rgb = pygame.image.tobytes(surface, "RGB")
    return np.frombuffer(rgb, np.uint8).reshape(surface.get_height(), surface.get_width(), 3).copy()


def open_window(
    width: int = SCREEN_WIDTH, height: int = SCREEN_HEIGHT, caption: str = "carlab"
) -> pygame.Surface:
    """Open the pygame display window (the only place carlab initialises the display).

    Uses the real video driver unless the user chose one (tests set ``SDL_VIDEODRIVER=dummy``);
    where no real display can be opened (a server, CI) it falls back to the invisible dummy one.
    """
    if _DUMMY_VIDEO_IS_OURS and os.environ.get("SDL_VIDEODRIVER") == "dummy":
        del os.environ["SDL_VIDEODRIVER"]
    try:
        pygame.display.init()
        window = pygame.display.set_mode((width, height))
    except pygame.error:
        pygame.display.quit()
        os.environ["SDL_VIDEODRIVER"] = "dummy"
        pygame.display.init()
        window = pygame.display.set_mode((width, height))
    pygame.display.set_caption(caption)
    return window


_DEFAULT: Renderer | None = None


def render_frame(track: Track, cars: Any, **kwargs) -> np.ndarray:
    """:meth:`Renderer.draw` on a module-wide 800x600 renderer (so its track cache is shared)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Renderer()
    return _DEFAULT.draw(track, cars, **kwargs)


def save_png(frame: np.ndarray, path: str | os.PathLike) -> None:
    """Write an (H, W, 3) uint8 frame to a PNG file."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must have shape (H, W, 3), got {frame.shape}")
    surf = pygame.surfarray.make_surface(np.ascontiguousarray(frame.transpose(1, 0, 2)).astype(np.uint8))
    pygame.image.save(surf, os.fspath(path))


__all__ = [
    "CAR_LENGTH",
    "CAR_WIDTH",
    "Renderer",
    "open_window",
    "render_frame",
    "save_png",
    "surface_to_array",
]
