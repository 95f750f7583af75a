"""The actor and critic, and how they learn inside the world model's imagination.

* :class:`Actor` — latent z -> 64 ReLU -> 32 ReLU -> 2 tanh = ``[steering, throttle]`` (the seed's
  shape; a stochastic actor also outputs a std). :class:`Critic` — z -> 64 -> 32 -> 1, a value.

Learning in imagination (Dreamer-style): from latents of real observations, roll the learned
dynamics H steps with the actor choosing actions (:func:`imagine`), predict rewards and continue
probabilities, and compute lambda-returns (:mod:`carlab.learn.returns`); the critic regresses onto
them. The actor's objective is the lambda-return, its gradient either **pathwise**, back through
the model to each action (DreamerV1; low variance, the default), or the **likelihood-ratio**
(REINFORCE) one of a stochastic actor (``agent.reinforce``, DreamerV3). Both can be exploited by a
flawed model (notebook 4; ``benchmarks/learning.md``): :mod:`carlab.learn.anchored` is the learner
whose critics learn from real steps instead. The world model's parameters are held fixed here.

Exploration on the real car (:func:`explore`): Gaussian noise, each draw held ``explore_hold`` steps.
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
from carlab.learn import returns as returns_lib
from carlab.learn.config import AgentConfig, WorldModelConfig
from carlab.learn.world_model import make_world_model
from carlab.sim.env import ACTION_SIZE


class Actor(hk.Module):
    """z -> the action before its tanh (``tanh`` of it is ``[steering, throttle]`` in [-1, 1]) and,
    for a stochastic actor, the std of a Gaussian around it (before the tanh, as in SAC)."""

    def __init__(
        self, hidden: tuple[int, ...], *, std_range: tuple[float, float] | None = None, name="actor"
    ):
        super().__init__(name=name)
        self.hidden, self.std_range = tuple(hidden), std_range

    def __call__(self, z):
        if self.std_range is None:
            return hk.nets.MLP([*self.hidden, ACTION_SIZE])(z), None
        mean, raw_std = jnp.split(hk.nets.MLP([*self.hidden, 2 * ACTION_SIZE])(z), 2, axis=-1)
        # DreamerV3's bounded std: always within [low, high], starting near the top (sigmoid(2) = 0.88).
        low, high = self.std_range
        return mean, (high - low) * jax.nn.sigmoid(raw_std + 2.0) + low


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
    act: callable  # (actor params, z) -> action in [-1, 1] (a stochastic actor's mode)
    act_raw: callable  # (actor params, z) -> the action before tanh
    dist: callable  # (actor params, z) -> (mean before tanh, std or None for a deterministic actor)
    value: callable  # (critic params, z) -> value


@functools.cache
def make_agent(agent_config: AgentConfig = AgentConfig()) -> AgentNets:
    """The actor's and critic's pure functions for ``agent_config`` (cached)."""
    if agent_config.reinforce > 0.0 and not agent_config.stochastic:
        raise ValueError("agent.reinforce > 0 needs a stochastic actor (agent.stochastic = True)")
    std_range = (agent_config.std_min, agent_config.std_max) if agent_config.stochastic else None
    actor = hk.without_apply_rng(
        hk.transform(lambda z: Actor(agent_config.actor_hidden, std_range=std_range)(z))
    )
    critic = hk.without_apply_rng(hk.transform(lambda z: Critic(agent_config.critic_hidden)(z)))

    def act_raw(params, z):
        return actor.apply(params, z)[0]

    return AgentNets(
        init_actor=lambda key, latent_size: actor.init(key, jnp.zeros((1, latent_size))),
        init_critic=lambda key, latent_size: critic.init(key, jnp.zeros((1, latent_size))),
        act=lambda params, z: jnp.tanh(act_raw(params, z)),
        act_raw=act_raw,
        dist=actor.apply,
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
    log_probs: jax.Array  # (H, B): log-density of a stochastic actor's action (0 for a deterministic one)
    disagreement: jax.Array  # (H, B): spread of the dynamics members' next latents (0 for one network)


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

    A stochastic actor (``agent_config.stochastic``) samples ``tanh(mean + std eps)``, eps ~ N(0, 1)
    (SAC's squashed Gaussian), reparameterised so the gradient flows through the sample into the
    mean and the std; ``log_probs`` is the sample's log-density (with tanh's change of variables).
    With ``agent_config.imagine_noise`` > 0 each action gets N(0, imagine_noise^2) noise on top
    (clipped to [-1, 1]). Either needs ``key``.
    """
    wm, agent = make_world_model(wm_config), make_agent(agent_config)
    noisy, stochastic = agent_config.imagine_noise > 0.0, agent_config.stochastic
    if (noisy or stochastic) and key is None:
        raise ValueError("imagine: a stochastic actor or imagine_noise > 0 needs a key")
    shape = (horizon, *z0.shape[:-1], ACTION_SIZE)
    zeros = jnp.zeros(shape)  # each draw only when its option is on
    sample_eps = jax.random.normal(jax.random.fold_in(key, 1), shape) if stochastic else zeros
    # ``key`` itself draws the imagine_noise it always drew, so those runs stay what they were.
    eps = (sample_eps, agent_config.imagine_noise * jax.random.normal(key, shape) if noisy else zeros)

    def step(z, eps):
        sample_eps, noise = eps
        mean, std = agent.dist(actor_params, z)
        raw, log_prob = mean, jnp.zeros(mean.shape[:-1])
        if stochastic:
            _, log_prob, raw = squashed_sample(mean, std, sample_eps)
        action = jnp.tanh(raw)
        if noisy:
            action = jnp.clip(action + noise, -1.0, 1.0)
        members = wm.members(wm_params, jnp.broadcast_to(z, (wm_config.ensemble, *z.shape)), action)
        z_next = jnp.mean(members, axis=0)
        # MOPO's pessimism: a step is worth its predicted reward minus what the model does not know,
        # the spread of the dynamics members' predictions (0 for a single network).
        # (Its gradient, through a square root, is undefined where the members agree exactly: a
        # single network has none, and the tiny floor keeps ensembles finite.)
        disagreement = jnp.zeros(z.shape[:-1])
        if wm_config.ensemble > 1:
            disagreement = jnp.mean(jnp.sqrt(jnp.var(members, axis=0) + 1e-12), axis=-1)
        reward = wm.reward(wm_params, z_next) - agent_config.pessimism * disagreement
        cont = jax.nn.sigmoid(wm.continue_logit(wm_params, z_next))
        if agent_config.cautious_continue and wm_config.ensemble > 1:
            # A crash if any member foresees one: the chance of going on is the lowest of the members'.
            cont = jnp.min(jax.nn.sigmoid(wm.continue_logit(wm_params, members)), axis=0)
        return z_next, (z_next, action, raw, reward, cont, log_prob, disagreement)

    _, (latents, *rest) = jax.lax.scan(step, z0, eps, length=horizon)
    return Imagination(jnp.concatenate([z0[None], latents]), *rest)


def squashed_sample(mean, std, eps):
    """SAC's squashed Gaussian: ``(tanh(raw), its log-density, raw)``, ``raw = mean + std eps``
    (tanh's change of variables included; reparameterised: gradients reach ``mean`` and ``std``)."""
    raw = mean + std * eps
    log_prob = jnp.sum(jax.scipy.stats.norm.logpdf(eps) - jnp.log(std) - _log1m_tanh_sq(raw), axis=-1)
    return jnp.tanh(raw), log_prob, raw


def _log1m_tanh_sq(x):
    """log(1 - tanh(x)^2), stable for large |x|: 2 (log 2 - x - softplus(-2x))."""
    return 2.0 * (jnp.log(2.0) - x - jax.nn.softplus(-2.0 * x))


def _reinforce(actor_params, traj: Imagination, returns, values, weight, scale, agent: AgentNets):
    """The likelihood-ratio objective: mean of log pi(a_t | z_t) times the stopped, normalised advantage
    ``(R_t - v(z_t)) / scale``, gradients only through the actor's distribution (DreamerV2/V3). It needs
    no derivative of the model, so it still points uphill where the dynamics are flat — a car at
    standstill braking, whose pathwise gradient is zero though driving on pays."""
    z, u = jax.lax.stop_gradient((traj.latents[:-1], traj.raw_actions))
    mean, std = agent.dist(actor_params, z)
    log_prob = jnp.sum(jax.scipy.stats.norm.logpdf(u, mean, std) - _log1m_tanh_sq(u), axis=-1)
    advantage = jax.lax.stop_gradient((returns - values[:-1]) / scale)
    return jnp.mean(weight * log_prob * advantage)


def loss_fn(
    params,
    wm_params,
    z0,
    wm_config: WorldModelConfig,
    agent_config: AgentConfig,
    key=None,
    *,
    return_range=None,
    real=None,
):
    """``actor_loss + critic_loss``, metrics and the updated return range. Gradients stay apart: the
    actor's loss sees the critic only through stopped parameters, and the critic's loss sees stopped
    latents and returns. ``key`` draws the imagination's randomness (a stochastic actor's samples,
    ``imagine_noise``). ``return_range`` (2,) is the tracked percentile range of the returns
    (:mod:`carlab.learn.returns`; needed when ``agent_config.return_norm_rate`` > 0). ``real`` =
    ``(z, reward, done, z_next)`` of real replayed steps adds the critic's real-data term."""
    agent = make_agent(agent_config)
    traj = imagine(wm_params, params["actor"], z0, agent_config.horizon, wm_config, agent_config, key)
    # Bootstrap from the slow target critic: a critic chasing its own fresh estimates on imagined
    # latents can run away (the "deadly triad"); the lagging copy keeps the targets steady.
    target_critic = jax.lax.stop_gradient(params["critic_target"])
    values = agent.value(target_critic, traj.latents)  # (H + 1, B)
    returns = returns_lib.lambda_return(
        traj.rewards, traj.continues, values, agent_config.discount, agent_config.lambda_
    )
    # Returns cannot leave [-value_clip, value_clip] in this task; clipping the critic's targets
    # stops a critic fitted on imagined latents from chasing its own extrapolation upwards.
    targets = jnp.clip(returns, -agent_config.value_clip, agent_config.value_clip)
    # Weight step t by the chance the imagined episode is still running there.
    alive = jnp.cumprod(jnp.concatenate([jnp.ones_like(traj.continues[:1]), traj.continues[:-1]]), axis=0)
    weight = jax.lax.stop_gradient(alive * agent_config.discount ** jnp.arange(agent_config.horizon)[:, None])
    scale = 1.0
    if agent_config.return_norm_rate > 0.0:
        return_range = returns_lib.update_return_range(return_range, returns, agent_config.return_norm_rate)
        scale = returns_lib.return_scale(return_range, agent_config.return_norm_limit)
    # A pull on the pre-tanh actions (beyond saturation_threshold) keeps them out of tanh's flat
    # tails, where the gradient vanishes and a saturated actor (say, full brake, or full right on
    # every bend) could never learn its way back.
    saturation = jnp.mean(jax.nn.relu(jnp.abs(traj.raw_actions) - agent_config.saturation_threshold) ** 2)
    # The entropy bonus (a stochastic actor): the actor is paid for keeping its spread, so it keeps
    # actions that are good in a neighbourhood rather than on a knife-edge the model alone believes.
    entropy = -jnp.mean(weight * traj.log_probs)
    mix = agent_config.reinforce
    objective = (1.0 - mix) * jnp.mean(weight * returns) / scale
    if mix > 0.0:
        objective = objective + mix * _reinforce(params["actor"], traj, returns, values, weight, scale, agent)
    actor_loss = (
        -objective + agent_config.saturation_penalty * saturation - agent_config.entropy_scale * entropy
    )
    critic_pred = agent.value(params["critic"], jax.lax.stop_gradient(traj.latents[:-1]))
    critic_loss = 0.5 * jnp.mean(weight * (critic_pred - jax.lax.stop_gradient(targets)) ** 2)
    real_loss = jnp.float32(0.0)
    if real is not None and agent_config.real_critic_weight > 0.0:
        # The critic also learns what real steps were worth (one-step TD on replayed transitions),
        # so imagination's returns are bootstrapped from values anchored in reality.
        z, reward, done, z_next = jax.lax.stop_gradient(real)
        target = reward + agent_config.discount * (1.0 - done.astype(jnp.float32)) * agent.value(
            target_critic, z_next
        )
        target = jnp.clip(target, -agent_config.value_clip, agent_config.value_clip)
        real_loss = 0.5 * jnp.mean((agent.value(params["critic"], z) - target) ** 2)
    critic_loss = critic_loss + agent_config.real_critic_weight * real_loss
    metrics = {
        "actor/loss": actor_loss,
        "actor/imagined_return": jnp.mean(returns[0]),
        "actor/imagined_reward": jnp.mean(traj.rewards),
        "actor/imagined_continue": jnp.mean(traj.continues),
        "actor/action_abs": jnp.mean(jnp.abs(traj.actions)),
        "actor/saturation": saturation,
        "actor/entropy": entropy,
        "actor/disagreement": jnp.mean(traj.disagreement),
        "actor/return_scale": jnp.asarray(scale, jnp.float32),
        "critic/loss": critic_loss,
        "critic/real_loss": real_loss,
        "critic/value": jnp.mean(values[0]),
    }
    return actor_loss + critic_loss, (metrics, return_range)


@functools.partial(jax.jit, static_argnames=("wm_config", "agent_config"))
def update(
    params, opt_state, wm_params, z0, key, wm_config: WorldModelConfig, agent_config: AgentConfig, real=None
):
    """One imagination update of actor and critic from start latents ``z0`` (B, Z).

    Args:
        params: ``{"actor", "critic", "critic_target"}``; opt_state: ``{"actor", "critic"}`` states,
            plus ``"return_range"`` when ``agent_config.return_norm_rate`` > 0 (:func:`init_optimizers`).
        wm_params: the world model's params (held fixed).
        key: draws the imagination's randomness (unused by a deterministic actor without noise).
        real: optional ``(z, reward, done, z_next)`` of real steps for the critic's real-data term.
    Returns:
        ``(params, opt_state, metrics)``.
    """
    wm_params, z0 = jax.lax.stop_gradient((wm_params, z0))
    loss = functools.partial(loss_fn, return_range=opt_state.get("return_range"), real=real)
    grads, (metrics, return_range) = jax.grad(loss, has_aux=True)(
        params, wm_params, z0, wm_config, agent_config, key
    )
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
    new_opt = {"actor": actor_state, "critic": critic_state}
    if return_range is not None:
        new_opt["return_range"] = return_range
    return new_params, new_opt, metrics


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
    """Fresh Adam states ``{"actor", "critic"}`` for actor-critic ``params`` (e.g. to train them on),
    plus the tracked ``"return_range"`` when ``agent_config.return_norm_rate`` > 0."""
    actor_opt, critic_opt = optimizers(agent_config)
    state = {"actor": actor_opt.init(params["actor"]), "critic": critic_opt.init(params["critic"])}
    if agent_config.return_norm_rate > 0.0:
        state["return_range"] = returns_lib.init_return_range()
    return state


def _fit_step(carry, data, key, static):
    """One :func:`fit` update: start latents drawn uniformly with ``key``, then one :func:`update`."""
    wm_config, agent_config = static
    wm_params, start_latents = data
    params, opt_state = carry
    # One key for both draws (starts, imagination noise), as ever: a split would change every fit actor.
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
    """Train actor and critic purely in imagination, the world model held fixed (the notebooks' way):
    each :func:`update` starts ``agent_config.imagine_batch`` rollouts from latents drawn uniformly from
    ``start_latents`` (S, Z). Returns ``(params, opt_state, history)``, each metric (num_updates,)."""
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
