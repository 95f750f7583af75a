"""Shared test setup: pygame runs headless, before any test module can import it."""

import os

# pygame reads these when it initialises a module, so they must be set before anything imports it:
# no window, no sound card (a real audio driver prints ALSA noise on CI machines), no banner.
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
