"""Many seeds in one jitted call: S independent runs of one config, vmapped over their keys.

purejaxrl's ``jax.jit(jax.vmap(make_train(config)))`` for carlab's loop. Every random draw of a run
comes from its :class:`~carlab.learn.loop.TrainState` (:mod:`carlab.learn.loop`), so S runs are one
TrainState with a leading axis S — :func:`init_states` is ``jax.vmap(init_state)`` over
``PRNGKey(seed)`` keys — and :func:`train_seed_rounds` trains them all in one compiled program::

    states, histories = train_seeds(config.preset("race"), range(8), 400_000)   # one bar, 8 runs
    run_3 = seed_state(states, 3)               # run 3's own TrainState, as loop.train would give it

What differs between the runs (traced, one value per run) and what they share (static):

* the run's key, hence everything random: network initialisation, exploration, sampling;
* the learning rates of the world model, actor and critic: they live in the optimiser states
  (:mod:`carlab.learn.optim`), so ``learning_rates={"actor": [1e-4, 3e-4, 1e-3, 3e-3]}`` with four
  runs is a sweep of "seeds x values of one learning rate" in one call;
* everything else in the config is shared and static: shapes (sizes, cars, buffer, batch) and the
  numbers the jitted code reads as constants today (exploration noise and decay, discount, lambda,
  loss weights, clipping). A sweep over one of those is one call per value.

Each run is the run its seed gives alone (``carlab train --seed s``) up to float rounding: the
vmapped matrix products may sum in another order. The warm-up test (``buffer.size >= warmup``, the
``lax.cond`` in :func:`carlab.learn.loop.train_if`) would turn into a select under ``vmap`` — both
branches computed — so :func:`train_seed_rounds` asks it once for all runs, outside the ``vmap``.
Memory is S times one run's (the states are stacked, nothing else grows).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import types
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from carlab.checks import check_int
from carlab.learn import loop, policy_checkpoint, runs
from carlab.learn.config import Config, with_overrides
from carlab.learn.loop import TrainState
from carlab.sim import env

OPTIMISERS = ("world_model", "actor", "critic")
"""The optimiser states whose learning rate can differ between runs (``learning_rates=`` keys)."""

_SUM_KEYS = (
    *loop.LOSS_KEYS,
    "env/return",
    "env/progress",
    "env/laps",
    "env/crashes",
    "env/episodes",
    "updates",
)


def seed_config(config: Config, seed: int) -> Config:
    """``config`` with ``train.seed`` set to ``seed``: the config of that seed's run (its checkpoint's)."""
    return with_overrides(config, train={"seed": seed})


def check_seeds(seeds) -> list[int]:
    """``seeds`` as a non-empty list of ints (``TypeError`` or ``ValueError`` in one line if not)."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (Sequence, range)):
        raise TypeError(f"seeds must be a sequence of ints, got {type(seeds).__name__}")
    seeds = [check_int(s, "every seed", where="seeds") for s in seeds]
    if not seeds:
        raise ValueError("seeds: give at least one seed")
    return seeds


def num_runs(states: TrainState) -> int:
    """S, the number of runs stacked in ``states``."""
    return int(states.env_steps.shape[0]) if states.env_steps.ndim == 1 else 0


def init_states(
    config: Config,
    seeds: Sequence[int],
    params: env.EnvParams | None = None,
    *,
    learning_rates: Mapping[str, Sequence[float]] | None = None,
) -> TrainState:
    """Fresh runs of ``seeds`` stacked on a leading axis: run i is ``init_state`` of seed ``seeds[i]``.

    ``learning_rates`` (optional) maps names in :data:`OPTIMISERS` to one learning rate per run.
    """
    seeds = check_seeds(seeds)
    params = loop.env_params(config) if params is None else params
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    states = _init_states(keys, params, loop.seedless(config))
    return states if learning_rates is None else with_learning_rates(states, learning_rates)


@functools.partial(jax.jit, static_argnames="config")
def _init_states(keys, params: env.EnvParams, config: Config) -> TrainState:
    return jax.vmap(lambda key: loop.init_state(config, params, key=key))(keys)


def with_learning_rates(states: TrainState, learning_rates: Mapping[str, Sequence[float]]) -> TrainState:
    """A copy of stacked ``states`` whose optimisers in ``learning_rates`` (names from
    :data:`OPTIMISERS`) take the given step sizes, one per run."""
    count = num_runs(states)
    opt_state = dict(states.opt_state)
    for name, values in learning_rates.items():
        if name not in OPTIMISERS:
            raise ValueError(f"learning_rates: unknown optimiser {name!r}; choose from {list(OPTIMISERS)}")
        values = list(values)
        if len(values) != count:
            raise ValueError(f"learning_rates[{name!r}] has {len(values)} values for {count} runs")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.inf:
                raise ValueError(
                    f"learning_rates[{name!r}]: a learning rate must be positive and finite, got {value!r}"
                )
        opt_state[name] = optax.tree_utils.tree_set(
            opt_state[name], learning_rate=jnp.asarray(values, jnp.float32)
        )
    return dataclasses.replace(states, opt_state=opt_state)


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Runs of one config (e.g. loaded checkpoints) stacked on a leading axis, for :func:`train_seeds`."""
    if not states:
        raise ValueError("stack_states: give at least one state")
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def seed_state(states: TrainState, index: int) -> TrainState:
    """Run ``index`` of stacked ``states``: a plain TrainState (save it, evaluate it, resume it)."""
    check_int(index, "index", low=0, high=num_runs(states) - 1, where="seed_state")
    return jax.tree.map(lambda x: x[index], states)


def train_seed_rounds(states: TrainState, num_rounds, params: env.EnvParams, config: Config):
    """:func:`carlab.learn.loop.train_rounds` of every run in ``states`` at once (one compiled program).

    Returns ``(states, sums)``, each sum an (S,) array: run i's sums are those ``train_rounds`` gives
    run i alone. Sets of any seeds share one compilation per S (the seeds are in ``states``).
    """
    return _train_seed_rounds(states, num_rounds, params, loop.seedless(config))


@functools.partial(jax.jit, static_argnames="config")
def _train_seed_rounds(states: TrainState, num_rounds, params: env.EnvParams, config: Config):
    zeros = {k: jnp.zeros(states.env_steps.shape, jnp.float32) for k in _SUM_KEYS}

    def body(_, carry):
        states, sums = carry
        states, metrics = _round(states, params, config)
        return states, {k: sums[k] + metrics[k] for k in sums}

    return jax.lax.fori_loop(0, num_rounds, body, (states, zeros))


def _round(states: TrainState, params: env.EnvParams, config: Config):
    """:func:`carlab.learn.loop._round` of every run: collect, then train the runs whose buffer is warm."""

    def collect(state):
        return jax.lax.scan(
            lambda state, _: loop.collect_step(state, params, config), state, None, config.train.train_every
        )

    before = states.env_steps
    states, episode = jax.vmap(collect)(states)
    episode = jax.tree.map(lambda x: jnp.sum(x, axis=1), episode)
    warm = states.buffer.size >= config.replay.warmup

    def train(states):
        return jax.vmap(lambda due, state: loop.train_if(due, state, config))(warm, states)

    def skip(states):
        return states, {k: jnp.zeros(warm.shape, jnp.float32) for k in (*loop.LOSS_KEYS, "updates")}

    # Under vmap train_if's cond computes both branches; asked here, unbatched, the warm-up rounds skip
    # the updates. (Runs of one set have equal buffer sizes, so "any warm" is "all warm" for them.)
    states, metrics = jax.lax.cond(jnp.any(warm), train, skip, states)
    states = policy_checkpoint.checkpoint_test_if_due(before, states, params, config, stacked=True)
    return states, {**metrics, **episode}


def _records(sums: dict, states: TrainState) -> list[dict]:
    """One :func:`carlab.learn.loop.summarize` record per run."""
    sums, counters, drivers = jax.device_get(
        (
            sums,
            {
                k: getattr(states, k)
                for k in ("env_steps", "updates", "episodes", "explore_prob", "best_progress")
            },
            dataclasses.replace(states.driver, params={}),  # the driver's counters only
        )
    )
    return [
        # summarize reads only these counters of the state: no need to slice the whole run out
        loop.summarize(
            {k: v[i] for k, v in sums.items()},
            types.SimpleNamespace(
                **{k: v[i] for k, v in counters.items()},
                driver=jax.tree.map(lambda x, i=i: x[i], drivers),
            ),
        )
        for i in range(len(counters["env_steps"]))
    ]


def train_seeds(
    config: Config,
    seeds: Sequence[int],
    env_steps: int,
    *,
    states: TrainState | None = None,
    params: env.EnvParams | None = None,
    learning_rates: Mapping[str, Sequence[float]] | None = None,
    validate: bool = True,
    savers: Sequence[runs.BestSaver] | None = None,
    callback: Callable[[TrainState, list[dict]], None] | None = None,
    progress: bool = True,
):
    """Train one run per seed for ``env_steps`` more transitions each, all in one jitted call per
    chunk; returns ``(states, histories)``.

    Args:
        config: the config every run shares (its seed is ignored: run i has seed ``seeds[i]``).
        seeds: one seed per run (repeats are fine, e.g. one seed under several learning rates).
        env_steps: transitions each run collects in this call.
        states: runs to continue, stacked (:func:`stack_states` of loaded checkpoints); default
            :func:`init_states` of ``seeds``.
        params: the training tracks (default ``loop.env_params(config)``).
        learning_rates: one learning rate per run for optimisers named in :data:`OPTIMISERS`.
        validate: drive each run's deterministic actor round the validation tracks after every chunk
            (:func:`carlab.learn.runs.validate`), adding ``val/laps`` and ``val/progress`` to its record.
        savers: one :class:`carlab.learn.runs.BestSaver` per run, shown each validated record (needs
            ``validate``): the best-checkpoint rule of ``carlab train``, run by run.
        callback: ``callback(states, records)`` after each chunk, one record per run.
        progress: one tqdm bar for all runs, with the median and worst validation lap rate.
    Returns:
        The stacked states and one history per run (this call's records, as :func:`loop.train` gives).
    """
    seeds = check_seeds(seeds)
    check_int(env_steps, "env_steps", low=0, where="train_seeds")
    if savers is not None and (len(savers) != len(seeds) or not validate):
        raise ValueError("train_seeds: savers needs validate=True and one BestSaver per seed")
    params = loop.env_params(config) if params is None else params
    if states is None:
        states = init_states(config, seeds, params)
    elif num_runs(states) != len(seeds):
        raise ValueError(f"train_seeds: states hold {num_runs(states)} runs for {len(seeds)} seeds")
    if learning_rates is not None:
        states = with_learning_rates(states, learning_rates)
    configs = [seed_config(config, s) for s in seeds]
    per_round = config.train.num_cars * config.train.train_every
    total = loop.rounds_for(env_steps, config)
    bar = loop.progress_bar(total * per_round * len(seeds), progress, desc=f"train {len(seeds)} seeds")
    histories, start, done = [[] for _ in seeds], time.perf_counter(), 0
    while done < total:
        chunk = min(config.train.chunk_rounds, total - done)
        states, sums = train_seed_rounds(states, jnp.int32(chunk), params, config)
        done += chunk
        records = _records(sums, states)
        elapsed = time.perf_counter() - start
        drivers = policy_checkpoint.driver_params(states, config) if validate else None
        for i, record in enumerate(records):
            record["time_s"] = elapsed
            if validate:
                record.update(runs.validate(jax.tree.map(lambda x, i=i: x[i], drivers), configs[i]))
            histories[i].append(record)
            if savers is not None:
                savers[i].keep(seed_state(states, i), record)
        if bar is not None:
            bar.update(chunk * per_round * len(seeds))
            bar.set_postfix(_postfix(records), refresh=False)
        if callback is not None:
            callback(states, records)
    if bar is not None:
        bar.close()
    return states, histories


def _postfix(records: list[dict]) -> dict:
    laps = [r["val/laps"] for r in records if "val/laps" in r]
    progress = [r["env/progress"] for r in records if not math.isnan(r["env/progress"])]
    out = {"median laps": "-", "worst laps": "-"}
    if laps:
        out = {"median laps": f"{np.median(laps):.0%}", "worst laps": f"{min(laps):.0%}"}
    out["median progress"] = f"{np.median(progress):.3g}" if progress else "-"
    return out
