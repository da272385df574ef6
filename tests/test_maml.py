"""Second-order MAML (pymeta.metalearners.maml)."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import step_by_step_iteration
from pymeta.core.task import TaskAsSequenceOfTasks
from pymeta.core.task_data import TaskData
from pymeta.metalearners.fomaml import FOMAMLMetaLearner
from pymeta.metalearners.maml import MAMLMetaLearner
from pymeta.networks import make_omniglot_cnn_model
from second_order_helpers import (ArrayTask, bn_mlp, flat, floatx, mlp, params_of,
                                  pattern_distribution, state_of, unflat)


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)



def central_differences(f, theta, directions, eps):
    """[(f(theta + eps d) - f(theta - eps d)) / (2 eps) for d in directions]."""
    out = []
    for d in directions:
        plus = f([t + eps * di for t, di in zip(theta, d)])
        minus = f([t - eps * di for t, di in zip(theta, d)])
        out.append(float(plus - minus) / (2 * eps))
    return np.array(out)


def maml_objective_and_gradient(ml, task, steps, batch):
    data = task.task_data(steps, batch)
    state = state_of(ml.model)

    @tf.function
    def objective(theta):  # the inner loop run forward; differentiated only by finite differences
        phi, _, _ = ml.adapt(theta, state, data.inner)
        return ml.fmodel.loss(phi, state, *data.query)

    gradient = tf.function(lambda theta: ml.maml_gradient(theta, state, [data])[0])
    return objective, gradient


@pytest.mark.parametrize("inner", ["sgd", "adam"])
def test_maml_gradient_equals_finite_differences_mlp(inner):
    with floatx("float64"):
        model = mlp([1, 8, 1], activation="tanh")  # 25 parameters: every coordinate is checked
    inner_opt = keras.optimizers.SGD(0.1) if inner == "sgd" else keras.optimizers.Adam(0.05, beta_1=0.5)
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=inner_opt, loss="mse")
    x = np.random.uniform(-3, 3, (6, 1))
    qx = np.linspace(-3, 3, 9).reshape(-1, 1)
    task = ArrayTask(x, 2 * np.sin(x + 1), qx, 2 * np.sin(qx + 1))
    objective, gradient = maml_objective_and_gradient(ml, task, steps=3, batch=4)
    theta = params_of(model)
    grad = flat(gradient(theta))
    basis = [unflat(e, theta) for e in np.eye(len(grad))]
    fd = central_differences(objective, theta, basis, 1e-6)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    # the second-order terms matter: FOMAML's gradient is different
    fomaml = FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=inner_opt, loss="mse")
    data = task.task_data(3, -1)
    phi, _, _ = ml.adapt(theta, [], data.inner)
    assert np.linalg.norm(grad - flat(fomaml.task_result(theta, phi, [], data)[0])) > 1e-3


def test_maml_gradient_through_batch_norm_equals_finite_differences():
    with floatx("float64"):
        model = make_omniglot_cnn_model(3, input_shape=(16, 16, 1), filters=4)
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=keras.optimizers.SGD(0.1),
                         loss="sparse_categorical_crossentropy")
    task = ArrayTask(np.random.rand(6, 16, 16, 1), np.repeat(np.arange(3), 2),
                     np.random.rand(6, 16, 16, 1), np.repeat(np.arange(3), 2))
    objective, gradient = maml_objective_and_gradient(ml, task, steps=2, batch=-1)
    theta = params_of(model)
    grad = gradient(theta)
    directions = [[tf.constant(np.random.randn(*t.shape)) for t in theta] for _ in range(3)]
    directional = np.array([float(sum(tf.reduce_sum(g * d) for g, d in zip(grad, dirn)))
                            for dirn in directions])
    # max-pooling/ReLU kinks: a tiny step in float64
    fd = central_differences(objective, theta, directions, 1e-7)
    np.testing.assert_allclose(directional, fd, rtol=1e-5)


def test_dynamic_number_of_steps_equals_unrolled():
    model = mlp([1, 8, 1])
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=keras.optimizers.SGD(0.1),
                         loss="mse")
    x = np.random.uniform(-3, 3, (6, 1)).astype(np.float32)
    idx = np.random.randint(0, 6, (4, 3)).astype(np.int32)
    theta, state = params_of(model), state_of(model)

    def grad(idx):
        inner = (tf.gather(x, idx), tf.gather(np.sin(x), idx))
        return ml.maml_gradient(theta, state, [TaskData((x, np.sin(x)), inner, (x, np.cos(x)))])[0]

    unrolled = tf.function(grad)(idx)
    dynamic = tf.function(grad, input_signature=[tf.TensorSpec([None, None], tf.int32)])(idx)
    np.testing.assert_allclose(flat(dynamic), flat(unrolled), rtol=1e-5, atol=1e-6)


def twin_models(build):
    """Two models with identical initial weights."""
    a, b = build(), build()
    b.set_weights(a.get_weights())
    return a, b


def small_bn_net():
    """Batch norm without the compile time of a conv net (the conv nets are checked by the
    finite-difference tests)."""
    return bn_mlp((6, 6, 1), hidden=12, classes=3)


def compiled(model, lr=0.1):
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    return model


def run_fast(ml, batches, steps, batch_size, seed):
    np.random.seed(seed)
    for tasks in batches:
        ml.metatrain_step(tasks, steps, batch_size)
    return ml.current_initial_parameters


def run_step_by_step(ml, batches, steps, batch_size, seed):
    np.random.seed(seed)
    ml.initialize()
    for tasks in batches:
        step_by_step_iteration(ml, tasks, steps, batch_size)
    return ml.current_initial_parameters


def meta_batches(num, size, **kwargs):
    dist = pattern_distribution(num_classes=12, size=6, batch_size=size, num_ways=3, shots=2, queries=2,
                                **kwargs)
    return [dist.sample_batch() for _ in range(num)]


def test_fast_path_equals_step_by_step():
    m1, m2 = twin_models(small_bn_net)
    initial = [v.numpy() for v in m1.trainable_variables]
    batches = meta_batches(2, 2)
    fast = MAMLMetaLearner(compiled(m1), keras.optimizers.Adam(0.01))
    slow = MAMLMetaLearner(compiled(m2), keras.optimizers.Adam(0.01))
    a = run_fast(fast, copy.deepcopy(batches), 3, 4, seed=5)
    b = run_step_by_step(slow, copy.deepcopy(batches), 3, 4, seed=5)
    np.testing.assert_allclose(flat(a), flat(b), rtol=1e-4, atol=1e-5)
    assert np.abs(flat(a) - flat(initial)).max() > 1e-3  # theta moved
    # the Grappler work-around is scoped to MAML's calls
    assert tf.config.optimizer.get_experimental_options().get("arithmetic_optimization", True)


def test_first_order_equals_fomaml():
    m1, m2 = twin_models(small_bn_net)
    batches = meta_batches(2, 2)
    maml = MAMLMetaLearner(compiled(m1), keras.optimizers.Adam(0.01), first_order=True)
    fomaml = FOMAMLMetaLearner(compiled(m2), keras.optimizers.Adam(0.01))
    np.testing.assert_allclose(flat(run_fast(maml, copy.deepcopy(batches), 3, 4, 1)),
                               flat(run_fast(fomaml, copy.deepcopy(batches), 3, 4, 1)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(flat(run_step_by_step(maml, copy.deepcopy(batches), 3, 4, 2)),
                               flat(run_step_by_step(fomaml, copy.deepcopy(batches), 3, 4, 2)),
                               rtol=1e-6, atol=1e-7)


def test_sequence_of_tasks_replays_every_task():
    model = compiled(mlp([2, 6, 3], out_activation="softmax"), lr=0.2)
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0))
    tasks = [ArrayTask(np.random.randn(6, 2).astype(np.float32), np.arange(6) % 3,
                       np.random.randn(6, 2).astype(np.float32), np.arange(6) % 3) for _ in range(2)]

    class Dist:
        def sample_batch(self, batch_size):
            return tasks[:batch_size]

    seq = TaskAsSequenceOfTasks(Dist(), 2, 2)
    ml.task_begin(seq)
    seq.fit_n_iterations(model, 2, 3)
    got = ml.task_end(seq)
    theta, state = params_of(model), state_of(model)  # any state: no batch norm
    theta = [tf.convert_to_tensor(v) for v in ml.meta_variables]
    recorded = [t.last_fit for t in tasks]  # the batches fit_n_iterations trained on
    expected, _ = tf.function(ml.maml_gradient)(theta, state, recorded)
    np.testing.assert_allclose(flat(got), flat(expected), rtol=1e-5, atol=1e-7)
    # the model still holds the weights after the sequence; task_end did not change them
    ml.update([got])


def test_task_end_needs_a_fitted_task():
    model = compiled(mlp([2, 4, 3], out_activation="softmax"))
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0))
    task = ArrayTask(np.zeros((3, 2), np.float32), np.arange(3), np.zeros((3, 2), np.float32), np.arange(3))
    ml.task_begin(task)
    with pytest.raises(ValueError, match="fit_n_iterations"):
        ml.task_end(task)


def test_xla_compiled_step_equals_plain():
    batches = meta_batches(2, 2)
    out = []
    for jit in (False, True):
        model = compiled(small_bn_net())
        ml = MAMLMetaLearner(model, keras.optimizers.Adam(0.01), jit_compile=jit)
        out.append(flat(run_fast(ml, copy.deepcopy(batches), 3, 4, seed=6)))
    np.testing.assert_allclose(out[1], out[0], rtol=1e-4, atol=1e-5)
