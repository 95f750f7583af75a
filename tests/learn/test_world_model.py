"""The world model's loss terms and their weights name the same things."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn import config as config_lib
from carlab.learn import optim, replay
from carlab.learn import world_model as wm_lib

CONFIG = config_lib.tiny().world_model


def test_every_loss_term_has_a_weight():
    assert tuple(wm_lib.loss_weights(CONFIG)) == wm_lib.LOSS_NAMES
    assert wm_lib.LOSS_KEYS == ("wm/loss", *(f"wm/{name}_loss" for name in wm_lib.LOSS_NAMES))


@pytest.mark.parametrize(
    "losses, weights",
    [
        ({"recon": 1.0, "reward": 2.0}, {"recon": 1.0}),  # a term without a weight
        ({"recon": 1.0}, {"recon": 1.0, "reward": 0.5}),  # a weight without a term
        ({"recon": 1.0}, {"recons": 1.0}),  # a typo
    ],
)
def test_weighted_sum_refuses_mismatched_keys(losses, weights):
    with pytest.raises(ValueError, match="loss terms .* and loss weights .* differ"):
        wm_lib.weighted_sum(losses, weights)


def test_loss_is_the_weighted_sum_of_its_terms():
    params = wm_lib.make_world_model(CONFIG).init(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    batch = replay.Transition(
        obs=jax.random.uniform(keys[0], (4, 3, 6)),
        action=jax.random.uniform(keys[1], (4, 3, 2), minval=-1.0),
        next_obs=jax.random.uniform(keys[2], (4, 3, 6)),
        reward=jnp.ones((4, 3)),
        done=jnp.zeros((4, 3), bool).at[0, 1].set(True),
    )
    weighted = dataclasses.replace(CONFIG, recon_weight=2.0, reward_weight=0.5, latent_weight=0.0)
    total, metrics = wm_lib.loss_fn(params, batch, weighted)
    weights = wm_lib.loss_weights(weighted)
    expected = sum(weights[name] * metrics[f"wm/{name}_loss"] for name in wm_lib.LOSS_NAMES)
    np.testing.assert_allclose(float(total), float(expected), rtol=1e-6)
    assert float(metrics["wm/loss"]) == float(total)


def test_the_optimiser_keeps_its_learning_rate_in_the_state():
    params = wm_lib.make_world_model(CONFIG).init(jax.random.PRNGKey(0))
    state = wm_lib.optimizer(CONFIG).init(params)
    assert optim.learning_rate(state) == pytest.approx(CONFIG.learning_rate)
