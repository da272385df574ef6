"""Numbers and arrays given by users that must be finite: the hyperparameters of the inner and outer
steps (`finite_number`, `check_learning_rate`) and supervised task data (`all_finite`).

A NaN or infinite learning rate, proximal strength or regression target does not fail by itself: it
trains on and turns the weights to NaN. These checks refuse such values where they enter (a
constructor, a task's data on its way to a compiled call), on the host, once: never inside the
compiled inner loop.
"""

import math
import numbers
import reprlib
from typing import Any, Optional

import numpy as np


def finite_number(value: Any, name: str, minimum: Optional[float] = None, above: Optional[float] = None,
                  below: Optional[float] = None) -> float:
    """`value` as a float if it is a finite real number (>= minimum, > above, < below when given);
    otherwise a one-line ValueError naming `name` (booleans and strings are refused too)."""
    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"< {below:g}" if below is not None else ""]
    rule = " and ".join(["a finite number"] + [b for b in bounds if b]).replace(" and ", " ", 1)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {rule}, got {reprlib.repr(value)}")
    x = float(value)
    if not math.isfinite(x) or (minimum is not None and x < minimum) or (above is not None and x <= above) \
            or (below is not None and x >= below):
        raise ValueError(f"{name} must be {rule}, got {x!r}")
    return x


def check_learning_rate(optimizer: Any, role: str) -> None:
    """One-line ValueError if the Keras `optimizer`'s current learning rate (a constant's value, or a
    schedule's at the optimizer's current step) is not a finite number >= 0; `role` names the optimizer
    in the message ("the outer optimizer")."""
    try:
        value = float(np.asarray(optimizer.learning_rate))
    except (AttributeError, TypeError, ValueError):
        return  # not a Keras optimizer with one learning rate: nothing to check here
    finite_number(value, f"{role}'s learning_rate ({type(optimizer).__name__})", minimum=0.0)


def all_finite(array: Any) -> bool:
    """Whether every value of a float array is finite (other dtypes, e.g. integer labels: True)."""
    array = np.asarray(array)
    return not np.issubdtype(array.dtype, np.floating) or bool(np.isfinite(array).all())
