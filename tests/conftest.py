"""Shared test setup: pygame runs headless, before any test module can import it; shared fixtures."""

import os

import pytest

# pygame reads these when it initialises a module, so they must be set before anything imports it:
# no window, no sound card (a real audio driver prints ALSA noise on CI machines), no banner.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

JPEG = b"\xff\xd8\xff"  # how every JPEG file starts


@pytest.fixture(autouse=True, scope="module")
def _fresh_jit_caches():
    """Drop JAX's compiled programs after each test module. The whole suite runs in one process and
    compiles hundreds of programs; each XLA CPU executable keeps memory mappings, and past Linux's
    65,530 per process (vm.max_map_count) the next compile aborts the interpreter."""
    yield
    import sys

    if "jax" in sys.modules:
        sys.modules["jax"].clear_caches()


@pytest.fixture
def sent_frames(monkeypatch):
    """Every JPEG image sent through ipycanvas (its one shared manager widget), in order."""
    from ipycanvas.canvas import _CANVAS_MANAGER

    frames = []
    real_send = _CANVAS_MANAGER.send

    def send(content, buffers=None):
        frames.extend(bytes(b) for b in buffers or () if bytes(b[:3]) == JPEG)
        return real_send(content, buffers)

    monkeypatch.setattr(_CANVAS_MANAGER, "send", send)
    return frames
