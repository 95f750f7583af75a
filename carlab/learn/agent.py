"""The actor and critic, and how they learn inside the world model's imagination.

* :class:`Actor` — latent z -> 64 ReLU -> 32 ReLU -> 2 tanh = ``[steering, throttle]`` (the seed's shape).
* :class:`Critic` — latent z -> 64 ReLU -> 32 ReLU -> 1, the value of being there.

Learning in imagination (Dreamer-style): take latents of real observations from the replay buffer,
roll the learned dynamics forward H steps with the actor choosing actions (:func:`imagine`, a
``lax.scan``), predict rewards and continue probabilities, and compute lambda-returns from them and
the critic's values (:func:`lambda_return`). The critic regresses onto those returns.

The actor is trained by **backpropagating through the learned dynamics** (dynamics back-propagation,
as in DreamerV1): its loss is minus the lambda-return, and the gradient flows from every predicted
reward and value back through the model to each action. We chose this over a policy-gradient
(REINFORCE) estimator because the actions are continuous and the model is a smooth deterministic
network: the pathwise gradient has far lower variance, so the car learns to steer from a few
thousand updates on a CPU. Its known weakness — the actor can exploit model errors — is exactly
what notebook 4 of the lab lets students see. The world model's parameters are held fixed here.

Exploration on the real car follows the seed: with probability ``explore_prob`` (decaying by
``explore_decay`` per env step) Gaussian noise of std ``explore_noise`` is added to the action.
``explore_hold`` > 1 holds each draw for that many steps, so the car really swerves (the ``race``
preset: without swerves in the data the world model cannot learn that steering avoids obstacles).
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
from carlab.learn.config import AgentConfig, WorldModelConfig
from carlab.learn.world_model import make_world_model
from carlab.sim.env import ACTION_SIZE


class Actor(hk.Module):
    """z -> the action before its tanh; ``tanh`` of it is ``[steering, throttle]`` in [-1, 1]."""

    def __init__(self, hidden: tuple[int, ...], name: str = "actor"):
        super().__init__(name=name)
        self.hidden = tuple(hidden)

    def __call__(self, z):
        return hk.nets.MLP([*self.hidden, ACTION_SIZE])(z)


class Critic(hk.Module):
    """z -> value (expected discounted return)."""

    def __init__(self, hidden: tuple[int, ...], name: str = "critic"):
        super().__init__(name=name)
        self.hidden = tuple(hidden)

    def __call__(self, z):
        return hk.nets.MLP([*self.hidden, 1])(z)[..., 0]


class AgentNets(NamedTuple):
    """Pure functions of the actor and critic."""

    init_actor: callable  # (key, latent_size) -> actor params
    init_critic: callable  # (key, latent_size) -> critic params
    act: callable  # (actor params, z) -> action in [-1, 1]
    act_raw: callable  # (actor params, z) -> the action before tanh
    value: callable  # (critic params, z) -> value


@functools.cache
def make_agent(agent_config: AgentConfig = AgentConfig()) -> AgentNets:
    """The actor's and critic's pure functions for ``agent_config`` (cached)."""
    actor = hk.without_apply_rng(hk.transform(lambda z: Actor(agent_config.actor_hidden)(z)))
    critic = hk.without_apply_rng(hk.transform(lambda z: Critic(agent_config.critic_hidden)(z)))
    return AgentNets(
        init_actor=lambda key, latent_size: actor.init(key, jnp.zeros((1, latent_size))),
        init_critic=lambda key, latent_size: critic.init(key, jnp.zeros((1, latent_size))),
        act=lambda params, z: jnp.tanh(actor.apply(params, z)),
        act_raw=actor.apply,
        value=critic.apply,
    )


def optimizers(
    agent_config: AgentConfig,
) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """Adam with global-norm clipping for the actor and for the critic (step sizes in the state)."""
    return optim.adam(agent_config.actor_lr, agent_config.grad_clip), optim.adam(
        agent_config.critic_lr, agent_config.grad_clip
    )


def explore(key, action, explore_prob, agent_config: AgentConfig = AgentConfig()):
    """The seed's exploration: with probability ``explore_prob`` per car, add N(0, noise^2), clip.

    To hold a draw for several steps (``agent_config.explore_hold``), pass the same ``key`` on each of
    them (see :func:`carlab.learn.loop.collect_step`).
    """
    key_gate, key_noise = jax.random.split(key)
    gate = jax.random.uniform(key_gate, action.shape[:-1] + (1,)) < explore_prob
    noise = agent_config.explore_noise * jax.random.normal(key_noise, action.shape)
    return jnp.clip(action + jnp.where(gate, noise, 0.0), -1.0, 1.0)


class Imagination(NamedTuple):
    """An imagined rollout of H steps from B start latents (time-major)."""

    latents: jax.Array  # (H + 1, B, Z): z_0 (real) ... z_H
    actions: jax.Array  # (H, B, 2): the action taken in z_t
    raw_actions: jax.Array  # (H, B, 2): the same before tanh
    rewards: jax.Array  # (H, B): predicted reward of step t (from z_{t+1})
    continues: jax.Array  # (H, B): predicted P(not crashed) after step t


def imagine(
    wm_params,
    actor_params,
    z0,
    horizon: int,
    wm_config: WorldModelConfig,
    agent_config: AgentConfig,
    key=None,
):
    """Roll the learned dynamics ``horizon`` steps from latents ``z0`` (B, Z) with the actor driving.

    With ``agent_config.imagine_noise`` > 0 each action gets N(0, imagine_noise^2) noise (clipped to
    [-1, 1]; ``key`` required), reparameterised so the actor's gradient still flows through it.
    """
    wm, agent = make_world_model(wm_config), make_agent(agent_config)
    noisy = agent_config.imagine_noise > 0.0
    if noisy and key is None:
        raise ValueError("imagine: imagine_noise > 0 needs a key")
    noise = (
        agent_config.imagine_noise * jax.random.normal(key, (horizon, *z0.shape[:-1], ACTION_SIZE))
        if noisy
        else None
    )

    def step(z, eps):
        raw = agent.act_raw(actor_params, z)
        action = jnp.tanh(raw)
        if noisy:
            action = jnp.clip(action + eps, -1.0, 1.0)
        z_next = wm.dynamics(wm_params, z, action)
        reward = wm.reward(wm_params, z_next)
        cont = jax.nn.sigmoid(wm.continue_logit(wm_params, z_next))
        return z_next, (z_next, action, raw, reward, cont)

    _, (latents, actions, raw, rewards, continues) = jax.lax.scan(step, z0, noise, length=horizon)
    return Imagination(jnp.concatenate([z0[None], latents]), actions, raw, rewards, continues)


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


def loss_fn(params, wm_params, z0, wm_config: WorldModelConfig, agent_config: AgentConfig, key=None):
    """``actor_loss + critic_loss`` and metrics. Gradients stay apart: the actor's loss sees the
    critic only through stopped parameters, and the critic's loss sees stopped latents and returns.
    ``key`` draws the imagination's action noise (only used when ``agent_config.imagine_noise`` > 0)."""
    agent = make_agent(agent_config)
    traj = imagine(wm_params, params["actor"], z0, agent_config.horizon, wm_config, agent_config, key)
    # Bootstrap from the slow target critic: a critic chasing its own fresh estimates on imagined
    # latents can run away (the "deadly triad"); the lagging copy keeps the targets steady.
    values = agent.value(jax.lax.stop_gradient(params["critic_target"]), traj.latents)  # (H + 1, B)
    returns = lambda_return(traj.rewards, traj.continues, values, agent_config.discount, agent_config.lambda_)
    # Returns cannot leave [-value_clip, value_clip] in this task; clipping the critic's targets
    # stops a critic fitted on imagined latents from chasing its own extrapolation upwards.
    targets = jnp.clip(returns, -agent_config.value_clip, agent_config.value_clip)
    # Weight step t by the chance the imagined episode is still running there.
    alive = jnp.cumprod(jnp.concatenate([jnp.ones_like(traj.continues[:1]), traj.continues[:-1]]), axis=0)
    weight = jax.lax.stop_gradient(alive * agent_config.discount ** jnp.arange(agent_config.horizon)[:, None])
    # A pull on the pre-tanh actions (beyond saturation_threshold) keeps them out of tanh's flat
    # tails, where the gradient vanishes and a saturated actor (say, full brake, or full right on
    # every bend) could never learn its way back.
    saturation = jnp.mean(jax.nn.relu(jnp.abs(traj.raw_actions) - agent_config.saturation_threshold) ** 2)
    actor_loss = -jnp.mean(weight * returns) + agent_config.saturation_penalty * saturation
    critic_pred = agent.value(params["critic"], jax.lax.stop_gradient(traj.latents[:-1]))
    critic_loss = 0.5 * jnp.mean(weight * (critic_pred - jax.lax.stop_gradient(targets)) ** 2)
    metrics = {
        "actor/loss": actor_loss,
        "actor/imagined_return": jnp.mean(returns[0]),
        "actor/imagined_reward": jnp.mean(traj.rewards),
        "actor/imagined_continue": jnp.mean(traj.continues),
        "actor/action_abs": jnp.mean(jnp.abs(traj.actions)),
        "actor/saturation": saturation,
        "critic/loss": critic_loss,
        "critic/value": jnp.mean(values[0]),
    }
    return actor_loss + critic_loss, metrics


@functools.partial(jax.jit, static_argnames=("wm_config", "agent_config"))
def update(params, opt_state, wm_params, z0, key, wm_config: WorldModelConfig, agent_config: AgentConfig):
    """One imagination update of actor and critic from start latents ``z0`` (B, Z).

    Args:
        params: ``{"actor", "critic", "critic_target"}``; opt_state: ``{"actor", "critic"}`` states.
        wm_params: the world model's params (held fixed).
        key: draws the imagination's action noise (unused when ``agent_config.imagine_noise`` is 0).
    Returns:
        ``(params, opt_state, metrics)``.
    """
    wm_params, z0 = jax.lax.stop_gradient((wm_params, z0))
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params, wm_params, z0, wm_config, agent_config, key)
    actor_opt, critic_opt = optimizers(agent_config)
    actor_updates, actor_state = actor_opt.update(grads["actor"], opt_state["actor"], params["actor"])
    critic_updates, critic_state = critic_opt.update(grads["critic"], opt_state["critic"], params["critic"])
    metrics["actor/grad_norm"] = optax.tree.norm(grads["actor"])
    critic = optax.apply_updates(params["critic"], critic_updates)
    new_params = {
        "actor": optax.apply_updates(params["actor"], actor_updates),
        "critic": critic,
        "critic_target": optax.incremental_update(critic, params["critic_target"], agent_config.target_rate),
    }
    return new_params, {"actor": actor_state, "critic": critic_state}, metrics


def init_actor_critic(key, agent_config: AgentConfig, latent_size: int, *, critic_key=None):
    """Fresh ``(params, opt_state)``: ``{"actor", "critic", "critic_target"}`` (the target a copy of the
    critic) and the Adam states of ``{"actor", "critic"}``.

    The actor's weights are drawn with ``key`` and the critic's with ``critic_key``; without
    ``critic_key`` the two come from ``jax.random.split(key)``. (The training loop passes both,
    split off its run key with the world model's, so a seed keeps the networks it always had.)
    """
    if critic_key is None:
        key, critic_key = jax.random.split(key)
    nets = make_agent(agent_config)
    params = {
        "actor": nets.init_actor(key, latent_size),
        "critic": nets.init_critic(critic_key, latent_size),
    }
    params["critic_target"] = params["critic"]
    return params, init_optimizers(params, agent_config)


def init_optimizers(params, agent_config: AgentConfig) -> dict:
    """Fresh Adam states ``{"actor", "critic"}`` for actor-critic ``params`` (e.g. to train them on)."""
    actor_opt, critic_opt = optimizers(agent_config)
    return {"actor": actor_opt.init(params["actor"]), "critic": critic_opt.init(params["critic"])}


def _fit_step(carry, data, key, static):
    """One :func:`fit` update: start latents drawn uniformly with ``key``, then one :func:`update`."""
    wm_config, agent_config = static
    wm_params, start_latents = data
    params, opt_state = carry
    # One key for both draws (the starts, the imagination's noise), as fit always did: splitting it
    # now would change every actor the notebooks fit.
    pick = jax.random.randint(key, (agent_config.imagine_batch,), 0, start_latents.shape[0])
    params, opt_state, metrics = update(
        params, opt_state, wm_params, start_latents[pick], key, wm_config, agent_config
    )
    return (params, opt_state), metrics


def fit(
    key,
    params,
    opt_state,
    *,
    wm_params,
    start_latents,
    num_updates: int,
    wm_config: WorldModelConfig = WorldModelConfig(),
    agent_config: AgentConfig = AgentConfig(),
    progress: bool = True,
):
    """Train actor and critic purely in imagination, the world model held fixed (the notebooks' way).

    Each update starts ``agent_config.imagine_batch`` imagined rollouts from latents drawn uniformly from
    ``start_latents`` (S, Z) — encoded real observations — and takes one :func:`update`.

    Returns:
        ``(params, opt_state, history)``; ``history`` maps each metric to a (num_updates,) array.
    """
    chex.assert_rank(start_latents, 2)
    (params, opt_state), history = optim.fit_updates(
        _fit_step,
        key,
        (params, opt_state),
        (wm_params, start_latents),
        num_updates=num_updates,
        static=(wm_config, agent_config),
        desc="actor-critic",
        loss_key="actor/loss",
        progress=progress,
    )
    return params, opt_state, history
