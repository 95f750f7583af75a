"""The two ways actor and critic learn, behind one interface the training loop calls.

* ``"dream"`` (:mod:`carlab.learn.agent`): wholly inside the world model's imagination (Dreamer's
  way, the seed's): a value critic fitted to imagined lambda-returns, the actor climbing them.
* ``"anchored"`` (:mod:`carlab.learn.anchored`): twin Q critics learn from real replayed steps; the
  actor imagines ``agent.horizon`` steps ahead and then asks them (SAC-SVG(H)).

``config.agent.learner`` names the one a run uses; both share the actor (its shape, how it drives),
so the lab, evaluation and checkpoints never need to know which learned it.
"""

from __future__ import annotations

import jax.numpy as jnp

from carlab.learn import agent as agent_lib
from carlab.learn import anchored
from carlab.learn.config import AgentConfig, Config

LEARNERS = ("dream", "anchored")


def check(agent_config: AgentConfig) -> None:
    """A one-line ValueError for an unknown ``agent.learner``, an anchored one without a stochastic
    actor or with a temperature that does not start above 0, or a dream one that imagines no steps."""
    if agent_config.learner not in LEARNERS:
        raise ValueError(f"unknown agent.learner {agent_config.learner!r}; choose one of {list(LEARNERS)}")
    if agent_config.learner == "anchored" and not agent_config.stochastic:
        raise ValueError("agent.learner 'anchored' needs a stochastic actor (agent.stochastic = True)")
    if agent_config.learner == "anchored" and not agent_config.init_temperature > 0.0:
        raise ValueError(f"agent.init_temperature must be > 0, got {agent_config.init_temperature}")
    if agent_config.learner == "dream" and agent_config.horizon < 1:
        raise ValueError(
            f"the dream learner needs agent.horizon >= 1 (it learns only in imagination), got {agent_config.horizon}"
        )


def init(key, agent_config: AgentConfig, latent_size: int, *, critic_key=None):
    """Fresh actor-critic ``(params, opt_state)`` of the configured learner."""
    check(agent_config)
    lib = anchored if agent_config.learner == "anchored" else agent_lib
    init_fn = lib.init if lib is anchored else lib.init_actor_critic
    return init_fn(key, agent_config, latent_size, critic_key=critic_key)


def update(params, opt_state, wm, wm_params, z0, batch, key, config: Config):
    """One actor-critic update of the configured learner from start latents ``z0`` and the world
    model's real batch of stretches ``batch`` (its steps are the critics' real data).

    ``params``/``opt_state`` hold the actor-critic part only (no ``"world_model"``); ``wm`` is the
    world model's functions. Returns ``(params, opt_state, metrics)``."""
    if config.agent.learner == "anchored":
        real = anchored.real_steps(wm_params, batch, config.world_model, config.agent)
        return anchored.update(params, opt_state, wm_params, z0, real, key, config.world_model, config.agent)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # (B, L, ...) stretches -> (B L, ...) steps
    real = None
    if config.agent.real_critic_weight > 0.0:
        z, z_next = wm.encode(wm_params, batch.obs), wm.encode(wm_params, batch.next_obs)
        real = tuple(map(flat, (z, batch.reward, batch.done, z_next)))
    params, opt_state, metrics = agent_lib.update(
        params, opt_state, wm_params, z0, key, config.world_model, config.agent, real
    )
    # The dream learner's entropy weight is fixed: its "temperature" is entropy_scale.
    return params, opt_state, {**metrics, "actor/temperature": jnp.float32(config.agent.entropy_scale)}
