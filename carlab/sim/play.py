"""Drive the car yourself (or watch an agent) in a pygame window: ``carlab play``.

Keys: Up/W throttle, Down/S brake, Left/A and Right/D steer, R restart, N next track, Esc quit.
When an ``agent`` is given it drives whenever no driving key is held; pressing a key takes over
and releasing it hands the wheel back.

The loop runs the same way without a window (``headless=True``), fed by scripted pygame events,
which is how it is tested. A crash or the step limit ends the episode and the car restarts on the
start line of the same track.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from carlab.sim.gym_env import RaceEnv

# pygame comes through carlab.sim.render, which sets the SDL defaults before importing it.
from carlab.sim.render import open_window, pygame, surface_to_array
from carlab.sim.track import DRIVE_TRACK, SCREEN_HEIGHT, SCREEN_WIDTH

THROTTLE_KEYS = {pygame.K_UP, pygame.K_w}
BRAKE_KEYS = {pygame.K_DOWN, pygame.K_s}
LEFT_KEYS = {pygame.K_LEFT, pygame.K_a}
RIGHT_KEYS = {pygame.K_RIGHT, pygame.K_d}
DRIVING_KEYS = THROTTLE_KEYS | BRAKE_KEYS | LEFT_KEYS | RIGHT_KEYS

Events = Iterable[Sequence["pygame.event.Event"]] | Callable[[int], Sequence["pygame.event.Event"]]


def key_action(held: set[int]) -> np.ndarray:
    """``[steering, throttle]`` from the set of held keys (opposite keys cancel)."""
    steering = float(bool(held & RIGHT_KEYS)) - float(bool(held & LEFT_KEYS))
    throttle = float(bool(held & THROTTLE_KEYS)) - float(bool(held & BRAKE_KEYS))
    return np.array([steering, throttle], dtype=np.float32)


def key_event(key: int, down: bool = True) -> pygame.event.Event:
    """A KEYDOWN (or KEYUP) event for ``key``, for scripting :func:`run_play`."""
    return pygame.event.Event(
        pygame.KEYDOWN if down else pygame.KEYUP, key=key, mod=0, unicode="", scancode=0
    )


def _scripted(events: Events | None) -> Callable[[int], Sequence[Any] | None]:
    """Turn ``events`` into ``frame -> events`` (None once an iterable has run out)."""
    if events is None:
        return lambda frame: None
    if callable(events):
        return lambda frame: list(events(frame) or ())
    iterator = iter(events)
    return lambda frame: next(iterator, None)


def _apply_events(events: Sequence[Any], held: set[int], track_seed: int) -> tuple[bool, int | None]:
    """Update the ``held`` keys from the frame's events; return (quit?, track seed to restart on)."""
    quit_now, new_seed = False, None
    for event in events:
        if event.type == pygame.QUIT:
            quit_now = True
        elif event.type == pygame.KEYDOWN:
            if event.key == pygame.K_ESCAPE:
                quit_now = True
            elif event.key == pygame.K_r:
                new_seed = track_seed
            elif event.key == pygame.K_n:
                new_seed = (track_seed + 1) % 2**31
            else:
                held.add(event.key)
        elif event.type == pygame.KEYUP:
            held.discard(event.key)
        elif event.type == pygame.WINDOWFOCUSLOST:
            held.clear()  # the key-ups would go to the other window
    return quit_now, new_seed


def run_play(
    track_seed: int = DRIVE_TRACK,
    agent: Callable[[np.ndarray], Any] | None = None,
    max_frames: int | None = None,
    events: Events | None = None,
    fps: int = 30,
    headless: bool = False,
) -> dict[str, Any]:
    """Run the driving loop until Esc, window close, ``max_frames``, or the scripted events run out.

    Args:
        track_seed: the first track; N moves to ``track_seed + 1`` and so on.
        agent: optional ``obs (6,) -> action (2,)`` that drives while no driving key is held.
        max_frames: stop after this many frames (None: run until quit).
        events: scripted pygame events, either an iterable of per-frame lists or ``frame -> list``.
            They are handled after the real window's events. Headless, a run with neither
            ``max_frames`` nor a callable ``events`` ends when the iterable runs out.
        fps: frame-rate cap for the window (0: uncapped). Headless runs are never capped.
        headless: draw offscreen only; no display is opened and no real events are read.

    Returns:
        A summary dict: frames, episodes (finished: crash, step limit, R or N), crashes,
        total_reward, episode_reward, laps (completed, all episodes), progress (best laps this
        episode), speed, track_seed, quit (Esc or window close), last_frame (600, 800, 3) uint8.
    """
    if headless and max_frames is None and events is None:
        raise ValueError("a headless run needs max_frames or scripted events, or it never ends")
    env = RaceEnv(track_seed=track_seed)
    obs, info = env.reset()
    screen = clock = None
    if not headless:
        screen = open_window(
            SCREEN_WIDTH, SCREEN_HEIGHT, "carlab: arrows/WASD drive, R restart, N next track, Esc quit"
        )
        clock = pygame.time.Clock()
    next_events = _scripted(events)
    held: set[int] = set()
    summary: dict[str, Any] = {"frames": 0, "episodes": 0, "crashes": 0, "total_reward": 0.0, "quit": False}
    episode_reward, past_laps, surface = 0.0, 0, None
    try:
        for frame in itertools.count():
            if max_frames is not None and frame >= max_frames:
                break
            scripted = next_events(frame)
            if scripted is None and headless and max_frames is None and not callable(events):
                break  # the script ran out and nothing else could ever end this run
            real = pygame.event.get() if screen is not None else []
            quit_now, new_seed = _apply_events([*real, *(scripted or ())], held, env.track_seed)
            summary["quit"] = quit_now
            if summary["quit"]:
                break
            if new_seed is not None:
                summary["episodes"] += 1
                past_laps += info["laps"]
                obs, info = env.reset(options={"track_seed": new_seed})
                episode_reward = 0.0

            manual = agent is None or bool(held & DRIVING_KEYS)
            action = key_action(held) if manual else np.asarray(agent(obs), dtype=np.float32)
            obs, reward, terminated, truncated, info = env.step(action)
            episode_reward += reward
            summary["total_reward"] += reward
            summary["frames"] = frame + 1

            hud = env.hud() | {"reward": episode_reward, "mode": "manual" if manual else "agent"}
            surface = env.draw_surface(hud)
            if screen is not None:
                screen.blit(surface, (0, 0))
                pygame.display.flip()
                clock.tick(fps)
            if terminated or truncated:
                summary["episodes"] += 1
                summary["crashes"] += int(terminated)
                past_laps += info["laps"]
                obs, info = env.reset()
                episode_reward = 0.0
        last_frame = None if surface is None else surface_to_array(surface)
    finally:
        env.close()
        if screen is not None:
            pygame.display.quit()
    summary.update(
        episode_reward=episode_reward,
        laps=past_laps + info["laps"],
        progress=info["progress"],
        speed=info["speed"],
        track_seed=env.track_seed,
        last_frame=last_frame,
    )
    return summary
