"""Helpers shared by the lab's widget tests (no browser needed)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 30.0, what: str = "a condition"):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value
