"""The course's experiments: what notebooks 1-4 run, as tested library code.

Built on :mod:`carlab.sim` and :mod:`carlab.learn`. Modules: ``experience`` (drive real cars with
any policy and keep every step), ``dream`` (the race inside a world model: functional and
Gymnasium's ``carlab/Dream-v0``), ``dream_drive`` (the real car and its dream under the same
actions, headless), ``latent`` (principal directions of the latent space),
``offline`` (fit a model, train in its dream, compare dream and reality), ``plots`` (the figures).
"""

from carlab._face import lazy_face

__all__, __getattr__, __dir__ = lazy_face(
    __name__,
    modules=("experience", "dream", "dream_drive", "latent", "offline", "plots"),
    names={
        "Trajectories": "experience",
        "collect": "experience",
        "DreamRaceEnv": "dream",
        "DreamDrive": "dream_drive",
        "LatentPCA": "latent",
        "fit_pca": "latent",
        "fit_world_model": "offline",
        "fit_actor": "offline",
        "improve": "offline",
    },
)
