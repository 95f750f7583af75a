"""carlab: watch a car learn to race with a world model, in JupyterLab.

Importing carlab registers the Gymnasium environment ``carlab/Race-v0``.
"""

import gymnasium

__version__ = "0.1.0"

if "carlab/Race-v0" not in gymnasium.registry:
    gymnasium.register(id="carlab/Race-v0", entry_point="carlab.gym_env:RaceEnv")
