"""Hessian-vector products and conjugate gradient (pymeta.hvp)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import hvp
from pymeta.inner_loop import FunctionalModel
from pymeta.networks import make_omniglot_cnn_model
from second_order_helpers import (flat, floatx, mlp, params_of, state_of,
                                  unflat)


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


def fd_hvp(loss_fn, params, v, eps):
    """Central finite difference of the gradient along v: (g(p + eps v) - g(p - eps v)) / (2 eps)."""
    @tf.function
    def grad(p):
        with tf.GradientTape() as tape:
            tape.watch(p)
            value = loss_fn(p)
        return tape.gradient(value, p)

    plus = grad([p + eps * vi for p, vi in zip(params, v)])
    minus = grad([p - eps * vi for p, vi in zip(params, v)])
    return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]


def all_method_hvps(loss_fn, params, v):
    out = {}
    for method in hvp.HVP_METHODS:
        out[method] = tf.function(lambda p, v, m=method: hvp.HessianOperator(loss_fn, p, m)(v))(params, v)
        out[method + "/function"] = tf.function(
            lambda p, v, m=method: hvp.hessian_vector_product(loss_fn, p, v, m))(params, v)
    return out


def rel_err(a, b):
    a, b = flat(a), flat(b)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def random_like(params, dtype=None):
    return [tf.constant(np.random.randn(*p.shape), dtype=dtype or p.dtype) for p in params]


def test_hvp_equals_finite_differences_mlp():
    with floatx("float64"):
        model = mlp([3, 6, 6, 2], activation="tanh")
    fm = FunctionalModel(model, "mse")
    x, y = np.random.randn(10, 3), np.random.randn(10, 2)
    params, state = params_of(model), state_of(model)
    loss = hvp.training_loss(fm, state, x, y)
    v = random_like(params)
    expected = fd_hvp(loss, params, v, 1e-5)
    for method, got in all_method_hvps(loss, params, v).items():
        assert got[0].dtype == tf.float64, (method, [p.dtype for p in params], model.dtype_policy)
        assert rel_err(got, expected) < 1e-7, method


def test_hvp_through_batch_norm_conv_net_float64():
    with floatx("float64"):
        model = make_omniglot_cnn_model(3, input_shape=(16, 16, 1), filters=8)
    fm = FunctionalModel(model, "sparse_categorical_crossentropy")
    x, y = np.random.rand(12, 16, 16, 1), np.repeat(np.arange(3), 4)
    params, state = params_of(model), state_of(model)
    assert any("gamma" in v.path for v in model.trainable_variables)
    loss = hvp.training_loss(fm, state, x, y)
    v = random_like(params)
    # max-pooling and ReLU make the gradient piecewise smooth: a tiny step (float64) keeps every unit
    # on its side of the kinks (at 1e-5 some do cross, for this seed)
    expected = fd_hvp(loss, params, v, 1e-7)
    got = tf.function(lambda p, v: hvp.HessianOperator(loss, p)(v))(params, v)  # default method
    assert rel_err(got, expected) < 1e-6
    for g, e in zip(got, expected):  # every layer's block, batch-norm parameters included
        assert np.linalg.norm(g - e) <= 1e-5 * np.linalg.norm(e) + 1e-9

    # the float32 model (fused batch-norm kernel) gives the same product
    model32 = make_omniglot_cnn_model(3, input_shape=(16, 16, 1), filters=8)
    model32.set_weights([w.astype(np.float32) for w in model.get_weights()])
    fm32 = FunctionalModel(model32, "sparse_categorical_crossentropy")
    loss32 = hvp.training_loss(fm32, state_of(model32), x.astype(np.float32), y)
    got32 = tf.function(lambda p, v: hvp.HessianOperator(loss32, p)(v))(
        params_of(model32), [tf.cast(t, tf.float32) for t in v])
    assert rel_err(got32, got) < 1e-3


def test_sparse_softmax_cross_entropy_second_derivatives():
    """The softmax output's cached logits route the loss through TensorFlow's fused
    SparseSoftmaxCrossEntropyWithLogits; its second derivative must be exact."""
    with floatx("float64"):
        model = mlp([4, 5, 3], activation="tanh", out_activation="softmax")
    fm = FunctionalModel(model, "sparse_categorical_crossentropy")
    x, y = np.random.randn(9, 4), np.random.randint(0, 3, 9)
    params, state = params_of(model), state_of(model)
    loss = hvp.training_loss(fm, state, x, y)

    graph = tf.function(loss).get_concrete_function(params).graph
    assert "SparseSoftmaxCrossEntropyWithLogits" in {op.type for op in graph.get_operations()}

    def explicit_loss(p):  # the same loss written out from the logits
        probs, _ = model.stateless_call(p, state, x, training=True)
        logits = probs._keras_logits
        picked = tf.gather(tf.nn.log_softmax(logits), y, batch_dims=1)
        return -tf.reduce_mean(picked)

    v = random_like(params)
    got = tf.function(lambda p, v: hvp.HessianOperator(loss, p)(v))(params, v)
    assert rel_err(got, fd_hvp(loss, params, v, 1e-5)) < 1e-7
    assert rel_err(got, tf.function(lambda p, v: hvp.HessianOperator(explicit_loss, p)(v))(params, v)) < 1e-10


def explicit_hessian(loss_fn, params):
    """The Hessian as a dense [P, P] numpy matrix, one HVP per basis vector."""
    op = tf.function(lambda p, v: hvp.HessianOperator(loss_fn, p)(v))
    size = sum(int(np.prod(p.shape)) for p in params)
    cols = [flat(op(params, unflat(np.eye(size)[i], params))) for i in range(size)]
    return np.stack(cols, axis=1)


def run_cg(make_matvec, b, steps, **kwargs):
    """CG in a tf.function; make_matvec() builds the operator inside it (once)."""
    return tf.function(lambda b: hvp.conjugate_gradient(make_matvec(), b, steps, **kwargs))(b)


def implicit_matvec(loss, params, lam):
    """() -> (v -> v + H v / lam), the Hessian recorded once."""
    def make():
        hessian = hvp.HessianOperator(loss, params)
        return lambda v: [vi + hvi / lam for vi, hvi in zip(v, hessian(v))]
    return make


@pytest.mark.slow
def test_cg_solves_implicit_system_within_dimension_steps():
    with floatx("float64"):
        model = mlp([2, 3, 2], activation="tanh")  # 17 parameters
    fm = FunctionalModel(model, "mse")
    x, y = np.random.randn(8, 2), np.random.randn(8, 2)
    params, state = params_of(model), state_of(model)
    loss = hvp.training_loss(fm, state, x, y)
    H = explicit_hessian(loss, params)
    assert np.allclose(H, H.T, atol=1e-10)
    lam = 2.0 * max(1e-3, -np.linalg.eigvalsh(H).min())  # I + H / lam positive definite
    A = np.eye(len(H)) + H / lam
    g = np.random.randn(len(H))
    exact = np.linalg.solve(A, g)
    b = unflat(g, params)
    matvec = implicit_matvec(loss, params, lam)
    dim = len(H)
    res = run_cg(matvec, b, dim)
    assert np.linalg.norm(flat(res.x) - exact) / np.linalg.norm(exact) < 1e-4
    norms = res.residual_norms.numpy()
    assert norms.shape == (dim + 1,) and abs(norms[0] - np.linalg.norm(g)) < 1e-10
    assert norms[-1] < 1e-4 * norms[0]
    # the same with a tf.while_loop; from the right-hand side as starting point (iMAML)
    res_while = run_cg(matvec, b, tf.constant(dim))
    np.testing.assert_allclose(flat(res_while.x), flat(res.x), rtol=1e-8, atol=1e-12)
    res_x0 = run_cg(matvec, b, tf.constant(dim), x0=b)
    assert np.linalg.norm(flat(res_x0.x) - exact) / np.linalg.norm(exact) < 1e-4
    # damping adds to the diagonal
    res_damped = run_cg(matvec, b, tf.constant(dim), damping=0.5)
    exact_damped = np.linalg.solve(A + 0.5 * np.eye(dim), g)
    assert np.linalg.norm(flat(res_damped.x) - exact_damped) / np.linalg.norm(exact_damped) < 1e-4


def test_cg_steps_equal_number_of_distinct_eigenvalues():
    """Linear least squares on 3 examples: H = 2 X^T X / n has rank 3, so I + H / lambda has 4
    distinct eigenvalues and CG is exact after 4 steps (not before)."""
    with floatx("float64"):
        inputs = keras.Input(shape=(6,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))  # 7 parameters
    fm = FunctionalModel(model, "mse")
    x, y = np.random.randn(3, 6), np.random.randn(3, 1)
    params, state = params_of(model), state_of(model)
    loss = hvp.training_loss(fm, state, x, y)
    H = explicit_hessian(loss, params)
    eig = np.linalg.eigvalsh(np.eye(7) + H / 2.0)
    assert len(np.unique(np.round(eig, 8))) == 4
    g = np.random.randn(7)
    exact = np.linalg.solve(np.eye(7) + H / 2.0, g)
    matvec = implicit_matvec(loss, params, 2.0)
    errors = [np.linalg.norm(flat(run_cg(matvec, unflat(g, params), k).x) - exact) / np.linalg.norm(exact)
              for k in (3, 4)]
    assert errors[0] > 1e-3 and errors[1] < 1e-6


def test_cg_float32_and_degenerate_inputs():
    rng = np.random.RandomState(1)
    q, _ = np.linalg.qr(rng.randn(6, 6))
    A = (q * np.array([1.0, 1.0, 2.0, 2.0, 3.0, 3.0])) @ q.T  # 3 distinct eigenvalues
    A32 = tf.constant(A, tf.float32)

    def matvec(v):  # vectors as a list of two tensors [2, 2] and [2]
        flat_v = tf.concat([tf.reshape(v[0], [-1]), v[1]], 0)
        av = tf.linalg.matvec(A32, flat_v)
        return [tf.reshape(av[:4], [2, 2]), av[4:]]

    g = rng.randn(6).astype(np.float32)
    b = [tf.constant(g[:4].reshape(2, 2)), tf.constant(g[4:])]
    res = run_cg(lambda: matvec, b, 3)
    exact = np.linalg.solve(A, g)
    assert np.linalg.norm(flat(res.x) - exact) / np.linalg.norm(exact) < 1e-4
    # zero right-hand side: zero solution, no NaN; zero steps: x0
    zero = run_cg(lambda: matvec, [tf.zeros([2, 2]), tf.zeros([2])], 3)
    assert np.all(flat(zero.x) == 0) and np.all(np.isfinite(zero.residual_norms.numpy()))
    none = run_cg(lambda: matvec, b, 0, x0=b)
    np.testing.assert_array_equal(flat(none.x), g)
    # an indefinite operator stops the iteration instead of diverging
    neg = run_cg(lambda: lambda v: [-t for t in v], b, 3)
    assert np.all(np.isfinite(flat(neg.x)))


def test_hessian_operator_rejects_unknown_method():
    with pytest.raises(ValueError, match="unknown"):
        hvp.HessianOperator(lambda p: tf.reduce_sum(p[0] ** 2), [tf.ones([2])], "finite_differences")


@pytest.mark.parametrize("unroll", [True, False])
def test_cg_stops_computing_products_once_converged(unroll):
    """A matrix with 2 distinct eigenvalues: CG is exact after 2 steps; with a tolerance the other 8
    of the 10 allowed steps run no product with A (counted inside the compiled function)."""
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(10, 10))
    a = q @ np.diag([1.0] * 5 + [3.0] * 5) @ q.T
    b = rng.randn(10)
    calls = tf.Variable(0)

    def matvec(v):
        calls.assign_add(1)
        return [tf.linalg.matvec(tf.constant(a), v[0])]

    result = tf.function(lambda b: hvp.conjugate_gradient(matvec, [b], 10, tol=1e-10, unroll=unroll))(
        tf.constant(b))
    np.testing.assert_allclose(result.x[0].numpy(), np.linalg.solve(a, b), rtol=1e-8)
    assert int(result.steps) == 2
    assert int(calls.numpy()) == 2
    # without a tolerance every step runs (the residual is rounding noise, never exactly zero)
    calls.assign(0)
    full = tf.function(lambda b: hvp.conjugate_gradient(matvec, [b], 10, tol=0.0, unroll=unroll))(tf.constant(b))
    assert int(full.steps) > 2 and int(calls.numpy()) == int(full.steps)


@pytest.mark.parametrize("unroll", [True, False])
@pytest.mark.parametrize("return_best", [False, True])
def test_cg_residual_is_b_minus_the_damped_product_of_the_returned_x(unroll, return_best):
    """CGResult.residual (the recurrence's r, which TRPO uses for x^T (A + d I) x without another
    product) equals b - (A + d I) x computed with numpy, for the last iterate (positive definite A)
    and for the best one (A with a negative eigenvalue)."""
    rng = np.random.RandomState(3)
    q, _ = np.linalg.qr(rng.randn(12, 12))
    a = q @ np.diag(np.linspace(-0.5 if return_best else 0.5, 4.0, 12)) @ q.T
    b = rng.randn(12)
    damping = 0.1
    result = tf.function(lambda b: hvp.conjugate_gradient(
        lambda v: [tf.linalg.matvec(tf.constant(a), v[0])], [b], 6, damping=damping, return_best=return_best,
        unroll=unroll))(tf.constant(b))
    x = result.x[0].numpy()
    # up to the recurrence's rounding (1e-9 of ||b|| in float64 after 6 steps)
    np.testing.assert_allclose(result.residual[0].numpy(), b - (a + damping * np.eye(12)) @ x, atol=1e-8)
    assert np.linalg.norm(result.residual[0].numpy()) < np.linalg.norm(b)


def test_gauss_newton_product_equals_explicit_jacobians_and_the_hessian_at_a_minimum():
    """G v against J^T C J v from explicit Jacobians (numpy), with outputs that contain a gradient
    step (as MAML's adaptation does); and G v = H v where the output loss is at its minimum."""
    rng = np.random.default_rng(1)
    with floatx("float64"):
        model = mlp([3, 4, 2], activation="tanh", seed=2)
    fm = FunctionalModel(model, "mse")
    state = state_of(model)
    x, y = tf.constant(rng.normal(size=(5, 3))), tf.constant(rng.normal(size=(5, 2)))
    xq = tf.constant(rng.normal(size=(6, 3)))

    def outputs(params):  # one inner SGD step, then the adapted model's outputs on xq
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = fm.loss(params, state, x, y, training=True)
        adapted = [p - 0.3 * g for p, g in zip(params, tape.gradient(loss, params))]
        return model.stateless_call(adapted, state, xq)[0]

    target = tf.constant(rng.normal(size=(6, 2)))
    weights = tf.constant(rng.uniform(0.5, 2.0, size=(6, 2)))

    def output_loss(out):  # curvature C = diag(2 w) in the flattened outputs
        return tf.reduce_sum(weights * tf.square(out - target))

    params = params_of(model)
    v = [tf.constant(rng.normal(size=p.shape)) for p in params]
    got = flat(hvp.gauss_newton_vector_product(outputs, output_loss, params, v))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(params)
        out = outputs(params)
    jacobian = np.concatenate([np.reshape(j.numpy(), (12, -1)) for j in
                               tape.jacobian(out, params, experimental_use_pfor=False)], axis=1)  # [12, P]
    expected = jacobian.T @ (2 * weights.numpy().ravel() * (jacobian @ flat(v)))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
    # at the loss's minimum in the outputs (target = outputs(params)) G v is the Hessian's product
    target = tf.constant(outputs(params).numpy())
    got = flat(hvp.gauss_newton_vector_product(outputs, output_loss, params, v))
    full = flat(hvp.hvp_reverse_over_reverse_recompute(lambda p: output_loss(outputs(p)), params, v))
    np.testing.assert_allclose(got, full, rtol=1e-8, atol=1e-10)
