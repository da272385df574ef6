"""Action and observation spaces without gymnasium (duck-typed like `gymnasium.spaces`).

pymeta.rl reads a space through `space_kind(space)`: a gymnasium `Box` or `Discrete`, or the
`Box` / `Discrete` of this module (2D navigation needs no gymnasium).
"""

from typing import Any, NamedTuple, Tuple

import numpy as np


class Box(NamedTuple):
    """A continuous box: low, high arrays of shape `shape`."""
    low: np.ndarray
    high: np.ndarray
    shape: Tuple[int, ...]


class Discrete(NamedTuple):
    """Actions 0 .. n-1."""
    n: int


def box(low: Any, high: Any, shape: Tuple[int, ...]) -> Box:
    shape = tuple(shape)
    return Box(np.broadcast_to(np.asarray(low, np.float64), shape).copy(),
               np.broadcast_to(np.asarray(high, np.float64), shape).copy(), shape)


def space_kind(space: Any) -> str:
    """'box' or 'discrete'; any other space raises a one-line ValueError."""
    name = type(space).__name__
    if name == "Box" and hasattr(space, "low") and hasattr(space, "high"):
        if len(space.shape) != 1:
            raise ValueError(f"unsupported Box action space of shape {space.shape}: pymeta.rl needs a "
                             "1-D Box (Gaussian policy) or a Discrete space (categorical policy)")
        return "box"
    if name == "Discrete" and hasattr(space, "n"):
        return "discrete"
    raise ValueError(f"unsupported action space {space!r}: pymeta.rl supports Box (Gaussian policy) and "
                     "Discrete (categorical policy)")
