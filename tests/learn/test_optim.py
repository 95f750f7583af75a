"""Optimiser helpers: live learning rates read and set by name, the chunked offline-fit loop."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from carlab.learn import optim

PARAMS = {"w": jnp.ones(3), "b": jnp.zeros(())}


def test_learning_rate_round_trips_by_name():
    opt = optim.adam(1e-3, grad_clip=10.0)
    state = opt.init(PARAMS)
    assert optim.learning_rate(state) == pytest.approx(1e-3)
    changed = optim.with_learning_rate(state, 2.5e-4)
    assert optim.learning_rate(changed) == pytest.approx(2.5e-4)
    assert optim.learning_rate(state) == pytest.approx(1e-3)  # a copy: the state passed in is unchanged
    # The same structure, shapes and dtypes: a checkpoint written with one loads into the other, and a
    # jitted update compiled for one takes the other.
    assert jax.tree.structure(changed) == jax.tree.structure(state)
    assert [(x.shape, x.dtype) for x in jax.tree.leaves(changed)] == [
        (x.shape, x.dtype) for x in jax.tree.leaves(state)
    ]
    assert optax.tree_utils.tree_get(changed, "learning_rate").dtype == jnp.float32


def test_the_learning_rate_steers_the_update():
    """An update under a changed learning rate moves the params by exactly that much more."""
    opt = optim.adam(1e-3, grad_clip=1e9)
    grads = {"w": jnp.array([1.0, -2.0, 0.5]), "b": jnp.array(3.0)}
    state = opt.init(PARAMS)
    small, _ = opt.update(grads, state, PARAMS)
    big, _ = opt.update(grads, optim.with_learning_rate(state, 1e-2), PARAMS)
    for a, b in zip(jax.tree.leaves(small), jax.tree.leaves(big)):
        np.testing.assert_allclose(np.asarray(b), 10 * np.asarray(a), rtol=1e-5)


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("inf"), float("nan"), True, "1e-3", None])
def test_with_learning_rate_rejects_bad_values(bad):
    state = optim.adam(1e-3, grad_clip=10.0).init(PARAMS)
    with pytest.raises(ValueError, match="learning rate"):
        optim.with_learning_rate(state, bad)


def test_a_state_without_a_learning_rate_is_refused_clearly():
    state = optax.adam(1e-3).init(PARAMS)  # the rate is a constant of the optimiser, not in its state
    with pytest.raises(ValueError, match="no learning_rate"):
        optim.learning_rate(state)
    with pytest.raises(ValueError, match="no learning_rate"):
        optim.with_learning_rate(state, 1e-3)


def test_run_chunked_splits_into_chunks_and_concatenates():
    calls = []

    def chunk_fn(carry, n):
        calls.append(n)
        values = carry + np.arange(n)
        return carry + n, {"wm/loss": values.astype(np.float32), "other": values * 2}

    carry, history = optim.run_chunked(
        chunk_fn, 0, 23, chunk=10, desc="test", loss_key="wm/loss", progress=False
    )
    assert calls == [10, 10, 3] and carry == 23
    np.testing.assert_array_equal(history["wm/loss"], np.arange(23))
    np.testing.assert_array_equal(history["other"], 2 * np.arange(23))
    assert optim.run_chunked(chunk_fn, 5, 0, chunk=10, desc="test", progress=False) == (5, {})
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="test: the number of updates"):
            optim.run_chunked(chunk_fn, 0, bad, chunk=10, desc="test", progress=False)
    with pytest.raises(ValueError, match="chunk"):
        optim.run_chunked(chunk_fn, 0, 5, chunk=0, desc="test", progress=False)


def _toy_step(carry, targets, key, static):
    """One SGD step on the squared distance to a target drawn with ``key`` (a toy fit)."""
    (learning_rate,) = static
    pick = jax.random.randint(key, (), 0, targets.shape[0])
    loss, grad = jax.value_and_grad(lambda w: jnp.sum((w - targets[pick]) ** 2))(carry)
    return carry - learning_rate * grad, {"toy/loss": loss}


def _toy_fit(key, num_updates, targets, chunk=7):
    return optim.fit_updates(
        _toy_step, key, jnp.zeros(2), targets, num_updates=num_updates, static=(0.1,),
        desc="toy", loss_key="toy/loss", chunk=chunk, progress=False,
    )  # fmt: skip


def test_fit_updates_fits_a_toy_loss():
    """The toy weights walk to the targets' mean; the history has one entry per update, the same for
    the same key (in any chunking) and not for another; same shapes compile once per chunk length."""
    targets = jnp.array([[1.0, 2.0], [3.0, 2.0]])
    w, history = _toy_fit(jax.random.PRNGKey(0), 30, targets)
    assert set(history) == {"toy/loss"} and history["toy/loss"].shape == (30,)
    np.testing.assert_allclose(np.asarray(w), [2.0, 2.0], atol=0.6)
    assert history["toy/loss"][-5:].mean() < history["toy/loss"][0] / 3
    compiled = optim._scan_updates._cache_size()
    again_w, again = _toy_fit(jax.random.PRNGKey(0), 30, targets + 0.0)  # new arrays, same shapes
    assert optim._scan_updates._cache_size() == compiled, "a second fit of the same shapes recompiled"
    np.testing.assert_array_equal(np.asarray(again_w), np.asarray(w))
    np.testing.assert_array_equal(again["toy/loss"], history["toy/loss"])
    _, other = _toy_fit(jax.random.PRNGKey(1), 30, targets)
    assert not np.array_equal(other["toy/loss"], history["toy/loss"])
    same_w, none = _toy_fit(jax.random.PRNGKey(0), 0, targets)
    assert none == {} and np.array_equal(np.asarray(same_w), np.zeros(2))
