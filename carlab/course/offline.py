"""Learning in imagination, end to end: the loop notebook 4 runs, and the checks it makes.

Dreamer's recipe, one function per step::

    model = offline.fit_world_model(key, buffer, stride=num_cars, num_updates=wm_updates)   # learn the world
    actor = offline.fit_actor(key, model, traj.obs, num_updates=agent_updates)  # learn to drive in it
    traj = experience.collect(key, env_params, num_cars=num_cars, num_steps=num_steps,  # drive it for real
                              policy=policies.noisy(key, offline.policy(model, actor), noise=0.5, hold=8))

:func:`improve` runs those steps in rounds (random driving first, then the actor's own driving with
held exploration noise), growing one dataset. :func:`imagined_and_real` then asks the question the
notebook is about: from the same start lines, how much reward does the actor *expect* inside the
model, and how much does it *get* on the real track? Where the two part, the actor is exploiting the
model's mistakes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from carlab.checks import check_int
from carlab.course import dream, experience
from carlab.learn import agent as agent_lib
from carlab.learn import anchored, learners, policies
from carlab.learn import world_model as wm_lib
from carlab.learn.config import AgentConfig, WorldModelConfig
from carlab.learn.evaluation import evaluate
from carlab.sim import env


class Model(NamedTuple):
    """A trained world model and what it takes to use it."""

    params: dict  # haiku params
    config: WorldModelConfig
    history: dict  # metric name -> (updates,) array, from world_model.fit


class Actor(NamedTuple):
    """A trained actor-critic and what it takes to use it."""

    params: dict  # {"actor", "critic", "critic_target"} (+ "log_alpha": the anchored learner's)
    config: AgentConfig
    history: dict  # metric name -> (updates,) array, from agent.fit


def fit_world_model(
    key,
    buffer,
    *,
    stride: int,
    num_updates: int,
    world_model_config: WorldModelConfig = WorldModelConfig(),
    length: int = 8,
    progress: bool = True,
) -> Model:
    """A fresh world model trained ``num_updates`` updates on ``buffer`` (filled by ``stride`` cars).

    Each update fits ``length``-step open-loop predictions (:func:`carlab.learn.world_model.loss_fn`).
    """
    key_init, key_fit = jax.random.split(key)
    params = wm_lib.make_world_model(world_model_config).init(key_init)
    opt_state = wm_lib.optimizer(world_model_config).init(params)
    params, _, history = wm_lib.fit(
        key_fit,
        params,
        opt_state,
        buffer,
        num_updates=num_updates,
        stride=stride,
        length=length,
        wm_config=world_model_config,
        progress=progress,
    )
    return Model(params, world_model_config, history)


def fit_actor(
    key,
    model: Model,
    observations,
    *,
    num_updates: int,
    agent_config: AgentConfig = AgentConfig(),
    progress: bool = True,
    start: Actor | None = None,
    buffer=None,
    stride: int | None = None,
) -> Actor:
    """An actor-critic trained ``num_updates`` updates in ``model``'s imagination, the model held fixed.

    The dream learner (``agent_config.learner == "dream"``) learns purely there: every imagined
    rollout starts from the latent of a real observation drawn from ``observations`` (..., 6). The
    anchored learner (:mod:`carlab.learn.anchored`) needs the real steps too: ``buffer`` (filled by
    ``stride`` cars, e.g. :func:`carlab.course.experience.to_buffer`), on which its critics learn and
    from whose observations its actor starts. The actor and critic are fresh, or ``start``'s (trained
    on: its networks with fresh optimiser states; ``model`` must have ``start``'s latent size).
    """
    key_init, key_fit = jax.random.split(key)
    anchored_learner = agent_config.learner == "anchored"
    if anchored_learner and (buffer is None or stride is None):
        raise ValueError("fit_actor: the anchored learner learns from real steps: pass buffer= and stride=")
    params, opt_state = learners.init(key_init, agent_config, model.config.latent_size)
    if start is not None:
        params = start.params  # its networks, with the fresh optimiser states
    if anchored_learner:
        fit, data = anchored.fit, {"buffer": buffer, "stride": stride}
    else:
        fit, data = agent_lib.fit, {"start_latents": encode(model, observations)}
    params, _, history = fit(
        key_fit,
        params,
        opt_state,
        wm_params=model.params,
        num_updates=num_updates,
        wm_config=model.config,
        agent_config=agent_config,
        progress=progress,
        **data,
    )
    return Actor(params, agent_config, history)


def encode(model: Model, observations) -> jax.Array:
    """Latents (S, Z) of real observations (..., 6), flattened over the leading axes."""
    obs = jnp.asarray(observations, jnp.float32).reshape(-1, env.OBS_SIZE)
    return wm_lib.make_world_model(model.config).encode(model.params, obs)


def policy(model: Model, actor: Actor) -> policies.Policy:
    """The deterministic driver on the real car, ``actor(encode(obs))``: :func:`carlab.learn.policies.actor`."""
    params = {"world_model": model.params, "actor": actor.params["actor"]}
    return policies.actor(params, world_model_config=model.config, agent_config=actor.config)


def evaluate_actor(model: Model, actor: Actor, **kwargs) -> dict:
    """:func:`carlab.learn.evaluation.evaluate` of the deterministic actor (held-out tracks, one lap each).

    The networks are the policy's traced params, so every actor with the same sizes shares one
    compilation. ``kwargs`` go to ``evaluate`` (``num_tracks``, ``max_steps``, ...).
    """
    return evaluate(policy(model, actor), **kwargs)


def crash_probability(model: Model, traj: experience.Trajectories) -> jax.Array:
    """(T, N) the model's P(crash) for every real step of ``traj``, predicted from the observation
    before it and the action taken: what the model believed just before it happened."""
    wm = wm_lib.make_world_model(model.config)
    z_next = wm.dynamics(model.params, wm.encode(model.params, traj.obs), traj.action)
    return jax.nn.sigmoid(-wm.continue_logit(model.params, z_next))


def concat(first: experience.Trajectories, second: experience.Trajectories) -> experience.Trajectories:
    """Two collections side by side, as if all their cars had driven at once (same number of steps)."""
    if first.reward.shape[0] != second.reward.shape[0]:
        raise ValueError(
            f"concat: both collections need the same number of steps, got {first.reward.shape[0]} "
            f"and {second.reward.shape[0]}"
        )
    return experience.Trajectories(
        *(jnp.concatenate([a, b], axis=-1 if a.ndim == 1 else 1) for a, b in zip(first, second))
    )


class Round(NamedTuple):
    """What one round of :func:`improve` produced."""

    model: Model
    actor: Actor
    data: experience.Trajectories  # everything driven so far, the new cars last


def improve(
    key,
    env_params: env.EnvParams,
    *,
    num_rounds: int,
    num_cars: int,
    num_steps: int,
    wm_updates: int,
    agent_updates: int,
    world_model_config: WorldModelConfig = WorldModelConfig(),
    agent_config: AgentConfig = AgentConfig(),
    progress: bool = True,
) -> list[Round]:
    """Dyna-style rounds: collect, fit the world model on all data so far, fit the actor in it.

    Round 1 drives at random (held random actions); each later round drives the previous round's actor
    with held exploration noise (``agent_config.explore_noise``, ``explore_hold``). Each round trains a
    fresh model and a fresh actor, so a round's result depends only on the data, not on history.
    """
    check_int(num_rounds, "num_rounds", low=1, where="improve")
    rounds: list[Round] = []
    data = None
    for _ in range(num_rounds):
        key, k_policy, k_collect, k_model, k_actor = jax.random.split(key, 5)
        driver = None  # experience.collect's default: held random actions
        if rounds:
            last = rounds[-1]
            noise, hold = agent_config.explore_noise, agent_config.explore_hold
            driver = policies.noisy(k_policy, policy(last.model, last.actor), noise=noise, hold=hold)
        new = experience.collect(k_collect, env_params, num_cars=num_cars, num_steps=num_steps, policy=driver)
        data = new if data is None else concat(data, new)
        buffer, stride = experience.to_buffer(data), data.reward.shape[1]
        model = fit_world_model(
            k_model,
            buffer,
            stride=stride,
            num_updates=wm_updates,
            world_model_config=world_model_config,
            progress=progress,
        )
        actor = fit_actor(
            k_actor,
            model,
            data.obs,
            num_updates=agent_updates,
            agent_config=agent_config,
            progress=progress,
            buffer=buffer,
            stride=stride,
        )
        rounds.append(Round(model, actor, data))
    return rounds


def best_round(rounds: list[Round], **kwargs) -> tuple[int, list[dict]]:
    """The index of the round whose actor made the most lap progress, and every round's evaluation.

    Learning in imagination is noisy: a later round is not always better (an actor can, say, learn to
    stand still where its model wrongly promises reward for it). Choose by driving for real, on tracks
    given in ``kwargs`` (to :func:`evaluate_actor`): training tracks, so that held-out tracks stay unseen.
    """
    results = [evaluate_actor(r.model, r.actor, **kwargs) for r in rounds]
    scores = [(res["mean_progress"], res["lap_completion_rate"]) for res in results]
    return max(range(len(rounds)), key=lambda i: scores[i]), results


class Drive(NamedTuple):
    """One track's drive, real and dreamed, each cut where it ended: the arguments of
    :func:`carlab.course.plots.dream_and_real_frame` after the track."""

    real_car: np.ndarray  # (R + 1, 4) real poses, the start first; (R, 4) if it crashed
    dream_car: np.ndarray  # (D + 1, 4) dead-reckoned poses of the dream, the start first
    real_obs: np.ndarray  # (R, 6) what the real car sensed after each step
    dream_obs: np.ndarray  # (D, 6) what the dream believed the car sensed after each step


class Comparison(NamedTuple):
    """The actor from the start line of every track: in the dream and on the real track."""

    imagined_return: np.ndarray  # (M,) the return the model expects (see expected_return)
    real_return: np.ndarray  # (M,) real reward summed until the real crash
    real_steps: np.ndarray  # (M,) steps the real drive lasted (the crash step included)
    dream_steps: np.ndarray  # (M,) steps until the dream predicted a crash (included), else T
    dream: dream.DreamRollout  # (T, M, ...) the dreams, poses dead-reckoned
    real: experience.Trajectories  # (T, M, ...) the real drives (a crashed car restarts: cut at real_steps)

    @property
    def real_crashed(self) -> np.ndarray:
        """(M,) bool: the real car crashed within the T steps."""
        return np.asarray(self.real.done).any(axis=0)

    @property
    def dream_crash_prob(self) -> np.ndarray:
        """(M,) the dream's probability of a crash within the T steps, 1 - prod P(not crashed)."""
        return 1.0 - np.prod(np.asarray(self.dream.continue_prob, np.float64), axis=0)

    @property
    def dream_crashed(self) -> np.ndarray:
        """(M,) bool: the dream predicted a crash within the T steps."""
        return self.dream_steps < self.dream.reward.shape[0]

    def drive(self, i: int) -> Drive:
        """Track ``i``'s drives, each cut where it ended.

        The real car's pose *at* its crash is not kept (the env puts it back on the start line in the
        same step), so its path stops one step short; its last observation is the crash's.
        """
        real, dreamed = int(self.real_steps[i]), int(self.dream_steps[i])
        real_car = np.asarray(self.real.car[:, i])
        ended = bool(np.asarray(self.real.done[:, i] | self.real.truncated[:, i]).any())
        return Drive(
            real_car=real_car[: real if ended else real + 1],
            real_obs=np.asarray(self.real.next_obs[:real, i]),
            dream_car=np.asarray(self.dream.car[: dreamed + 1, i]),
            dream_obs=np.asarray(self.dream.obs[:dreamed, i]),
        )


def imagined_and_real(
    env_params: env.EnvParams, model: Model, actor: Actor, *, num_steps: int, crash_threshold: float = 0.5
) -> Comparison:
    """Drive ``actor`` for ``num_steps`` steps from each track's start line, in the dream and for real.

    One car per track of ``env_params`` (car i on track i). The dream starts from the same real start
    observation and pose, then never looks at reality again (:func:`carlab.course.dream.rollout`); it ends
    where the model's P(not crashed) first drops below ``crash_threshold``.
    """
    num_tracks = env_params.num_tracks
    real = experience.collect(
        jax.random.PRNGKey(0),
        env_params,
        num_cars=num_tracks,
        num_steps=num_steps,
        policy=policy(model, actor),
    )
    dream_params = dream.DreamParams.from_env(
        model.params, env_params, model.config, crash_threshold=crash_threshold
    )
    rollout = _dream(dream_params, real.car[0], actor.params["actor"], actor.config, num_steps)
    imagined = expected_return(rollout.reward, rollout.continue_prob)
    real_return = experience.return_until_done(real.reward, real.done | real.truncated)
    return Comparison(
        imagined_return=np.asarray(imagined),
        real_return=np.asarray(real_return),
        real_steps=_steps_until(np.asarray(real.done | real.truncated)),
        dream_steps=_steps_until(np.asarray(rollout.continue_prob) < crash_threshold),
        dream=rollout,
        real=real,
    )


def _steps_until(ended: np.ndarray) -> np.ndarray:
    """(B,) for (T, B) flags: 1 + the index of the first one in each column, or T where there is none."""
    steps = ended.shape[0]
    return np.where(ended.any(axis=0), np.argmax(ended, axis=0) + 1, steps)


def expected_return(reward, continue_prob) -> jax.Array:
    """(B,) the return a model expects from (T, B) predicted rewards and P(not crashed) after each step.

    Step t counts with the chance that no step before it ended the episode, exactly the weight the
    actor's own objective gives it (:func:`carlab.learn.agent.loss_fn`, without the discount).
    """
    before = jnp.concatenate([jnp.ones_like(continue_prob[:1]), continue_prob[:-1]])
    return jnp.sum(reward * jnp.cumprod(before, axis=0), axis=0)


@functools.partial(jax.jit, static_argnames=("agent_config", "num_steps"))
def _dream(dream_params, cars, actor_params, agent_config: AgentConfig, num_steps: int):
    """The actor dreaming from each start line: its weights traced, one compilation per sizes."""
    nets = agent_lib.make_agent(agent_config)
    act = lambda z, t: nets.act(actor_params, z)
    return dream.rollout(dream_params, dream_params.start_obs, cars, act, num_steps)


__all__ = [
    "Actor",
    "Comparison",
    "Drive",
    "Model",
    "Round",
    "best_round",
    "concat",
    "crash_probability",
    "encode",
    "evaluate_actor",
    "expected_return",
    "fit_actor",
    "fit_world_model",
    "imagined_and_real",
    "improve",
    "policy",
]
