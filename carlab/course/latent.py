"""The latent explorer: walk the world model's latent space along its main directions.

Encode many real observations, find the directions along which their latents vary most (principal
components, by an SVD), and let a person move along a few of them: each point decodes to an
observation — five rays and a speed — that shows what that part of the latent space means::

    pca = latent.fit_pca(wm.encode(wm_params, observations), num_components=3)
    z = latent.latent_at(pca, [1.5, 0.0, -1.0])   # 1.5 std along PC 1, -1 std along PC 3
    obs = wm.decode(wm_params, z)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from carlab.checks import check_int


class LatentPCA(NamedTuple):
    """Principal directions of a cloud of latents."""

    mean: np.ndarray  # (Z,) the mean latent
    components: np.ndarray  # (K, Z) unit directions, most variance first
    scale: np.ndarray  # (K,) standard deviation of the latents along each direction
    explained: np.ndarray  # (K,) fraction of the total variance each direction explains

    def coords(self, latents) -> np.ndarray:
        """Latents (..., Z) as coordinates (..., K) in standard deviations along each direction."""
        centred = np.asarray(latents, dtype=np.float64) - self.mean
        return centred @ self.components.T / np.where(self.scale > 0, self.scale, 1.0)


def fit_pca(latents, num_components: int = 3) -> LatentPCA:
    """The ``num_components`` principal directions of ``latents`` (N, Z)."""
    z = np.asarray(latents, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"fit_pca: latents must have shape (N >= 2, Z), got {z.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("fit_pca: latents hold NaN or inf")
    most = min(z.shape)  # the SVD has no more directions than latents or latent entries
    check_int(num_components, "num_components", low=1, high=most, where="fit_pca")
    mean = z.mean(axis=0)
    _, singular, vt = np.linalg.svd(z - mean, full_matrices=False)
    # Along a direction with no spread only the rounding of the mean is left (a few ulps of |z|); it is
    # zero spread, not a tiny one that ``coords`` would divide by and blow up into noise.
    rounding = max(z.shape) * np.finfo(np.float64).eps * np.abs(z).max() * np.sqrt(z.size)
    singular = np.where(singular > rounding, singular, 0.0)
    variance = singular**2 / (z.shape[0] - 1)
    total = variance.sum()
    k = num_components
    explained = variance[:k] / total if total > 0 else np.zeros(k)
    return LatentPCA(mean=mean, components=vt[:k], scale=np.sqrt(variance[:k]), explained=explained)


def latent_at(pca: LatentPCA, coords) -> np.ndarray:
    """The latent (Z,) float32 at ``coords`` (K,) standard deviations along the principal directions.

    Clipped to [-1, 1], the range the world model's latents live in (they pass through tanh).
    """
    coords = np.asarray(coords, dtype=np.float64)
    if coords.shape != pca.scale.shape:
        raise ValueError(f"latent_at: coords must have shape {pca.scale.shape}, got {coords.shape}")
    z = pca.mean + (coords * pca.scale) @ pca.components
    return np.clip(z, -1.0, 1.0).astype(np.float32)


__all__ = ["LatentPCA", "fit_pca", "latent_at"]
