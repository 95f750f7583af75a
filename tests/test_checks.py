"""The shared argument checks (carlab.checks)."""

import numpy as np
import pytest

from carlab.checks import check_int, is_int


@pytest.mark.parametrize("value", [0, 7, -3, np.int32(4), np.int64(2**40)])
def test_ints_are_ints(value):
    assert is_int(value)
    assert check_int(value, "n") == int(value) and type(check_int(value, "n")) is int


@pytest.mark.parametrize("value", [True, False, np.bool_(True), 1.0, "3", None, np.float32(2.0), [1]])
def test_everything_else_is_not(value):
    assert not is_int(value)
    with pytest.raises(ValueError, match=r"^n must be an int, got "):
        check_int(value, "n")


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (0, {"low": 1}, r"^collect: count must be an int >= 1, got 0$"),
        (11, {"high": 10}, r"^collect: count must be an int <= 10, got 11$"),
        (11, {"low": 1, "high": 10}, r"^collect: count must be an int in \[1, 10\], got 11$"),
        (True, {"low": 0}, r"^collect: count must be an int >= 0, got True$"),
    ],
)
def test_bounds_and_one_line_messages(value, bounds, message):
    with pytest.raises(ValueError, match=message):
        check_int(value, "count", where="collect", **bounds)


def test_bounds_are_inclusive():
    assert check_int(1, "n", low=1, high=1) == 1
