"""scripts/compare_meta_gradients.py: the four meta-gradients of a task against reference computations
(a plain SGD loop, finite differences through it, numpy's solve of the damped implicit system)."""

import importlib.util
import os

import keras
import numpy as np
import pytest

from pymeta.metalearners.imaml import iMAMLMetaLearner
from second_order_helpers import ArrayTask, flat, floatx, mlp, params_of, state_of, unflat

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                      "compare_meta_gradients.py")


def load_script():
    spec = importlib.util.spec_from_file_location("compare_meta_gradients", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gradients_and_cosines_against_references():
    script = load_script()
    with floatx("float64"):
        model = mlp([2, 3, 1], activation="tanh")
    dim = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    lam, alpha, cg_damping, lam_damping, steps = 2.0, 0.1, 0.5, 1.0, 3
    ml = iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), lambda_reg=lam, n_iters_optimizer=dim + 5,
                          cg_damping=cg_damping, lam_damping=lam_damping, cg_tol=0.0, loss="mse",
                          inner_optimizer=keras.optimizers.SGD(alpha), inner_mode="pullback")
    ml.initialize()
    rng = np.random.default_rng(0)
    tasks = []
    for _ in range(2):
        x, qx = rng.standard_normal((8, 2)), rng.standard_normal((10, 2))
        tasks.append(ArrayTask(x, np.sin(x.sum(1, keepdims=True)), qx, np.sin(qx.sum(1, keepdims=True))))
    theta, state, fm = params_of(model), state_of(model), ml.fmodel

    def adapted(flat_theta, task):
        phi = unflat(flat_theta, theta)
        for _ in range(steps):
            _, g = fm.loss_and_grad(phi, state, task.x, task.y)
            phi = [p - alpha * gi for p, gi in zip(phi, g)]
        return phi

    def references(task):
        t0 = flat(theta)
        phi = adapted(t0, task)
        query = lambda p: flat(fm.loss_and_grad(p, state, task.test_x, task.test_y)[1])
        fomaml = query(phi)
        pulled = [p - alpha * lam * (p - t) for p, t in zip(phi, theta)]
        pullback = query(pulled)
        eps = 1e-6
        query_loss = lambda th: float(fm.loss(adapted(th, task), state, task.test_x, task.test_y))
        maml = np.array([(query_loss(t0 + eps * e) - query_loss(t0 - eps * e)) / (2 * eps) for e in np.eye(dim)])
        train_grad = lambda fp: flat(fm.loss_and_grad(unflat(fp, pulled), state, task.x, task.y)[1])
        hessian = np.stack([(train_grad(flat(pulled) + eps * e) - train_grad(flat(pulled) - eps * e)) / (2 * eps)
                            for e in np.eye(dim)])
        system = (1 + cg_damping) * np.eye(dim) + (hessian + hessian.T) / 2 / (lam + lam_damping)
        return [maml, fomaml, pullback, np.linalg.solve(system, pullback)]

    refs = [references(t) for t in tasks]
    import tensorflow as tf
    data = tf.nest.map_structure(tf.convert_to_tensor, tasks[0].task_data(steps, -1))
    got, _, _ = script.task_gradients(ml, theta, state, data)
    for g, r in zip(got, refs[0]):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-5, atol=1e-8)

    result = script.compare(ml, tasks, steps)
    names = script.NAMES
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    for i, j in [(0, 1), (0, 3), (1, 2), (2, 3)]:
        key = f"{names[i]}~{names[j]}"
        np.testing.assert_allclose(result["per_task"][key], np.mean([cos(r[i], r[j]) for r in refs]), atol=1e-5)
        np.testing.assert_allclose(result["mean_gradients"][key],
                                   cos(refs[0][i] + refs[1][i], refs[0][j] + refs[1][j]), atol=1e-5)
    assert result["per_task"]["fomaml~pullback"] < 1 - 1e-4  # the pull-back moved the gradient
