"""Argument checks shared by every room: one wording for one mistake.

    count = check_int(count, "count", low=1, where="collect")
    # ValueError: collect: count must be an int >= 1, got 0

A bool is never taken for an int (``True`` is an ``int`` in Python, but ``steps=True`` is a bug).
NumPy integers are ints.
"""

from __future__ import annotations

import numbers


def is_int(value) -> bool:
    """Whether ``value`` is an integer (Python or NumPy) and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy bools are not Integral


def check_int(value, name: str, *, low: int | None = None, high: int | None = None, where: str = "") -> int:
    """``value`` as a Python int, or ``ValueError`` saying what was wanted and what came.

    Args:
        value: the argument to check.
        name: its name in the message.
        low, high: inclusive bounds (None: unbounded).
        where: the function or option the argument belongs to, which starts the message.
    """
    if not is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        if low is not None and high is not None:
            wanted = f"an int in [{low}, {high}]"
        elif low is not None:
            wanted = f"an int >= {low}"
        elif high is not None:
            wanted = f"an int <= {high}"
        else:
            wanted = "an int"
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be {wanted}, got {value!r}")
    return int(value)


__all__ = ["check_int", "is_int"]
