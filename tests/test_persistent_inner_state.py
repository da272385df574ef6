"""The inner optimizer state kept from task to task (`persistent_inner_state`, the original Reptile
code's Adam): carried task after task in both APIs, untouched by evaluation, saved with checkpoints and
models, used by the meta-test script."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import step_by_step_iteration
from pymeta import optim
from pymeta.core.task import ClassificationTask
from pymeta.core.task_distribution import TaskDistribution
from pymeta.metalearners import MAMLMetaLearner, ReptileMetaLearner
from pymeta.networks import make_omniglot_cnn_model, make_sinusoid_model
from test_metalearners import assert_lists_close

ADAM = dict(learning_rate=0.01, beta_1=0.0)


def tiny_reptile(persistent=True, seed=0):
    keras.utils.set_random_seed(seed)
    model = make_omniglot_cnn_model(3, input_shape=(16, 16, 1), filters=8)
    model.compile(optimizer=keras.optimizers.Adam(**ADAM), loss="sparse_categorical_crossentropy")
    ml = ReptileMetaLearner(model, keras.optimizers.SGD(0.5), persistent_inner_state=persistent)
    ml.initialize()
    return ml


def task_distribution(image_dataset, batch_size=3, seed=7):
    X, y = image_dataset
    np.random.seed(seed)
    return TaskDistribution([ClassificationTask(X, y, 2, 3, 3, split_train_test=-1)], [1.0], batch_size)


def kept(ml):
    return [v.numpy() for v in ml.inner_state.variables]


def test_state_goes_from_task_to_task_and_reptile_uses_the_adapted_weights(image_dataset):
    """Reference: the same Adam run task after task in eager mode, one state threaded through."""
    ml = tiny_reptile()
    theta = ml.current_initial_parameters
    tasks = task_distribution(image_dataset).sample_batch()
    opt = optim.adam(**ADAM)
    fm = ml.fmodel
    state, adapted = opt.init([tf.constant(t) for t in theta]), []
    for task in tasks:
        x, y = task.get_train_set()
        params = [tf.constant(t) for t in theta]
        for _ in range(2):
            _, grads = fm.loss_and_grad(params, fm.read_state(), tf.constant(x), tf.constant(y))
            updates, state = opt.update(grads, state, params)
            params = optim.apply_updates(params, updates)
        adapted.append([p.numpy() for p in params])
    ml.metatrain_step(tasks, 2, -1)
    assert kept(ml)[0] == 6.0  # Adam's step count: 3 tasks x 2 steps, not reset per task
    assert_lists_close(kept(ml), tf.nest.flatten(state), rtol=1e-4, atol=1e-7)
    mean_phi = [np.mean(p, axis=0) for p in zip(*adapted)]
    assert_lists_close(ml.current_initial_parameters, [t - 0.5 * (t - p) for t, p in zip(theta, mean_phi)],
                       rtol=1e-4, atol=1e-6)
    # without the option every task starts fresh: another update, and no state kept
    fresh = tiny_reptile(persistent=False)
    fresh.metatrain_step(tasks, 2, -1)
    assert fresh.inner_state is None
    assert not np.allclose(fresh.current_initial_parameters[0], ml.current_initial_parameters[0])


def test_fast_path_equals_step_by_step_with_kept_state(image_dataset):
    finals = []
    for fast in (True, False):
        ml = tiny_reptile(seed=3)
        dist = task_distribution(image_dataset, batch_size=3, seed=8)
        for _ in range(3):
            tasks = dist.sample_batch()
            if fast:
                ml.metatrain_step(tasks, 3, 4)
            else:
                step_by_step_iteration(ml, tasks, 3, 4)
        finals.append((ml.current_initial_parameters, kept(ml)))
    assert_lists_close(finals[0][0], finals[1][0], rtol=1e-4, atol=1e-5)
    assert_lists_close(finals[0][1], finals[1][1], rtol=1e-3, atol=1e-6)  # Adam state: m = g, v = g^2


def test_evaluation_starts_from_the_kept_state_without_changing_it(image_dataset):
    ml = tiny_reptile()
    dist = task_distribution(image_dataset, batch_size=4)
    for _ in range(3):
        ml.metatrain_step(dist.sample_batch(), 3, -1)
    before = kept(ml)
    tasks = dist.sample_batch()
    losses, _ = ml.evaluate_tasks(tasks, 3, -1)
    assert_lists_close(kept(ml), before, rtol=0, atol=0)
    # validation through the step-by-step API (fit_n_iterations writes the state) restores it after
    from pymeta.evaluation import validate
    validate(ml, dist, 1, 3, -1, fast=False)
    assert_lists_close(kept(ml), before, rtol=0, atol=0)
    # the same evaluation from a fresh Adam state (first steps of +-lr) gives other losses
    saved = kept(ml)
    for v in ml.inner_state.variables:
        v.assign(tf.zeros_like(v))
    fresh_losses, _ = ml.evaluate_tasks(tasks, 3, -1)
    for v, value in zip(ml.inner_state.variables, saved):
        v.assign(value)
    assert np.abs(np.asarray(losses) - np.asarray(fresh_losses)).max() > 1e-4


def test_only_for_the_shared_inner_loop():
    model = make_sinusoid_model()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    with pytest.raises(ValueError, match="persistent_inner_state"):
        MAMLMetaLearner(model, keras.optimizers.Adam(0.001), persistent_inner_state=True)
    from pymeta.config import RunConfig, check_config
    with pytest.raises(ValueError, match="persistent_inner_state"):
        check_config(RunConfig(metamodel="imaml", persistent_inner_state=True))
    with pytest.raises(ValueError, match=r"\.h5"):
        check_config(RunConfig(metamodel="reptile", persistent_inner_state=True,
                               model_save_filename="m.keras"))


@pytest.mark.slow
def test_model_file_checkpoint_and_meta_test_carry_the_state(tmp_path):
    """A sinusoid Reptile run with the option: the .h5 model and the checkpoint hold the kept state;
    meta_test.py adapts from it (and from zero with --fresh_inner_state)."""
    from pymeta import checkpoint as ckpt
    from pymeta.config import RunConfig
    from pymeta.model_io import load_inner_state
    from pymeta.training import metatrain
    model_file = tmp_path / "model.h5"
    metatrain(RunConfig(dataset="sinusoid", metamodel="reptile", num_train_samples_per_class=10,
                        num_test_samples_per_class=20, inner_batch_size=10, inner_lr=0.01, meta_lr=1.0,
                        num_outer_metatraining_iterations=20, test_every_k_iterations=20,
                        save_every_k_iterations=20, num_validation_batches=1, persistent_inner_state=True,
                        model_save_filename=str(model_file), progress=False, tensorboard=False))
    saved = load_inner_state(model_file)
    assert saved is not None and float(saved[0]) == 20 * 5 * 5  # iterations x tasks x inner steps
    assert all(np.abs(a).sum() > 0 for a in saved[1:])
    # the checkpoint restores it into a fresh meta-learner
    keras.utils.set_random_seed(0)
    model = make_sinusoid_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01, beta_1=0.0), loss="mse")
    ml = ReptileMetaLearner(model, keras.optimizers.SGD(1.0), persistent_inner_state=True)
    ml.initialize()
    ckpt.load_checkpoint(ckpt.latest_checkpoint(str(tmp_path / "model.h5_run")), ml)
    assert_lists_close(kept(ml), saved, rtol=0, atol=0)

    from pymeta.cli.metatest import parse_args
    from pymeta.evaluation import meta_test as run_meta_test

    def meta_test(*extra):
        args = parse_args(["--model", str(model_file), "--dataset", "sinusoid", "--metamodel", "reptile",
                                  "--num_train_samples_per_class", "10", "--num_test_samples_per_class", "20",
                                  "--inner_lr", "0.01", "--num_tasks", "10", "--batch", "10",
                                  "--num_inner_iterations", "5", *extra])
        return run_meta_test(args)

    with_state, fresh = meta_test(), meta_test("--fresh_inner_state")
    assert with_state["inner_optimizer_state"] == "saved with the model"
    assert fresh["inner_optimizer_state"] == "fresh per task"
    assert abs(with_state["mean"] - fresh["mean"]) > 1e-6
    with pytest.raises(ValueError, match="does not fit"):
        meta_test("--inner_optimizer", "sgd")
