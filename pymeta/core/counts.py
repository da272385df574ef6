"""Counts given by users: integers, refused (not truncated) when they are not."""

import math
import numbers
import reprlib
from typing import Any

import numpy as np


def as_int(value: Any, name: str) -> int:
    """``value`` as an int if it is an integer (or an integral float such as 5.0); ValueError otherwise
    (2.7 is refused, not truncated to 2; so are booleans, strings and non-finite numbers)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or \
            (not isinstance(value, numbers.Integral) and not (math.isfinite(value) and float(value).is_integer())):
        raise ValueError(f"{name} must be an integer, got {reprlib.repr(value)}")
    return int(value)  # type: ignore[call-overload]  # an integral Real


def as_count(value: Any, name: str, minimum: int = 1, allow_all: bool = False) -> int:
    """``as_int(value)``, refusing values below ``minimum``; ``allow_all``: -1 ("all") is accepted too."""
    count = as_int(value, name)
    if count < minimum and not (allow_all and count == -1):
        raise ValueError(f"{name} must be >= {minimum}{' or -1 (all)' if allow_all else ''}, got {count}")
    return count
