"""Drive inside the dream, side by side with reality: the widget.

    from carlab.lab import DreamView
    DreamView(wm_params, wm_config, track_seed=3).show()     # keys or sliders steer both worlds

:class:`DreamView` puts a :class:`carlab.course.dream_drive.DreamDrive` (the real simulator and the
world model's dream, stepped with the same actions; its docstring says what a crash does) on a canvas
through the key-driven render loop of :class:`carlab.lab.widgets.drive.KeyDrivenView`: on the left the
real track with the real car and its rays (yellow) and the dream's car as a white outline with the
rays it believes in (cyan); on the right the car's own view, real rays yellow and dreamed rays cyan. A
meter shows the divergence live. (:class:`carlab.lab.widgets.latent_explorer.LatentExplorer` walks the
same model's latent space.)
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import numpy as np

from carlab.course.dream_drive import DreamDrive
from carlab.lab.widgets.drive import STOPPED_SPEED, KeyDrivenView
from carlab.learn.config import WorldModelConfig
from carlab.sim import env
from carlab.sim.render import Renderer, surface_to_array
from carlab.sim.track import DRIVE_TRACK

DREAM_HELP = (
    "<small>Hover over the picture and drive with the arrow keys or WASD, or hold a steady action with "
    "the sliders (held keys win). Both worlds get the same action. Left: the real car (red, yellow "
    "rays) and where the dream thinks it is (white outline, cyan rays). Right: what the car senses, "
    "real (yellow) against dreamed (cyan). A real crash restarts both on the start line.</small>"
)


class DreamView(KeyDrivenView):
    """Drive inside the dream, with reality beside it; see the module docstring."""

    thread_name = "carlab-dream-view"

    def __init__(
        self,
        wm_params,
        wm_config: WorldModelConfig = WorldModelConfig(),
        *,
        track_seed: int = DRIVE_TRACK,
        height: int = 480,
        fps: float = 30.0,
        meter_max: float = 0.3,
    ):
        """Args:
        wm_params, wm_config: the world model that dreams (as :class:`DreamDrive`).
        track_seed: the track.
        height: canvas height in px: the track panel is 4:3 beside a car's-eye panel of 2:3.
        fps: steps per second while driving.
        meter_max: the divergence at which the meter is full.
        """
        self.sim = DreamDrive(wm_params, wm_config, track_seed=track_seed)
        track_width, senses_width = round(height * 4 / 3), round(height * 2 / 3)
        self.track_renderer = Renderer(track_width, height)
        self.senses_renderer = Renderer(senses_width, height)
        super().__init__(track_width + senses_width, height, fps=fps)
        self.help.value = DREAM_HELP
        self.sync_button = widgets.Button(
            description="Sync dream to reality", icon="refresh", layout=widgets.Layout(width="auto")
        )
        self.sync_button.on_click(self._reporting(lambda _: self.sync()))
        slider = {
            "min": -1.0,
            "max": 1.0,
            "step": 0.05,
            "value": 0.0,
            "layout": widgets.Layout(width="260px"),
        }
        self.steering = widgets.FloatSlider(description="steering", **slider)
        self.throttle = widgets.FloatSlider(description="throttle", **slider)
        for knob in (self.steering, self.throttle):
            knob.observe(self._reporting(lambda _: self._wake.set()), names="value")
        self.meter = widgets.FloatProgress(
            value=0.0, min=0.0, max=float(meter_max), description="divergence", bar_style="info"
        )
        self.meter_label = widgets.HTML("")
        self._update_readouts()

    def _layout(self) -> widgets.Widget:
        box = widgets.VBox(
            [
                widgets.HBox([self.reset_button, self.sync_button, self.steering, self.throttle]),
                self.canvas,
                widgets.HBox([self.meter, self.meter_label]),
                self.help,
                self.error,
            ]
        )
        box.add_class("carlab-dream-view")
        return box

    # ------------------------------------------------------------------ the world
    def action(self) -> np.ndarray:
        """The held keys' action, or the sliders' when no driving key is held."""
        if self.keys.held:
            return self._key_action.copy()
        return np.array([self.steering.value, self.throttle.value], np.float32)

    def sync(self) -> None:
        """Restart the dream from the real car's current observation and pose."""
        with self._lock:
            self.sim.sync()
        self._changed()

    def run(self, policy, num_steps: int) -> dict[str, np.ndarray]:
        """:meth:`DreamDrive.run` on this view's worlds (a scripted drive); the canvas follows."""
        with self._lock:
            records = self.sim.run(policy, num_steps)
        self._changed()
        return records

    def reset(self) -> None:
        """Both cars back to the start line, sliders to zero."""
        self.steering.value = self.throttle.value = 0.0
        super().reset()

    def _reset_locked(self) -> None:
        self.sim.reset()

    def _step_locked(self, action: np.ndarray) -> dict:
        return self.sim.step(action)

    def moving(self) -> bool:
        return float(self.sim.real_car[2]) > STOPPED_SPEED

    def _render_locked(self) -> np.ndarray:
        sim = self.sim
        real_rays, dream_rays = env.rays_px(sim.real_obs), env.rays_px(sim.dream_obs)
        hud = {"steps since sync": sim.steps_since_sync, "divergence": sim.divergence, "crashes": sim.crashes}
        track = self.track_renderer.draw_surface(
            sim.track, sim.real_car, rays=real_rays, ghost=sim.dream_car, ghost_rays=dream_rays, hud=hud
        )
        senses = self.senses_renderer.draw_senses(
            real_rays,
            dream_rays,
            speed=float(sim.real_car[2]),
            predicted_speed=float(sim.dream_car[2]),
            hud={"yellow": "real", "cyan": "dream", "dream P(crash)": 1.0 - sim.continue_prob},
        )
        return np.concatenate([surface_to_array(track), senses], axis=1)

    # ------------------------------------------------------------------ readouts (render loop)
    def send_frame(self) -> None:
        super().send_frame()
        self._update_readouts()

    def _update_readouts(self) -> None:
        sim = self.sim
        value = sim.divergence
        self.meter.value = min(value, self.meter.max)
        self.meter.bar_style = (
            "info" if value < 0.5 * self.meter.max else "warning" if value < self.meter.max else "danger"
        )
        crash = ""
        if sim.last_crash:
            crash = (
                f" · last real crash after {sim.last_crash['steps']} steps "
                f"(the dream gave it P(crash) {sim.last_crash['dream_crash_prob']:.2f})"
            )
        text = (
            f"<span class='carlab-divergence' data-divergence='{value:.4f}' "
            f"data-steps='{sim.steps_since_sync}'>"
            f"<b>{value:.3f}</b> mean |dream − real| · pose gap {sim.pose_gap:.1f} px · "
            f"{sim.steps_since_sync} steps since sync · {sim.crashes} real crashes{html.escape(crash)}</span>"
        )
        if self.meter_label.value != text:
            self.meter_label.value = text


__all__ = ["DreamView"]
