"""First-order MAML (Finn, Abbeel & Levine 2017): the meta-gradient of a task is the gradient of its
query (test) objective at the adapted parameters phi, taken as if it were the gradient at theta."""

from typing import Any, List, Sequence, Tuple

import tensorflow as tf

from pymeta.core.learner import Learner, Tensors
from pymeta.core.meta_learner import Aux, GradBasedMetaLearner
from pymeta.core.task_data import TaskData
from pymeta.inner_loop import value_and_gradient


def query_gradient(learner: Learner, phi: Sequence[tf.Tensor], state: Sequence[tf.Tensor],
                   query: Any) -> List[tf.Tensor]:
    """d objective(phi, state, query) / d phi: a list of tensors shaped like the parameters (in a
    graph of its own for models with max pooling: `pymeta.inner_loop.needs_isolated_gradients`)."""
    return value_and_gradient(learner.objective, phi, state, query, isolate=learner.isolate_gradients)[1]


class FOMAMLMetaLearner(GradBasedMetaLearner):
    """FOMAML: outer step = optimizer(mean over tasks of d L_query / d phi)."""

    def task_result(self, theta: Tensors, phi: Tensors, state: Tensors, data: TaskData) -> Tuple[Tensors, Aux]:
        return query_gradient(self, phi, state, data.query), {}

    def meta_gradient(self, theta: Tensors, mean_result: Tensors) -> Tensors:
        return mean_result
