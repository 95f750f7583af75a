"""carlab: watch a car learn to race with a world model, in JupyterLab.

Importing carlab registers the Gymnasium environments ``carlab/Race-v0`` (the simulator;
``gymnasium.make_vec("carlab/Race-v0", num_envs=N)`` steps N cars in one jitted call,
:mod:`carlab.sim.vector_env`) and ``carlab/Dream-v0`` (the same task inside a trained world model,
:mod:`carlab.course.dream`).
"""

import gymnasium

__version__ = "0.1.0"

if "carlab/Race-v0" not in gymnasium.registry:
    gymnasium.register(
        id="carlab/Race-v0",
        entry_point="carlab.sim.gym_env:RaceEnv",
        vector_entry_point="carlab.sim.vector_env:RaceVectorEnv",
    )
if "carlab/Dream-v0" not in gymnasium.registry:
    gymnasium.register(id="carlab/Dream-v0", entry_point="carlab.course.dream:DreamRaceEnv")
