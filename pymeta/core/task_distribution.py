"""Distributions over tasks, from which meta-batches are drawn."""

import copy
import reprlib
from typing import Any, List, Optional, Sequence, Set

import numpy as np

from pymeta.core.counts import as_count, as_int  # noqa: F401  (re-exported)
from pymeta.core.protocols import DrawsClasses


def check_probabilities(task_probabilities: Any, num_tasks: int) -> List[float]:
    """One finite, non-negative weight per task, not all 0 -> list of probabilities summing to 1."""
    try:
        p = np.asarray(task_probabilities, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"task probabilities must be numbers, got {reprlib.repr(task_probabilities)}") from None
    if p.shape != (num_tasks,):
        raise ValueError(f"{num_tasks} tasks but {p.size} probabilities")
    if np.any(~np.isfinite(p)) or np.any(p < 0) or not np.any(p > 0):
        raise ValueError(f"task probabilities must be finite, >= 0 and not all 0, got {reprlib.repr(list(p))}")
    p = p / p.max()  # weights near the float64 maximum would overflow their sum
    return list(p / p.sum())


class TaskDistribution:
    """Draws batches of tasks from a list of tasks with given probabilities.

    Args:
        tasks: list of Task objects (each may itself draw new problems at every reset).
        task_probabilities: one non-negative weight per task; normalised to sum to 1.
        batch_size: default number of tasks per `sample_batch()`.
        sample_with_replacement: True: every drawn task is an independent copy of its prototype
            (sharing, never copying, the dataset arrays), reset to a new problem; a prototype drawn
            twice gives two different problems. False: distinct prototypes, returned as they are.
        use_classes_only_once: with replacement, no class appears in two tasks of the same batch; the
            tasks must draw classes (`pymeta.core.protocols.DrawsClasses`, e.g. ClassificationTask).
    """

    def __init__(self, tasks: Sequence[Any], task_probabilities: Any, batch_size: int = 1,
                 sample_with_replacement: bool = True, use_classes_only_once: bool = False):
        tasks = list(tasks)
        if not tasks:
            raise ValueError("a TaskDistribution needs at least one task")
        self.task_probabilities = check_probabilities(task_probabilities, len(tasks))
        self.batch_size = as_count(batch_size, "batch_size")
        self.tasks = tasks
        self.sample_with_replacement = sample_with_replacement
        self.use_classes_only_once = use_classes_only_once
        if use_classes_only_once:
            other = next((t for t in tasks if not isinstance(t, DrawsClasses)), None)
            if other is not None:
                raise ValueError(f"use_classes_only_once needs tasks that draw classes (DrawsClasses, "
                                 f"e.g. ClassificationTask), got a {type(other).__name__}")

    def reset(self) -> None:
        pass

    def set_task_probabilities(self, task_probabilities: Any) -> None:
        """Same rule as the constructor: one finite weight >= 0 per task, not all 0 (ValueError otherwise)."""
        self.task_probabilities = check_probabilities(task_probabilities, len(self.tasks))

    def sample_batch(self, batch_size: Optional[int] = None) -> List[Any]:
        """A list of `batch_size` (default: the distribution's) tasks, each reset to a new problem."""
        batch_size = self.batch_size if batch_size is None else as_count(batch_size, "batch_size")
        if not self.sample_with_replacement:
            if batch_size > len(self.tasks):
                raise ValueError(f"cannot draw {batch_size} distinct tasks out of {len(self.tasks)} "
                                 "without replacement")
            picks = np.random.choice(len(self.tasks), batch_size, replace=False, p=self.task_probabilities)
            return [self.tasks[i] for i in picks]
        picks = np.random.choice(len(self.tasks), batch_size, replace=True, p=self.task_probabilities)
        batch: List[Any] = []
        used_classes: Set[Any] = set()
        for i in picks:
            task = copy.deepcopy(self.tasks[i])
            if self.use_classes_only_once:
                task.class_ids_to_avoid = set(used_classes)
            task.reset()
            if self.use_classes_only_once:
                used_classes.update(task.classes_ids)
            batch.append(task)
        return batch

    def get_num_tasks(self) -> int:
        return len(self.tasks)

    def get_task_by_index(self, index: int) -> Any:
        index = as_int(index, "task index")
        if not 0 <= index < len(self.tasks):
            raise IndexError(f"task index {index} outside 0..{len(self.tasks) - 1}")
        return self.tasks[index]


class TaskAsSequenceOfTasksDistribution(TaskDistribution):
    """Draws `batch_size` sequences from one TaskAsSequenceOfTasks prototype at every `sample_batch`."""

    def __init__(self, task_sequence_object: Any, batch_size: int):
        super().__init__([task_sequence_object], [1.0], batch_size, sample_with_replacement=True)

    def get_task_by_index(self, index: int) -> Any:
        return self.tasks[0]
