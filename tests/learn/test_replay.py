"""Tests for carlab.learn.replay: the functional ring replay buffer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from carlab.learn.replay import (
    ReplayBuffer,
    Transition,
    add,
    can_sample,
    init_buffer,
    init_memory,
    last_stretches,
    remember,
    sample,
    sample_memory,
    sample_sequences,
    sequence_mask,
)

OBS, ACT = 3, 2

sample_jit = jax.jit(sample, static_argnames="batch_size")
add_jit = jax.jit(add)


def transitions(ids):
    """Transitions whose every field encodes its id, so stored content can be checked exactly.

    reward = id + 1, so a sampled reward of 0 can only come from the zero padding.
    """
    ids = np.asarray(ids, np.float32)
    return {
        "obs": np.stack([ids, ids + 0.25, ids + 0.5], axis=-1),
        "action": np.stack([-ids, ids * 2], axis=-1),
        "next_obs": np.stack([ids + 1, ids + 1.25, ids + 1.5], axis=-1),
        "reward": ids + 1,
        "done": (ids.astype(int) % 3) == 0,
    }


def filled(capacity, count, chunk=7):
    """A buffer after adding ids 0..count-1 in chunks of ``chunk``."""
    buffer = init_buffer(capacity, OBS, ACT)
    for start in range(0, count, chunk):
        buffer = add(buffer, **transitions(range(start, min(start + chunk, count))))
    return buffer


def assert_holds(buffer, slot_ids):
    """Slot s of the buffer holds the transition with id slot_ids[s]."""
    want = transitions(slot_ids)
    for name, value in want.items():
        np.testing.assert_array_equal(np.asarray(getattr(buffer, name)), value, err_msg=name)


def test_init_shapes_dtypes():
    buffer = init_buffer(16, OBS, ACT)
    assert isinstance(buffer, ReplayBuffer)
    assert buffer.capacity == 16 and buffer.obs_size == OBS and buffer.action_size == ACT
    assert buffer.obs.shape == buffer.next_obs.shape == (16, OBS) and buffer.obs.dtype == jnp.float32
    assert buffer.action.shape == (16, ACT) and buffer.action.dtype == jnp.float32
    assert buffer.reward.shape == (16,) and buffer.reward.dtype == jnp.float32
    assert buffer.done.shape == (16,) and buffer.done.dtype == jnp.bool_
    assert buffer.position.dtype == buffer.size.dtype == jnp.int32
    assert int(buffer.position) == int(buffer.size) == 0


def test_defaults_match_env():
    from carlab.sim.env import ACTION_SIZE, OBS_SIZE

    buffer = init_buffer()
    assert (buffer.capacity, buffer.obs_size, buffer.action_size) == (10_000, OBS_SIZE, ACTION_SIZE)


@pytest.mark.parametrize(
    "kwargs",
    [{"capacity": 0}, {"capacity": -3}, {"capacity": 2.5}, {"obs_size": 0}, {"action_size": 0}],
)
def test_init_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        init_buffer(**kwargs)


def test_add_and_sample_shapes_dtypes():
    buffer = filled(16, 5)
    assert int(buffer.size) == 5 and int(buffer.position) == 5
    batch = sample(buffer, jax.random.key(0), batch_size=8)
    assert isinstance(batch, Transition)
    assert batch.obs.shape == batch.next_obs.shape == (8, OBS)
    assert batch.action.shape == (8, ACT)
    assert batch.reward.shape == batch.done.shape == (8,)
    assert batch.obs.dtype == batch.action.dtype == batch.reward.dtype == jnp.float32
    assert batch.done.dtype == jnp.bool_


def test_add_is_pure():
    buffer = init_buffer(4, OBS, ACT)
    add(buffer, **transitions([0, 1]))
    assert int(buffer.size) == 0 and not np.asarray(buffer.obs).any()


def test_wraparound_keeps_newest_in_slot_order():
    capacity = 8
    buffer = filled(capacity, int(2.5 * capacity), chunk=3)  # 20 ids, chunks straddle the wrap
    # ids 12..19 survive, each in slot id % 8
    assert_holds(buffer, [16, 17, 18, 19, 12, 13, 14, 15])
    assert int(buffer.size) == capacity
    assert int(buffer.position) == 20 % capacity


def test_batch_add_equals_single_adds():
    one_by_one = init_buffer(5, OBS, ACT)
    for i in range(13):
        one_by_one = add(one_by_one, **{k: v[0] for k, v in transitions([i]).items()})
    batched = filled(5, 13, chunk=4)
    for a, b in zip(jax.tree.leaves(one_by_one), jax.tree.leaves(batched)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_size_saturates_at_capacity():
    buffer = init_buffer(6, OBS, ACT)
    sizes = []
    for i in range(10):
        buffer = add(buffer, **transitions([i]))
        sizes.append(int(buffer.size))
    assert sizes == [1, 2, 3, 4, 5, 6, 6, 6, 6, 6]


def test_add_more_than_capacity_keeps_last_in_order():
    buffer = add(filled(4, 1), **transitions(range(1, 12)))  # 1 stored, then 11 more into 4 slots
    assert int(buffer.size) == 4 and int(buffer.position) == 12 % 4
    assert_holds(buffer, [8, 9, 10, 11])  # ids 8..11 survive, id i in slot i % 4


def test_single_transition_add():
    one = {k: v[0] for k, v in transitions([7]).items()}
    assert one["obs"].shape == (OBS,) and one["reward"].shape == ()
    buffer = add(init_buffer(3, OBS, ACT), **one)
    assert int(buffer.size) == 1 and int(buffer.position) == 1
    np.testing.assert_array_equal(np.asarray(buffer.obs[0]), one["obs"])
    assert float(buffer.reward[0]) == 8.0 and bool(buffer.done[0]) is False


def test_add_rejects_wrong_shapes():
    buffer = init_buffer(4, OBS, ACT)
    good = transitions([0, 1])
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\), expected \(2, 3\)"):
        add(buffer, **{**good, "obs": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="action has shape"):
        add(buffer, **{**good, "action": np.zeros((3, ACT))})
    with pytest.raises(ValueError, match="reward has shape"):
        add(buffer, **{**good, "reward": np.zeros((2, 1))})


def test_samples_come_from_filled_part_only():
    buffer = filled(64, 5)  # 59 slots of zero padding
    batch = sample(buffer, jax.random.key(1), batch_size=2000)
    ids = np.asarray(batch.reward) - 1
    assert set(ids.astype(int)) == {0, 1, 2, 3, 4}  # every stored one appears, no padding (id -1)
    np.testing.assert_array_equal(np.asarray(batch.obs[:, 0]), ids)  # fields stay together
    np.testing.assert_array_equal(np.asarray(batch.next_obs[:, 0]), ids + 1)
    np.testing.assert_array_equal(np.asarray(batch.action[:, 1]), ids * 2)
    np.testing.assert_array_equal(np.asarray(batch.done), ids.astype(int) % 3 == 0)


def test_sampling_is_roughly_uniform():
    capacity, draws = 10, 20_000
    buffer = filled(capacity, 25)  # full and wrapped: ids 15..24
    ids = np.asarray(sample_jit(buffer, jax.random.key(2), batch_size=draws).reward).astype(int) - 1
    counts = np.bincount(ids - 15, minlength=capacity)
    assert counts.sum() == draws and len(counts) == capacity
    expected = draws / capacity
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 50, counts  # 9 degrees of freedom: P(chi2 > 50) is about 1e-7


def test_same_key_same_sample_different_key_different():
    buffer = filled(32, 20)
    a = sample(buffer, jax.random.key(3), 16)
    b = sample(buffer, jax.random.key(3), 16)
    c = sample(buffer, jax.random.key(4), 16)
    np.testing.assert_array_equal(np.asarray(a.reward), np.asarray(b.reward))
    assert not np.array_equal(np.asarray(a.reward), np.asarray(c.reward))


def test_jit_equals_eager():
    buffer = filled(8, 6)
    more = transitions(range(100, 105))  # wraps
    eager, jitted = add(buffer, **more), add_jit(buffer, **more)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    key = jax.random.key(5)
    for a, b in zip(sample(eager, key, 12), sample_jit(jitted, key, batch_size=12)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_jit_add_with_more_than_capacity_and_single():
    buffer = add_jit(init_buffer(4, OBS, ACT), **transitions(range(9)))
    assert_holds(buffer, [8, 5, 6, 7])
    buffer = add_jit(buffer, **{k: v[0] for k, v in transitions([9]).items()})
    assert_holds(buffer, [8, 9, 6, 7])


def test_empty_buffer_raises_eagerly_and_can_sample_says_no():
    buffer = init_buffer(8, OBS, ACT)
    assert not can_sample(buffer, 1)
    with pytest.raises(ValueError, match="replay buffer is empty"):
        sample(buffer, jax.random.key(0), 4)
    # under jit it cannot raise: documented garbage (the zero padding)
    batch = sample_jit(buffer, jax.random.key(0), batch_size=4)
    assert not np.asarray(batch.obs).any()


def test_can_sample_counts_transitions():
    buffer = filled(8, 3)
    assert can_sample(buffer) and can_sample(buffer, 3) and not can_sample(buffer, 4)
    assert can_sample(filled(8, 30), 8) and not can_sample(filled(8, 30), 9)


def test_sample_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sample(filled(4, 2), jax.random.key(0), 0)


def cars_buffer(capacity, steps, cars, crash_at=(), truncate_at=()):
    """``steps`` env steps of ``cars`` cars added one step at a time. Car c's transition at step t has
    id ``t * cars + c``; its next_obs is the obs of its step t + 1 unless the episode ends there
    (``crash_at``: done; ``truncate_at``: a reset obs, done False) — as the trainer stores them."""
    buffer = init_buffer(capacity, OBS, ACT)
    for t in range(steps):
        ids = np.arange(cars) + t * cars
        tr = transitions(ids)
        tr["obs"] = np.stack([ids // cars, ids % cars, np.zeros_like(ids)], axis=-1).astype(np.float32)
        tr["next_obs"] = tr["obs"] + np.array([1.0, 0.0, 0.0], np.float32)
        tr["done"] = np.isin(ids, crash_at)
        tr["next_obs"][np.isin(ids, truncate_at), 2] = -1.0  # a reset: not where the next step starts
        buffer = add(buffer, **tr)
    return buffer


@pytest.mark.parametrize("capacity, steps", [(24, 3), (24, 50)])
def test_sample_sequences_follow_one_car_in_order(capacity, steps):
    """A stretch is one car's consecutive steps (stride = number of cars), also after the ring wraps,
    and never runs from the newest data into the oldest."""
    cars, length = 4, 3
    buffer = cars_buffer(capacity, steps, cars)
    seq = jax.jit(sample_sequences, static_argnames=("batch_size", "length", "stride"))(
        buffer, jax.random.PRNGKey(0), batch_size=200, length=length, stride=cars
    )
    assert seq.obs.shape == (200, length, OBS) and seq.reward.shape == (200, length)
    step, car = np.asarray(seq.obs[..., 0]), np.asarray(seq.obs[..., 1])
    assert np.all(car == car[:, :1])
    assert np.all(np.diff(step, axis=1) == 1)
    assert step.min() >= steps - capacity // cars and step.max() <= steps - 1
    assert np.all(np.asarray(sequence_mask(seq)) == 1.0)


def test_sequence_mask_stops_at_crash_and_truncation():
    cars = 2
    # Car 0 crashes at step 2 (id 4); car 1 is truncated at step 1 (id 3).
    buffer = cars_buffer(40, 6, cars, crash_at=(4,), truncate_at=(3,))
    seq = sample_sequences(buffer, jax.random.PRNGKey(1), batch_size=300, length=4, stride=cars)
    mask = np.asarray(sequence_mask(seq))
    step, car = np.asarray(seq.obs[..., 0]), np.asarray(seq.obs[..., 1])
    end = np.where(car[:, 0] == 0, 2, 1)  # the last step of the first episode of each car
    # A stretch starting after its car's episode ended lies wholly in the next episode.
    want = np.where(step[:, :1] <= end[:, None], step <= end[:, None], True).astype(np.float32)
    np.testing.assert_array_equal(mask, want)
    assert set(np.unique(step[:, 0])) == {0, 1, 2}  # every start that fits is drawn


def test_sequence_mask_of_length_one_keeps_every_step():
    buffer = cars_buffer(8, 2, 2, crash_at=(0, 1))
    seq = sample_sequences(buffer, jax.random.PRNGKey(2), batch_size=5, length=1, stride=2)
    np.testing.assert_array_equal(np.asarray(sequence_mask(seq)), np.ones((5, 1)))


# --- the crash memory: whole stretches kept apart from the ring ------------------------------------


@pytest.mark.parametrize("steps", [5, 23])  # before and after the ring (capacity 24 = 6 steps) wraps
def test_last_stretches_are_each_cars_latest_steps_in_order(steps):
    cars, length = 4, 3
    buffer = cars_buffer(24, steps, cars)
    got = jax.jit(last_stretches, static_argnames=("count", "length"))(buffer, count=cars, length=length)
    assert got.obs.shape == (cars, length, OBS)
    step, car = np.asarray(got.obs[..., 0]), np.asarray(got.obs[..., 1])
    np.testing.assert_array_equal(car, np.repeat(np.arange(cars)[:, None], length, axis=1))
    np.testing.assert_array_equal(step, np.tile(np.arange(steps - length, steps), (cars, 1)))


def test_remember_writes_kept_stretches_in_order_and_wraps():
    memory = init_memory(4, 2, OBS, ACT)
    ring = cars_buffer(40, 4, 4)
    stretches = last_stretches(ring, 4, 2)  # car c's stretch has obs[..., 1] == c
    memory = jax.jit(remember)(memory, stretches, jnp.array([False, True, False, True]))
    assert int(memory.size) == 2 and int(memory.position) == 2
    np.testing.assert_array_equal(np.asarray(memory.stretches.obs[:2, 0, 1]), [1, 3])
    assert np.all(np.asarray(memory.stretches.reward[2:]) == 0)  # slots 2, 3 untouched
    memory = remember(memory, stretches, jnp.array([True, True, True, False]))  # cars 0, 1, 2: slots 2, 3, 0
    assert int(memory.size) == 4 and int(memory.position) == 1
    np.testing.assert_array_equal(np.asarray(memory.stretches.obs[:, 0, 1]), [2, 3, 0, 1])
    unchanged = remember(memory, stretches, jnp.zeros(4, bool))
    same = jax.tree.map(np.array_equal, unchanged.stretches, memory.stretches)
    assert all(jax.tree.leaves(same)) and int(unchanged.position) == 1 and int(unchanged.size) == 4


def test_remember_rejects_more_stretches_than_fit_and_zero_capacity_keeps_nothing():
    stretches = last_stretches(cars_buffer(40, 4, 4), 4, 2)
    with pytest.raises(ValueError, match="do not fit"):
        remember(init_memory(3, 2, OBS, ACT), stretches, jnp.ones(4, bool))
    empty = remember(init_memory(0, 2, OBS, ACT), stretches, jnp.ones(4, bool))
    assert int(empty.size) == 0 and empty.capacity == 0
    with pytest.raises(ValueError, match="capacity 0"):
        sample_memory(empty, jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="length"):
        init_memory(3, 0)


def test_sample_memory_draws_only_stored_stretches():
    memory = init_memory(8, 2, OBS, ACT)
    stretches = last_stretches(cars_buffer(40, 4, 4), 4, 2)
    memory = remember(memory, stretches, jnp.array([True, False, True, False]))
    got = sample_memory(memory, jax.random.PRNGKey(3), 200)
    assert got.obs.shape == (200, 2, OBS)
    assert set(np.unique(np.asarray(got.obs[:, 0, 1]))) == {0.0, 2.0}  # cars 0 and 2, never padding
    assert np.all(np.asarray(got.reward) > 0)
