"""The drive-it-yourself loop, run headless with scripted key events, and the ``carlab`` command."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from carlab import cli
from carlab.cli import play as cli_play
from carlab.sim.env import EnvParams
from carlab.sim.play import key_action, key_event, run_play
from carlab.sim.render import pygame

AGENT = str(Path(__file__).resolve().parents[2] / "models" / "agent.safetensors")
UP, DOWN, LEFT, RIGHT = pygame.K_UP, pygame.K_DOWN, pygame.K_LEFT, pygame.K_RIGHT


def _script(**frames):
    """``{frame_index: [events]}`` as a ``frame -> events`` callable (keys are ``f<index>``)."""
    table = {int(k[1:]): v for k, v in frames.items()}
    return lambda frame: table.get(frame, [])


def test_key_action():
    assert key_action(set()).tolist() == [0.0, 0.0]
    assert key_action({UP, RIGHT}).tolist() == [1.0, 1.0]
    assert key_action({pygame.K_s, pygame.K_a}).tolist() == [-1.0, -1.0]
    assert key_action({UP, DOWN, LEFT, RIGHT}).tolist() == [0.0, 0.0]  # opposite keys cancel


# Driving straight at full throttle leaves track 0 after about 28 frames, so scripts stay below that.
def test_holding_up_drives_forward():
    summary = run_play(events=[[key_event(UP)]], max_frames=20, headless=True)
    assert summary["frames"] == 20 and summary["episodes"] == 0 and not summary["quit"]
    # Full throttle from rest: v <- v * (1 - friction) + acceleration, 20 times.
    full = EnvParams.acceleration * (1 - (1 - EnvParams.friction) ** 20) / EnvParams.friction
    assert summary["speed"] == pytest.approx(full, rel=1e-5) and summary["progress"] > 0.01
    assert summary["total_reward"] > 1.0
    assert summary["last_frame"].shape == (600, 800, 3) and summary["last_frame"].dtype == np.uint8


def test_w_is_the_same_as_up():
    arrows = run_play(events=[[key_event(UP)]], max_frames=30, headless=True)
    wasd = run_play(events=[[key_event(pygame.K_w)]], max_frames=30, headless=True)
    assert wasd["speed"] == arrows["speed"] and wasd["progress"] == arrows["progress"]


def test_releasing_the_key_lets_the_car_coast():
    held = run_play(events=[[key_event(UP)]], max_frames=20, headless=True)
    released = run_play(
        events=_script(f0=[key_event(UP)], f12=[key_event(UP, down=False)]), max_frames=20, headless=True
    )
    assert 0.0 < released["speed"] < held["speed"]
    assert released["progress"] < held["progress"]


def test_r_restarts_the_episode():
    events = _script(f0=[key_event(UP)], f20=[key_event(UP, down=False), key_event(pygame.K_r)])
    summary = run_play(events=events, max_frames=21, headless=True)
    assert summary["episodes"] == 1 and summary["crashes"] == 0
    assert summary["speed"] == 0.0 and summary["progress"] == 0.0
    assert summary["total_reward"] > summary["episode_reward"]  # the first episode's reward is kept


def test_escape_quits_early():
    summary = run_play(events=_script(f10=[key_event(pygame.K_ESCAPE)]), max_frames=100, headless=True)
    assert summary["quit"] and summary["frames"] == 10


def test_window_close_quits():
    summary = run_play(events=_script(f3=[pygame.event.Event(pygame.QUIT)]), max_frames=100, headless=True)
    assert summary["quit"] and summary["frames"] == 3


def test_n_switches_to_the_next_track():
    summary = run_play(track_seed=7, events=_script(f5=[key_event(pygame.K_n)]), max_frames=10, headless=True)
    assert summary["track_seed"] == 8 and summary["episodes"] == 1
    # The frame really shows the other track.
    same = run_play(track_seed=7, max_frames=10, headless=True)
    assert np.any(summary["last_frame"] != same["last_frame"])


def test_agent_drives_until_a_key_takes_over():
    seen = []

    def agent(obs):
        seen.append(obs)
        return np.array([0.0, 1.0])

    alone = run_play(agent=agent, max_frames=20, headless=True)
    assert alone["speed"] > 2.0 and len(seen) == 20 and seen[0].shape == (6,)
    # Holding brake overrides the agent: the car never moves.
    seen.clear()
    braked = run_play(agent=agent, events=[[key_event(DOWN)]], max_frames=20, headless=True)
    assert braked["speed"] == 0.0 and braked["progress"] == 0.0 and seen == []
    # Releasing hands the wheel back.
    handed_back = run_play(
        agent=agent,
        events=_script(f0=[key_event(DOWN)], f10=[key_event(DOWN, down=False)]),
        max_frames=20,
        headless=True,
    )
    assert len(seen) == 10 and handed_back["speed"] > 0.0


def test_a_crash_restarts_and_counts_the_episode():
    summary = run_play(track_seed=0, agent=lambda obs: np.array([0.0, 1.0]), max_frames=150, headless=True)
    assert summary["crashes"] >= 2 and summary["episodes"] == summary["crashes"]
    # The running episode restarted at the last crash: its reward is only part of the total.
    assert summary["episode_reward"] < summary["total_reward"]


def test_script_running_out_ends_a_headless_run():
    summary = run_play(events=[[key_event(UP)]] + [[]] * 9, headless=True)
    assert summary["frames"] == 10
    with pytest.raises(ValueError, match="headless"):
        run_play(headless=True)


def test_windowed_loop_reads_real_events():
    # With SDL_VIDEODRIVER=dummy (conftest) the window exists but is invisible; real queued events count.
    def post(frame):
        if frame == 4:
            pygame.event.post(pygame.event.Event(pygame.QUIT))
        return [key_event(UP)] if frame == 0 else []

    summary = run_play(events=post, max_frames=50, fps=0, headless=False)
    assert summary["quit"] and summary["frames"] == 4 and summary["speed"] > 0
    assert not pygame.display.get_init()  # the window is closed again


def test_cli_play_headless(capsys):
    assert cli.main(["play", "--headless", "--frames", "30"]) == 0
    assert "frames 30" in capsys.readouterr().out


def test_cli_usage_errors(capsys):
    assert cli.main(["play", "--headless"]) == 2
    assert cli.main([]) == 2
    with pytest.raises(SystemExit):
        cli.main(["play", "--frames", "many"])


def test_cli_agent(monkeypatch, capsys):
    from carlab.learn.checkpoint import CheckpointError

    def unreadable(path):
        raise CheckpointError(f"{path} is not a run checkpoint of this carlab")

    monkeypatch.setattr(cli_play, "_load_agent", unreadable)
    assert cli.main(["play", "--headless", "--frames", "5", "--agent", "x.ckpt"]) == 2
    assert "carlab play: x.ckpt is not a run checkpoint" in capsys.readouterr().err
    calls = []
    monkeypatch.setattr(
        cli_play, "_load_agent", lambda path: lambda obs: calls.append(path) or np.array([0.0, 1.0])
    )
    assert cli.main(["play", "--headless", "--frames", "5", "--agent", "x.ckpt"]) == 0
    assert calls == ["x.ckpt"] * 5


def test_python_dash_m_carlab():
    result = subprocess.run(
        [sys.executable, "-m", "carlab", "play", "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--track-seed" in result.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["play", "--track-seed", "-1"], "--track-seed must be in [0, 2**31), got -1"),
        (["play", "--track-seed", "4294967296"], "--track-seed must be in [0, 2**31), got 4294967296"),
        (["play", "--track-seed", "2147483648"], "--track-seed must be in [0, 2**31), got 2147483648"),
        (["play", "--frames", "-3", "--headless"], "--frames must be at least 1, got -3"),
        (["play", "--frames", "0"], "--frames must be at least 1, got 0"),
        (["play", "--fps", "0", "--headless", "--frames", "3"], "--fps must be at least 1, got 0"),
        (
            ["eval", AGENT, "--first-seed", "2147483647"],
            (
                "--first-seed 2147483647 with --tracks 100 runs past the last track seed (2**31 - 1): "
                "the first seed can be at most 2147483548"
            ),
        ),
        (
            ["eval", AGENT, "--first-seed", "2147483600", "--tracks", "49"],
            "the first seed can be at most 2147483599",
        ),
    ],
)
def test_cli_refuses_out_of_range_numbers_in_one_line(argv, message, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith(message + "\n") and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith(f"carlab {argv[0]}: ")


def test_cli_play_and_eval_accept_the_edges(capsys):
    assert (
        cli.main(["play", "--headless", "--frames", "1", "--fps", "1", "--track-seed", str(2**31 - 1)]) == 0
    )
    assert f"track {2**31 - 1}" in capsys.readouterr().out
    argv = ["eval", AGENT, "--first-seed", str(2**31 - 2), "--tracks", "2", "--json"]
    assert cli.main(argv) == 0
    assert '"first_seed": 2147483646' in capsys.readouterr().out
