"""The collect-and-train loop as pure jitted functions, plus a small host driver.

One *round* = every car takes ``train_every`` env steps (actor + exploration noise, transitions into
the replay buffer), then ``updates_per_round`` world-model updates and imagination updates. The
whole round is one pure function of a :class:`TrainState`; :func:`train_rounds` runs any number of
rounds in one jitted ``fori_loop`` (one compiled program, whatever the count, so a run split into
several calls — or saved and resumed — is bit-identical to one long call on the same machine).

The host only orchestrates: :func:`train` calls :func:`train_rounds` in chunks, shows a tqdm bar,
and records metrics. Every random draw comes from the state: ``TrainState.key``, split right before
use, or — for a draw held over several steps — ``TrainState.hold_key`` folded with the step count.
The seed (``config.train.seed``) is read once, by :func:`init_state`; the jitted code never sees it,
so runs of different seeds share one compilation (and a batch of runs can be vmapped over seeds).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from carlab.learn import agent as agent_lib
from carlab.learn import learners, policies, replay
from carlab.learn import policy_checkpoint as checkpoints
from carlab.learn import world_model as wm_lib
from carlab.learn.config import Config, with_overrides
from carlab.sim import env


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a run carries from round to round (all arrays: save it and resume exactly)."""

    params: dict  # {"world_model", "actor", "critic", "critic_target"}
    opt_state: dict  # optimiser states of "world_model", "actor", "critic"
    buffer: replay.ReplayBuffer
    crashes: replay.StretchMemory  # the last steps before crashes (config.replay.crash_memory)
    env_state: env.EnvState  # (N,) cars
    obs: jax.Array  # (N, 6) current observations
    episode_return: jax.Array  # (N,) return so far of each car's running episode
    key: jax.Array  # PRNG key, split before every use
    hold_key: jax.Array  # PRNG key, constant: folded with the step count for draws held over steps
    explore_prob: jax.Array  # float32, decays every env step
    env_steps: jax.Array  # int32, transitions collected (all cars)
    updates: jax.Array  # int32, world-model updates done
    episodes: jax.Array  # int32, episodes finished
    best_progress: jax.Array  # float32, the most laps any finished episode drove
    driver: checkpoints.Driver  # the policy checkpoint that drives when config.train.checkpoint_tracks > 0


# The losses train_rounds reports (as running sums; the host divides by the counts).
_AGENT_KEYS = ("loss", "imagined_return", "entropy", "disagreement", "temperature")
LOSS_KEYS = (*wm_lib.LOSS_KEYS, *(f"actor/{k}" for k in _AGENT_KEYS), "critic/loss", "critic/value")
_EPISODE_SUMS = ("env/return", "env/progress", "env/laps", "env/crashes")


def env_params(config: Config) -> env.EnvParams:
    """The training tracks (see :mod:`carlab.learn.config` for the seed ranges)."""
    t = config.train
    seeds = range(t.train_first_seed, t.train_first_seed + t.num_train_tracks)
    return env.EnvParams.from_seeds(seeds, max_steps=t.max_episode_steps)


def init_state(config: Config, params: env.EnvParams | None = None, *, key=None) -> TrainState:
    """A fresh run: new networks and optimisers, an empty buffer, cars on their start lines.

    Every random draw of the run comes from ``key``, by default ``jax.random.PRNGKey(config.train.seed)``.
    """
    params = env_params(config) if params is None else params
    if config.replay.capacity % config.train.num_cars:
        # Otherwise a car's consecutive transitions stop being num_cars slots apart once the ring wraps.
        raise ValueError(
            f"replay capacity ({config.replay.capacity}) must be a multiple of num_cars "
            f"({config.train.num_cars})"
        )
    checkpoints.check_config(config)
    hold_key = jax.random.PRNGKey(config.train.seed) if key is None else key
    key, k_wm, k_actor, k_critic, k_env = jax.random.split(hold_key, 5)
    wm_params = wm_lib.make_world_model(config.world_model).init(k_wm)
    latent = config.world_model.latent_size
    ac_params, ac_opt = learners.init(k_actor, config.agent, latent, critic_key=k_critic)
    net = {"world_model": wm_params, **ac_params}
    opt_state = {"world_model": wm_lib.optimizer(config.world_model).init(wm_params), **ac_opt}
    obs, env_state = env.reset_batch(k_env, params, config.train.num_cars)
    f32, i32 = jnp.float32, jnp.int32
    return TrainState(
        params=net,
        opt_state=opt_state,
        buffer=replay.init_buffer(config.replay.capacity),
        crashes=replay.init_memory(config.replay.crash_memory, config.replay.sequence_length),
        env_state=env_state,
        obs=obs,
        episode_return=jnp.zeros(config.train.num_cars, f32),
        key=key,
        hold_key=hold_key,
        explore_prob=jnp.asarray(config.agent.explore_prob, f32),
        env_steps=jnp.asarray(0, i32),
        updates=jnp.asarray(0, i32),
        episodes=jnp.asarray(0, i32),
        best_progress=jnp.asarray(0.0, f32),
        driver=checkpoints.init_driver(net),
    )


SHOWN_CAR = 0  # the car the lab highlights, and the one a person can drive (collect_step's override)


def collect_step(state: TrainState, params: env.EnvParams, config: Config, manual_action=None, manual=False):
    """One env step of every car; transitions go into the buffer. Returns ``(state, episode sums)``.

    With ``manual`` true, car SHOWN_CAR drives ``manual_action`` (2,) instead of the actor (the lab's
    keyboard driving); its transitions are stored like everyone else's.
    """
    key, k_explore = jax.random.split(state.key)
    action = choose_actions(k_explore, state, config, manual_action=manual_action, manual=manual)
    return record_step(dataclasses.replace(state, key=key), action, params, config)


def choose_actions(key, state: TrainState, config: Config, *, manual_action=None, manual=False):
    """The (N, 2) actions the cars take in ``state``: the actor's, with exploration noise drawn with
    ``key``; random while the buffer warms up; car SHOWN_CAR's ``manual_action`` when ``manual``."""
    nets = {"world_model_config": config.world_model, "agent_config": config.agent}
    if config.agent.explore_sample:  # SAC's exploration: the stochastic actor's own spread
        action = policies.actor_sample(state.params, state.obs, jax.random.fold_in(key, 2), **nets)
    else:
        action = policies.actor_action(state.params, state.obs, **nets)
    if config.agent.explore_hold > 1:
        # The same key for explore_hold consecutive steps holds each car's noise (and gate) that
        # long: a swerve around an obstacle instead of a wobble. It is derived from the run's
        # hold_key and the step count alone, like the warm-up's, so runs stay reproducible and resumable.
        hold_window = state.env_steps // (config.train.num_cars * config.agent.explore_hold)
        stream = jax.random.fold_in(state.hold_key, 1)  # not the warm-up's
        key = jax.random.fold_in(stream, hold_window)
    action = agent_lib.explore(key, action, state.explore_prob, config.agent)
    # Until the buffer is warm the cars drive at random — random steering, random pressure on the
    # accelerator — so the first data has speed, progress and crashes in it to learn from.
    # Each random action is held for `warmup_hold` steps, so the cars sweep through real curves
    # instead of jittering straight ahead (i.i.d. steering averages out to driving straight).
    window = state.env_steps // (config.train.num_cars * config.replay.warmup_hold)
    k_random = jax.random.fold_in(state.hold_key, window)
    random_action = jax.random.uniform(k_random, action.shape, minval=jnp.array([-1.0, 0.0]), maxval=1.0)
    action = jnp.where(state.buffer.size < config.replay.warmup, random_action, action)
    if manual_action is not None:
        action = jnp.where(manual, action.at[SHOWN_CAR].set(env.sanitize_action(manual_action)), action)
    return action


def record_step(state: TrainState, action, params: env.EnvParams, config: Config):
    """Step every car with ``action`` (N, 2) and record it: the buffer, the crash memory, the next
    track of each finished car, the run's counters. Returns ``(state, episode sums)``."""
    vstep = jax.vmap(env.step, in_axes=(None, 0, 0, None))  # the env draws no randomness from its key
    next_obs, env_state, reward, terminated, truncated, info = vstep(
        state.key, state.env_state, action, params
    )
    buffer = replay.add(state.buffer, state.obs, action, info["final_obs"], reward, terminated)
    crashes = _remember_crashes(state.crashes, buffer, terminated, config)
    done = terminated | truncated
    next_obs, env_state = _next_track(next_obs, env_state, done, params, config.train.num_cars)
    ret = state.episode_return + reward
    # The car was reset after a finished episode, so its best progress is read from the pre-step
    # state: a crash or truncation step adds at most one step of progress, which we accept to undercount.
    final_progress = state.env_state.best_progress
    sums = {
        "env/return": jnp.sum(jnp.where(done, ret, 0.0)),
        "env/progress": jnp.sum(jnp.where(done, final_progress, 0.0)),
        "env/laps": jnp.sum(jnp.where(done, jnp.floor(final_progress), 0.0)),
        "env/crashes": jnp.sum(terminated.astype(jnp.float32)),
        "env/episodes": jnp.sum(done.astype(jnp.float32)),
    }
    new_best = jnp.max(jnp.where(done, final_progress, 0.0))
    state = dataclasses.replace(
        state,
        buffer=buffer,
        crashes=crashes,
        env_state=env_state,
        obs=next_obs,
        episode_return=jnp.where(done, 0.0, ret),
        explore_prob=jnp.maximum(state.explore_prob * config.agent.explore_decay, config.agent.explore_min),
        env_steps=state.env_steps + config.train.num_cars,
        episodes=state.episodes + jnp.sum(done).astype(jnp.int32),
        best_progress=jnp.maximum(state.best_progress, new_best),
    )
    return state, sums


def _remember_crashes(crashes: replay.StretchMemory, buffer: replay.ReplayBuffer, terminated, config: Config):
    """Keep the last ``sequence_length`` steps of every car that just crashed in the crash memory
    (only stretches that lie wholly in the crashed episode)."""
    if crashes.capacity == 0:
        return crashes
    stretches = replay.last_stretches(buffer, config.train.num_cars, config.replay.sequence_length)
    whole = replay.sequence_mask(stretches)[:, -1] > 0
    return replay.remember(crashes, stretches, terminated & whole)


def _next_track(obs, env_state: env.EnvState, done, params: env.EnvParams, num_cars: int):
    """Move each car that just finished an episode on to the next track of its own: from track i to
    i + N (mod M). The env restarts a car on the track it drove, so with N cars on M > N tracks
    only N of them would ever be driven; rotating spreads the experience over all M, and the
    driver learns roads rather than a handful of tracks. (The start state depends only on the
    track, so this is the env's reset with another track id.)"""
    track_id = jnp.where(done, (env_state.track_id + num_cars) % params.num_tracks, env_state.track_id)
    fresh = jax.vmap(env.start_state, in_axes=(None, 0))(params, track_id)
    env_state = jax.tree.map(lambda f, s: jnp.where(done[:, None], f, s), fresh, env_state)
    return jnp.where(done[:, None], params.start_obs[track_id], obs), env_state


def _update(state: TrainState, config: Config):
    """One world-model update and one imagination update from replayed data."""
    key, k_wm, k_start, k_crash = jax.random.split(state.key, 4)
    # Car i's consecutive transitions are num_cars slots apart (add() writes all cars per step).
    batch = replay.sample_sequences(
        state.buffer, k_wm, config.replay.batch_size, config.replay.sequence_length, config.train.num_cars
    )
    starts = replay.sample(state.buffer, k_start, config.agent.imagine_batch)
    batch, starts = _mix_in_crashes(batch, starts, state.crashes, k_crash, config)
    wm_params, wm_opt, wm_metrics = wm_lib.update(
        state.params["world_model"], state.opt_state["world_model"], batch, k_wm, config.world_model
    )
    wm = wm_lib.make_world_model(config.world_model)
    z0 = wm.encode(wm_params, starts.obs)
    ac_params = {k: v for k, v in state.params.items() if k != "world_model"}
    ac_opt = {k: v for k, v in state.opt_state.items() if k != "world_model"}
    k_imagine = jax.random.fold_in(k_start, 1)  # the imagination's action noise (if any)
    ac_params, ac_opt, ac_metrics = learners.update(
        ac_params, ac_opt, wm, wm_params, z0, batch, k_imagine, config
    )
    state = dataclasses.replace(
        state,
        params={"world_model": wm_params, **ac_params},
        opt_state={"world_model": wm_opt, **ac_opt},
        key=key,
        updates=state.updates + 1,
    )
    return state, {**wm_metrics, **ac_metrics}


def _mix_in_crashes(batch, starts, crashes: replay.StretchMemory, key, config: Config):
    """Replace ``crash_fraction`` of the world model's stretches and ``crash_starts`` of the
    imagination's start states with ones from the crash memory (once it holds any): stretches that
    end in a crash, and states from the last steps before one."""
    n_batch = round(config.replay.crash_fraction * config.replay.batch_size)
    n_starts = round(config.replay.crash_starts * config.agent.imagine_batch)
    if crashes.capacity == 0 or (n_batch == 0 and n_starts == 0):
        return batch, starts
    k_batch, k_starts, k_step = jax.random.split(key, 3)
    have = crashes.size > 0
    if n_batch:
        remembered = replay.sample_memory(crashes, k_batch, n_batch)
        batch = jax.tree.map(
            lambda b, c: b.at[:n_batch].set(jnp.where(have, c, b[:n_batch])), batch, remembered
        )
    if n_starts:
        stretches = replay.sample_memory(crashes, k_starts, n_starts)
        step = jax.random.randint(k_step, (n_starts,), 0, config.replay.sequence_length)
        remembered = jax.tree.map(lambda x: x[jnp.arange(n_starts), step], stretches)
        starts = jax.tree.map(
            lambda s, c: s.at[:n_starts].set(jnp.where(have, c, s[:n_starts])), starts, remembered
        )
    return batch, starts


def train_if(due, state: TrainState, config: Config):
    """``updates_per_round`` updates when ``due`` (a traced bool), else none. Returns
    ``(state, loss sums)`` with the count under ``"updates"``."""

    def train(state):
        # A scan, not a Python loop: one compiled update, however high the replay ratio.
        state, metrics = jax.lax.scan(
            lambda state, _: _update(state, config), state, None, config.train.updates_per_round
        )
        return state, {k: jnp.sum(metrics[k]) for k in LOSS_KEYS}

    def skip(state):
        return state, {k: jnp.float32(0.0) for k in LOSS_KEYS}

    state, metrics = jax.lax.cond(due, train, skip, state)
    metrics["updates"] = jnp.where(due, jnp.float32(config.train.updates_per_round), 0.0)
    return state, metrics


def _round(state: TrainState, params: env.EnvParams, config: Config):
    """Collect ``train_every`` steps from every car, train if the buffer is warm, then test the
    checkpoint if one is due."""
    before = state.env_steps
    state, episode = jax.lax.scan(
        lambda state, _: collect_step(state, params, config), state, None, config.train.train_every
    )
    episode = jax.tree.map(jnp.sum, episode)
    state, metrics = train_if(state.buffer.size >= config.replay.warmup, state, config)
    state = checkpoints.checkpoint_test_if_due(before, state, params, config)
    return state, {**metrics, **episode}


def train_rounds(state: TrainState, num_rounds, params: env.EnvParams, config: Config):
    """Run ``num_rounds`` rounds (a traced int: any count, one compiled program).

    Returns ``(state, sums)``: metric sums over the rounds (losses summed over updates, episode
    statistics summed over finished episodes) with the counts ``updates`` and ``env/episodes``.
    Runs of every seed share one compilation: the seed is in ``state`` (:func:`init_state`), not here.
    """
    return _train_rounds(state, num_rounds, params, seedless(config))


def seedless(config: Config) -> Config:
    """``config`` with its seed set to 0: the static config of jitted code, which must never read the
    seed (all randomness comes from the state), so that every seed shares one compilation."""
    return config if config.train.seed == 0 else with_overrides(config, train={"seed": 0})


@functools.partial(jax.jit, static_argnames="config")
def _train_rounds(state: TrainState, num_rounds, params: env.EnvParams, config: Config):
    zeros = {k: jnp.float32(0.0) for k in (*LOSS_KEYS, *_EPISODE_SUMS, "env/episodes", "updates")}

    def body(_, carry):
        state, sums = carry
        state, metrics = _round(state, params, config)
        return state, {k: sums[k] + metrics[k] for k in sums}

    return jax.lax.fori_loop(0, num_rounds, body, (state, zeros))


def summarize(sums: dict, state: TrainState) -> dict:
    """Turn :func:`train_rounds` sums into means, plus the run's counters (plain Python numbers)."""
    sums = {k: float(v) for k, v in sums.items()}
    updates, episodes = sums.pop("updates"), sums.pop("env/episodes")
    out = {k: (v / updates if updates else math.nan) for k, v in sums.items() if k in LOSS_KEYS}
    out.update({k: (sums[k] / episodes if episodes else math.nan) for k in _EPISODE_SUMS})
    out["env/crash_rate"] = out.pop("env/crashes")
    out.update(env_steps=int(state.env_steps), updates=int(state.updates), episodes=int(state.episodes))
    out.update(episodes_in_chunk=int(episodes), explore_prob=float(state.explore_prob))
    out["best_progress"] = float(state.best_progress)
    out.update(checkpoints.summary(state.driver))  # test_steps, and the driver once tested
    return out


def rounds_for(env_steps: int, config: Config) -> int:
    """Rounds needed to collect at least ``env_steps`` transitions."""
    per_round = config.train.num_cars * config.train.train_every
    return max(0, math.ceil(env_steps / per_round))


def train(
    config: Config,
    env_steps: int,
    *,
    state: TrainState | None = None,
    params: env.EnvParams | None = None,
    callback: Callable[[TrainState, dict], None] | None = None,
    progress: bool = True,
):
    """Train for ``env_steps`` more transitions; returns ``(state, history)``.

    ``history`` is one metrics dict per chunk of ``config.train.chunk_rounds`` rounds, with the wall
    time since the start under ``"time_s"``. ``callback(state, record)`` runs after each chunk.
    """
    params = env_params(config) if params is None else params
    state = init_state(config, params) if state is None else state
    total = rounds_for(env_steps, config)
    bar = progress_bar(total * config.train.num_cars * config.train.train_every, progress)
    history, start, done = [], time.perf_counter(), 0
    while done < total:
        chunk = min(config.train.chunk_rounds, total - done)
        state, sums = train_rounds(state, jnp.int32(chunk), params, config)
        done += chunk
        record = summarize(sums, state)
        record["time_s"] = time.perf_counter() - start
        history.append(record)
        if bar is not None:
            bar.update(chunk * config.train.num_cars * config.train.train_every)
            bar.set_postfix(_postfix(record), refresh=False)
        if callback is not None:
            callback(state, record)
    if bar is not None:
        bar.close()
    return state, history


def _postfix(record: dict) -> dict:
    keys = {"return": "env/return", "progress": "env/progress", "wm": "wm/loss", "actor": "actor/loss"}
    shown = {name: record.get(key) for name, key in {**keys, "explore": "explore_prob"}.items()}
    return {
        k: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"
        for k, v in shown.items()
    }


def progress_bar(total: int, enabled: bool, desc: str = "train"):
    """A tqdm bar over ``total`` env steps (None when not ``enabled``), shared with carlab.learn.seeds."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, desc=desc, dynamic_ncols=True)
