"""iMAML (pymeta.metalearners.imaml): implicit meta-gradient with conjugate gradient."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import optim
from pymeta.core.meta_learner import stack_tasks
from pymeta.core.task_data import task_slice
from pymeta.metalearners.fomaml import FOMAMLMetaLearner
from pymeta.metalearners.imaml import iMAMLMetaLearner
from pymeta.networks import make_omniglot_cnn_model, make_sinusoid_model
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution
from second_order_helpers import (ArrayTask, bn_mlp, flat, floatx, mlp, params_of,
                                  pattern_distribution, state_of, unflat)


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)



@pytest.mark.parametrize("net", ["linear", "tanh_mlp"])
def test_implicit_gradient_equals_finite_differences_at_converged_inner_loop(net):
    """With the proximal inner problem solved (many inner steps) and enough CG steps, iMAML's
    meta-gradient is d L_test(phi*(theta)) / d theta, checked by central differences."""
    with floatx("float64"):
        model = mlp([3, 1]) if net == "linear" else mlp([1, 4, 1], activation="tanh")
    dim = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    ml = iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), lambda_reg=3.0, n_iters_optimizer=dim,
                          cg_tol=0.0, loss="mse", inner_optimizer=keras.optimizers.SGD(0.1),
                          inner_mode="proximal", cg_damping=0.0)
    ml.initialize()
    d_in = model.input_shape[-1]
    x, qx = np.random.randn(8, d_in), np.random.randn(10, d_in)
    w = np.random.randn(d_in, 1)
    y, qy = np.sin(x @ w), np.sin(qx @ w)
    state = state_of(model)
    fm = ml.fmodel

    def solve_inner(theta):
        """phi*(theta): 100 full-batch gradient steps (lr 0.1) on loss + proximal term, float64."""
        for v, t in zip(ml.meta_variables, theta):  # the proximal term's anchor is theta
            v.assign(t)

        def body(k, p):  # the gradient of loss + (lambda/2)||p - theta||^2, written out
            _, g = fm.loss_and_grad(p, state, x, y)
            return k + 1, [pi - 0.1 * (gi + 3.0 * (pi - ti)) for pi, gi, ti in zip(p, g, theta)]

        return tf.while_loop(lambda k, p: k < 100, body, (tf.constant(0), list(theta)))[1]

    objective = tf.function(lambda theta: fm.loss(solve_inner(theta), state, qx, qy))
    implicit = tf.function(lambda theta: ml.implicit_gradient(solve_inner(theta), state, (x, y), (qx, qy)))

    theta = params_of(model)
    grad, residual = implicit(theta)
    assert float(residual) < 1e-8
    eps = 1e-6
    fd = [(float(objective(unflat(theta_flat + eps * e, theta))) -
           float(objective(unflat(theta_flat - eps * e, theta)))) / (2 * eps)
          for theta_flat in [flat(theta)] for e in np.eye(dim)]
    np.testing.assert_allclose(flat(grad), fd, rtol=1e-5, atol=1e-8)
    # and it differs from the first-order (FOMAML) gradient
    ml0 = iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), lambda_reg=3.0, n_iters_optimizer=0,
                           inner_optimizer=keras.optimizers.SGD(0.1), loss="mse", inner_mode="proximal", cg_damping=0.0)
    ml0.meta_variables = ml.meta_variables
    phi = tf.function(solve_inner)(theta)
    g0, _ = ml0.implicit_gradient(phi, state, (x, y), (qx, qy))
    assert np.linalg.norm(flat(g0) - fd) > 1e-3 * np.linalg.norm(fd)


def test_damped_system_equals_explicit_solve():
    """With cg_damping c and lam_damping L, the meta-gradient solves ((1 + c) I + H / (lambda + L)) g = b
    (the reference implementation's damping), checked against numpy on the explicit Hessian; CG
    starts from zero, so it reaches that solution within the dimension's number of steps."""
    with floatx("float64"):
        model = mlp([2, 3, 1], activation="tanh")
    dim = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    lam, c, big_l = 2.0, 1.0, 10.0
    ml = iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), lambda_reg=lam, n_iters_optimizer=dim + 5,
                          cg_damping=c, lam_damping=big_l, cg_tol=0.0, loss="mse",
                          inner_optimizer=keras.optimizers.SGD(0.1), inner_mode="proximal")
    ml.initialize()
    x, qx = np.random.randn(8, 2), np.random.randn(10, 2)
    y, qy = np.sin(x.sum(1, keepdims=True)), np.sin(qx.sum(1, keepdims=True))
    state, phi = state_of(model), params_of(model)
    fm = ml.fmodel
    g, residual = ml.implicit_gradient(phi, state, (x, y), (qx, qy))
    _, b = fm.loss_and_grad(phi, state, qx, qy)

    def train_grad(flat_phi):
        return flat(fm.loss_and_grad(unflat(flat_phi, phi), state, x, y)[1])

    eps = 1e-6  # the explicit Hessian by central differences of the training-loss gradient
    hessian = np.stack([(train_grad(flat(phi) + eps * e) - train_grad(flat(phi) - eps * e)) / (2 * eps)
                        for e in np.eye(dim)])
    hessian = (hessian + hessian.T) / 2
    exact = np.linalg.solve((1 + c) * np.eye(dim) + hessian / (lam + big_l), flat(b))
    assert float(residual) < 1e-8
    np.testing.assert_allclose(flat(g), exact, rtol=1e-6, atol=1e-9)
    # lam_damping changes the answer (the undamped system has another solution)
    undamped = np.linalg.solve((1 + c) * np.eye(dim) + hessian / lam, flat(b))
    assert np.linalg.norm(undamped - exact) > 1e-3 * np.linalg.norm(exact)


def small_bn_net():
    """Batch norm without the compile time of a conv net (the conv nets are checked by the
    finite-difference tests)."""
    return bn_mlp((6, 6, 1), hidden=12, classes=3)


def twin_models():
    a, b = small_bn_net(), small_bn_net()
    b.set_weights(a.get_weights())
    for m in (a, b):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return a, b


def meta_batches(num, size):
    dist = pattern_distribution(num_classes=12, size=6, batch_size=size, num_ways=3, shots=2, queries=2)
    return [dist.sample_batch() for _ in range(num)]


def test_zero_cg_steps_is_fomaml():
    m1, m2 = twin_models()
    batches = meta_batches(2, 2)
    imaml = iMAMLMetaLearner(m1, keras.optimizers.Adam(0.01), lambda_reg=2.0, n_iters_optimizer=0,
                             inner_mode="proximal", cg_damping=0.0)
    fomaml = FOMAMLMetaLearner(m2, keras.optimizers.Adam(0.01))
    fomaml.initialize()
    # FOMAML with iMAML's inner objective (the same proximal term, anchored at its own theta)
    fomaml.inner_optimizer_for = lambda theta: optim.chain(optim.add_proximal_gradient(theta, 2.0),
                                                           fomaml.inner_optimizer)
    # the task results are equal
    data = task_slice(stack_tasks(batches[0], 3, 4), 0)
    theta, state = params_of(m1), state_of(m1)
    imaml.initialize()
    phi, _, _ = imaml.adapt(theta, state, data.inner)
    g, _ = imaml.implicit_gradient(phi, state, data.support, data.query)
    np.testing.assert_allclose(flat(g), flat(fomaml.task_result(theta, phi, state, data)[0]), rtol=1e-6)
    # and so are whole meta-training runs
    for ml in (imaml, fomaml):
        np.random.seed(3)
        for tasks in copy.deepcopy(batches):
            ml.metatrain_step(tasks, 3, 4)
    np.testing.assert_allclose(flat(imaml.current_initial_parameters),
                               flat(fomaml.current_initial_parameters), rtol=1e-5, atol=1e-6)


def test_fast_path_equals_step_by_step():
    m1, m2 = twin_models()
    initial = [v.numpy() for v in m1.trainable_variables]
    batches = meta_batches(2, 2)
    fast = iMAMLMetaLearner(m1, keras.optimizers.Adam(0.01), lambda_reg=2.0, n_iters_optimizer=3,
                            cg_damping=0.5, inner_mode="proximal")
    slow = iMAMLMetaLearner(m2, keras.optimizers.Adam(0.01), lambda_reg=2.0, n_iters_optimizer=3,
                            cg_damping=0.5, inner_mode="proximal")
    np.random.seed(7)
    residuals = []
    for tasks in copy.deepcopy(batches):
        out = fast.metatrain_step(tasks, 3, 4)
        assert out["cg_residual"] == fast.last_cg_residual
        residuals.append(out["cg_residual"])
    np.random.seed(7)
    slow.initialize()
    for i, tasks in enumerate(copy.deepcopy(batches)):
        results = []
        for task in tasks:
            slow.task_begin(task)
            task.fit_n_iterations(m2, 3, 4)
            results.append(slow.task_end(task))
        np.testing.assert_allclose(np.mean([r.aux["cg_residual"] for r in results]), residuals[i], rtol=1e-3)
        slow.update(results)
        np.testing.assert_allclose(slow.last_cg_residual, residuals[i], rtol=1e-3)
    a, b = flat(fast.current_initial_parameters), flat(slow.current_initial_parameters)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert np.abs(a - flat(initial)).max() > 1e-3
    assert all(np.isfinite(r) for r in residuals)


def test_inner_loop_minimises_the_proximal_objective():
    """task.fit_n_iterations (step-by-step API) and evaluate_tasks run loss + (lambda/2)||phi - theta||^2."""
    model = mlp([2, 5, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ml = iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), lambda_reg=4.0, inner_mode="proximal", cg_damping=0.0)
    x, y = np.random.randn(6, 2).astype(np.float32), np.random.randn(6, 1).astype(np.float32)
    task = ArrayTask(x, y, x, y)
    ml.task_begin(task)
    theta = params_of(model)
    task.fit_n_iterations(model, 3, -1)
    expected = theta
    for _ in range(3):
        with tf.GradientTape() as tape:
            tape.watch(expected)
            pred = model.stateless_call(expected, [], x)[0]
            obj = tf.reduce_mean(tf.square(pred - y)) + 2.0 * tf.add_n(
                [tf.reduce_sum(tf.square(p - t)) for p, t in zip(expected, theta)])
        expected = [p - 0.1 * g for p, g in zip(expected, tape.gradient(obj, expected))]
    np.testing.assert_allclose(flat(params_of(model)), flat(expected), rtol=1e-5, atol=1e-6)


def test_a_task_not_begun_by_imaml_trains_without_the_proximal_term():
    """Creating an iMAML meta-learner does not change how the model trains on a task it did not begin
    (it used to: the proximal term was attached to the model and leaked into every fit)."""
    plain, other = mlp([2, 3, 1]), mlp([2, 3, 1])
    for m in (plain, other):
        m.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    iMAMLMetaLearner(other, keras.optimizers.SGD(1.0), lambda_reg=5.0,
                     inner_mode="proximal", cg_damping=0.0).initialize()
    x, y = np.random.randn(4, 2).astype(np.float32), np.random.randn(4, 1).astype(np.float32)
    for m in (plain, other):
        ArrayTask(x, y, x, y).fit_n_iterations(m, 3, -1)
    np.testing.assert_allclose(flat(params_of(other)), flat(params_of(plain)), rtol=1e-6)


def test_rejects_bad_arguments():
    model = mlp([2, 3, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    for kwargs in ({"lambda_reg": 0.0}, {"n_iters_optimizer": -1}, {"n_iters_optimizer": 1.5},
                   {"cg_damping": -1.0}, {"hvp_method": "nope"}, {"lam_damping": -1.0}):
        with pytest.raises(ValueError):
            iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), **kwargs)


@pytest.mark.slow
def test_imaml_learns_sinusoid():
    """After meta-training, adaptation (same inner loop) reaches a much lower test MSE than from the
    random initialisation."""
    dist, _, _ = create_sinusoid_task_distribution(batch_size=5)
    model = make_sinusoid_model()
    ml = iMAMLMetaLearner(model, keras.optimizers.Adam(0.001), lambda_reg=2.0, n_iters_optimizer=5,
                          cg_damping=1.0, inner_optimizer=keras.optimizers.SGD(0.01), loss="mse", inner_mode="proximal")
    test_tasks = dist.sample_batch(100)
    before, _ = ml.evaluate_tasks(test_tasks, 10)
    # 300 meta-iterations: iMAML (like FOMAML) keeps sharpening the initialisation on this problem, and
    # after ~500 the inner SGD (lr 0.01) starts to diverge on some tasks (see the iMAML module doc)
    for _ in range(3):
        out = ml.metatrain_steps([dist.sample_batch() for _ in range(100)], 10)
    after, _ = ml.evaluate_tasks(test_tasks, 10)
    assert np.isfinite(out[-1]["cg_residual"])
    assert after.mean() < 0.6 * before.mean(), (before.mean(), after.mean())


@pytest.mark.slow
def test_imaml_learns_synthetic_omniglot():
    """5-way 1-shot on noisy blocky class patterns (16x16x1, tiny Omniglot conv net): the accuracy
    after adaptation improves with meta-training."""
    dist = pattern_distribution(num_classes=60, size=16, batch_size=4, block=4, num_ways=5, shots=1,
                                queries=4, flip=0.15, noise=0.2)
    model = make_omniglot_cnn_model(5, input_shape=(16, 16, 1), filters=8)
    ml = iMAMLMetaLearner(model, keras.optimizers.Adam(0.01), lambda_reg=2.0, n_iters_optimizer=3,
                          cg_damping=1.0, inner_optimizer=keras.optimizers.SGD(0.2),
                          loss="sparse_categorical_crossentropy", inner_mode="proximal")
    test_tasks = dist.sample_batch(40)
    _, before = ml.evaluate_tasks(test_tasks, 5)
    out = ml.metatrain_steps([dist.sample_batch() for _ in range(32)], 5)
    _, after = ml.evaluate_tasks(test_tasks, 5)
    assert np.isfinite(out[-1]["cg_residual"])
    assert after.mean() > max(before.mean() + 0.25, 0.7), (before.mean(), after.mean())


def test_xla_compiled_step_equals_plain():
    dist, _, _ = create_sinusoid_task_distribution(batch_size=3)
    batches = [dist.sample_batch() for _ in range(2)]
    out = []
    for jit in (False, True):
        model = mlp([1, 16, 1], activation="tanh", seed=1)
        ml = iMAMLMetaLearner(model, keras.optimizers.Adam(0.01), n_iters_optimizer=3, cg_damping=1.0,
                              inner_optimizer=keras.optimizers.SGD(0.01), loss="mse", jit_compile=jit,
                              inner_mode="proximal")
        np.random.seed(4)
        for tasks in copy.deepcopy(batches):
            ml.metatrain_step(tasks, 4, 5)
        out.append((flat(ml.current_initial_parameters), ml.last_cg_residual))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[1][1], out[0][1], rtol=1e-3)


@pytest.mark.slow
def test_pullback_mode_is_plain_steps_then_pullback_then_the_implicit_gradient():
    """inner_mode='pullback' (the reference implementation): T plain SGD steps (a reference loop
    here), one step phi <- phi - alpha lambda (phi - theta), then (I + H/lambda) g = grad L_test(phi)
    solved exactly with numpy on the Hessian from finite differences; fast and step-by-step alike."""
    with floatx("float64"):
        model = mlp([2, 3, 1], activation="tanh")
    dim = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    lam, alpha = 2.0, 0.1
    ml = iMAMLMetaLearner(model, keras.optimizers.SGD(1.0), lambda_reg=lam, n_iters_optimizer=dim + 5,
                          cg_tol=0.0, cg_damping=0.0, loss="mse", inner_optimizer=keras.optimizers.SGD(alpha),
                          inner_mode="pullback")
    ml.initialize()
    x, qx = np.random.randn(8, 2), np.random.randn(10, 2)
    y, qy = np.sin(x.sum(1, keepdims=True)), np.sin(qx.sum(1, keepdims=True))
    task = ArrayTask(x, y, qx, qy)
    theta, state = params_of(model), state_of(model)
    fm = ml.fmodel
    phi = list(theta)
    for _ in range(4):  # plain full-batch SGD, no proximal term
        _, g = fm.loss_and_grad(phi, state, x, y)
        phi = [p - alpha * gi for p, gi in zip(phi, g)]
    phi_t = phi
    phi = [p - alpha * lam * (p - t) for p, t in zip(phi, theta)]

    def train_grad(flat_phi):
        return flat(fm.loss_and_grad(unflat(flat_phi, phi), state, x, y)[1])

    eps = 1e-6
    hessian = np.stack([(train_grad(flat(phi) + eps * e) - train_grad(flat(phi) - eps * e)) / (2 * eps)
                        for e in np.eye(dim)])
    hessian = (hessian + hessian.T) / 2
    b = flat(fm.loss_and_grad(phi, state, qx, qy)[1])
    expected = np.linalg.solve(np.eye(dim) + hessian / lam, b)
    # fast path: the result of one task (sum over a meta-batch of one)
    sums, aux = ml.sum_task_results([task], 4, -1)
    np.testing.assert_allclose(flat(sums), expected, rtol=1e-6, atol=1e-9)
    assert aux["cg_residual"] < 1e-8
    # step-by-step: plain steps in fit_n_iterations, the pull-back in task_end
    ml.task_begin(task)
    task.fit_n_iterations(model, 4, -1)
    np.testing.assert_allclose(flat(ml.task_end(task)), expected, rtol=1e-6, atol=1e-9)
    # evaluation adapts with plain steps (no proximal term, no pull-back): the query loss at phi_T
    losses, _ = ml.evaluate_tasks([task], 4, -1)
    np.testing.assert_allclose(losses[0], float(fm.loss(phi_t, state, qx, qy)), rtol=1e-5)
