"""Regenerate the README's pictures: ``python docs/make_images.py`` from the repository root."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from carlab.sim import env
from carlab.sim.render import Renderer, save_png
from carlab.sim.track import RAY_RANGE, make_track

SEED = 3
CAR_POINTS = (30, 12, 66)  # centre-line indices of the cars; the first one is highlighted


OUT = Path(__file__).resolve().parent / "track.png"


def main(out: Path = OUT) -> None:
    """Draw track ``SEED`` with a few cars on it, the first one showing its five rays."""
    track = make_track(SEED)
    params = env.EnvParams.from_seeds([SEED])
    centre = np.asarray(track.centre)
    idx = np.asarray(CAR_POINTS)
    heading = centre[(idx + 1) % len(centre)] - centre[idx]
    start = env.start_state(params, 0)
    cars = jax.vmap(lambda x, y, a, q: start.replace(x=x, y=y, angle=a, quad=q, speed=3.0))(
        jnp.asarray(centre[idx, 0]),
        jnp.asarray(centre[idx, 1]),
        jnp.asarray(np.arctan2(heading[:, 1], heading[:, 0])),
        jnp.asarray(idx),
    )
    obs = jax.vmap(env.get_obs, in_axes=(0, None))(cars, params)
    frame = Renderer().draw(track, cars, rays=np.asarray(obs[:, :5]) * RAY_RANGE, highlight=0)
    save_png(frame, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
