"""Actor-critic initialisation: one function, the same networks for the same keys everywhere."""

import jax
import jax.numpy as jnp
import numpy as np

from carlab.learn import agent as agent_lib
from carlab.learn import config as config_lib
from carlab.learn import loop, optim

CONFIG = config_lib.tiny("dream")  # the dream learner's objective
LATENT = CONFIG.world_model.latent_size


def _identical(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        x.dtype == y.dtype and np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(la, lb)
    )


def test_init_actor_critic_shapes_and_rates():
    params, opt_state = agent_lib.init_actor_critic(jax.random.PRNGKey(0), CONFIG.agent, LATENT)
    assert set(params) == {"actor", "critic", "critic_target"} and set(opt_state) == {"actor", "critic"}
    assert _identical(params["critic"], params["critic_target"])
    nets = agent_lib.make_agent(CONFIG.agent)
    z = jnp.zeros((5, LATENT))
    assert nets.act(params["actor"], z).shape == (5, 2) and nets.value(params["critic"], z).shape == (5,)
    assert optim.learning_rate(opt_state["actor"]) == np.float32(CONFIG.agent.actor_lr)
    assert optim.learning_rate(opt_state["critic"]) == np.float32(CONFIG.agent.critic_lr)
    assert _identical(opt_state, agent_lib.init_optimizers(params, CONFIG.agent))


def test_same_key_same_networks_other_key_others():
    key = jax.random.PRNGKey(3)
    first = agent_lib.init_actor_critic(key, CONFIG.agent, LATENT)
    assert _identical(first, agent_lib.init_actor_critic(key, CONFIG.agent, LATENT))
    other, _ = agent_lib.init_actor_critic(jax.random.PRNGKey(4), CONFIG.agent, LATENT)
    assert not np.array_equal(
        np.asarray(other["actor"]["actor/mlp/~/linear_0"]["w"]),
        np.asarray(first[0]["actor"]["actor/mlp/~/linear_0"]["w"]),
    )
    # Without critic_key the two networks come from split(key), as agent.init always drew them.
    k_actor, k_critic = jax.random.split(key)
    assert _identical(first, agent_lib.init_actor_critic(k_actor, CONFIG.agent, LATENT, critic_key=k_critic))


def test_a_fresh_run_holds_the_same_actor_critic():
    """init_state draws actor and critic with keys 2 and 3 of split(PRNGKey(seed), 5), as it always did."""
    state = loop.init_state(CONFIG)
    _, _, k_actor, k_critic, _ = jax.random.split(jax.random.PRNGKey(CONFIG.train.seed), 5)
    params, opt_state = agent_lib.init_actor_critic(k_actor, CONFIG.agent, LATENT, critic_key=k_critic)
    assert _identical(params, {k: state.params[k] for k in params})
    assert _identical(opt_state, {k: state.opt_state[k] for k in opt_state})
