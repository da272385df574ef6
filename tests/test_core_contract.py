"""The objective-agnostic core: one inner loop (`pymeta.inner_loop.adapt`), meta-learners that own
their inner loop (nothing shared through the Keras model), the model's regularisation losses, and a
user-defined task type + objective running through the same loop (what RL tasks build on)."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import optim
from pymeta.core.task import Task
from pymeta.core.task_data import TaskData
from pymeta.inner_loop import adapt
from pymeta.metalearners import FOMAMLMetaLearner, MAMLMetaLearner, ReptileMetaLearner, iMAMLMetaLearner
from second_order_helpers import ArrayTask, flat, floatx, mlp, params_of, pattern_distribution, unflat


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


# --- the model's regularisation losses ---------------------------------------------------------------
def linear_model(l2):
    keras.utils.set_random_seed(1)
    reg = keras.regularizers.L2(l2) if l2 else None
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, kernel_regularizer=reg)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return model


def test_regularisation_losses_enter_the_inner_objective():
    """One SGD step on a Dense layer with L2(100): W <- W - lr (dMSE/dW + 2 * 100 W), by hand."""
    x = np.random.randn(8, 3).astype(np.float32)
    y = np.random.randn(8, 1).astype(np.float32)
    out = {}
    for l2 in (0.0, 100.0):
        model = linear_model(l2)
        w0, b0 = [v.numpy() for v in model.trainable_variables]
        ArrayTask(x, y, x, y).fit_n_iterations(model, 1, -1)
        w1 = model.trainable_variables[0].numpy()
        residual = x @ w0 + b0 - y
        expected = w0 - 0.01 * (2.0 / len(x) * x.T @ residual + 2.0 * l2 * w0)
        np.testing.assert_allclose(w1, expected, rtol=1e-5, atol=1e-6)
        out[l2] = w1
    assert np.abs(out[100.0] - out[0.0]).max() > 1e-2  # the regulariser changes training


# --- meta-learners on one model do not leak into each other -------------------------------------------
def small_net():
    from second_order_helpers import bn_mlp
    model = bn_mlp((6, 6, 1), hidden=12, classes=3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


@pytest.mark.slow
def test_fomaml_after_imaml_on_the_same_model_equals_fomaml_on_a_fresh_copy():
    dist = pattern_distribution(num_classes=12, size=6, batch_size=2, num_ways=3, shots=2, queries=2)
    tasks = dist.sample_batch()
    shared = small_net()
    fresh = small_net()
    fresh.set_weights(shared.get_weights())
    initial = shared.get_weights()
    imaml = iMAMLMetaLearner(shared, keras.optimizers.Adam(0.01), lambda_reg=2.0, n_iters_optimizer=2,
                             inner_mode="proximal", cg_damping=0.0)
    imaml.initialize()
    imaml.metatrain_step(copy.deepcopy(tasks), 3, -1)  # iMAML trains (and traces) on the model first
    shared.set_weights(initial)
    results = {}
    for name, model in (("after_imaml", shared), ("fresh", fresh)):
        for path in ("fast", "step_by_step"):
            model.set_weights(initial)
            ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
            ml.initialize()
            if path == "fast":
                ml.metatrain_step(copy.deepcopy(tasks), 3, -1)
            else:
                res = []
                for task in copy.deepcopy(tasks):
                    ml.task_begin(task)
                    task.fit_n_iterations(model, 3, -1)
                    res.append(ml.task_end(task))
                ml.update(res)
            results[name, path] = flat(ml.current_initial_parameters)
    for path in ("fast", "step_by_step"):
        np.testing.assert_allclose(results["after_imaml", path], results["fresh", path], rtol=1e-6, atol=1e-7)
    # and iMAML's proximal term would have made a difference (the check can fail)
    imaml2 = iMAMLMetaLearner(fresh, keras.optimizers.Adam(0.01), lambda_reg=2.0, n_iters_optimizer=0,
                              inner_mode="proximal", cg_damping=0.0)
    fresh.set_weights(initial)
    imaml2.initialize()
    imaml2.metatrain_step(copy.deepcopy(tasks), 3, -1)
    assert np.abs(flat(imaml2.current_initial_parameters) - results["fresh", "fast"]).max() > 1e-4


def test_a_task_begun_by_one_metalearner_trains_with_its_inner_loop():
    """task_begin binds the task: iMAML's proximal fit differs from the model's plain fit."""
    dist = pattern_distribution(num_classes=12, size=6, batch_size=1, num_ways=3, shots=2, queries=2)
    task = dist.sample_batch()[0]
    model = small_net()
    initial = model.get_weights()
    imaml = iMAMLMetaLearner(model, keras.optimizers.Adam(0.01), lambda_reg=5.0, n_iters_optimizer=0,
                             inner_mode="proximal", cg_damping=0.0)
    imaml.task_begin(task)
    task.fit_n_iterations(model, 5, -1)
    proximal = flat(params_of(model))
    model.set_weights(initial)
    plain_task = copy.deepcopy(task)
    plain_task.learner = None  # the model's own compiled optimizer and loss
    plain_task.fit_n_iterations(model, 5, -1)
    plain = flat(params_of(model))
    assert np.abs(proximal - plain).max() > 1e-3
    # the proximal fit stays closer to theta
    theta = flat(imaml.current_initial_parameters)
    assert np.linalg.norm(proximal - theta) < np.linalg.norm(plain - theta)


# --- a user-defined task type and objective through the same inner loop -------------------------------
class WeightedRegressionTask(Task):
    """A task type pymeta does not know: regression with per-sample weights, batches (x, y, w)."""

    def __init__(self, slope):
        self.slope = slope

    def _batch(self, n):
        x = np.random.uniform(-2, 2, (n, 1))
        return x, self.slope * x, np.random.uniform(0.5, 1.5, (n,))

    def task_data(self, num_iterations, batch_size):
        support = self._batch(6)
        idx = np.stack([np.random.choice(6, 4, replace=False) for _ in range(num_iterations)])
        inner = tuple(a[idx] for a in support)
        return TaskData(support, inner, self._batch(5))


def weighted_objective(model):
    """-> objective(params, state, (x, y, w)) = sum_i w_i (f(x_i) - y_i)^2 / sum_i w_i: not a Keras loss."""
    def objective(params, state, batch):
        x, y, w = batch
        pred, _ = model.stateless_call(params, state, x, training=True)
        return tf.reduce_sum(w * tf.square(pred[:, 0] - y[:, 0])) / tf.reduce_sum(w)
    return objective


def reference_adapt(model, theta, batches, lr):
    """Plain eager gradient descent on the weighted objective, one Python step per batch."""
    params = [tf.Variable(t) for t in theta]
    objective = weighted_objective(model)
    for t in range(len(batches[0])):
        batch = tuple(tf.constant(b[t]) for b in batches)
        with tf.GradientTape() as tape:
            loss = objective(params, [], batch)
        for p, g in zip(params, tape.gradient(loss, params)):
            p.assign_sub(lr * g)
    return [p.numpy() for p in params]


def test_user_objective_adapts_through_the_one_inner_loop():
    with floatx("float64"):
        model = mlp([1, 6, 1], activation="tanh")
    task = WeightedRegressionTask(2.0)
    data = task.task_data(3, 4)
    theta = params_of(model)
    phi, loss, _ = adapt(theta, [], data.inner, weighted_objective(model), optim.sgd(0.1))
    np.testing.assert_allclose(flat(phi), flat(reference_adapt(model, theta, data.inner, 0.1)), rtol=1e-6)
    # the fast path runs it too: Reptile's step is lr * (mean phi - theta), phi from the reference loop
    ml = ReptileMetaLearner(model, keras.optimizers.SGD(0.5), inner_optimizer=optim.sgd(0.1),
                            objective=weighted_objective(model))
    ml.initialize()
    tasks = [WeightedRegressionTask(s) for s in (1.0, -1.0)]
    np.random.seed(5)
    datas = [t.task_data(3, 4) for t in tasks]
    expected_phis = [flat(reference_adapt(model, theta, d.inner, 0.1)) for d in datas]
    np.random.seed(5)
    out = ml.metatrain_step(tasks, 3, 4)
    mean_phi = np.mean(expected_phis, axis=0)
    np.testing.assert_allclose(flat(ml.current_initial_parameters),
                               flat(theta) + 0.5 * (mean_phi - flat(theta)), rtol=1e-6, atol=1e-9)
    assert np.isfinite(out["last_minibatch_loss"])


def test_maml_meta_gradient_through_a_user_objective_equals_finite_differences():
    with floatx("float64"):
        model = mlp([1, 5, 1], activation="tanh")  # 16 parameters: every coordinate is checked
    objective = weighted_objective(model)
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=optim.adam(0.05, beta_1=0.5),
                         objective=objective)
    data = WeightedRegressionTask(1.5).task_data(3, 4)
    theta = params_of(model)
    grads, _ = tf.function(lambda th: ml.maml_gradient(th, [], [data]))(theta)

    def outer(th):  # independent forward computation: reference inner loop (Adam written out)
        params = list(th)
        m = [tf.zeros_like(p) for p in params]
        v = [tf.zeros_like(p) for p in params]
        for t in range(3):
            batch = tuple(tf.constant(b[t]) for b in data.inner)
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = objective(params, [], batch)
            g = tape.gradient(loss, params)
            m = [0.5 * mi + 0.5 * gi for mi, gi in zip(m, g)]
            v = [0.999 * vi + 0.001 * gi * gi for vi, gi in zip(v, g)]
            lr_t = 0.05 * np.sqrt(1 - 0.999 ** (t + 1)) / (1 - 0.5 ** (t + 1))
            params = [p - lr_t * mi / (tf.sqrt(vi) + 1e-7) for p, mi, vi in zip(params, m, v)]
        return float(objective(params, [], tuple(tf.constant(b) for b in data.query)))

    base = flat(theta)
    eps = 1e-6
    fd = np.array([(outer(unflat(base + eps * e, theta)) - outer(unflat(base - eps * e, theta))) / (2 * eps)
                   for e in np.eye(len(base))])
    np.testing.assert_allclose(flat(grads), fd, rtol=1e-5, atol=1e-8)
    # the second-order terms matter here: FOMAML's gradient differs
    phi, _, _ = ml.adapt(theta, [], data.inner)
    fomaml = FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=optim.sgd(0.1),
                               objective=objective)
    assert np.linalg.norm(flat(fomaml.task_result(theta, phi, [], data)[0]) - fd) > 1e-3 * np.linalg.norm(fd)


# --- task data a learner cannot train on: one-line errors before any compiled call ------------------
def test_supervised_data_the_model_cannot_train_on_is_refused():
    dist = pattern_distribution(num_classes=12, size=6, batch_size=2, num_ways=5, shots=1, queries=2)
    tasks = dist.sample_batch()
    from second_order_helpers import bn_mlp
    three_logits = bn_mlp((6, 6, 1), hidden=8, classes=3)
    three_logits.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    ml = FOMAMLMetaLearner(three_logits, keras.optimizers.Adam(0.01))
    with pytest.raises(ValueError, match="labels 0..4 but the model has 3 outputs"):
        ml.metatrain_step(copy.deepcopy(tasks), 1, -1)
    five = bn_mlp((6, 6, 1), hidden=8, classes=5)
    five.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ml = FOMAMLMetaLearner(five, keras.optimizers.Adam(0.01))
    with pytest.raises(ValueError, match="regression loss"):
        ml.evaluate_tasks(copy.deepcopy(tasks), 1, -1)
    with pytest.raises(ValueError, match="regression loss"):
        ml.task_begin(tasks[0])
        tasks[0].fit_n_iterations(five, 1, -1)
    five.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    ml = FOMAMLMetaLearner(five, keras.optimizers.Adam(0.01))
    bad = copy.deepcopy(tasks)
    bad[1].get_train_set = lambda: (np.full((5, 6, 6, 1), np.nan, np.float32), np.arange(5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        ml.metatrain_step(bad, 1, -1)


def test_step_by_step_misuse_is_a_one_line_error_or_works():
    """task_end on a meta-learner never initialised (it used to fail inside TensorFlow's tracing) gives
    what it gives after initialize(); update refuses results that are not task_end's, which it used to
    zip with theta and average into a silently wrong step."""
    dist = pattern_distribution(num_classes=12, size=6, batch_size=2, num_ways=5, shots=1, queries=2)
    task = dist.sample_batch()[0]

    def task_end(initialise):
        from second_order_helpers import bn_mlp
        model = bn_mlp((6, 6, 1), hidden=8, classes=5)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
        if initialise:
            ml.initialize()
        t = copy.deepcopy(task)
        t.fit_n_iterations(model, 1, -1)  # not bound by task_begin: the model's own weights, plain SGD
        return ml, ml.task_end(t)

    ml, lazy = task_end(False)
    _, eager = task_end(True)
    for a, b in zip(lazy, eager):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    theta = [v.numpy() for v in ml.meta_variables]
    n = len(theta)
    for results, message in (([[1.0]], f"the result of task 0 holds 1 tensors for {n} meta-parameters"),
                             ([list(lazy), list(lazy)[::-1]], "tensor 0 of the result of task 1 has shape"),
                             ([list(lazy), [None] * n], "the result of task 1 is not a list of tensors")):
        with pytest.raises(ValueError, match=f"^update: {message}"):
            ml.update(results)
    for before, v in zip(theta, ml.meta_variables):  # nothing applied
        np.testing.assert_array_equal(before, v.numpy())
    ml.update([lazy, eager])
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(theta, ml.meta_variables))


def test_a_model_no_learner_can_adapt_is_refused_when_the_meta_learner_is_built():
    """A string, a Sequential without an Input and a frozen model ended in a misleading error ('no inner
    optimizer') or in TensorFlow's multi-line trace error at the first meta-iteration."""
    with pytest.raises(TypeError, match="^the model must be a keras.Model, got str$"):
        FOMAMLMetaLearner("model", keras.optimizers.Adam(0.01))
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    unbuilt.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with pytest.raises(ValueError, match=r"^the model is not built \(it has no weights yet\): start it with "
                                         r"keras.Input\(shape\)"):
        ReptileMetaLearner(unbuilt, keras.optimizers.Adam(0.01))
    frozen = linear_model(0.0)
    frozen.trainable = False
    with pytest.raises(ValueError, match="^the model has no trainable weights"):
        MAMLMetaLearner(frozen, keras.optimizers.Adam(0.01))
    unbuilt.build((None, 3))  # built: accepted
    assert len(ReptileMetaLearner(unbuilt, keras.optimizers.Adam(0.01)).ensure_initialized()) == 2


# --- the step-by-step API compiles once for any number of steps and any meta-batch size ----------------
def test_step_by_step_traces_once_across_step_counts_and_meta_batch_sizes():
    """fit_in_place leaves the step count T free and update the meta-batch size M: a loop that varies
    both traces each once; Reptile with SGD(1) leaves theta at the mean of the plain-SGD adapted
    weights (an eager reference loop)."""
    rng = np.random.default_rng(0)
    with floatx("float64"):
        model = mlp([2, 5, 1], activation="tanh")
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        reptile = ReptileMetaLearner(model, keras.optimizers.SGD(1.0))
        traces = {"fit": 0, "update": 0}
        for name, attr in (("fit", "_fit_in_place_fn"), ("update", "mean_result_step")):
            fn = getattr(reptile, attr)

            def counted(*args, _fn=fn, _name=name):
                traces[_name] += 1  # runs only while tracing
                return _fn(*args)
            setattr(reptile, attr, counted)
        for steps, meta_batch in ((1, 2), (3, 4), (2, 3)):
            theta = params_of(model)
            phis, results = [], []
            for _ in range(meta_batch):
                x, y = rng.normal(size=(8, 2)), rng.normal(size=(8, 1))
                task = ArrayTask(x, y, x, y)
                reptile.task_begin(task)
                task.fit_n_iterations(model, steps, -1)
                batches = task.last_fit.inner
                phis.append(plain_sgd(model, theta, batches, 0.05))
                np.testing.assert_allclose(flat(params_of(model)), flat(phis[-1]), rtol=1e-6, atol=1e-9)  # lr 0.05 is held in float32
                results.append(reptile.task_end(task))
            reptile.update(results)
            np.testing.assert_allclose(flat(params_of(model)), np.mean([flat(p) for p in phis], axis=0),
                                       rtol=1e-6, atol=1e-9)  # lr 0.05 is held in float32
    assert traces == {"fit": 1, "update": 1}


def plain_sgd(model, theta, batches, lr):
    """Eager SGD on the model's MSE, one Python step per batch of `batches` ((x [T, B, 2], y [T, B, 1]))."""
    params = [tf.Variable(t) for t in theta]
    state = [tf.convert_to_tensor(v) for v in model.non_trainable_variables]
    x, y = batches
    for t in range(len(x)):
        with tf.GradientTape() as tape:
            pred, _ = model.stateless_call(params, state, tf.constant(x[t]), training=True)
            loss = tf.reduce_mean(tf.square(pred - tf.constant(y[t])))
        for p, g in zip(params, tape.gradient(loss, params)):
            p.assign_sub(lr * g)
    return [p.numpy() for p in params]


# --- gradients inside loops in graphs of their own (models with max pooling) ------------------------
def pooling_classifier():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(3, 3, padding="same"),
                              keras.layers.MaxPooling2D(2), keras.layers.ReLU(), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    return model


def test_isolated_gradients_in_the_compiled_loops_equal_a_plain_reference_loop():
    from pymeta.inner_loop import needs_isolated_gradients
    model = pooling_classifier()
    assert needs_isolated_gradients(model) and not needs_isolated_gradients(mlp([1, 4, 1]))
    ml = FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0))
    assert ml.isolate_gradients and not FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0),
                                                          jit_compile=True).isolate_gradients
    ml.initialize()
    rng = np.random.RandomState(0)
    x = rng.rand(2, 3, 4, 6, 6, 1).astype("float32")  # [tasks, steps, batch, ...]
    y = rng.randint(0, 3, (2, 3, 4))
    qx, qy = rng.rand(2, 5, 6, 6, 1).astype("float32"), rng.randint(0, 3, (2, 5))
    data = TaskData(support=(x[:, 0], y[:, 0]), inner=(x, y), query=(qx, qy))
    theta = params_of(model)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def loss_at(params, xb, yb):
        return loss_fn(yb, model.stateless_call(params, [], xb, training=True)[0])

    expected = [tf.zeros_like(t) for t in theta]
    for i in range(2):  # reference: eager tapes, one step after the other
        params = list(theta)
        for t in range(3):
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = loss_at(params, x[i, t], y[i, t])
            params = [p - 0.1 * g for p, g in zip(params, tape.gradient(loss, params))]
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_at(params, qx[i], qy[i])
        expected = [e + g / 2 for e, g in zip(expected, tape.gradient(loss, params))]
    compiled = tf.function(ml._sum_task_results).get_concrete_function(data)  # tasks and steps in loops
    library = compiled.graph.as_graph_def().library.function
    assert sum(f.attr["_noinline"].b for f in library) == 2  # the inner step's and the query's gradient
    total, _ = compiled(data)
    np.testing.assert_allclose(flat(total) / 2, flat(expected), rtol=1e-4, atol=1e-6)

    # still differentiable: through an isolated tf.while_loop of steps as through the unrolled steps
    def query_loss(th, unroll):
        phi, _, _ = ml.adapt(th, [], (tf.constant(x[0]), tf.constant(y[0])), unroll=unroll)
        return loss_at(phi, qx[0], qy[0])

    def outer_gradient(unroll):
        with tf.GradientTape() as tape:
            tape.watch(theta)
            loss = query_loss(theta, unroll)
        return tape.gradient(loss, theta)

    np.testing.assert_allclose(flat(tf.function(lambda: outer_gradient(False))()),
                               flat(outer_gradient(True)), rtol=1e-4, atol=1e-6)
