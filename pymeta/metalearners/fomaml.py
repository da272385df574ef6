"""First-order MAML (Finn, Abbeel & Levine 2017): the meta-gradient of a task is the gradient of its
query (test) loss at the adapted parameters phi, taken as if it were the gradient at theta."""

from pymeta.core.meta_learner import GradBasedMetaLearner


def fomaml_task_result(fmodel, phi, state, query_x, query_y):
    """d L_query / d phi: a list of tensors shaped like the parameters."""
    _, grads = fmodel.loss_and_grad(phi, state, query_x, query_y)
    return grads


class FOMAMLMetaLearner(GradBasedMetaLearner):
    """FOMAML: outer step = optimizer(mean over tasks of d L_query / d phi)."""

    def task_result(self, theta, phi, state, query_x, query_y):
        return fomaml_task_result(self.fmodel, phi, state, query_x, query_y)

    def meta_gradient(self, theta, mean_result):
        return mean_result
