"""Walk the world model's latent space: sliders on its main directions -> the senses they decode to.

from carlab.lab import LatentExplorer
LatentExplorer.from_observations(wm_params, wm_config, observations).show()
"""

from __future__ import annotations

import html
import io

import ipywidgets as widgets
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from carlab.course import latent
from carlab.learn.config import WorldModelConfig
from carlab.learn.world_model import make_world_model
from carlab.sim import env
from carlab.sim.render import MAX_SPEED_PX, Renderer


class LatentExplorer:
    """Sliders along the main directions of the latent space -> the observation they decode to.

    Each slider moves the latent along one principal component of encoded real observations (in
    standard deviations of the real latents along it); the decoded rays are drawn round a car in the
    car's-eye view, in the model's colour (cyan), with the decoded speed as the bar at the bottom.
    """

    def __init__(
        self,
        wm_params,
        wm_config: WorldModelConfig,
        pca: latent.LatentPCA,
        *,
        size: int = 360,
        reach: float = 3.0,
    ):
        """Args:
        wm_params, wm_config: the world model whose decoder is explored.
        pca: principal directions of its latents (:func:`carlab.course.latent.fit_pca`).
        size: the picture's side in px.
        reach: the sliders run from ``-reach`` to ``+reach`` standard deviations.
        """
        self.wm_params, self.pca = wm_params, pca
        wm = make_world_model(wm_config)
        self._decode = jax.jit(wm.decode)
        self._crash_prob = jax.jit(lambda params, z: 1.0 - jax.nn.sigmoid(wm.continue_logit(params, z)))
        self.renderer = Renderer(size, size)
        self.sliders = [
            widgets.FloatSlider(
                value=0.0,
                min=-reach,
                max=reach,
                step=0.1,
                description=f"PC {k + 1} ({share:.0%})",
                style={"description_width": "90px"},
                layout=widgets.Layout(width="360px"),
            )
            for k, share in enumerate(pca.explained)
        ]
        self.image = widgets.Image(format="png", width=size, height=size)
        self.readout = widgets.HTML("")
        self.error = widgets.HTML("")
        for slider in self.sliders:
            slider.observe(self._on_slider, names="value")
        self.widget = widgets.HBox([self.image, widgets.VBox([*self.sliders, self.readout, self.error])])
        self.widget.add_class("carlab-latent-explorer")
        self.update()

    @classmethod
    def from_observations(
        cls, wm_params, wm_config: WorldModelConfig, observations, *, num_components: int = 3, **kwargs
    ) -> LatentExplorer:
        """Encode real ``observations`` (..., 6), fit ``num_components`` principal directions, explore."""
        obs = jnp.asarray(observations, jnp.float32).reshape(-1, env.OBS_SIZE)
        latents = jax.jit(make_world_model(wm_config).encode)(wm_params, obs)
        return cls(wm_params, wm_config, latent.fit_pca(np.asarray(latents), num_components), **kwargs)

    @property
    def coords(self) -> np.ndarray:
        """The sliders' position (K,), in standard deviations along each direction."""
        return np.array([s.value for s in self.sliders], np.float64)

    def obs_at(self, coords) -> np.ndarray:
        """The observation (6,) the latent at ``coords`` decodes to (raw, not clipped)."""
        z = latent.latent_at(self.pca, coords)
        return np.asarray(self._decode(self.wm_params, z))

    def frame(self, coords) -> np.ndarray:
        """The decoded senses at ``coords`` drawn round a car, as an (H, W, 3) uint8 array."""
        obs = self.obs_at(coords)
        crash = float(self._crash_prob(self.wm_params, latent.latent_at(self.pca, coords)))
        speed = float(np.clip(obs[-1], 0.0, 1.0)) * MAX_SPEED_PX
        hud = {"speed": speed, "P(crash)": crash}
        return self.renderer.draw_senses(None, env.rays_px(obs), predicted_speed=speed, hud=hud)

    def grid(self, values, *, row_component: int = 0, col_component: int = 1) -> np.ndarray:
        """Frames (R, C, H, W, 3) with ``row_component`` set to each of ``values`` down the rows and
        ``col_component`` along the columns, the other directions at 0 (for a static figure)."""
        values = list(values)
        frames = np.zeros((len(values), len(values), self.renderer.height, self.renderer.width, 3), np.uint8)
        for i, row_value in enumerate(values):
            for j, col_value in enumerate(values):
                coords = np.zeros(len(self.sliders))
                coords[row_component], coords[col_component] = row_value, col_value
                frames[i, j] = self.frame(coords)
        return frames

    def update(self) -> None:
        """Redraw the picture and the numbers for the sliders' position."""
        coords = self.coords
        buffer = io.BytesIO()
        Image.fromarray(self.frame(coords)).save(buffer, format="png")
        self.image.value = buffer.getvalue()
        obs = self.obs_at(coords)
        rows = "".join(
            f"<tr><td>{name}</td><td>{value:.2f}</td></tr>" for name, value in zip(env.OBS_LABELS, obs)
        )
        self.readout.value = f"<small>decoded observation:<table>{rows}</table></small>"

    def _on_slider(self, _change) -> None:
        try:
            self.update()
            self.error.value = ""
        except Exception as error:  # noqa: BLE001 - shown to the student
            self.error.value = (
                f"<div style='color:#b00020'><b>{html.escape(f'{type(error).__name__}: {error}')}</b></div>"
            )

    def show(self) -> None:
        """Display the explorer."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self) -> None:
        self.show()


__all__ = ["LatentExplorer"]
