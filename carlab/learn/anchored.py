"""The anchored learner: critics that learn from real steps, an actor that imagines a few steps ahead.

The dream learner (:mod:`carlab.learn.agent`) learns *everything* inside the world model: its critic
regresses onto imagined returns and its actor climbs them, so wherever the model is wrong the actor
learns to drive by a road that is not there (``benchmarks/learning.md``: seeds that lap 100 %, then
fall to 0 % inside a frozen model). This learner keeps the world model's imagination but ties what
it is worth to reality:

* **Critics on real steps.** Two critics Q(z, a) (SAC's twin soft Q-functions, Haarnoja et al. 2018)
  learn by one-step TD on real replayed transitions ``(z, a, r, done, z')``, z the world model's
  latent of the real observation: ``r + gamma (1 - done) (min_i Q'_i(z', a') - alpha log pi(a' | z'))``
  with ``a' ~ pi(z')`` and Q' the slow target copies. The minimum of two critics is the pessimism
  that keeps values from running away (TD3's clipped double Q).
* **An actor that looks H imagined steps ahead** (SAC-SVG(H), Amos et al. 2021; TD-MPC's short
  horizons): from real start latents it rolls the world model ``horizon`` steps, sums the predicted
  rewards (weighted by the predicted chance of not crashing) and ends on the critics' value, all
  minus ``alpha`` times the log-probability of its sampled actions. The gradient flows back through
  the model (pathwise); a short horizon leaves the model little room to be exploited, and
  ``horizon = 0`` is plain SAC on the world model's latents.
* **A temperature that tunes itself**: ``alpha`` starts at ``agent.init_temperature``, rises when
  the policy's entropy falls below ``agent.target_entropy`` and falls when it is above (SAC's
  automatic entropy adjustment), unless ``agent.tune_temperature`` is off (a fixed ``alpha``).

Parameters: ``{"actor", "critic", "critic_target", "log_alpha"}``, the critic's params hold both Q
networks. The actor is :class:`carlab.learn.agent.Actor` (stochastic, the seed's shape), so the
lab, evaluation and checkpoints drive it exactly like the dream learner's.
"""

from __future__ import annotations

import functools

import haiku as hk
import jax
import jax.numpy as jnp
import optax

from carlab.learn import agent as agent_lib
from carlab.learn import optim, replay
from carlab.learn import returns as returns_lib
from carlab.learn import world_model as wm_lib
from carlab.learn.config import AgentConfig, WorldModelConfig


class TwinCritic(hk.Module):
    """``(z, action) -> (2, ...)`` values of two independent Q networks (each the seed's 64-32-1 MLP),
    optionally with a LayerNorm after each hidden layer (which keeps values from blowing up when
    many updates are taken per env step: Ball et al.'s RLPD, Nauman et al.'s BRO)."""

    def __init__(self, hidden: tuple[int, ...], *, layer_norm: bool = False, name: str = "twin_critic"):
        super().__init__(name=name)
        self.hidden, self.layer_norm = tuple(hidden), layer_norm

    def __call__(self, z, action):
        def q(x, name: str):
            for i, size in enumerate(self.hidden):
                x = hk.Linear(size, name=f"{name}_linear_{i}")(x)
                if self.layer_norm:
                    x = hk.LayerNorm(-1, create_scale=True, create_offset=True, name=f"{name}_norm_{i}")(x)
                x = jax.nn.relu(x)
            return hk.Linear(1, name=f"{name}_out")(x)[..., 0]

        x = jnp.concatenate([z, action], axis=-1)
        return jnp.stack([q(x, "q1"), q(x, "q2")])


@functools.cache
def make_critic(agent_config: AgentConfig):
    """The twin critic's pure functions ``(init(key, latent_size), apply(params, z, action))`` (cached)."""
    norm = agent_config.layer_norm
    net = hk.without_apply_rng(
        hk.transform(lambda z, a: TwinCritic(agent_config.critic_hidden, layer_norm=norm)(z, a))
    )

    def init(key, latent_size):
        return net.init(key, jnp.zeros((1, latent_size)), jnp.zeros((1, 2)))

    return init, net.apply


def optimizers(agent_config: AgentConfig):
    """Adam (with global-norm clipping) for the actor, the critics and the temperature."""
    return (
        optim.adam(agent_config.actor_lr, agent_config.grad_clip),
        optim.adam(agent_config.critic_lr, agent_config.grad_clip),
        optim.adam(agent_config.actor_lr, agent_config.grad_clip),
    )


def init(key, agent_config: AgentConfig, latent_size: int, *, critic_key=None):
    """Fresh ``(params, opt_state)`` (see the module docstring); the keys as in
    :func:`carlab.learn.agent.init_actor_critic`."""
    if not agent_config.stochastic:
        raise ValueError("the anchored learner needs a stochastic actor (agent.stochastic = True)")
    if critic_key is None:
        key, critic_key = jax.random.split(key)
    critic = make_critic(agent_config)[0](critic_key, latent_size)
    params = {
        "actor": agent_lib.make_agent(agent_config).init_actor(key, latent_size),
        "critic": critic,
        "critic_target": critic,
        "log_alpha": jnp.log(jnp.float32(agent_config.init_temperature)),
    }
    actor_opt, critic_opt, alpha_opt = optimizers(agent_config)
    opt_state = {
        "actor": actor_opt.init(params["actor"]),
        "critic": critic_opt.init(params["critic"]),
        "log_alpha": alpha_opt.init(params["log_alpha"]),
    }
    return params, opt_state


def _sample(actor_params, z, key, agent_config: AgentConfig):
    """A squashed-Gaussian action for each latent and its log-probability."""
    mean, std = agent_lib.make_agent(agent_config).dist(actor_params, z)
    return agent_lib.squashed_sample(mean, std, jax.random.normal(key, mean.shape))[:2]


def loss_fn(params, wm_params, z0, real, key, wm_config: WorldModelConfig, agent_config: AgentConfig):
    """``actor_loss + critic_loss + temperature_loss`` and metrics; the gradients of the three stay
    apart (each loss sees the others' parameters stopped). ``z0`` (B, Z): the actor's real start
    latents; ``real = (z, action, reward, bootstrap_discount, z_next)``: real replayed steps for the
    critics, as :func:`carlab.learn.returns.n_step_targets` makes them (one step: ``reward``,
    ``gamma (1 - done)`` and the next latent)."""
    _, q_apply = make_critic(agent_config)
    k_imagine, k_end, k_next = jax.random.split(key, 3)
    alpha = jnp.exp(jax.lax.stop_gradient(params["log_alpha"]))
    critic, target = jax.lax.stop_gradient((params["critic"], params["critic_target"]))
    gamma = agent_config.discount

    # The actor: H imagined steps, then the critics' verdict.
    traj = agent_lib.imagine(
        wm_params, params["actor"], z0, agent_config.horizon, wm_config, agent_config, k_imagine
    )
    end_action, end_log_prob = _sample(params["actor"], traj.latents[-1], k_end, agent_config)
    # alive_t * gamma^t: the chance the imagined episode is still running at step t, discounted.
    alive = jnp.cumprod(jnp.concatenate([jnp.ones_like(z0[None, :, 0]), gamma * traj.continues]), axis=0)
    soft_rewards = traj.rewards - alpha * traj.log_probs  # (H, B)
    end_value = jnp.min(q_apply(critic, traj.latents[-1], end_action), axis=0) - alpha * end_log_prob
    imagined = jnp.sum(alive[:-1] * soft_rewards, axis=0) + alive[-1] * end_value  # (B,)
    actor_loss = -jnp.mean(imagined)

    # The critics: soft TD on real steps (n-step: the real rewards of n steps, then the slow critics).
    z, action, reward, bootstrap_discount, z_next = jax.lax.stop_gradient(real)
    next_action, next_log_prob = _sample(jax.lax.stop_gradient(params["actor"]), z_next, k_next, agent_config)
    next_value = jnp.min(q_apply(target, z_next, next_action), axis=0) - alpha * next_log_prob
    td_target = jax.lax.stop_gradient(reward + bootstrap_discount * next_value)
    q = q_apply(params["critic"], z, action)  # (2, B)
    critic_loss = 0.5 * jnp.mean(jnp.sum((q - td_target) ** 2, axis=0))

    # The temperature: up when the policy is surer than the target entropy, down when less sure.
    log_probs = jax.lax.stop_gradient(jnp.concatenate([traj.log_probs.reshape(-1), end_log_prob]))
    entropy = -jnp.mean(log_probs)
    alpha_loss = jnp.float32(0.0)  # a fixed temperature: no gradient, so Adam leaves alpha where it started
    if agent_config.tune_temperature:
        alpha_loss = params["log_alpha"] * jax.lax.stop_gradient(entropy - agent_config.target_entropy)
    metrics = {
        "actor/loss": actor_loss,
        "actor/imagined_return": jnp.mean(imagined),
        "actor/imagined_reward": jnp.mean(traj.rewards) if agent_config.horizon else jnp.float32(0.0),
        "actor/entropy": entropy,
        "actor/temperature": alpha,
        "actor/disagreement": jnp.mean(traj.disagreement) if agent_config.horizon else jnp.float32(0.0),
        "critic/loss": critic_loss,
        "critic/value": jnp.mean(q),
    }
    return actor_loss + critic_loss + alpha_loss, metrics


@functools.partial(jax.jit, static_argnames=("wm_config", "agent_config"))
def update(
    params, opt_state, wm_params, z0, real, key, wm_config: WorldModelConfig, agent_config: AgentConfig
):
    """One update of actor, critics and temperature (the world model held fixed). Returns
    ``(params, opt_state, metrics)``; the target critics move ``agent.target_rate`` towards the critics."""
    wm_params, z0 = jax.lax.stop_gradient((wm_params, z0))
    grads, metrics = jax.grad(loss_fn, has_aux=True)(
        params, wm_params, z0, real, key, wm_config, agent_config
    )
    new_params, new_opt = {}, {}
    for name, opt in zip(("actor", "critic", "log_alpha"), optimizers(agent_config)):
        updates, new_opt[name] = opt.update(grads[name], opt_state[name], params[name])
        new_params[name] = optax.apply_updates(params[name], updates)
    metrics["actor/grad_norm"] = optax.tree.norm(grads["actor"])
    new_params["critic_target"] = optax.incremental_update(
        new_params["critic"], params["critic_target"], agent_config.target_rate
    )
    return new_params, new_opt, metrics


def real_steps(wm_params, batch, wm_config: WorldModelConfig, agent_config: AgentConfig):
    """The critics' data from real stretches ``batch`` (B, L, ...): ``(z, action, reward,
    bootstrap_discount, z_next)`` per step (B L, ...), the ``agent.real_steps``-step targets of
    :func:`carlab.learn.returns.n_step_targets` on the world model's latents."""
    wm = wm_lib.make_world_model(wm_config)
    z, z_next = wm.encode(wm_params, batch.obs), wm.encode(wm_params, batch.next_obs)
    links = replay.follows(batch)
    links = jnp.concatenate([links, jnp.zeros_like(links[:, :1])], axis=1)  # nothing follows the last step
    targets = returns_lib.n_step_targets(
        batch.reward, batch.done, links, z_next, agent_config.real_steps, agent_config.discount
    )
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # (B, L, ...) stretches -> (B L, ...) steps
    return (flat(z), flat(batch.action), *map(flat, targets))


def _fit_step(carry, data, key, static):
    """One :func:`fit` update: stretches sampled with ``key``, the actor starting from their latents."""
    wm_config, agent_config, stride, batch_size, length = static
    wm_params, buffer = data
    params, opt_state = carry
    k_batch, k_update = jax.random.split(key)
    batch = replay.sample_sequences(buffer, k_batch, batch_size, length, stride)
    real = real_steps(wm_params, batch, wm_config, agent_config)
    params, opt_state, metrics = update(
        params, opt_state, wm_params, real[0], real, k_update, wm_config, agent_config
    )
    return (params, opt_state), metrics


def fit(
    key,
    params,
    opt_state,
    *,
    wm_params,
    buffer,
    stride: int,
    num_updates: int,
    wm_config: WorldModelConfig = WorldModelConfig(),
    agent_config: AgentConfig,
    batch_size: int = 32,
    length: int = 8,
    progress: bool = True,
):
    """Train the anchored actor-critic on a fixed replay ``buffer`` (filled by ``stride`` cars) and a
    fixed world model (the notebooks' way): each update samples ``batch_size`` stretches of ``length``
    real steps for the critics, and the actor starts from their latents. Returns
    ``(params, opt_state, history)``, each metric (num_updates,)."""
    (params, opt_state), history = optim.fit_updates(
        _fit_step,
        key,
        (params, opt_state),
        (wm_params, buffer),
        num_updates=num_updates,
        static=(wm_config, agent_config, stride, batch_size, length),
        desc="anchored actor-critic",
        loss_key="actor/loss",
        progress=progress,
    )
    return params, opt_state, history
