"""Reptile (Nichol, Achiam & Schulman 2018): move theta towards the adapted parameters."""

from typing import Tuple

from pymeta.core.learner import Tensors
from pymeta.core.meta_learner import Aux, GradBasedMetaLearner
from pymeta.core.task_data import TaskData


class ReptileMetaLearner(GradBasedMetaLearner):
    """Reptile: pseudo-gradient = theta - mean over tasks of phi; with SGD(lr) the step is
    theta <- theta + lr * (mean phi - theta). The query set is not used."""

    def task_result(self, theta: Tensors, phi: Tensors, state: Tensors, data: TaskData) -> Tuple[Tensors, Aux]:
        return list(phi), {}

    def meta_gradient(self, theta: Tensors, mean_result: Tensors) -> Tensors:
        return [t - p for t, p in zip(theta, mean_result)]
