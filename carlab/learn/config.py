"""Configuration: one frozen dataclass per concern, presets ``default`` (the seed's sizes with the
anchored learner, which learns to race and keeps it; see :func:`default`), ``dream`` (the same sizes
learning wholly in imagination, tuned; ``race`` is its older name), ``seed`` (the seed's exact
settings, which do not learn to lap) and ``tiny`` (tests).

Never mutate a config; derive a new one with :func:`dataclasses.replace` or :func:`with_overrides`.

Track seeds: training tracks are ``range(train_first_seed, train_first_seed + num_train_tracks)``
(default 0-63); evaluation tracks start at ``EVAL_FIRST_SEED`` = 1,000,000, a range no training
preset reaches, so evaluation is always on tracks the agent never drove. Validation tracks, on which
``carlab train`` picks the best checkpoint of a run, start at ``VALIDATION_FIRST_SEED`` = 500,000:
neither trained on nor used to report results.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

EVAL_FIRST_SEED = 1_000_000  # held-out evaluation tracks start here (training uses low seeds)
VALIDATION_FIRST_SEED = 500_000  # tracks for choosing a run's best checkpoint (not for reporting)


@dataclasses.dataclass(frozen=True)
class WorldModelConfig:
    """Sizes and optimiser of the world model (encoder, dynamics, reward, continue, decoder)."""

    latent_size: int = 32
    """Width of the latent state z (the seed's 32)."""
    encoder_hidden: int = 64
    """Hidden units of the encoder obs -> z."""
    dynamics_hidden: int = 64
    """Hidden units of the dynamics [z, action] -> next z."""
    reward_hidden: int = 32
    """Hidden units of the reward head next z -> reward."""
    continue_hidden: int = 32
    """Hidden units of the continue head next z -> P(not crashed)."""
    decoder_hidden: int = 64
    """Hidden units of the decoder z -> obs."""
    ensemble: int = 1
    """K, dynamics networks trained side by side (1: the seed's single one). Imagination steps with
    their mean and can penalise their disagreement (``AgentConfig.pessimism``)."""
    learning_rate: float = 1e-3
    """Adam step size."""
    grad_clip: float = 100.0
    """Global-norm gradient clipping."""
    recon_weight: float = 1.0
    """Weight of the reconstruction loss |decode(encode(obs)) - obs|^2."""
    next_obs_weight: float = 1.0
    """Weight of the next-observation loss |decode(dynamics(z, a)) - next_obs|^2."""
    reward_weight: float = 1.0
    """Weight of the reward loss."""
    continue_weight: float = 1.0
    """Weight of the continue (not crashed) cross-entropy."""
    crash_weight: float = 1.0
    """Weight of a crash among the continue head's examples, relative to a safe step (1: plain
    cross-entropy). Once the car drives well crashes are rare in the buffer; weighting them keeps
    the head from forgetting what a crash looks like, and errs on the side of caution."""
    latent_weight: float = 1.0
    """Weight of the latent consistency |dynamics(z, a) - sg(encode(next_obs))|^2."""


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """The actor-critic that learns in imagination, and how the real car explores."""

    learner: str = "dream"
    """How actor and critic learn: ``"dream"`` wholly inside the world model's imagination (Dreamer's
    way, :mod:`carlab.learn.agent`), or ``"anchored"``: twin Q critics learn from real replayed steps
    and the actor imagines ``horizon`` steps ahead, then asks them (:mod:`carlab.learn.anchored`)."""
    target_entropy: float = -2.0
    """The anchored learner's entropy target: its temperature rises while the policy's entropy is
    below it (SAC's -|actions|; unused when ``tune_temperature`` is off)."""
    init_temperature: float = 1.0
    """The anchored learner's temperature alpha at the start, > 0 (Stable-Baselines3's "auto" starts
    at 1). It then tunes itself towards ``target_entropy``: from 1 it falls to ~0.1 over the first
    ~10k env steps, and the policy is wide (and its mean cautious) until it has."""
    tune_temperature: bool = True
    """The anchored learner's temperature tunes itself towards ``target_entropy`` (SAC's automatic
    entropy adjustment; False: alpha stays at ``init_temperature``, SAC's first, fixed-alpha form)."""
    real_steps: int = 1
    """n of the anchored learner's n-step TD targets: real rewards of n replayed steps, then the slow
    critics (1: SAC's one-step target). Longer ones carry a crash's cost back faster."""
    layer_norm: bool = False
    """A LayerNorm after each hidden layer of the anchored learner's critics."""
    actor_hidden: tuple[int, ...] = (64, 32)
    """Hidden layers of the actor z -> tanh [steering, throttle] (the seed's 64, 32)."""
    critic_hidden: tuple[int, ...] = (64, 32)
    """Hidden layers of the critic z -> value."""
    actor_lr: float = 3e-4
    """Adam step size of the actor."""
    critic_lr: float = 1e-3
    """Adam step size of the critic."""
    grad_clip: float = 100.0
    """Global-norm gradient clipping of actor and critic."""
    value_clip: float = 50.0
    """The critic's targets are clipped to +-value_clip (a lap is worth about 100 over ~500 steps)."""
    saturation_penalty: float = 1e-2
    """Weight of the saturation term in the actor's loss: the mean squared excess of the pre-tanh
    action over ``saturation_threshold`` (keeps tanh out of its flat tails)."""
    saturation_threshold: float = 0.0
    """Pre-tanh magnitude the saturation penalty starts at (0: every pre-tanh action is pulled towards
    0). Above about 2 (tanh 0.96) the gradient through tanh is nearly gone, so an actor that has gone
    there — say, full right on every bend — can no longer learn its way back from the model alone."""
    target_rate: float = 0.02
    """Step size of the slow target critic towards the critic after every update (its bootstrap)."""
    horizon: int = 15
    """H, imagined steps per rollout."""
    discount: float = 0.97
    """gamma, per-step discount (0.97: about 33 steps, 100-150 px of road ahead, matter)."""
    lambda_: float = 0.95
    """lambda of the lambda-returns (0: one-step TD, 1: Monte Carlo to the horizon)."""
    imagine_batch: int = 256
    """Start states per imagination update (latents of real observations from the replay buffer)."""
    imagine_noise: float = 0.0
    """sigma of Gaussian noise added to the actor's actions in imagination (0: deterministic
    rollouts). The actor then learns actions that stay good when slightly off: a margin at obstacles."""
    stochastic: bool = False
    """A stochastic actor (SAC's squashed Gaussian): the actor also outputs a std, imagination samples
    ``tanh(mean + std eps)`` and evaluation drives ``tanh(mean)`` (False: the seed's deterministic actor)."""
    std_min: float = 0.1
    """Smallest std of a stochastic actor (before the tanh; DreamerV3's 0.1)."""
    std_max: float = 1.0
    """Largest std of a stochastic actor (DreamerV3's 1.0)."""
    entropy_scale: float = 0.0
    """Weight of a stochastic actor's entropy bonus, on normalised returns (DreamerV3: 3e-4)."""
    reinforce: float = 0.0
    """Share of the likelihood-ratio (REINFORCE) gradient in the actor's objective, the rest the
    pathwise one through the model (DreamerV2's mix; DreamerV3 uses 1). Needs ``stochastic``."""
    return_norm_rate: float = 0.0
    """Rate of the moving 5th-95th percentile range of the imagined returns that scales the actor's
    objective down (DreamerV3: 0.01; 0: the objective is the raw return)."""
    return_norm_limit: float = 1.0
    """The objective is divided by max(return_norm_limit, range): small returns are never scaled up."""
    pessimism: float = 0.0
    """lambda of MOPO's penalty: an imagined step's reward minus lambda times the disagreement of the
    world model's dynamics members (needs ``WorldModelConfig.ensemble`` > 1; 0: take the model at its word)."""
    cautious_continue: bool = False
    """With a dynamics ensemble, imagination's chance of not crashing is the lowest over the members'
    next latents (a crash if any member foresees one) instead of the one at their mean."""
    real_critic_weight: float = 0.0
    """Weight of the critic's one-step TD loss on real replayed transitions (0: imagined returns only)."""
    explore_sample: bool = False
    """Explore with a stochastic actor's samples instead of its mode (SAC's way; the noise below is
    added on top unless ``explore_prob`` is 0)."""
    explore_noise: float = 0.2
    """sigma of the Gaussian noise added to the actor's action when exploring (the seed's 0.2)."""
    explore_hold: int = 1
    """Env steps each exploration draw (gate and noise) is held for (1: fresh every step, the seed's way).
    Noise held for several steps makes a real swerve, where fresh noise averages out to a wobble."""
    explore_prob: float = 1.0
    """Initial probability that a car's action is noised on a step."""
    explore_decay: float = 0.999
    """explore_prob is multiplied by this after every environment step (of all cars at once)."""
    explore_min: float = 0.3
    """explore_prob never falls below this."""


@dataclasses.dataclass(frozen=True)
class ReplayConfig:
    """The ring replay buffer."""

    capacity: int = 10_000
    """Transitions kept (the seed's 10,000)."""
    batch_size: int = 32
    """Stretches of driving per world-model update (the seed's 32)."""
    sequence_length: int = 8
    """L, consecutive transitions of one car per stretch: the world model learns L-step open-loop
    predictions, as imagination uses it (1: single transitions, the seed's way)."""
    warmup: int = 5000
    """Transitions collected with random actions before the first update."""
    warmup_hold: int = 8
    """Env steps each random warm-up action is held for."""
    crash_memory: int = 0
    """Crash memory: how many stretches of the last ``sequence_length`` steps before a crash are kept
    apart from the ring (0: none, the seed's way). Once the car drives well crashes become rare, the
    ring overwrites the old ones, and a world model that forgets what comes before a crash lets the
    actor drive into obstacles again; the memory keeps them in every batch."""
    crash_fraction: float = 0.25
    """Share of each world-model batch drawn from the crash memory once it holds a stretch (the rest
    is uniform over the ring)."""
    crash_starts: float = 0.25
    """Share of the imagination's start states drawn from the crash memory (states from the last
    ``sequence_length`` steps before a crash: where the actor most needs to learn to steer)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The collect-and-train loop."""

    seed: int = 0
    """Seeds every random draw: parameters, exploration, sampling. Same seed -> same run (CPU)."""
    num_cars: int = 16
    """N cars driving in parallel, one vmapped env step for all."""
    num_train_tracks: int = 64
    """Training tracks: seeds train_first_seed ... + num_train_tracks - 1; car i drives track i % M."""
    train_first_seed: int = 0
    """First training track seed."""
    train_every: int = 10
    """K: env steps (of all cars) between training rounds (the seed's 10)."""
    updates_per_round: int = 4
    """World-model and imagination updates per training round."""
    max_episode_steps: int = 1000
    """Truncation limit of an episode."""
    chunk_rounds: int = 50
    """Training rounds per jitted call; the host reports progress between calls."""
    checkpoint_tracks: int = 0
    """Policy checkpoints (:mod:`carlab.learn.policy_checkpoint`): training tracks per test. 0: off."""
    checkpoint_more_tracks: int = 0
    """More test tracks, driven (and counted) only when all ``checkpoint_tracks`` first ones lapped."""
    checkpoint_every: int = 5120
    """Env steps (of all cars) between checkpoint tests."""
    checkpoint_keep_ties: bool = False
    """On a tie below a full score the driver stays (False, TD7's rule: the newest takes over)."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs."""

    world_model: WorldModelConfig = WorldModelConfig()
    agent: AgentConfig = AgentConfig()
    replay: ReplayConfig = ReplayConfig()
    train: TrainConfig = TrainConfig()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (saved in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError."""
        parts = {}
        for field in dataclasses.fields(cls):
            sub_cls = field.type if isinstance(field.type, type) else _PARTS[field.name]
            values = dict(data.get(field.name, {}))
            known = {f.name for f in dataclasses.fields(sub_cls)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"unknown {field.name} config keys: {sorted(unknown)}")
            for f in dataclasses.fields(sub_cls):
                if f.name in values and isinstance(getattr(sub_cls(), f.name), tuple):
                    values[f.name] = tuple(values[f.name])
            parts[field.name] = sub_cls(**values)
        return cls(**parts)

    def to_json(self) -> str:
        """The config as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)


_PARTS = {"world_model": WorldModelConfig, "agent": AgentConfig, "replay": ReplayConfig, "train": TrainConfig}


def seed() -> Config:
    """The seed's exact settings (the architecture guide's): 16 cars, buffer 10k, batch 32, train every
    10 steps, fresh sigma-0.2 exploration noise. Kept so the course can show why they fail: this
    preset never learns to lap (``benchmarks/learning.md``). The dataclass defaults are these."""
    return Config()


def tiny(learner: str = "anchored") -> Config:
    """A small, fast preset for tests and CI: the :func:`default` preset's learner and settings (the
    same code paths), with smaller networks, buffer, fleet and rounds.

    ``learner="dream"``: the dream learner (:mod:`carlab.learn.agent`) on the same sizes, imagining 5
    steps with the seed's agent settings: for what only the dream learner does (notebook 4's story of
    a driver exploiting its model, notebook 6's cheap runs) and their tests.
    """
    sizes = {"latent_size": 16, "encoder_hidden": 32, "dynamics_hidden": 32, "decoder_hidden": 32}
    nets = {"actor_hidden": (32, 32), "critic_hidden": (32, 32), "imagine_batch": 32}
    replay = {"capacity": 2_000, "batch_size": 32, "warmup": 100, "crash_memory": 64}
    train = {"num_cars": 4, "num_train_tracks": 4, "train_every": 5, "updates_per_round": 4}
    train.update(chunk_rounds=20, max_episode_steps=300)
    if learner == "dream":
        base = seed()
        nets["horizon"] = 5
    elif learner == "anchored":
        base = default()
    else:
        raise ValueError(f"tiny: learner must be 'anchored' or 'dream', got {learner!r}")
    return Config(
        world_model=dataclasses.replace(base.world_model, **sizes),
        agent=dataclasses.replace(base.agent, **nets),
        replay=dataclasses.replace(base.replay, **replay),
        train=dataclasses.replace(base.train, **train),
    )


def default() -> Config:
    """What ``carlab train`` and the lab use with no ``--config``: the seed's network shapes, with the
    anchored learner (:mod:`carlab.learn.anchored`) and the settings the seed got wrong changed.

    What changes from :func:`dream` (the tuned dream learner it keeps the replay and exploration of),
    and why (``benchmarks/learning.md`` has the ten-seed figures):

    * ``learner="anchored"``: twin Q critics learn from real replayed steps and the stochastic actor
      ends each imagined rollout on them. The dream learner's critic and actor learn only in
      imagination, and in ten seeds its drivers lap, then forget, even inside a frozen world model;
    * ``horizon=0``: the actor asks the critics about its action at once (SAC on the world model's
      latents). Looking ahead through the model let it exploit the model again: horizon 3 lapped at
      most 14 % from 15k env steps on (two seeds), horizon 1 learned slower than 0;
    * two updates per env step, as MBPO and REDQ spend compute to save experience (at one per env
      step the drivers fell back more often), after every step of the 16 cars (``train_every=1``,
      ``updates_per_round=32``): a round then takes a tenth of a second, so the lab's live view still
      moves while it trains (ten steps and 320 updates a round learned the same, in one-second jumps);
    * ``real_steps=8``: the critics' targets sum the real rewards of up to 8 replayed steps (the rest
      of each stretch) before bootstrapping, so what a crash costs reaches the steps before it at
      once rather than one update at a time (1, 3, 5, 8 on three seeds: 8 held up best);
    * ``target_rate=0.005``: SAC's slow target critics.
    """
    base = dream()
    return Config(
        agent=dataclasses.replace(
            base.agent,
            learner="anchored",
            stochastic=True,
            horizon=0,
            real_steps=8,
            target_rate=0.005,
        ),
        replay=base.replay,
        train=dataclasses.replace(base.train, train_every=1, updates_per_round=32, chunk_rounds=160),
    )


def checkpointed() -> Config:
    """:func:`default` with TD7's policy checkpoints (:mod:`carlab.learn.policy_checkpoint`): 6 test
    tracks, 10 more when all 6 lap, every 5,120 env steps (``benchmarks/learning.md``, session 17)."""
    return with_overrides(default(), train={"checkpoint_tracks": 6, "checkpoint_more_tracks": 10})


def dream() -> Config:
    """The dream learner (wholly in imagination, :mod:`carlab.learn.agent`) with the seed's sizes and
    network shapes and the settings the seed got wrong changed: the default until the anchored
    learner replaced it (``race`` is its older name; runs trained with either load as this).

    What changes from :func:`seed`, and why:

    * exploration noise sigma 0.5, each draw held for 8 steps: the seed's fresh sigma = 0.2 noise
      only wobbles the car, so it never swerves past an obstacle, the world model never sees that
      steering avoids one, and the actor keeps driving into the first obstacle it meets;
    * discount 0.99: at 0.97 a crash costs about as much future reward as slowing down does, so
      the actor is not worth teaching to avoid one; at 0.99 a crash costs about 33 steps of driving;
    * a crash memory of 4,096 stretches (the last 8 steps before a crash), kept apart from the
      ring: an eighth of every world-model batch ends in a crash, so the model does not forget
      crashes once they become rare; and half of the imagination's start states come from those last
      steps before a crash — the bends and obstacles where the actor must learn to brake or swerve
      (uniform starts are mostly straight road). With it, seeds 1 and 2 reach 90 % laps on held-out
      tracks in the first 100k-300k env steps, where without it seed 1 never did (it hugged one wall
      and drove into the first obstacle on that side; ``benchmarks/learning.md``);
    * a 150,000-transition buffer: a 10,000 buffer holds only the last ~600 steps of every car, so
      once it drives well the crashes (and the swerves around obstacles) are forgotten and the
      driving falls apart again. (150,000, not more, keeps the saved run near 11 MB.)
    """
    base = seed()
    return Config(
        agent=dataclasses.replace(base.agent, explore_noise=0.5, explore_hold=8, discount=0.99),
        replay=dataclasses.replace(
            base.replay, capacity=150_000, crash_memory=4096, crash_fraction=0.125, crash_starts=0.5
        ),
        train=base.train,
    )


def race() -> Config:
    """The same as :func:`dream` (its first name; saved commands and runs use it)."""
    return dream()


PRESETS = {
    "default": default,
    "checkpointed": checkpointed,
    "dream": dream,
    "seed": seed,
    "race": race,
    "tiny": tiny,
}


def preset(name: str) -> Config:
    """The named preset ('default', 'dream', 'seed', 'race' or 'tiny')."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown config preset {name!r}; choose one of {sorted(PRESETS)}") from None


def with_overrides(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy of ``config`` with some fields replaced, e.g. ``with_overrides(c, train={"seed": 3})``."""
    parts = {}
    for name, values in sections.items():
        if name not in _PARTS:
            raise ValueError(f"unknown config section {name!r}; choose one of {sorted(_PARTS)}")
        try:
            parts[name] = dataclasses.replace(getattr(config, name), **values)
        except TypeError as error:
            raise ValueError(f"bad {name} override: {error}") from None
    return dataclasses.replace(config, **parts)
