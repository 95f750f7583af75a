"""A preallocated, functional ring replay buffer.

The buffer is an immutable pytree of fixed-size arrays; :func:`add` and :func:`sample` are pure and
jit-friendly, and return new values instead of mutating. The trainer thread owns the current buffer
and only orchestrates:

    buffer = init_buffer(capacity=10_000)
    buffer = add(buffer, obs, action, next_obs, reward, terminated)   # a batch of N transitions
    if can_sample(buffer, 64):
        key, sub = jax.random.split(key)
        batch = sample(buffer, sub, batch_size=64)                    # a Transition of (64, ...) arrays

Transitions are stored in insertion order around a ring of ``capacity`` slots; once full, each new
transition overwrites the oldest one. When N cars add N transitions per env step and ``capacity`` is a
multiple of N, one car's consecutive transitions sit N slots apart, so :func:`sample_sequences` can
cut length-L stretches of one car's driving out of the ring (slots j, j + N, ..., j + (L-1) N).

Beside the ring, a :class:`StretchMemory` keeps whole stretches apart from it: the trainer's *crash
memory* holds the last L transitions before every crash (:func:`last_stretches` + :func:`remember`),
so the world model keeps seeing crashes after the car has learned to avoid most of them and the ring
has overwritten the old ones (:func:`sample_memory`).

``done`` means *terminated* (the car crashed, so there is no future value to bootstrap from), never
*truncated* by the step limit: a truncated transition is stored with ``done=False`` and its real
``next_obs``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from carlab.checks import check_int
from carlab.sim.env import ACTION_SIZE, OBS_SIZE


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ReplayBuffer:
    """A ring of ``capacity`` transitions (the leading axis C of every array) and where to write next."""

    obs: jax.Array  # (C, O) float32, observation before the action
    action: jax.Array  # (C, A) float32, the action taken
    next_obs: jax.Array  # (C, O) float32, observation after the action (before any auto-reset)
    reward: jax.Array  # (C,) float32
    done: jax.Array  # (C,) bool, terminated (crash); False for truncation by the step limit
    position: jax.Array  # int32 scalar, the slot the next transition is written to, in [0, C)
    size: jax.Array  # int32 scalar, how many slots hold real transitions, in [0, C]

    @property
    def capacity(self) -> int:
        """C, the number of slots (static: it is an array shape)."""
        return self.obs.shape[0]

    @property
    def obs_size(self) -> int:
        """O, the length of one observation."""
        return self.obs.shape[1]

    @property
    def action_size(self) -> int:
        """A, the length of one action."""
        return self.action.shape[1]


class Transition(NamedTuple):
    """One transition, or a batch of them with a leading axis B."""

    obs: jax.Array  # (B, O) float32
    action: jax.Array  # (B, A) float32
    next_obs: jax.Array  # (B, O) float32
    reward: jax.Array  # (B,) float32
    done: jax.Array  # (B,) bool, terminated


def init_buffer(
    capacity: int = 10_000, obs_size: int = OBS_SIZE, action_size: int = ACTION_SIZE
) -> ReplayBuffer:
    """An empty buffer of ``capacity`` zero-filled slots."""
    for name, value in (("capacity", capacity), ("obs_size", obs_size), ("action_size", action_size)):
        check_int(value, name, low=1, where="init_buffer")
    return ReplayBuffer(
        **_zero_transitions((capacity,), obs_size, action_size)._asdict(),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def _zero_transitions(shape: tuple[int, ...], obs_size: int, action_size: int) -> Transition:
    """Zero-filled transitions with leading axes ``shape``."""
    return Transition(
        obs=jnp.zeros((*shape, obs_size), jnp.float32),
        action=jnp.zeros((*shape, action_size), jnp.float32),
        next_obs=jnp.zeros((*shape, obs_size), jnp.float32),
        reward=jnp.zeros(shape, jnp.float32),
        done=jnp.zeros(shape, bool),
    )


def add(buffer: ReplayBuffer, obs, action, next_obs, reward, done) -> ReplayBuffer:
    """Append N transitions (leading axis N, or one transition without it); the oldest are overwritten.

    Writing N transitions equals writing them one at a time: they go to slots
    ``(position + arange(N)) % C``, wrapping around the end of the ring. When N > C only the last C
    of them can survive, so only those are written (in order) and the ring ends full, with
    ``position`` where N single writes would have left it. Shapes are checked at trace time.

    Returns:
        A new buffer; ``buffer`` itself is unchanged.
    """
    obs = jnp.asarray(obs, jnp.float32)
    action = jnp.asarray(action, jnp.float32)
    next_obs = jnp.asarray(next_obs, jnp.float32)
    reward = jnp.asarray(reward, jnp.float32)
    done = jnp.asarray(done, bool)
    if obs.ndim == 1:  # a single transition: give everything a leading axis of 1
        obs, action, next_obs, reward, done = (x[None] for x in (obs, action, next_obs, reward, done))
    n = obs.shape[0]
    expected = {
        "obs": (n, buffer.obs_size),
        "action": (n, buffer.action_size),
        "next_obs": (n, buffer.obs_size),
        "reward": (n,),
        "done": (n,),
    }
    got = {"obs": obs, "action": action, "next_obs": next_obs, "reward": reward, "done": done}
    for name, shape in expected.items():
        if got[name].shape != shape:
            raise ValueError(f"add: {name} has shape {got[name].shape}, expected {shape} (N={n})")

    capacity = buffer.capacity
    kept = min(n, capacity)  # static: with N > C the first N - C would be overwritten anyway
    skipped = n - kept
    index = (buffer.position + skipped + jnp.arange(kept, dtype=jnp.int32)) % capacity
    return ReplayBuffer(
        obs=buffer.obs.at[index].set(obs[skipped:]),
        action=buffer.action.at[index].set(action[skipped:]),
        next_obs=buffer.next_obs.at[index].set(next_obs[skipped:]),
        reward=buffer.reward.at[index].set(reward[skipped:]),
        done=buffer.done.at[index].set(done[skipped:]),
        position=((buffer.position + n) % capacity).astype(jnp.int32),
        size=jnp.minimum(buffer.size + n, capacity).astype(jnp.int32),
    )


def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int = 32) -> Transition:
    """``batch_size`` transitions drawn uniformly, with replacement, from the filled slots.

    Under jit (``jax.jit(sample, static_argnames="batch_size")``) an empty buffer cannot raise: it
    returns the zero padding of slot 0, which is garbage — check :func:`can_sample` on the host first.
    Called eagerly (``size`` is a concrete value) an empty buffer raises ``ValueError``.
    """
    if batch_size < 1:
        raise ValueError(f"sample: batch_size must be >= 1, got {batch_size}")
    if not isinstance(buffer.size, jax.core.Tracer) and int(buffer.size) < 1:
        raise ValueError("sample: the replay buffer is empty; add transitions first (see can_sample)")
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return _gather(buffer, index)


def _gather(buffer: ReplayBuffer, index) -> Transition:
    """The stored transitions at ``index`` (any shape), as a Transition of arrays of that shape."""
    return Transition(
        obs=buffer.obs[index],
        action=buffer.action[index],
        next_obs=buffer.next_obs[index],
        reward=buffer.reward[index],
        done=buffer.done[index],
    )


def sample_sequences(
    buffer: ReplayBuffer, key: jax.Array, batch_size: int, length: int, stride: int
) -> Transition:
    """``batch_size`` stretches of ``length`` consecutive transitions of one car, as (B, L, ...) arrays.

    Consecutive transitions of a car are ``stride`` (= the number of cars) slots apart, which holds when
    the buffer is only ever written ``stride`` transitions at a time and ``capacity % stride == 0``.
    A stretch never crosses the ring's write position (oldest and newest data), but it can cross the end
    of an episode; :func:`sequence_mask` says which of its steps belong to the first episode.
    Sampling is uniform over the stretches that fit in the filled part of the ring.
    """
    if batch_size < 1 or length < 1 or stride < 1:
        raise ValueError(
            f"sample_sequences: batch_size, length and stride must be >= 1, got {batch_size, length, stride}"
        )
    capacity = buffer.capacity
    span = (length - 1) * stride  # slots between a stretch's first and last transition
    oldest = jnp.where(buffer.size < capacity, 0, buffer.position)
    age = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size - span, 1))
    index = (oldest + age[:, None] + stride * jnp.arange(length)[None, :]) % capacity  # (B, L)
    return _gather(buffer, index)


def follows(batch: Transition) -> jax.Array:
    """(B, L - 1) bool: step k + 1 of each stretch continues step k's episode.

    It does when step k did not crash (``done``) and step k + 1 starts where step k ended
    (``obs[k + 1] == next_obs[k]``, exactly: both are copies of the same env output). The second test
    catches the episode boundaries that ``done`` does not mark: truncation by the step limit.
    """
    chex.assert_rank(batch.obs, 3)
    return ~batch.done[:, :-1] & jnp.all(batch.obs[:, 1:] == batch.next_obs[:, :-1], axis=-1)


def sequence_mask(batch: Transition) -> jax.Array:
    """(B, L) float mask: 1 while a sampled stretch is still in the episode its first step is in
    (every link up to the step holds: :func:`follows`)."""
    links = follows(batch)
    links = jnp.concatenate([jnp.ones((links.shape[0], 1), bool), links], axis=1)
    return jnp.cumprod(links.astype(jnp.float32), axis=1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StretchMemory:
    """A ring of ``capacity`` stretches of L consecutive transitions, kept apart from the replay ring."""

    stretches: Transition  # (M, L, ...) arrays
    position: jax.Array  # int32 scalar, the slot the next kept stretch is written to, in [0, M)
    size: jax.Array  # int32 scalar, how many slots hold real stretches, in [0, M]

    @property
    def capacity(self) -> int:
        """M, the number of stretches it holds (static)."""
        return self.stretches.reward.shape[0]


def init_memory(
    capacity: int, length: int, obs_size: int = OBS_SIZE, action_size: int = ACTION_SIZE
) -> StretchMemory:
    """An empty memory of ``capacity`` stretches of ``length`` steps (capacity 0: a memory that keeps nothing)."""
    for name, value, least in (("capacity", capacity, 0), ("length", length, 1)):
        check_int(value, name, low=least, where="init_memory")
    return StretchMemory(
        stretches=_zero_transitions((capacity, length), obs_size, action_size),
        position=jnp.zeros((), jnp.int32),
        size=jnp.zeros((), jnp.int32),
    )


def last_stretches(buffer: ReplayBuffer, count: int, length: int) -> Transition:
    """The latest ``length`` transitions of each of the ``count`` cars that wrote the ring's newest
    ``count`` slots (one :func:`add` of ``count`` cars), oldest first: (count, length, ...) arrays.

    Before the ring holds ``count * length`` transitions the oldest steps are zero padding, and a
    stretch can start in an earlier episode than it ends in: check :func:`sequence_mask`.
    """
    capacity = buffer.capacity
    newest = buffer.position - count + jnp.arange(count)  # the slots the last add() wrote
    back = count * jnp.arange(length - 1, -1, -1)  # one car's earlier transitions, `count` slots apart
    return _gather(buffer, (newest[:, None] - back[None, :]) % capacity)


def remember(memory: StretchMemory, stretches: Transition, keep) -> StretchMemory:
    """Write the stretches whose ``keep`` (n,) is true to the next slots, in order (oldest overwritten).

    ``stretches`` are (n, L, ...) arrays, n <= the memory's capacity; the others are not written.
    """
    n = keep.shape[0]
    capacity = memory.capacity
    if capacity == 0:
        return memory
    if n > capacity:
        raise ValueError(f"remember: {n} stretches at once do not fit a memory of {capacity}")
    chex.assert_shape(stretches.reward, (n, memory.stretches.reward.shape[1]))
    keep = jnp.asarray(keep, bool)
    kept = jnp.sum(keep, dtype=jnp.int32)
    rank = jnp.cumsum(keep, dtype=jnp.int32) - 1
    index = jnp.where(keep, (memory.position + rank) % capacity, capacity)  # capacity: dropped
    stored = jax.tree.map(
        lambda m, x: m.at[index].set(x.astype(m.dtype), mode="drop"), memory.stretches, stretches
    )
    return StretchMemory(
        stretches=stored,
        position=((memory.position + kept) % capacity).astype(jnp.int32),
        size=jnp.minimum(memory.size + kept, capacity).astype(jnp.int32),
    )


def sample_memory(memory: StretchMemory, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` stored stretches drawn uniformly, with replacement: (B, L, ...) arrays.

    An empty memory gives zero padding (under jit it cannot raise): check ``memory.size`` first.
    """
    if memory.capacity == 0:
        raise ValueError("sample_memory: this memory has capacity 0")
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(memory.size, 1))
    return jax.tree.map(lambda x: x[index], memory.stretches)


def can_sample(buffer: ReplayBuffer, batch_size: int = 1) -> bool:
    """On the host: whether the buffer holds at least ``batch_size`` transitions (and is not empty).

    Sampling is with replacement, so one transition is technically enough; asking for ``batch_size``
    is the usual warm-up rule that keeps early batches from repeating a handful of transitions.
    """
    return int(buffer.size) >= max(int(batch_size), 1)
