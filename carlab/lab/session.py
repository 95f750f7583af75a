"""A live training session: the run a :class:`carlab.lab.trainer.Trainer` trains, and what it shows.

A :class:`Session` holds the :class:`~carlab.learn.loop.TrainState`, the tracks, the config in use (and
one waiting to be compiled), the history of metric records, and the NumPy view the dashboard draws.
It is plain single-threaded code: only the trainer's worker thread ever calls it, and every slow
thing it needs (a fresh run or a load: :mod:`carlab.lab.jobs`; a reset or a new track: its
``*_job`` methods) is a pure job returning a value the worker adopts, so it can run in a helper
thread.

    session = Session(*jobs.fresh_job(config, None)())
    rounds = session.rounds_per_call
    fn, args, config = session.next_call(manual_mode=False, rounds=rounds, action=None)
    state, sums = fn(*args, config)
    session.finish_call(state, sums, config, rounds=rounds, elapsed_s=elapsed_s)
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from carlab.lab import hyperparams, jobs, manual
from carlab.learn import loop, policy_checkpoint, runs
from carlab.learn.config import EVAL_FIRST_SEED, Config
from carlab.sim import env
from carlab.sim.track import Track, make_track

RECORD_EVERY_S = 0.5  # one history record per this much training time (and one at each pause)
VALIDATE_EVERY_S = 10.0  # with auto-save: validate the driver at most this often (wall clock)
MAX_ROUNDS_PER_CALL = 1000
HISTORY_VIEW = 400  # records handed to the UI (the charts' window)
_DRAWN = ("centre", "inner", "outer", "obstacles", "checkpoints", "seed")  # what the renderer needs


class Session:
    """The run being trained live; see the module docstring. Not thread-safe by design."""

    def __init__(self, state, config: Config, params, history: list[dict], *, auto_save: Path | None = None):
        """Adopt a run: ``state`` of ``config`` on the tracks ``params``, after ``history`` records."""
        self.state, self.config, self.params = state, config, params
        self.pending_config: Config | None = None  # a config change waiting for its compile
        self.tracks_replaced = False  # new_track() changed a track: params differ from the config's
        self.history = list(history)
        self.history_view = tuple(self.history[-HISTORY_VIEW:])
        self.auto_save = auto_save
        self.learning_rates: dict[str, float] = {}  # set live: kept across reset()
        self.rounds_per_call = 1
        self.signature = _signature(state, params)
        self.render_tracks = _render_tracks(params)
        self.next_seed = config.train.train_first_seed + config.train.num_train_tracks
        self.saved_best = runs.best_validation_score(self.history)  # (laps, progress) of the auto-save
        self.frame = 0
        self.view: dict = {}
        self._time_offset = float(self.history[-1].get("time_s") or 0.0) if self.history else 0.0
        self._validated_at = time.monotonic()  # when the driver was last validated
        self._run_time, self._acc, self._acc_rounds = 0.0, {}, 0.0
        self._last_record = time.monotonic()
        self._rate: collections.deque = collections.deque(maxlen=256)
        self.hyper = hyperparams.current(state, config)
        self.fetch_view()

    @property
    def next_config(self) -> Config:
        """The config the next call uses (a pending change, else the current one)."""
        return self.pending_config or self.config

    # ------------------------------------------------------------------ training calls
    def next_call(self, *, manual_mode: bool, rounds: int, action) -> tuple:
        """``(function, args, config)`` for the next jitted call: ``function(*args, config)``."""
        if manual_mode:
            return (
                manual.manual_step,
                (self.state, jnp.asarray(action, jnp.float32), self.params),
                self.next_config,
            )
        return loop.train_rounds, (self.state, jnp.int32(rounds), self.params), self.next_config

    def finish_call(self, state, sums, config: Config, *, rounds: float, elapsed_s: float) -> None:
        """Adopt a call's result: the new state, its view, the metric sums, maybe a record (and an
        auto-save). ``rounds`` is how many training rounds the call was worth."""
        if config is not self.config:
            self.config, self.pending_config = config, None
        sums = self.fetch_view(state, sums)  # waits for the call to finish
        self.state = state
        now = time.monotonic()
        self._run_time += elapsed_s
        self._rate.append((now, self.view["env_steps"]))
        for key, value in sums.items():
            self._acc[key] = self._acc.get(key, 0.0) + float(value)
        self._acc_rounds += rounds
        if now - self._last_record >= RECORD_EVERY_S:
            self.flush_record()

    def tune_rounds(self, *, rounds: int, elapsed_s: float, target_s: float) -> None:
        """Choose the rounds of the next call so it takes about ``target_s``.

        Fewer, longer calls cost less Python per env step (each call takes the GIL a few times, and
        the render loop competes for it); shorter ones show the cars more often and answer pause
        sooner. The round count is a traced argument, so any count runs the same compiled program.
        """
        scale = min(target_s / max(elapsed_s, 1e-4), 2.0)  # grow at most 2x a call: no overshoot
        self.rounds_per_call = int(np.clip(round(rounds * scale), 1, MAX_ROUNDS_PER_CALL))

    def flush_record(self) -> None:
        """Turn the sums since the last record into a history record (if any round ran)."""
        if not self._acc:
            return
        record = loop.summarize(self._acc, self.state)
        record["time_s"] = self._time_offset + self._run_time
        now = time.monotonic()
        if self.auto_save is not None and now - self._validated_at >= VALIDATE_EVERY_S:
            # as `carlab train` does (runs.BestSaver); the first call compiles (~1-2 s)
            record.update(
                runs.validate(policy_checkpoint.driver_params(self.state, self.config), self.config)
            )
            self._validated_at = now
        self.history.append(record)
        self.history_view = tuple(self.history[-HISTORY_VIEW:])
        self._acc, self._acc_rounds, self._last_record = {}, 0.0, time.monotonic()
        score = runs.validation_score(record)
        if score is not None and score > self.saved_best:
            self.saved_best = score
            self.save(self.auto_save, extra=runs.best_of_run_metadata(score))

    def fetch_view(self, state=None, sums=None):
        """Copy what the UI shows out of ``state`` (default: the current one) into NumPy, together with
        ``sums``, in one device transfer; returns the sums on the host."""
        s = self.state if state is None else state
        host = jax.device_get(
            (s.env_state.car, s.env_state.counters, s.obs, s.env_steps, s.updates, s.episodes)
            + (s.explore_prob, s.best_progress, s.buffer.size, sums)
        )
        car, counters, obs, env_steps, updates, episodes, explore, best, size, sums = host
        self.view = {
            "cars": np.array(car),
            "track_ids": np.array(counters[:, 3]),
            "rays": env.rays_px(obs).astype(np.float32),
            "env_steps": int(env_steps),
            "updates": int(updates),
            "episodes": int(episodes),
            "explore_prob": float(explore),
            "best_progress": float(best),
            "buffer_size": int(size),
            "state": s,
        }
        self.frame += 1
        return sums

    def steps_per_s(self, window_s: float = 2.0) -> float:
        """Env steps per second over the last ``window_s`` seconds of calls."""
        if len(self._rate) < 2:
            return 0.0
        recent = [p for p in self._rate if p[0] >= self._rate[-1][0] - window_s]
        (t0, s0), (t1, s1) = recent[0], recent[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def stopped_running(self) -> None:
        """Training paused: close the current record, and start the rate afresh next time."""
        self.flush_record()
        self._rate.clear()

    # ------------------------------------------------------------------ changes
    def apply_hyperparameters(self, values: dict) -> None:
        """Validated live hyperparameters: state knobs now, config knobs at the next call."""
        self.state = hyperparams.apply_to_state(self.state, values)
        self.learning_rates.update({k: v for k, v in values.items() if k.endswith("_lr")})
        config = hyperparams.apply_to_config(self.next_config, values)
        self.pending_config = None if config == self.config else config
        self.hyper = hyperparams.current(self.state, self.next_config)
        self.fetch_view()  # explore_prob (and the published state) show the change while paused

    def save(self, path, extra: dict | None = None) -> Path:
        """Save the whole run with :func:`carlab.learn.runs.save_run` (the pending record included)."""
        self.flush_record()  # (re-entry from the auto-save inside it finds nothing to flush)
        return runs.save_run(path, self.state, self.next_config, self.history, extra=extra)

    def render_track(self) -> Track | None:
        """The shown car's track (drawing fields only, NumPy)."""
        return self.render_tracks[int(self.view["track_ids"][manual.SHOWN_CAR])]

    # ------------------------------------------------------------------ jobs (pure; any thread)
    def reset_job(self):
        """A job building a fresh run of the next config on the same tracks, with the live learning rates."""
        config, params, rates = self.next_config, self.params, dict(self.learning_rates)
        return lambda: (
            hyperparams.apply_to_state(loop.init_state(config, params), rates),
            config,
            params,
            [],
        )

    def load_job(self, path):
        """A job reading the run at ``path``; the tracks are rebuilt unless they are the config's own."""
        keep = None if self.tracks_replaced else (jobs.tracks_of(self.config), self.params)
        return jobs.load_job(path, keep=keep)

    def new_track_job(self):
        """A job putting a freshly generated track (a seed no run trained on) in the place of the shown
        car's track; the cars on it restart. Cars move on to another track after each episode, so
        every car meets the new one in turn. Returns ``(job, adopt)``."""
        seed = self.next_seed
        if seed >= EVAL_FIRST_SEED:
            raise ValueError("no fresh track seeds left below the evaluation range")
        self.next_seed += 1
        state, params = self.state, self.params
        slot = int(self.view["track_ids"][manual.SHOWN_CAR])

        def job():
            track = make_track(seed)
            stacked = jax.tree.map(lambda stack, one: stack.at[slot].set(one), params.tracks, track)
            new_params = dataclasses.replace(params, tracks=stacked, start_obs=None)  # start obs recomputed
            return track, new_params, _restart_slot.lower(state, new_params, slot).compile()

        def adopt(result) -> str:
            track, new_params, restart = result
            self.params, self.tracks_replaced = new_params, True
            self.state = restart(self.state, new_params, slot)
            self.render_tracks[slot] = _render_track(track)
            self.fetch_view()
            return f"new track: seed {seed} replaces the red car's track ({slot}); every car meets it in turn"

        return job, adopt


def _signature(state, params) -> tuple:
    """What, besides the config, decides whether a compiled program fits: tree shapes and dtypes."""
    leaves = jax.tree.leaves((state, params))
    return jax.tree.structure(params), tuple((x.shape, str(x.dtype)) for x in leaves)


def _render_track(track: Track) -> Track:
    """A track with only what the renderer draws, as NumPy (the big lookup tables left out)."""
    return track._replace(
        **{f: np.asarray(getattr(track, f)) for f in _DRAWN}, quads=None, near_segments=None
    )


def _render_tracks(params) -> list[Track]:
    fields = jax.device_get({f: getattr(params.tracks, f) for f in _DRAWN})
    empty = dict.fromkeys(Track._fields)
    return [Track(**{**empty, **{f: fields[f][i] for f in _DRAWN}}) for i in range(params.num_tracks)]


@jax.jit
def _restart_slot(state: loop.TrainState, params: env.EnvParams, slot):
    """Put every car on track ``slot`` back on its start line (after the track was replaced)."""
    on_slot = state.env_state.track_id == slot
    fresh = jax.vmap(env.start_state, in_axes=(None, 0))(params, state.env_state.track_id)
    env_state = jax.tree.map(lambda f, s: jnp.where(on_slot[:, None], f, s), fresh, state.env_state)
    obs = jnp.where(on_slot[:, None], params.start_obs[state.env_state.track_id], state.obs)
    return dataclasses.replace(
        state, env_state=env_state, obs=obs, episode_return=jnp.where(on_slot, 0.0, state.episode_return)
    )
