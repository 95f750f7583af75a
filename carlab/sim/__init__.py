"""The simulator: a procedurally generated track, the car's five rays, and the race as a pure JAX env.

Nothing here knows about learning. The env is functional, in the style of gymnax::

    from carlab.sim import env, make_track
    params = env.EnvParams.from_seeds(range(4))
    obs, state = env.reset(key, params, track_id=0)
    obs, state, reward, terminated, truncated, info = env.step(key, state, action, params)

Modules: ``track`` (seed -> arrays), ``sensors`` (rays, on-track test, lap progress), ``env`` (state,
params, reset, step), ``reference`` (a plain NumPy oracle of the same), ``render`` (offscreen pygame
drawing), ``gym_env`` (Gymnasium's ``carlab/Race-v0``), ``vector_env`` (its vector version: N cars in
one jitted call), ``play`` (the keyboard window).
"""

from carlab._face import lazy_face

__all__, __getattr__, __dir__ = lazy_face(
    __name__,
    modules=("track", "sensors", "env", "reference", "render", "gym_env", "vector_env", "play"),
    names={
        # the track
        "Track": "track",
        "TrackError": "track",
        "make_track": "track",
        "make_tracks": "track",
        "stack_tracks": "track",
        "SCREEN_WIDTH": "track",
        "SCREEN_HEIGHT": "track",
        "RAY_RANGE": "track",
        "NUM_CHECKPOINTS": "track",
        "DRIVE_TRACK": "track",
        # the senses
        "RAY_ANGLES_DEG": "sensors",
        "NUM_RAYS": "sensors",
        # the env
        "EnvParams": "env",
        "EnvState": "env",
        "OBS_SIZE": "env",
        "ACTION_SIZE": "env",
        # drawing, Gymnasium, playing
        "Renderer": "render",
        "render_frame": "render",
        "save_png": "render",
        "surface_to_array": "render",
        "RaceEnv": "gym_env",
        "RaceVectorEnv": "vector_env",
        "run_play": "play",
    },
)
