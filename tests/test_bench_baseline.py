"""The benchmark's baseline (a straightforward compiled Keras 3 loop) does the same meta-update as
pymeta's compiled meta-batch, so the ratios benchmarks/bench_metatrain.py prints compare equal work."""

import os
import sys

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_metatrain as bench  # noqa: E402


def assert_baseline_matches_fast_path(algo, tasks, make_model, inner_batch):
    """One meta-step of the compiled fast path and of the benchmark's Keras baseline loop from the same
    weights: a real step is taken and both give the same parameters."""
    cls, meta_opt = bench.ALGOS[algo]
    models = []
    for _ in range(2):
        keras.utils.set_random_seed(1)
        m = make_model(5)
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="sparse_categorical_crossentropy")
        models.append(m)
    before = [v.numpy() for v in models[0].trainable_variables]
    ml = cls(models[0], meta_opt())
    ml.initialize()
    ml.metatrain_step(tasks, 5, -1)
    bench.KerasLoopBaseline(algo, models[1], meta_opt(), 0.01).meta_step(tasks, 5, inner_batch)
    fast = [v.numpy() for v in models[0].trainable_variables]
    loop = [v.numpy() for v in models[1].trainable_variables]
    assert max(np.abs(f - b).max() for f, b in zip(fast, before)) > 1e-4  # a real step was taken
    for f, b in zip(fast, loop):
        np.testing.assert_allclose(f, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["FOMAML", "Reptile"])
def test_baseline_loop_makes_the_same_meta_update_as_the_fast_path(algo):
    keras.utils.set_random_seed(0)
    tasks = bench.omniglot_like_distribution().sample_batch()
    assert_baseline_matches_fast_path(algo, tasks, bench.make_omniglot_cnn_model, 25)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["FOMAML", "Reptile"])
def test_miniimagenet_shaped_baseline_makes_the_same_meta_update(algo):
    """The same check for the Mini-ImageNet-shaped rows (84x84x3, Conv-4 with 32 filters, 5-way 1-shot,
    meta-batch 4): the baseline's inner batch is the whole 5-image support set."""
    keras.utils.set_random_seed(0)
    tasks = bench.miniimagenet_like_distribution(1).sample_batch()
    assert len(tasks) == 4 and tasks[0].get_train_set()[0].shape == (5, 84, 84, 3)
    assert_baseline_matches_fast_path(algo, tasks, bench.make_miniimagenet_cnn_model, 5)
