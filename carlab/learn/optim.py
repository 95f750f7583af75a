"""Optimiser helpers shared by the world model and the agent, and the offline fitting loop.

* :func:`adam` — Adam with global-norm clipping, its step size kept in the optimiser *state*
  (``optax.inject_hyperparams``), so :func:`with_learning_rate` changes it while training runs without
  recompiling anything, and :func:`learning_rate` reads it back. Both find the step size by name
  (``optax.tree_utils``), not by its position in the chain.
* :func:`fit_updates` — the notebooks' offline fitting: ``num_updates`` calls of a pure update step,
  one jitted ``lax.scan`` per chunk of updates, a tqdm bar between chunks (:func:`run_chunked`).

    opt = adam(1e-3, grad_clip=100.0)
    opt_state = with_learning_rate(opt.init(params), 3e-4)
    learning_rate(opt_state)  # 3e-4
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from carlab.checks import check_int

FIT_CHUNK = 250
"""Updates per jitted call of :func:`fit_updates` (the host shows progress between calls)."""


def adam(learning_rate: float, grad_clip: float) -> optax.GradientTransformation:
    """Adam with global-norm clipping, its step size in the state (see :func:`with_learning_rate`)."""
    return optax.chain(
        optax.clip_by_global_norm(grad_clip),
        optax.inject_hyperparams(optax.adam)(learning_rate=learning_rate),
    )


def learning_rate(opt_state) -> float:
    """The step size currently held in an :func:`adam` state."""
    value = optax.tree_utils.tree_get(opt_state, "learning_rate")
    if value is None:
        raise ValueError("this optimiser state holds no learning_rate (make it with optim.adam)")
    return float(value)


def with_learning_rate(opt_state, value: float):
    """A copy of an :func:`adam` state whose step size is ``value`` (must be positive and finite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.inf:
        raise ValueError(f"learning rate must be a positive finite number, got {value!r}")
    learning_rate(opt_state)  # a clear error for a state without one
    return optax.tree_utils.tree_set(opt_state, learning_rate=jnp.asarray(value, jnp.float32))


def run_chunked(
    chunk_fn: Callable[[Any, int], tuple[Any, dict]],
    carry,
    total: int,
    *,
    chunk: int,
    desc: str,
    loss_key: str | None = None,
    progress: bool = True,
):
    """Call ``chunk_fn(carry, n) -> (carry, metrics of (n,) arrays)`` until ``total`` updates are done.

    The host loop of offline fitting: ``chunk`` updates at a time, a tqdm bar named ``desc`` between
    chunks showing the last value of the metric ``loss_key`` (if given). Returns
    ``(carry, {name: np.ndarray (total,)})``.
    """
    from tqdm.auto import tqdm

    check_int(total, "the number of updates", low=0, where=desc)
    check_int(chunk, "the chunk", low=1, where=desc)
    history: dict[str, list] = {}
    with tqdm(total=total, desc=desc, unit="update", disable=not progress, dynamic_ncols=True) as bar:
        done = 0
        while done < total:
            n = min(chunk, total - done)
            carry, metrics = chunk_fn(carry, n)
            for name, values in jax.device_get(metrics).items():
                history.setdefault(name, []).append(np.asarray(values))
            done += n
            bar.update(n)
            if loss_key in history:
                bar.set_postfix(loss=f"{float(history[loss_key][-1][-1]):.4g}")
    return carry, {name: np.concatenate(parts) for name, parts in history.items()}


@functools.partial(jax.jit, static_argnames=("step", "num_updates", "static"))
def _scan_updates(step, carry, data, key, *, num_updates: int, static):
    """``num_updates`` calls of ``step`` in one ``lax.scan``, each with its own key."""
    return jax.lax.scan(lambda c, k: step(c, data, k, static), carry, jax.random.split(key, num_updates))


def fit_updates(
    step: Callable,
    key,
    carry,
    data,
    *,
    num_updates: int,
    static,
    desc: str,
    loss_key: str | None = None,
    chunk: int = FIT_CHUNK,
    progress: bool = True,
):
    """``num_updates`` calls of ``step(carry, data, key, static) -> (carry, metrics)``; returns
    ``(carry, {name: (num_updates,) array})``.

    ``step`` is a module-level pure function and ``static`` its hashable settings (sizes, configs):
    both are static to the jitted chunk, while ``carry`` (params, optimiser states) and ``data`` (a
    buffer, start latents) are traced, so every fit of the same shapes shares one compilation per
    chunk length. Each chunk takes a fresh key split off ``key``; each update one key of that chunk.
    """

    def chunk_fn(carry_and_key, n):
        carry, key = carry_and_key
        key, sub = jax.random.split(key)
        carry, metrics = _scan_updates(step, carry, data, sub, num_updates=n, static=static)
        return (carry, key), metrics

    (carry, _), history = run_chunked(
        chunk_fn, (carry, key), num_updates, chunk=chunk, desc=desc, loss_key=loss_key, progress=progress
    )
    return carry, history
