"""Reptile (Nichol, Achiam & Schulman 2018): move theta towards the adapted parameters."""

from pymeta.core.meta_learner import GradBasedMetaLearner


class ReptileMetaLearner(GradBasedMetaLearner):
    """Reptile: pseudo-gradient = theta - mean over tasks of phi; with SGD(lr) the step is
    theta <- theta + lr * (mean phi - theta). The query set is not used."""

    def task_result(self, theta, phi, state, data):
        return list(phi), {}

    def meta_gradient(self, theta, mean_result):
        return [t - p for t, p in zip(theta, mean_result)]
