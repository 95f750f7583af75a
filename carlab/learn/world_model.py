"""The world model: how the world responds, learned from real transitions (dm-haiku + optax).

    obs --Encoder--> z --Dynamics(z, action)--> z' --RewardHead--> reward
                     |                            +--ContinueHead--> P(not crashed)
                     +--Decoder--> obs            +--Decoder--> next obs

Sizes default to the seed's: encoder 6 -> 64 ReLU -> 32, dynamics [32 + 2] -> 64 ReLU -> 32 (as a
residual: z' = tanh(z + f(z, a)), which makes "nothing changes" the easy default), reward 32 -> 32 ReLU -> 1,
decoder 32 -> 64 ReLU -> 6, plus a continue head 32 -> 32 ReLU -> 1 so imagination knows when an
episode ends. Latents pass through tanh (encoder output and dynamics step), so they live in
[-1, 1]^32 and imagined rollouts stay where the model was trained. The latent is deterministic: the car's world is fully observed apart from the track
ahead, and a deterministic model keeps the lab's pictures easy to read.

Losses (mean squared errors, but Huber for the reward and cross-entropy for continue), on a batch
of stretches of L consecutive transitions ``(obs, action, next_obs, reward, done)``, the dynamics
rolled open loop from the first observation (z' below is the k-th predicted latent; see
:func:`loss_fn`):

* ``recon``: decode(encode(obs)) vs obs;
* ``next_obs``: decode(z') vs next_obs;
* ``reward``: reward_head(z') vs reward;
* ``continue``: continue_head(z') vs 1 - done;
* ``latent``: z' vs stop_gradient(encode(next_obs)), so imagined latents stay where real ones live.

:func:`update` is one pure, jitted Adam step with global-norm clipping (:func:`carlab.learn.optim.adam`);
:func:`fit` runs many of them on a fixed buffer (:func:`carlab.learn.optim.fit_updates`).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import haiku as hk
import jax
import jax.numpy as jnp
import optax

from carlab.learn import optim
from carlab.learn.config import WorldModelConfig
from carlab.learn.replay import Transition, sample_sequences, sequence_mask
from carlab.sim.env import ACTION_SIZE, OBS_SIZE

LOSS_NAMES = ("recon", "next_obs", "reward", "continue", "latent")  # the terms of loss_fn, in order
LOSS_KEYS = ("wm/loss", *(f"wm/{name}_loss" for name in LOSS_NAMES))  # its metric keys: total first


class Encoder(hk.Module):
    """obs (..., 6) -> latent z (..., latent_size)."""

    def __init__(self, hidden: int, latent_size: int, name: str = "encoder"):
        super().__init__(name=name)
        self.hidden, self.latent_size = hidden, latent_size

    def __call__(self, obs):
        # tanh keeps latents in [-1, 1]: imagination can then never wander off to huge values
        # where the heads extrapolate wildly (and the actor would learn to exploit that).
        return jnp.tanh(hk.nets.MLP([self.hidden, self.latent_size])(obs))


class Dynamics(hk.Module):
    """(z, action) -> next z, as tanh(z + MLP([z, action])): a bounded residual step."""

    def __init__(self, hidden: int, latent_size: int, name: str = "dynamics"):
        super().__init__(name=name)
        self.hidden, self.latent_size = hidden, latent_size

    def __call__(self, z, action):
        return jnp.tanh(
            z + hk.nets.MLP([self.hidden, self.latent_size])(jnp.concatenate([z, action], axis=-1))
        )


class EnsembleDynamics(hk.Module):
    """K dynamics networks in one: ``(z (K, ..., Z), action (..., 2)) -> next z (K, ..., Z)``, member k
    stepping its own latent with its own weights (stacked, so the K members are one batched product).

    Their disagreement is the model's uncertainty: members trained on the same data agree where the
    data were and drift apart where there were none (MOPO's and PETS' ensembles)."""

    def __init__(self, hidden: int, latent_size: int, members: int, name: str = "dynamics_ensemble"):
        super().__init__(name=name)
        self.hidden, self.latent_size, self.members = hidden, latent_size, members

    def _layer(self, x, size: int, name: str):
        k, fan_in = self.members, x.shape[-1]
        # hk.Linear's default initialisation, one independent draw per member.
        init = hk.initializers.TruncatedNormal(stddev=1.0 / fan_in**0.5)
        w = hk.get_parameter(f"{name}_w", (k, fan_in, size), init=init)
        b = hk.get_parameter(f"{name}_b", (k, size), init=jnp.zeros)
        flat = x.reshape(k, -1, fan_in)
        return (jnp.einsum("kni,kio->kno", flat, w) + b[:, None]).reshape(*x.shape[:-1], size)

    def __call__(self, z, action):
        action = jnp.broadcast_to(action, (*z.shape[:-1], action.shape[-1]))
        hidden = jax.nn.relu(self._layer(jnp.concatenate([z, action], axis=-1), self.hidden, "hidden"))
        return jnp.tanh(z + self._layer(hidden, self.latent_size, "out"))


class RewardHead(hk.Module):
    """z' -> the reward of the step that led to it."""

    def __init__(self, hidden: int, name: str = "reward"):
        super().__init__(name=name)
        self.hidden = hidden

    def __call__(self, z):
        return hk.nets.MLP([self.hidden, 1])(z)[..., 0]


class ContinueHead(hk.Module):
    """z' -> logit of P(the episode goes on), i.e. the car did not crash."""

    def __init__(self, hidden: int, name: str = "continue"):
        super().__init__(name=name)
        self.hidden = hidden

    def __call__(self, z):
        return hk.nets.MLP([self.hidden, 1])(z)[..., 0]


class Decoder(hk.Module):
    """z -> obs (..., 6)."""

    def __init__(self, hidden: int, name: str = "decoder"):
        super().__init__(name=name)
        self.hidden = hidden

    def __call__(self, z):
        return hk.nets.MLP([self.hidden, OBS_SIZE])(z)


class WorldModel(NamedTuple):
    """The world model's pure functions; every one takes the params first."""

    init: callable  # (key) -> params
    encode: callable  # (params, obs) -> z
    dynamics: callable  # (params, z, action) -> z'
    reward: callable  # (params, z') -> reward
    continue_logit: callable  # (params, z') -> logit of not crashed
    decode: callable  # (params, z) -> obs
    members: callable  # (params, z (K, ..., Z), action) -> each dynamics member's next z (K, ..., Z)


@functools.cache
def make_world_model(wm_config: WorldModelConfig = WorldModelConfig()) -> WorldModel:
    """Build the world model's pure functions for ``wm_config`` (cached: same wm_config, same functions)."""

    ensemble = wm_config.ensemble > 1

    def parts():
        encoder = Encoder(wm_config.encoder_hidden, wm_config.latent_size)
        if ensemble:
            members = EnsembleDynamics(wm_config.dynamics_hidden, wm_config.latent_size, wm_config.ensemble)
        else:  # the seed's single network (its parameter names, so older runs still load)
            single = Dynamics(wm_config.dynamics_hidden, wm_config.latent_size)
            members = lambda z, action: single(z[0], action)[None]  # a one-member view
        reward = RewardHead(wm_config.reward_hidden)
        cont = ContinueHead(wm_config.continue_hidden)
        decoder = Decoder(wm_config.decoder_hidden)

        def dynamics(z, action):
            # The members' mean: one next latent for everything that wants one (the dream, the lab).
            return jnp.mean(members(jnp.broadcast_to(z, (wm_config.ensemble, *z.shape)), action), axis=0)

        def init(obs, action):
            z = encoder(obs)
            z_next = dynamics(z, action)
            return decoder(z), reward(z_next), cont(z_next)

        return init, (encoder, dynamics, reward, cont, decoder, members)

    fns = hk.without_apply_rng(hk.multi_transform(parts))
    encode, dynamics, reward, cont, decode, members = fns.apply

    def init(key):
        return fns.init(key, jnp.zeros((1, OBS_SIZE)), jnp.zeros((1, ACTION_SIZE)))

    return WorldModel(init, encode, dynamics, reward, cont, decode, members)


def optimizer(wm_config: WorldModelConfig) -> optax.GradientTransformation:
    """The world model's optimiser (:func:`carlab.learn.optim.adam`)."""
    return optim.adam(wm_config.learning_rate, wm_config.grad_clip)


def _masked_mean(values, mask):
    """Mean of ``values`` (B, L[, ...]) over the steps where ``mask`` (B, L) is 1."""
    values = values.reshape(values.shape[:2] + (-1,)).mean(-1)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def loss_weights(wm_config: WorldModelConfig) -> dict[str, float]:
    """The weight of each term of :func:`loss_fn`, by the names in :data:`LOSS_NAMES`."""
    return {
        "recon": wm_config.recon_weight,
        "next_obs": wm_config.next_obs_weight,
        "reward": wm_config.reward_weight,
        "continue": wm_config.continue_weight,
        "latent": wm_config.latent_weight,
    }


def weighted_sum(losses: dict, weights: dict):
    """``sum_k weights[k] * losses[k]``, in the order of ``losses``; both must name the same terms
    (as dreamerv3 checks), so a new loss term cannot silently go unweighted or a weight unused."""
    if losses.keys() != weights.keys():
        raise ValueError(f"loss terms {sorted(losses)} and loss weights {sorted(weights)} differ")
    return sum(weights[k] * v for k, v in losses.items())


def loss_fn(params, batch: Transition, wm_config: WorldModelConfig = WorldModelConfig()):
    """Total weighted loss and a metrics dict ``{"wm/recon_loss": ..., ...}`` for one batch.

    ``batch`` holds stretches of L consecutive transitions of one car, (B, L, ...) from
    :func:`carlab.learn.replay.sample_sequences`, or single transitions (B, ...), i.e. L = 1. The dynamics
    roll forward *open loop* from the first real latent — ``z_{k+1} = dynamics(z_k, a_k)``, never
    looking at the real observations again — and every predicted step is scored against what really
    happened (masked after the stretch's episode ended). That is exactly how imagination uses the model,
    so training it this way teaches the dynamics to stay accurate over several steps instead of
    only one: one-step training lets small errors compound over the imagination horizon, and the
    actor then learns to steer by a road that is not there.
    """
    if batch.obs.ndim == 2:  # single transitions: stretches of length 1
        batch = jax.tree.map(lambda x: x[:, None], batch)
    chex.assert_rank([batch.obs, batch.action, batch.reward], [3, 3, 2])
    wm = make_world_model(wm_config)
    mask = sequence_mask(batch)  # (B, L)

    def step(z, action):  # z: (K, B, Z), every dynamics member rolling its own latent
        z_next = wm.members(params, z, action)
        return z_next, z_next

    k = wm_config.ensemble
    z_first = wm.encode(params, batch.obs[:, 0])
    _, z_pred = jax.lax.scan(
        step, jnp.broadcast_to(z_first, (k, *z_first.shape)), jnp.swapaxes(batch.action, 0, 1)
    )
    # (L, K, B, Z) -> (K B, L, Z): each member's predictions are scored like another batch of stretches.
    z_pred = jnp.transpose(z_pred, (1, 2, 0, 3)).reshape(-1, z_pred.shape[0], z_pred.shape[-1])
    if k > 1:
        batch = jax.tree.map(lambda x: jnp.concatenate([x] * k), batch)
        mask = jnp.concatenate([mask] * k)
    z_target = jax.lax.stop_gradient(wm.encode(params, batch.next_obs))
    cont_logit = wm.continue_logit(params, z_pred)
    losses = {
        # Every stored observation is real, so reconstruction needs no mask.
        "recon": jnp.mean((wm.decode(params, wm.encode(params, batch.obs)) - batch.obs) ** 2),
        "next_obs": _masked_mean((wm.decode(params, z_pred) - batch.next_obs) ** 2, mask),
        # Huber, not squared: the checkpoint and lap bonuses (+1, +10) land where the car's position
        # on the lap, which no observation shows, says; they are unpredictable spikes, and squared
        # errors of 100 would drown the per-step progress signal the driver learns from.
        "reward": _masked_mean(optax.huber_loss(wm.reward(params, z_pred), batch.reward, delta=1.0), mask),
        "continue": _masked_mean(
            jnp.where(batch.done, wm_config.crash_weight, 1.0)
            * optax.sigmoid_binary_cross_entropy(cont_logit, 1.0 - batch.done),
            mask,
        ),
        "latent": _masked_mean((z_pred - z_target) ** 2, mask),
    }
    total = weighted_sum(losses, loss_weights(wm_config))
    metrics = {f"wm/{k}_loss": v for k, v in losses.items()}
    metrics["wm/loss"] = total
    return total, metrics


@functools.partial(jax.jit, static_argnames="wm_config")
def update(params, opt_state, batch: Transition, key, wm_config: WorldModelConfig = WorldModelConfig()):
    """One optimiser step on ``batch``. Returns ``(params, opt_state, metrics)``.

    ``key`` is unused (the model is deterministic) but kept so every update has the same signature.
    """
    del key
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, batch, wm_config)
    updates, opt_state = optimizer(wm_config).update(grads, opt_state, params)
    metrics["wm/grad_norm"] = optax.tree.norm(grads)
    return optax.apply_updates(params, updates), opt_state, metrics


def open_loop(params, obs, actions, wm_config: WorldModelConfig = WorldModelConfig()):
    """Predict from a real ``obs`` (B, 6) under ``actions`` (B, T, 2), never looking at reality again.

    Returns ``(pred_obs (B, T, 6), pred_reward (B, T), pred_continue (B, T))`` for steps 1..T.
    """
    wm = make_world_model(wm_config)

    def step(z, action):
        z_next = wm.dynamics(params, z, action)
        out = (
            wm.decode(params, z_next),
            wm.reward(params, z_next),
            jax.nn.sigmoid(wm.continue_logit(params, z_next)),
        )
        return z_next, out

    _, (pred_obs, pred_reward, pred_cont) = jax.lax.scan(
        step, wm.encode(params, obs), jnp.swapaxes(actions, 0, 1)
    )
    return jnp.swapaxes(pred_obs, 0, 1), jnp.swapaxes(pred_reward, 0, 1), jnp.swapaxes(pred_cont, 0, 1)


def open_loop_errors(params, batch: Transition, wm_config: WorldModelConfig = WorldModelConfig()) -> dict:
    """How far the model's open-loop predictions drift from what really happened, step by step.

    From the first real observation of each stretch in ``batch`` (B, L, ...), the model is fed the
    real actions for L steps and never shown reality again (:func:`open_loop`). Errors are averaged over
    the stretches still in their first episode (:func:`carlab.learn.replay.sequence_mask`).

    Returns:
        ``pred_obs`` (B, L, 6), ``pred_reward`` (B, L), ``pred_continue`` (B, L), ``mask`` (B, L), and
        per step k = 1..L: ``obs_error`` (L,) mean squared error of the observation, ``channel_error``
        (L, 6) the same per observation entry, ``reward_error`` (L,) mean squared reward error.
    """
    chex.assert_rank([batch.obs, batch.action, batch.reward], [3, 3, 2])
    pred_obs, pred_reward, pred_cont = open_loop(params, batch.obs[:, 0], batch.action, wm_config)
    mask = sequence_mask(batch)
    count = jnp.maximum(jnp.sum(mask, axis=0), 1.0)  # (L,)
    sq = (pred_obs - batch.next_obs) ** 2  # (B, L, 6)
    channel_error = jnp.sum(sq * mask[..., None], axis=0) / count[:, None]
    reward_error = jnp.sum((pred_reward - batch.reward) ** 2 * mask, axis=0) / count
    return {
        "pred_obs": pred_obs,
        "pred_reward": pred_reward,
        "pred_continue": pred_cont,
        "mask": mask,
        "obs_error": jnp.mean(channel_error, axis=-1),
        "channel_error": channel_error,
        "reward_error": reward_error,
    }


def _fit_step(carry, buffer, key, static):
    """One :func:`fit` update: sample stretches with ``key``, then one :func:`update`."""
    stride, batch_size, length, wm_config = static
    params, opt_state = carry
    batch = sample_sequences(buffer, key, batch_size, length, stride)
    params, opt_state, metrics = update(params, opt_state, batch, key, wm_config)
    return (params, opt_state), metrics


def fit(
    key,
    params,
    opt_state,
    buffer,
    *,
    num_updates: int,
    stride: int,
    batch_size: int = 32,
    length: int = 8,
    wm_config: WorldModelConfig = WorldModelConfig(),
    progress: bool = True,
):
    """Train on a fixed replay buffer for ``num_updates`` updates (offline; the notebooks' way).

    Each update samples ``batch_size`` stretches of ``length`` steps (``stride`` = the number of cars
    that filled the buffer, see :func:`carlab.learn.replay.sample_sequences`) and takes one :func:`update`.

    Returns:
        ``(params, opt_state, history)``; ``history`` maps each metric to a (num_updates,) array.
    """
    (params, opt_state), history = optim.fit_updates(
        _fit_step,
        key,
        (params, opt_state),
        buffer,
        num_updates=num_updates,
        static=(stride, batch_size, length, wm_config),
        desc="world model",
        loss_key="wm/loss",
        progress=progress,
    )
    return params, opt_state, history
