"""Drive inside the dream, side by side with reality.

    from carlab.lab.widgets import DreamView
    DreamView(wm_params, wm_config, track_seed=3).show()     # keys or sliders steer both worlds

:class:`DreamDrive` is the pure part, usable without widgets: the real simulator
(:func:`carlab.sim.env.step_env`) and the world model's dream (:func:`carlab.course.dream.step_env`), started from
the same observation and stepped with the *same* actions in one jitted call. After every step it knows
the **divergence** — :func:`divergence`, the mean absolute difference over the six observation entries
between what the dream believes the car senses and what the real car senses — the **pose gap** (px
between the real car and the dream's dead-reckoned car) and the steps since the two were last synced.

What happens at a crash: when the *real* car crashes, both worlds restart together on the start line
(the real one as the env does; the dream re-synced to it), because a comparison with a car that has
left the road means nothing. The crash is counted and :attr:`DreamDrive.last_crash` remembers whether
the dream saw it coming (its P(crash) at that step). When only the *dream* thinks it crashed (its
continue head's P(not crashed) below 0.5), nothing restarts: the dream drives on and its P(crash) is
shown, so you can see where the model expects trouble that reality does not have.

:class:`DreamView` puts :class:`DreamDrive` on a canvas through the key-driven render loop of
:class:`carlab.lab.widgets.drive.KeyDrivenView`: on the left the real track with the real car and its
rays (yellow) and the dream's car as a white outline with the rays it believes in (cyan); on the right
the car's own view, real rays yellow and dreamed rays cyan. A meter shows the divergence live.
(:class:`carlab.lab.widgets.latent_explorer.LatentExplorer` walks the same model's latent space.)
"""

from __future__ import annotations

import html

import ipywidgets as widgets
import jax
import numpy as np

from carlab.course import dream
from carlab.lab.widgets.drive import STOPPED_SPEED, KeyDrivenView, as_action, surface_rgb
from carlab.learn.config import WorldModelConfig
from carlab.sim import env
from carlab.sim.render import Renderer

OBS_NAMES = ("ray −60°", "ray −30°", "ray 0°", "ray +30°", "ray +60°", "speed")

DREAM_HELP = (
    "<small>Hover over the picture and drive with the arrow keys or WASD, or hold a steady action with "
    "the sliders (held keys win). Both worlds get the same action. Left: the real car (red, yellow "
    "rays) and where the dream thinks it is (white outline, cyan rays). Right: what the car senses, "
    "real (yellow) against dreamed (cyan). A real crash restarts both on the start line.</small>"
)


def obs_error(dream_obs, real_obs) -> np.ndarray:
    """|dream obs − real obs| per entry (..., 6), the dream's clipped to [0, 1] as the sensors are."""
    dream_obs = np.clip(np.asarray(dream_obs, np.float64), 0.0, 1.0)
    return np.abs(dream_obs - np.asarray(real_obs, np.float64))


def divergence(dream_obs, real_obs) -> np.ndarray:
    """The mean of :func:`obs_error` over the 6 entries: how far the dream's beliefs are from reality.

    Args:
        dream_obs: (..., 6) the world model's decoded observation.
        real_obs: (..., 6) the simulator's observation.

    Returns:
        (...) in [0, 1]: 0.1 means the beliefs are off by a tenth of the range on average (15 px of ray).
    """
    return np.mean(obs_error(dream_obs, real_obs), axis=-1)


@jax.jit
def _step_both(real_state, dream_state, action, env_params, dream_params):
    """One step of reality and of the dream under the same (sanitised) action."""
    action = env.sanitize_action(action)
    obs, real_state, _, crashed, _, _ = env.step_env(None, real_state, action, env_params)
    dream_obs, dream_state, _, _, _, info = dream.step_env(None, dream_state, action, dream_params)
    return action, obs, real_state, crashed, dream_obs, dream_state, info["continue_prob"]


_dream_from = jax.jit(dream.dream_from)


class DreamDrive:
    """The real simulator and the world model's dream of it, driven by the same actions (no widgets).

    Everything it exposes is a NumPy copy: ``real_obs`` / ``dream_obs`` (6,), ``real_car`` /
    ``dream_car`` (4,) ``[x, y, speed, angle]``, ``continue_prob`` (the dream's P(not crashed)),
    ``steps_since_sync``, ``crashes``, ``last_action`` (the sanitised action both worlds got last).
    """

    def __init__(self, wm_params, wm_config: WorldModelConfig = WorldModelConfig(), track_seed: int = 0):
        """Args:
        wm_params: the world model's haiku params (``state.params["world_model"]`` of a run).
        wm_config: its :class:`carlab.learn.config.WorldModelConfig` (``config.world_model``).
        track_seed: the track both worlds drive on (the dream draws its car on it).
        """
        self.track_seed = int(track_seed)
        # No auto-reset: a real crash is handled here (both worlds restart), not inside the env.
        self.env_params = env.EnvParams.from_seeds([self.track_seed], auto_reset=False)
        self.dream_params = dream.DreamParams.from_env(
            wm_params, self.env_params, wm_config, auto_reset=False
        )
        self.track = jax.tree.map(lambda a: np.asarray(a[0]), self.env_params.tracks)
        self.reset()

    # ------------------------------------------------------------------ reset and sync
    def reset(self) -> None:
        """Both cars back on the start line at rest, the dream synced, the crash count cleared."""
        self.crashes = 0
        self.last_crash: dict | None = None
        self._restart()

    def _restart(self) -> None:
        obs, self._real = env.reset(None, self.env_params, 0)
        self.real_obs, self.real_car = (np.asarray(a) for a in jax.device_get((obs, self._real.car)))
        self.sync()

    def sync(self) -> None:
        """Start the dream again from what the real car senses now, at its pose ("sync to reality")."""
        dream_obs, self._dream = _dream_from(self.real_obs, self.real_car, self.dream_params, 0)
        self.dream_obs, self.dream_car = (np.asarray(a) for a in jax.device_get((dream_obs, self._dream.car)))
        self.continue_prob = 1.0
        self.steps_since_sync = 0
        self.last_action = np.zeros(env.ACTION_SIZE, np.float32)

    # ------------------------------------------------------------------ stepping
    @property
    def divergence(self) -> float:
        """:func:`divergence` of the current dream and real observations."""
        return float(divergence(self.dream_obs, self.real_obs))

    @property
    def pose_gap(self) -> float:
        """px between the real car and the dream's dead-reckoned car."""
        return float(np.hypot(*(self.dream_car[:2] - self.real_car[:2])))

    def step(self, action) -> dict:
        """Step both worlds with ``action`` ``[steering, throttle]``; returns what happened.

        The record holds ``action``, ``real_obs``, ``dream_obs``, ``obs_error`` (per entry),
        ``divergence``, ``pose_gap``, ``continue_prob``, ``steps_since_sync`` and ``crashed`` of this
        step, all before any restart a real crash causes (so a crash's record shows the crash).
        """
        out = _step_both(self._real, self._dream, as_action(action), self.env_params, self.dream_params)
        applied, real_obs, self._real, crashed, dream_obs, self._dream, prob = out
        fetched = jax.device_get((applied, real_obs, self._real.car, dream_obs, self._dream.car))
        self.last_action, self.real_obs, self.real_car, self.dream_obs, self.dream_car = map(
            np.asarray, fetched
        )
        self.continue_prob, crashed = float(prob), bool(crashed)
        self.steps_since_sync += 1
        record = {
            "action": self.last_action.copy(),
            "real_obs": self.real_obs.copy(),
            "dream_obs": self.dream_obs.copy(),
            "obs_error": obs_error(self.dream_obs, self.real_obs),
            "divergence": self.divergence,
            "pose_gap": self.pose_gap,
            "continue_prob": self.continue_prob,
            "steps_since_sync": self.steps_since_sync,
            "crashed": crashed,
        }
        if crashed:
            self.crashes += 1
            self.last_crash = {"steps": self.steps_since_sync, "dream_crash_prob": 1.0 - self.continue_prob}
            self._restart()
        return record

    def run(self, policy, num_steps: int) -> dict[str, np.ndarray]:
        """Drive ``num_steps`` steps, ``policy(real_obs (6,)) -> action (2,)`` choosing each action
        from what the real car senses; returns the step records stacked into arrays (T, ...)."""
        records = [self.step(policy(self.real_obs)) for _ in range(int(num_steps))]
        if not records:
            raise ValueError(f"run: num_steps must be at least 1, got {num_steps!r}")
        return {name: np.stack([r[name] for r in records]) for name in records[0]}


class DreamView(KeyDrivenView):
    """Drive inside the dream, with reality beside it; see the module docstring."""

    thread_name = "carlab-dream-view"

    def __init__(
        self,
        wm_params,
        wm_config: WorldModelConfig = WorldModelConfig(),
        track_seed: int = 0,
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
        self.sim = DreamDrive(wm_params, wm_config, track_seed)
        track_width, senses_width = round(height * 4 / 3), round(height * 2 / 3)
        self.track_renderer = Renderer(track_width, height)
        self.senses_renderer = Renderer(senses_width, height)
        super().__init__(track_width + senses_width, height, fps)
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
        real_rays, dream_rays = dream.rays_px(sim.real_obs), dream.rays_px(sim.dream_obs)
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
        return np.concatenate([surface_rgb(track), senses], axis=1)

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


__all__ = ["DreamDrive", "DreamView", "divergence", "obs_error"]
