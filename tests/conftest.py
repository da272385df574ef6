"""Shared test set-up: quiet TensorFlow, the tests folder importable, small fixtures."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from pymeta.config import RunConfig  # noqa: E402

# Start TensorFlow now, with its default thread pools, so that a training run inside a test cannot
# switch this process to its one-thread-per-op layout (pymeta.runtime.thread_layout) and slow
# every later test down.
tf.constant(0)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_sinusoid_run(tmp_path, name="model.h5", **kw):
    """A sinusoid run of a few seconds. Without XLA: what the tests using it check (checkpoints,
    divergence, locks, monitoring) does not depend on it, and its compilation would double each run's
    time; XLA runs are checked by tests/test_resume.py and the README commands."""
    base = dict(jit_compile="off", dataset="sinusoid", metamodel="fomaml", num_train_samples_per_class=10,
                num_test_samples_per_class=20, inner_batch_size=5, inner_lr=0.01, meta_lr=0.003,
                num_inner_training_iterations=3, meta_batch_size=2, num_validation_batches=1,
                test_every_k_iterations=10, save_every_k_iterations=10, iterations_per_call=5,
                num_outer_metatraining_iterations=30, progress=False, tensorboard=False, seed=3,
                model_save_filename=str(tmp_path / name))
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(autouse=True)
def _float32_policy():
    """Every test starts (and leaves) Keras with the float32 policy and floatx."""
    import keras
    keras.mixed_precision.set_global_policy("float32")
    keras.config.set_floatx("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.config.set_floatx("float32")


@pytest.fixture
def image_dataset():
    """A labelled uint8 image dataset: X [20 classes * 10, 16, 16, 1], y [200] (class c: rows 10c..)."""
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (200, 16, 16, 1), dtype=np.uint8)
    y = np.repeat(np.arange(20), 10)
    return X, y


def learnable_images(num_classes=20, per_class=10, size=16, noise=0.3, seed=0):
    """Images whose class is learnable: a fixed random pattern per class plus noise. uint8 [n, s, s, 1]."""
    rng = np.random.RandomState(seed)
    patterns = rng.rand(num_classes, size, size, 1)
    X = patterns[np.repeat(np.arange(num_classes), per_class)]
    X = np.clip(X + noise * rng.randn(*X.shape), 0, 1)
    return (X * 255).astype(np.uint8), np.repeat(np.arange(num_classes), per_class)


def step_by_step_iteration(ml, tasks, steps, batch_size):
    """One meta-iteration through the original API, as a user writes it: for each task task_begin ->
    fit_n_iterations -> task_end, then update with the results."""
    results = []
    for task in tasks:
        ml.task_begin(task)
        task.fit_n_iterations(ml.model, steps, batch_size)
        results.append(ml.task_end(task))
    ml.update(results)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Scheduling for pytest-xdist (`-n auto --dist loadgroup`, set in pytest.ini): the tests of a module
    that share a module-scoped fixture (a training run, a dataset built once) form one xdist group, so
    the fixture is built on one worker only; and slow tests go first (groups holding one with them),
    so that the workers finish together rather than one running a long end-to-end test alone at the
    end. Without xdist only the order changes."""
    def module(item):
        return item.nodeid.split("::")[0]

    def shares_module_fixture(item):
        defs = getattr(item, "_fixtureinfo", None)
        return defs is not None and any(d.scope == "module" for fds in defs.name2fixturedefs.values() for d in fds)

    grouped = {module(item) for item in items if shares_module_fixture(item)}
    for item in items:
        if module(item) in grouped:
            item.add_marker(pytest.mark.xdist_group(module(item)))
    slow_groups = {module(item) for item in items if module(item) in grouped and item.get_closest_marker("slow")}

    def rank(item):
        if module(item) in slow_groups:
            return 0
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per core this process may use (xdist would count physical cores when psutil
    is installed: one on a 2-vCPU machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
