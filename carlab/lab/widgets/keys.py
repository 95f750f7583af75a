"""Keyboard driving on the live view: arrow keys or WASD held down -> ``[steering, throttle]``.

ipycanvas 0.14 reports key-down only, so the keys come from an ipyevents ``Event`` on the canvas
(``keydown``, ``keyup``, and ``mouseleave``: ipyevents listens to keys only while the mouse is over
the canvas, so a key released elsewhere would otherwise stay held forever).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

THROTTLE_KEYS = frozenset({"ArrowUp", "w", "W"})
BRAKE_KEYS = frozenset({"ArrowDown", "s", "S"})
LEFT_KEYS = frozenset({"ArrowLeft", "a", "A"})
RIGHT_KEYS = frozenset({"ArrowRight", "d", "D"})
DRIVING_KEYS = THROTTLE_KEYS | BRAKE_KEYS | LEFT_KEYS | RIGHT_KEYS


def key_action(held: set[str]) -> np.ndarray:
    """``[steering, throttle]`` from the held browser key names (opposite keys cancel)."""
    steering = float(bool(held & RIGHT_KEYS)) - float(bool(held & LEFT_KEYS))
    throttle = float(bool(held & THROTTLE_KEYS)) - float(bool(held & BRAKE_KEYS))
    return np.array([steering, throttle], dtype=np.float32)


class KeyDriver:
    """Turns ipyevents key events into manual actions: ``driver.handle(event)`` per DOM event."""

    def __init__(self, set_action: Callable[[np.ndarray], None]):
        """``set_action`` receives the new ``[steering, throttle]`` whenever the held keys change."""
        self.set_action = set_action
        self.held: set[str] = set()
        self.events = 0

    def handle(self, event: dict) -> None:
        """Update the held keys from one ``{"type": "keydown"|"keyup"|"mouseleave", "key": ...}``."""
        kind, key = event.get("type"), event.get("key", "")
        self.events += 1
        before = set(self.held)
        if kind == "keydown" and key in DRIVING_KEYS:
            self.held.add(key)
        elif kind == "keyup":
            self.held.discard(key)
            if len(key) == 1:  # Shift+w pressed, w released (or the other way round)
                self.held -= {key.lower(), key.upper()}
        elif kind == "mouseleave":
            self.held.clear()
        if self.held != before:
            self.set_action(key_action(self.held))

    def release_all(self) -> None:
        """Forget every held key (e.g. when switching back to AI driving)."""
        self.held.clear()
        self.set_action(key_action(self.held))
