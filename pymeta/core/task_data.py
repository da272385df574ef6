"""`TaskData`: what a meta-learner needs of one task, as tensors, whatever the task type.

A task type produces it (`SupervisedTask.task_data(T, B)`; a reinforcement-learning task would
produce episodes); the meta-learners consume it without knowing what is inside:

    support: structure of tensors [N, ...]: the task's whole training batch (iMAML's Hessian,
             non-transductive batch-norm statistics). Supervised: (x [NK, ...], y [NK, ...]).
    inner:   the same structure with a leading step axis [T, ...]: the batch of each inner step.
             Supervised: (x [T, B, ...], y [T, B, ...]), the rows drawn for each step.
    query:   structure [Q, ...]: the batch the task's result is computed on (the test set).

A meta-batch stacks M of them leaf by leaf ([M, ...]); `metatrain_steps` stacks S meta-batches
([S, M, ...]). The meta-learner's objective, `objective(params, state, batch)`, is what gives a batch
its meaning.
"""

from typing import Any, NamedTuple, Sequence

import numpy as np
import tensorflow as tf


class TaskData(NamedTuple):
    support: Any
    inner: Any
    query: Any


def stack_task_data(items: Sequence[TaskData]) -> TaskData:
    """The leaves of several `TaskData` (numpy arrays) stacked along a new leading axis."""
    items = list(items)
    if not items:
        raise ValueError("a meta-batch needs at least one task")
    try:
        return tf.nest.map_structure(lambda *leaves: np.stack(leaves), *items)
    except ValueError as e:
        raise ValueError("the tasks of a meta-batch must have train and test sets of equal shapes "
                         f"to run as one compiled step ({e})") from None


def task_slice(data: TaskData, i) -> TaskData:
    """Task `i` of stacked task data (leaves [M, ...] -> [...]), inside or outside `tf.function`."""
    return tf.nest.map_structure(lambda a: tf.convert_to_tensor(a)[i], data)
