"""The declared seams of the core: what a task type, an outer step and a run loop may rely on.

+ `ProducesTaskData`: a task that gives its own `TaskData` (supervised tasks).
+ `CollectsTaskData`: a task type whose data the model being adapted collects (reinforcement
  learning): it produces a whole meta-batch's `TaskData` itself, using the learner's compiled
  adaptation (`Learner.adapt_tasks`).
+ `DrawsClasses`: a task that draws its classes at `reset` and can be told which to avoid
  (`ClassificationTask`): what `TaskDistribution(use_classes_only_once=True)` relies on.
+ `OuterStep`: how theta moves after a meta-batch (`pymeta.core.outer_step.OptimizerStep`, the TRPO
  step `pymeta.rl.trpo.TRPOStep`).
+ `MetaLearnerLike`: what a run loop calls on a meta-learner, single-process
  (`GradBasedMetaLearner`) or split across MPI ranks (`DistributedMetaLearner`), with no probing.
"""

from typing import (TYPE_CHECKING, Any, Dict, List, Optional, Protocol, Sequence, Set, Tuple,
                    runtime_checkable)

import numpy as np
import tensorflow as tf

from pymeta.core.task_data import TaskData

if TYPE_CHECKING:  # pragma: no cover
    import keras

    from pymeta.core.learner import Learner
    from pymeta.core.meta_learner import GradBasedMetaLearner
    from pymeta.optim import InnerStateVariables


@runtime_checkable
class ProducesTaskData(Protocol):
    """A task that gives its `TaskData` for T inner steps on minibatches of B (-1: all)."""

    def task_data(self, num_iterations: int, batch_size: int) -> TaskData: ...


@runtime_checkable
class CollectsTaskData(Protocol):
    """A task type whose data are collected by the model being adapted (RL): the meta-learner's
    `stack_tasks` asks the first task's type for the whole meta-batch."""

    @classmethod
    def meta_batch_task_data(cls, tasks: Sequence[Any], learner: "Learner", num_iterations: int,
                             batch_size: int) -> TaskData:
        """The stacked `TaskData` (leaves [M, ...]) of `tasks`, collected with the learner's theta and
        its compiled adaptation."""
        ...


@runtime_checkable
class DrawsClasses(Protocol):
    """A task that draws its classes at `reset`: never one of `class_ids_to_avoid`, the drawn ones in
    `classes_ids` (both attributes exist from construction on: `isinstance` looks for them)."""

    class_ids_to_avoid: Set[Any]
    classes_ids: List[Any]

    def reset(self) -> None: ...


class OuterStep(Protocol):
    """How a meta-learner's theta moves after a meta-batch.

    variables: the step's state, as a checkpoint stores it (an optimizer's moments and step count).
    build(learner): create that state for the learner's meta-variables (at `initialize`).
    metatrain(learner, meta_batches, T, B): one step per meta-batch (a list of tasks), the tasks' data
        drawn or collected with `learner.stack_tasks`; one dict of statistics per meta-batch.
    update(learner, results, tasks): one step from the per-task results of the step-by-step API
        (`task_end`'s) and, for a step that needs them (TRPO), the tasks (their recorded `last_fit`).
    """

    @property
    def variables(self) -> List[tf.Variable]: ...

    def build(self, learner: "GradBasedMetaLearner") -> None: ...

    def metatrain(self, learner: "GradBasedMetaLearner", meta_batches: Sequence[Sequence[Any]],
                  num_inner_iterations: int, inner_batch_size: int = -1) -> List[Dict[str, float]]: ...

    def update(self, learner: "GradBasedMetaLearner", results: Sequence[Sequence[Any]],
               tasks: Optional[Sequence[Any]] = None) -> Dict[str, float]: ...


@runtime_checkable
class MetaLearnerLike(Protocol):
    """What a run loop may call on a meta-learner, single-process or distributed (every member exists
    on both: the single-process versions of the collectives return their input)."""

    @property
    def model(self) -> "keras.Model": ...

    @property
    def meta_variables(self) -> Optional[List[tf.Variable]]: ...

    @property
    def outer_step(self) -> OuterStep: ...

    @property
    def inner_state(self) -> Optional["InnerStateVariables"]: ...

    @property
    def is_root(self) -> bool: ...

    @property
    def current_initial_parameters(self) -> List[np.ndarray]: ...

    def initialize(self, *args: Any, **kwargs: Any) -> None: ...

    def set_initial_parameters(self, values: Sequence[Any]) -> None: ...

    def broadcast_state(self, root: Optional[int] = None) -> None: ...

    def allreduce_max(self, value: float) -> float: ...

    def local_tasks(self, tasks: Sequence[Any], num_inner_iterations: Optional[int] = None,
                    inner_batch_size: int = -1) -> List[Any]: ...

    def task_begin(self, task: Any = None, **kwargs: Any) -> None: ...

    def task_end(self, task: Any = None, **kwargs: Any) -> Any: ...

    def update(self, list_of_results: Sequence[Any], tasks: Optional[Sequence[Any]] = None,
               **kwargs: Any) -> Dict[str, float]: ...

    def metatrain_step(self, tasks: Sequence[Any], num_inner_iterations: int,
                       inner_batch_size: int = -1) -> Dict[str, float]: ...

    def metatrain_steps(self, meta_batches: Sequence[Sequence[Any]], num_inner_iterations: int,
                        inner_batch_size: int = -1) -> List[Dict[str, float]]: ...

    def evaluate_tasks(self, tasks: Sequence[Any], num_inner_iterations: int, inner_batch_size: int = -1,
                       transductive: bool = True) -> Tuple[np.ndarray, np.ndarray]: ...

    def evaluate_tasks_distributed(self, tasks: Sequence[Any], num_inner_iterations: int,
                                   inner_batch_size: int = -1,
                                   transductive: bool = True) -> Tuple[np.ndarray, np.ndarray]: ...
