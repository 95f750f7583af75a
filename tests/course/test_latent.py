"""The latent explorer: principal directions of a cloud of latents, and walking along them."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carlab.course import latent

Z = 6


def _cloud(n=4000, seed=0):
    """Latents with known structure: std 0.3 along ``major``, 0.1 along ``minor``, 0.01 elsewhere."""
    rng = np.random.default_rng(seed)
    major = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0]) / np.sqrt(2)
    minor = np.array([0.0, 0.0, 1.0, -1.0, 1.0, 0.0]) / np.sqrt(3)
    mean = np.array([0.1, -0.2, 0.0, 0.3, 0.0, -0.1])
    z = (
        mean
        + 0.3 * rng.normal(size=(n, 1)) * major
        + 0.1 * rng.normal(size=(n, 1)) * minor
        + 0.01 * rng.normal(size=(n, Z))
    )
    return z, mean, major, minor


def test_pca_recovers_the_known_directions_and_spreads():
    z, mean, major, minor = _cloud()
    pca = latent.fit_pca(z, num_components=2)
    assert pca.mean.shape == (Z,) and pca.components.shape == (2, Z)
    assert pca.scale.shape == pca.explained.shape == (2,)
    np.testing.assert_allclose(pca.mean, mean, atol=0.02)
    assert abs(pca.components[0] @ major) > 0.999 and abs(pca.components[1] @ minor) > 0.99
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(2), atol=1e-10)  # orthonormal
    np.testing.assert_allclose(pca.scale, [0.3, 0.1], rtol=0.05)
    total = 0.3**2 + 0.1**2 + Z * 0.01**2
    np.testing.assert_allclose(pca.explained, [0.3**2 / total, 0.1**2 / total], rtol=0.06)
    assert pca.explained[0] > pca.explained[1] and pca.explained.sum() < 1.0
    # The coordinates of the cloud are standardised: mean 0, std 1 along each direction.
    coords = pca.coords(z)
    assert coords.shape == (len(z), 2)
    np.testing.assert_allclose(coords.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(coords.std(0, ddof=1), 1.0, rtol=1e-9)


def test_pca_matches_the_covariance_eigendecomposition():
    z = np.random.default_rng(1).normal(size=(300, Z)) @ np.random.default_rng(2).normal(size=(Z, Z))
    pca = latent.fit_pca(z, num_components=Z)
    values, vectors = np.linalg.eigh(np.cov(z, rowvar=False))
    values, vectors = values[::-1], vectors[:, ::-1]
    np.testing.assert_allclose(pca.scale**2, values, rtol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(pca.components * vectors.T, axis=1)), 1.0, atol=1e-8)
    np.testing.assert_allclose(pca.explained.sum(), 1.0, rtol=1e-12)


def test_latent_at_walks_along_the_directions():
    z, _, major, _ = _cloud()
    pca = latent.fit_pca(z, num_components=2)
    at_mean = latent.latent_at(pca, [0.0, 0.0])
    assert at_mean.dtype == np.float32 and at_mean.shape == (Z,)
    np.testing.assert_allclose(at_mean, pca.mean, atol=1e-6)
    step = latent.latent_at(pca, [1.0, 0.0]) - at_mean  # one std along PC 1: 0.3 along major
    np.testing.assert_allclose(abs(step @ major), 0.3, rtol=0.05)
    np.testing.assert_allclose(np.linalg.norm(step), pca.scale[0], rtol=1e-5)


@given(st.lists(st.floats(-2.0, 2.0), min_size=3, max_size=3))
@settings(max_examples=50, deadline=None)
def test_coords_round_trip_inside_the_box(coords):
    z, _, _, _ = _cloud(n=500, seed=3)
    pca = latent.fit_pca(z, num_components=3)
    point = latent.latent_at(pca, coords)
    # Far from the [-1, 1] walls (the cloud spans about +-0.7 at 2 std), nothing is clipped.
    assert np.all(np.abs(point) < 1.0)
    np.testing.assert_allclose(pca.coords(point), coords, atol=1e-4)


def test_latent_at_clips_to_the_latent_box():
    z, _, _, _ = _cloud()
    pca = latent.fit_pca(z, num_components=2)
    far = latent.latent_at(pca, [50.0, -30.0])
    assert far.min() == -1.0 and far.max() == 1.0 and np.all(np.abs(far) <= 1.0)
    unclipped = pca.mean + (np.array([50.0, -30.0]) * pca.scale) @ pca.components
    np.testing.assert_allclose(far, np.clip(unclipped, -1.0, 1.0), atol=1e-6)
    assert not np.allclose(pca.coords(far), [50.0, -30.0], atol=1.0)  # clipped: no round trip


def test_a_flat_cloud_has_zero_spread_and_finite_coordinates():
    z = np.tile(np.linspace(-0.5, 0.5, Z), (10, 1))  # every latent the same
    pca = latent.fit_pca(z, num_components=2)
    np.testing.assert_array_equal(pca.scale, 0.0)
    np.testing.assert_array_equal(pca.explained, 0.0)
    # Rounding of the mean is not spread: coordinates stay 0, not rounding noise / rounding noise.
    np.testing.assert_allclose(pca.coords(z), 0.0, atol=1e-9)
    np.testing.assert_allclose(latent.latent_at(pca, [3.0, -3.0]), z[0], atol=1e-6)


@pytest.mark.parametrize(
    "latents, k",
    [
        (np.zeros((1, Z)), 1),  # one latent has no spread
        (np.zeros(Z), 1),  # not a matrix
        (np.zeros((4, 2, 3)), 1),
        (np.full((4, Z), np.nan), 1),
        (np.array([[0.0] * Z, [np.inf] + [0.0] * (Z - 1)]), 1),
        (np.zeros((10, Z)), 0),
        (np.zeros((10, Z)), Z + 1),
        (np.zeros((10, Z)), 2.0),
        (np.zeros((10, Z)), True),
        (np.zeros((3, Z)), 4),  # more directions than latents
    ],
)
def test_fit_pca_rejects_bad_input(latents, k):
    with pytest.raises(ValueError, match="fit_pca"):
        latent.fit_pca(latents, num_components=k)


def test_latent_at_rejects_wrong_shaped_coords():
    pca = latent.fit_pca(_cloud(n=50)[0], num_components=2)
    for bad in ([1.0], [1.0, 2.0, 3.0], [[1.0, 2.0]]):
        with pytest.raises(ValueError, match="coords"):
            latent.latent_at(pca, bad)
