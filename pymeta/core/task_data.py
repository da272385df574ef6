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

from typing import Any, Dict, NamedTuple, Optional, Sequence, cast

import numpy as np
import tensorflow as tf


class TaskData(NamedTuple):
    support: Any
    inner: Any
    query: Any


class TaskResult(list):
    """A task's result (a list of tensors shaped like the parameters) as returned by a meta-learner's
    `task_end`, with the task's auxiliary values in `aux` (e.g. iMAML's CG residual)."""

    def __init__(self, tensors: Any, aux: Optional[Dict[str, float]] = None):
        super().__init__(tensors)
        self.aux: Dict[str, float] = dict(aux or {})


def aux_of(result: Any) -> Dict[str, float]:
    """The auxiliary values of a task result (none for a plain list of tensors)."""
    return result.aux if isinstance(result, TaskResult) else {}


def stack_task_data(items: Sequence[Any]) -> Any:
    """The leaves of several `TaskData` (numpy arrays; or of any structures alike) stacked along a new
    leading axis. Paid once per meta-iteration, so tuples and named tuples (TaskData, (x, y)) are
    walked directly: `tf.nest.map_structure` over several structures costs about as much as a small
    model's whole meta-iteration."""
    items = list(items)
    if not items:
        raise ValueError("a meta-batch needs at least one task")
    try:
        return _stack(items)
    except ValueError as e:
        raise ValueError("the tasks of a meta-batch must have train and test sets of equal shapes "
                         f"to run as one compiled step ({e})") from None


def _stack(items):
    first = items[0]
    if isinstance(first, tuple):
        if any(not isinstance(i, tuple) or len(i) != len(first) for i in items):
            raise ValueError("task data of different structures")
        parts = [_stack(list(field)) for field in zip(*items)]
        return cast(Any, type(first))._make(parts) if hasattr(first, "_fields") else tuple(parts)
    if isinstance(first, (list, dict)) or tf.nest.is_nested(first):  # other structures: the general way
        tf.nest.map_structure(lambda *_: None, *items)  # same structure, or ValueError
        return tf.nest.pack_sequence_as(first, [np.stack(leaves) for leaves in
                                                zip(*[tf.nest.flatten(i) for i in items])])
    return np.asarray(first)[None] if len(items) == 1 else np.stack(items)  # one item: a view


def task_slice(data: TaskData, i: Any) -> TaskData:
    """Task `i` of stacked task data (leaves [M, ...] -> [...]), inside or outside `tf.function`."""
    return tf.nest.map_structure(lambda a: tf.convert_to_tensor(a)[i], data)
