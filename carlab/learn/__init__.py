"""The learner: a world model of the race, an actor-critic that learns with it, and the loop.

Depends only on :mod:`carlab.sim`. Every update is a pure jitted function; the loop's whole state is
one :class:`TrainState` pytree::

    from carlab.learn import config, train, evaluate
    state, history = train(config.tiny(), 2_000)

Modules: ``config`` (frozen dataclasses and presets), ``replay`` (ring buffer, crash memory),
``world_model`` (encoder, dynamics, heads, losses), ``agent`` (actor, critic, imagination: the
dream learner), ``anchored`` (twin critics on real steps: the default learner), ``learners`` (the two
behind one interface), ``returns`` (lambda- and n-step returns, return normalisation), ``optim``
(Adam with live learning rates, the chunked fit loop), ``policies`` (one policy type: the actor,
random, noisy, hand-written), ``loop`` (collect and train), ``policy_checkpoint`` (TD7's tested
driver beside the newest actor), ``evaluation`` (held-out tracks), ``checkpoint`` (safetensors +
JSON), ``runs`` (save/load a run, best checkpoint, metrics files), ``seeds`` (many runs in one
jitted call: ``train_seeds(config, range(8), 400_000)``), ``seed_runs`` (a set of seeds on disk: one
checkpoint per seed, one figure).
"""

from carlab._face import lazy_face

__all__, __getattr__, __dir__ = lazy_face(
    __name__,
    modules=(
        "config",
        "replay",
        "world_model",
        "agent",
        "anchored",
        "learners",
        "returns",
        "optim",
        "policies",
        "loop",
        "policy_checkpoint",
        "evaluation",
        "checkpoint",
        "runs",
        "seeds",
        "seed_runs",
    ),
    names={
        "Config": "config",
        "WorldModelConfig": "config",
        "AgentConfig": "config",
        "ReplayConfig": "config",
        "TrainConfig": "config",
        "PRESETS": "config",
        "preset": "config",
        "with_overrides": "config",
        "EVAL_FIRST_SEED": "config",
        "VALIDATION_FIRST_SEED": "config",
        "ReplayBuffer": "replay",
        "WorldModel": "world_model",
        "make_world_model": "world_model",
        "make_agent": "agent",
        "lambda_return": "returns",
        "Policy": "policies",
        "TrainState": "loop",
        "init_state": "loop",
        "train": "loop",
        "train_rounds": "loop",
        "driver_params": "policy_checkpoint",
        "evaluate": "evaluation",
        "format_summary": "evaluation",
        "CheckpointError": "checkpoint",
        "save_checkpoint": "checkpoint",
        "load_checkpoint": "checkpoint",
        "save_run": "runs",
        "load_run": "runs",
        "BestSaver": "runs",
        "validate": "runs",
        "train_seeds": "seeds",
        "init_states": "seeds",
        "seed_state": "seeds",
        "stack_states": "seeds",
        "load_seeds": "seed_runs",
        "save_seeds": "seed_runs",
        "plot_seeds": "seed_runs",
    },
)
