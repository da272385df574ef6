"""FOMAML and Reptile: meta-gradients checked against independent computations, the fast path
against the step-by-step API, and learning on sinusoid."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import step_by_step_iteration
from pymeta import optim
from pymeta.core.task import ClassificationTask
from pymeta.core.task_distribution import TaskDistribution
from pymeta.metalearners import FOMAMLMetaLearner, ReptileMetaLearner
from pymeta.networks import make_omniglot_cnn_model, make_sinusoid_model
from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution


def tiny_cnn(inner):
    model = make_omniglot_cnn_model(3, input_shape=(16, 16, 1), filters=8)
    model.compile(optimizer=inner, loss="sparse_categorical_crossentropy")
    return model


def manual_adapt(model, weights, x, y, steps, lr):
    """Plain-Keras SGD on the whole support set: an independent implementation of the inner loop."""
    for v, w in zip(model.trainable_variables, weights):
        v.assign(w)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True)))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads):
            v.assign_sub(lr * g)
    return [v.numpy() for v in model.trainable_variables]


def manual_query_grad(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True)))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def sample_tasks(image_dataset, n, seed=0):
    X, y = image_dataset
    np.random.seed(seed)
    return TaskDistribution([ClassificationTask(X, y, 2, 3, 3, split_train_test=-1)], [1.0], n).sample_batch()


def assert_lists_close(a, b, rtol=1e-4, atol=1e-6):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def test_fomaml_meta_gradient_is_query_gradient_at_adapted_weights(image_dataset):
    keras.utils.set_random_seed(0)
    model = tiny_cnn(keras.optimizers.SGD(0.1))
    ml = FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0))
    ml.initialize()
    theta = ml.current_initial_parameters
    tasks = sample_tasks(image_dataset, 3)
    results, expected = [], []
    for task in tasks:
        ml.task_begin(task)
        task.fit_n_iterations(model, 3, -1)
        results.append([r.numpy() for r in ml.task_end(task)])
        # independent: plain Keras adaptation, then the query gradient
        reference = tiny_cnn(keras.optimizers.SGD(0.1))
        manual_adapt(reference, theta, *task.get_train_set(), steps=3, lr=0.1)
        expected.append(manual_query_grad(reference, *task.get_test_set()))
    for r, e in zip(results, expected):
        assert_lists_close(r, e)
    ml.update(results)
    mean = [np.mean(g, axis=0) for g in zip(*expected)]
    assert_lists_close(ml.current_initial_parameters, [t - 1.0 * g for t, g in zip(theta, mean)])
    # the model is left at the new theta
    assert_lists_close([v.numpy() for v in model.trainable_variables], ml.current_initial_parameters)


def test_reptile_update_is_lr_times_initial_minus_mean_adapted(image_dataset):
    keras.utils.set_random_seed(1)
    model = tiny_cnn(keras.optimizers.SGD(0.1))
    lr = 0.3
    ml = ReptileMetaLearner(model, keras.optimizers.SGD(lr))
    ml.initialize()
    theta = ml.current_initial_parameters
    tasks = sample_tasks(image_dataset, 4, seed=1)
    reference = tiny_cnn(keras.optimizers.SGD(0.1))
    adapted = [manual_adapt(reference, theta, *t.get_train_set(), steps=4, lr=0.1) for t in tasks]
    ml.metatrain_step(tasks, 4, -1)
    mean_phi = [np.mean(p, axis=0) for p in zip(*adapted)]
    expected = [t - lr * (t - p) for t, p in zip(theta, mean_phi)]
    assert_lists_close(ml.current_initial_parameters, expected)


@pytest.mark.parametrize("cls,inner", [(FOMAMLMetaLearner, "sgd"), (ReptileMetaLearner, "adam")])
def test_fast_path_equals_step_by_step(image_dataset, cls, inner):
    finals = []
    for fast in (True, False):
        keras.utils.set_random_seed(2)
        opt = keras.optimizers.SGD(0.1) if inner == "sgd" else keras.optimizers.Adam(0.01, beta_1=0.0)
        model = tiny_cnn(opt)
        ml = cls(model, keras.optimizers.Adam(0.01))
        ml.initialize()
        X, y = image_dataset
        np.random.seed(7)
        dist = TaskDistribution([ClassificationTask(X, y, 2, 3, 3, split_train_test=-1)], [1.0], 4)
        for _ in range(3):
            tasks = dist.sample_batch()
            if fast:
                ml.metatrain_step(tasks, 3, 4)  # random minibatches of 4 out of 6
            else:
                step_by_step_iteration(ml, tasks, 3, 4)
        finals.append(ml.current_initial_parameters)
    assert_lists_close(finals[0], finals[1], rtol=1e-4, atol=1e-5)


def test_several_meta_batches_per_call_equal_one_per_call():
    finals = []
    for per_call in (1, 3):
        keras.utils.set_random_seed(0)
        np.random.seed(0)
        model = make_sinusoid_model()
        model.compile(optimizer=keras.optimizers.Adam(0.01, beta_1=0.0), loss="mse")
        ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
        ml.initialize()
        tr, _, _ = create_sinusoid_task_distribution(batch_size=4)
        batches = [tr.sample_batch() for _ in range(6)]
        for i in range(0, 6, per_call):
            ml.metatrain_steps(batches[i:i + per_call], 3, 5)
        finals.append(ml.current_initial_parameters)
    assert_lists_close(finals[0], finals[1], rtol=1e-5, atol=1e-6)


def test_inner_adam_matches_keras_adam():
    rng = np.random.RandomState(0)
    params = [rng.randn(3, 2).astype(np.float32), rng.randn(2).astype(np.float32)]
    grads_seq = [[rng.randn(*p.shape).astype(np.float32) for p in params] for _ in range(4)]
    for beta_1 in (0.0, 0.9):
        keras_vars = [tf.Variable(p) for p in params]
        kopt = keras.optimizers.Adam(0.05, beta_1=beta_1)
        ours = optim.from_keras(kopt)
        p, state = [tf.constant(x) for x in params], ours.init(params)
        for g in grads_seq:
            kopt.apply_gradients(zip([tf.constant(x) for x in g], keras_vars))
            updates, state = ours.update([tf.constant(x) for x in g], state, p)
            p = optim.apply_updates(p, updates)
        assert_lists_close([v.numpy() for v in keras_vars], [x.numpy() for x in p], rtol=1e-5)


def test_unsupported_inner_optimizer():
    with pytest.raises(ValueError, match="momentum"):
        optim.from_keras(keras.optimizers.SGD(0.1, momentum=0.9))
    with pytest.raises(ValueError, match="unsupported inner optimizer"):
        optim.from_keras(keras.optimizers.RMSprop(0.1))


def test_uncompiled_model_gives_a_clear_error():
    with pytest.raises(ValueError, match="inner optimizer"):
        FOMAMLMetaLearner(make_sinusoid_model(), keras.optimizers.Adam())


def sinusoid_mse_after_adaptation(ml, tasks, steps):
    losses, _ = ml.evaluate_tasks(tasks, steps, 10)
    return float(np.mean(losses))


@pytest.mark.slow
@pytest.mark.parametrize("cls,meta_opt", [(FOMAMLMetaLearner, lambda: keras.optimizers.Adam(0.001)),
                                          (ReptileMetaLearner, lambda: keras.optimizers.SGD(1.0))])
def test_metatraining_on_sinusoid_helps(cls, meta_opt):
    keras.utils.set_random_seed(0)
    np.random.seed(0)
    model = make_sinusoid_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01, beta_1=0.0), loss="mse")
    ml = cls(model, meta_opt(), jit_compile=True)
    ml.initialize()
    tr, va, _ = create_sinusoid_task_distribution(num_training_samples=10, num_test_samples=100, batch_size=5)
    val_tasks = va.sample_batch(100)
    random_init = sinusoid_mse_after_adaptation(ml, val_tasks, 5)
    for _ in range(150):
        ml.metatrain_steps([tr.sample_batch() for _ in range(10)], 5, 10)
    learnt = sinusoid_mse_after_adaptation(ml, val_tasks, 5)
    # same inner loop (5 Adam steps on 10 points), same 100 tasks
    assert learnt < 0.5 * random_init, (learnt, random_init)


def test_non_transductive_evaluation_is_per_example(image_dataset):
    keras.utils.set_random_seed(0)
    model = tiny_cnn(keras.optimizers.SGD(0.1))
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam())
    ml.initialize()
    task = sample_tasks(image_dataset, 1)[0]
    steps = ml.fmodel
    theta, state = steps.read_params(), steps.read_state()
    sx, _ = task.get_train_set()
    qx, qy = task.get_test_set()
    _, support_state = steps.forward(theta, state, tf.constant(sx), training=True)
    whole, _ = steps.forward(theta, support_state, tf.constant(qx), training=False)
    part, _ = steps.forward(theta, support_state, tf.constant(qx[:2]), training=False)
    np.testing.assert_allclose(whole.numpy()[:2], part.numpy(), rtol=1e-5, atol=1e-6)
    # transductive predictions depend on the other query examples
    t_whole, _ = steps.forward(theta, state, tf.constant(qx), training=True)
    t_part, _ = steps.forward(theta, state, tf.constant(qx[:2]), training=True)
    assert not np.allclose(t_whole.numpy()[:2], t_part.numpy(), atol=1e-4)
    out_t = task.evaluate(model, transductive=True)
    out_n = task.evaluate(model, transductive=False)
    assert set(out_t) == {"loss", "sparse_categorical_accuracy"} and out_t["loss"] != out_n["loss"]


def test_mixed_bfloat16_meta_step(image_dataset):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    model = tiny_cnn(keras.optimizers.SGD(0.1))
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
    ml.initialize()
    before = ml.current_initial_parameters
    out = ml.metatrain_step(sample_tasks(image_dataset, 2), 2, -1)
    assert np.isfinite(out["last_minibatch_loss"])
    assert all(p.dtype == np.float32 for p in ml.current_initial_parameters)
    assert any(not np.allclose(a, b) for a, b in zip(before, ml.current_initial_parameters))
