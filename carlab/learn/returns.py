"""What an imagined rollout is worth: lambda-returns, and DreamerV3's return normalisation.

* :func:`lambda_return` — ``R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1})``, ``R_H = v_H``.
* :func:`update_return_range` / :func:`return_scale` — the actor's objective is divided by
  ``max(limit, S)``, ``S`` an exponential moving average of the 5th-95th percentile range of the
  returns (DreamerV3, Hafner et al. 2023). Large returns are scaled down and small ones are never
  scaled up, so the actor's step does not depend on how big this task's rewards happen to be, and a
  fixed entropy bonus means the same thing early (returns near 0) and late (returns near 100).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

PERCENTILES = (5.0, 95.0)
"""The low and high percentiles of the returns whose range is tracked (DreamerV3's)."""


def lambda_return(rewards, continues, values, discount: float = 0.99, lambda_: float = 0.95):
    """lambda-returns R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1}), R_H = v_H.

    Args:
        rewards, continues: (H, B). values: (H + 1, B), the last one bootstraps.
    Returns:
        (H, B) returns for t = 0 .. H-1.
    """
    chex.assert_equal_shape([rewards, continues])
    chex.assert_shape(values, (rewards.shape[0] + 1, *rewards.shape[1:]))

    def backward(next_return, inputs):
        reward, cont, next_value = inputs
        ret = reward + discount * cont * ((1.0 - lambda_) * next_value + lambda_ * next_return)
        return ret, ret

    _, returns = jax.lax.scan(backward, values[-1], (rewards, continues, values[1:]), reverse=True)
    return returns


def init_return_range() -> jax.Array:
    """The tracked ``[low, high]`` percentiles before any return was seen (a range of 0)."""
    return jnp.zeros(2, jnp.float32)


def update_return_range(return_range, returns, rate: float):
    """Move the tracked ``[low, high]`` (2,) a step ``rate`` towards this batch's 5th and 95th
    percentiles of ``returns`` (any shape); gradients do not flow into it."""
    batch = jnp.percentile(jax.lax.stop_gradient(returns), jnp.asarray(PERCENTILES))
    return (1.0 - rate) * return_range + rate * batch


def return_scale(return_range, limit: float = 1.0):
    """``max(limit, high - low)``: what the actor's objective is divided by."""
    return jnp.maximum(limit, return_range[1] - return_range[0])
