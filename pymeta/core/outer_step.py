"""`OptimizerStep`: the outer step of a Keras optimizer on the meta-gradient (every meta-learner's
default; see `pymeta.core.protocols.OuterStep`, and `pymeta.rl.trpo.TRPOStep` for the other one).

theta <- optimizer(meta_gradient(theta, mean over the tasks of their results)). A whole meta-batch,
or several, run as one compiled call (`GradBasedMetaLearner`'s compiled meta-iterations).
"""

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from pymeta.core.finite import check_learning_rate
from pymeta.core.task_data import aux_of

if TYPE_CHECKING:  # pragma: no cover
    from pymeta.core.meta_learner import GradBasedMetaLearner


class OptimizerStep:
    """The outer step of a Keras optimizer (its `variables` are what a checkpoint stores). Its learning
    rate (a schedule's at the optimizer's current step) must be a finite number >= 0 (ValueError)."""

    def __init__(self, optimizer: keras.optimizers.Optimizer):
        if isinstance(optimizer, str):
            optimizer = keras.optimizers.get(optimizer)
        check_learning_rate(optimizer, "the outer optimizer")
        self.optimizer = optimizer

    def __repr__(self) -> str:
        return f"OptimizerStep({type(self.optimizer).__name__})"

    @property
    def variables(self) -> List[tf.Variable]:
        return list(self.optimizer.variables)

    def build(self, learner: "GradBasedMetaLearner") -> None:
        self.optimizer.build(learner.meta_variables)

    def apply(self, learner: "GradBasedMetaLearner", mean_result: Sequence[tf.Tensor]) -> None:
        """theta <- optimizer step on `meta_gradient(theta, mean_result)`; the model is left at theta
        (traceable: runs inside the compiled meta-iteration)."""
        grads = learner.meta_gradient(learner.theta_tensors(), list(mean_result))
        self.optimizer.apply_gradients(zip(grads, learner.ensure_initialized()))
        learner.load_theta_into_model()

    def metatrain(self, learner: "GradBasedMetaLearner", meta_batches: Sequence[Sequence[Any]],
                  num_inner_iterations: int, inner_batch_size: int = -1) -> List[Dict[str, float]]:
        """All the meta-batches drawn first (`learner.stack_tasks`), then one compiled call."""
        stacked = [learner.stack_tasks(tasks, num_inner_iterations, inner_batch_size) for tasks in meta_batches]
        return learner.run_meta_iterations(stacked)

    def update(self, learner: "GradBasedMetaLearner", results: Sequence[Sequence[Any]],
               tasks: Optional[Sequence[Any]] = None) -> Dict[str, float]:
        """The outer step from the per-task results of the step-by-step API (`tasks` not needed).
        Returns the mean over the tasks of their auxiliary values (`TaskResult.aux`), if any."""
        if not results:
            raise ValueError("update needs the results of at least one task")
        check_results_match(results, [tuple(v.shape) for v in learner.ensure_initialized()])
        stacked = [tf.stack(list(r)) for r in zip(*[list(r) for r in results])]  # [M, *shape]
        learner.compiled("update", learner.mean_result_step, (stacked,), free_dims=1)(stacked)
        auxes = [aux_of(r) for r in results]
        return {k: float(np.mean([a[k] for a in auxes])) for k in auxes[0] if all(k in a for a in auxes)}


def check_results_match(results: Sequence[Sequence[Any]], shapes: Sequence[tuple]) -> None:
    """ValueError (one line) unless every task's result holds one tensor per meta-parameter, of its shape
    (`shapes`): what `task_end` returns. Anything else would be averaged into a wrong step, silently."""
    for i, result in enumerate(results):
        try:
            got = [tuple(tf.convert_to_tensor(x).shape) for x in result]
        except (TypeError, ValueError) as e:
            raise ValueError(f"update: the result of task {i} is not a list of tensors ({type(e).__name__}): "
                             "pass what task_end returned") from None
        if len(got) != len(shapes):
            raise ValueError(f"update: the result of task {i} holds {len(got)} tensors for {len(shapes)} "
                             "meta-parameters: pass what task_end returned")
        for j, (a, b) in enumerate(zip(got, shapes)):
            if a != b:
                raise ValueError(f"update: tensor {j} of the result of task {i} has shape {a}, meta-parameter "
                                 f"{j} {b}: pass what task_end returned")
