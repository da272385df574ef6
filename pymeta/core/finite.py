"""What enters training from Python must be finite: a Keras optimizer's learning rate
(`check_learning_rate`; the other hyperparameters' rules are `pymeta.core.bounds`) and supervised task
data (`all_finite`).

A NaN or infinite learning rate or regression target does not fail by itself: it trains on and turns
the weights to NaN. These checks refuse such values where they enter (a constructor, a task's data on
its way to a compiled call), on the host, once: never inside the compiled inner loop.
"""

from typing import Any

import keras
import numpy as np

from pymeta.core.bounds import STEP_SIZE


def check_learning_rate(optimizer: keras.optimizers.Optimizer, role: str) -> None:
    """One-line ValueError if the Keras `optimizer`'s current learning rate is not a step size
    (`bounds.STEP_SIZE`: finite, >= 0); `role` names the optimizer in the message ("the outer
    optimizer"). `optimizer.learning_rate` is Keras 3's current rate: a constant's value, or a
    `keras.optimizers.schedules.LearningRateSchedule`'s at `optimizer.iterations`."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(f"{role} must be a Keras optimizer (keras.optimizers.Adam(...), ...), got "
                        f"{type(optimizer).__name__}")
    rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    STEP_SIZE.check(rate, f"{role}'s learning_rate ({type(optimizer).__name__})")


def all_finite(array: Any) -> bool:
    """Whether every value of a float array is finite (other dtypes, e.g. integer labels: True)."""
    array = np.asarray(array)
    return not np.issubdtype(array.dtype, np.floating) or bool(np.isfinite(array).all())
