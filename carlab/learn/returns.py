"""What an imagined rollout is worth: lambda-returns, and DreamerV3's return normalisation.

* :func:`lambda_return` — ``R_t = r_t + gamma c_t ((1 - lambda) v_{t+1} + lambda R_{t+1})``, ``R_H = v_H``.
* :func:`n_step_targets` — real stretches of driving as n-step TD targets ``sum_k gamma^k r_{t+k}``
  plus the discount and latent to bootstrap from, cut at the end of an episode or the stretch.
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


def n_step_targets(reward, done, follows, z_next, n: int, discount: float):
    """The real n-step return of every step of stretches (B, L), cut where the stretch or its episode ends.

    Args:
        reward, done: (B, L) real rewards and crashes. follows: (B, L) bool, step t + 1 continues step
            t's episode (the last entry unused). z_next: (B, L, Z) latents of the next observations.
    Returns:
        ``(rewards (B, L), bootstrap_discount (B, L), z_bootstrap (B, L, Z))``: for step t,
        ``sum_{k<m} gamma^k r_{t+k}``, ``gamma^m (1 - done_{t+m-1})`` and ``z_next_{t+m-1}``, m <= n
        the steps that stay within the stretch and its episode (n = 1: the one-step TD target).
    """
    chex.assert_equal_shape([reward, done, follows])
    length = reward.shape[1]
    alive = 1.0 - done.astype(jnp.float32)
    total, bootstrap, last = reward, discount * alive, jnp.broadcast_to(jnp.arange(length), reward.shape)
    running = jnp.ones(reward.shape, bool)
    pad = lambda x, k: jnp.pad(x, ((0, 0), (0, k)))[:, k:]  # x[:, t + k], zero past the stretch
    for k in range(1, n):
        # Step t + k still belongs to the run from t: every link up to it holds and it lies in the stretch.
        running = running & pad(follows, k - 1).astype(bool) & (jnp.arange(length) + k < length)
        total = total + jnp.where(running, discount**k * pad(reward, k), 0.0)
        bootstrap = jnp.where(running, discount ** (k + 1) * pad(alive, k), bootstrap)
        last = jnp.where(running, last + 1, last)
    z_bootstrap = jnp.take_along_axis(z_next, last[..., None], axis=1)
    return total, bootstrap, z_bootstrap
