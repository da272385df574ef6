"""Sampling invariants of ClassificationTask, TaskDistribution and sequences of tasks."""

import copy

import numpy as np
import pytest

from pymeta.core.task import ClassificationTask, ClassificationTaskFromFiles, TaskAsSequenceOfTasks
from pymeta.core.task_distribution import TaskAsSequenceOfTasksDistribution, TaskDistribution
from pymeta.tasks.sinusoid_tasks import SinusoidTask, create_sinusoid_task_distribution


@pytest.mark.parametrize("N,K,Q", [(5, 1, 3), (3, 4, 2), (20, 2, 8)])
def test_classification_task_invariants(image_dataset, N, K, Q):
    X, y = image_dataset
    np.random.seed(0)
    task = ClassificationTask(X, y, K, Q, N, split_train_test=-1)
    for _ in range(5):
        task.reset()
        tx, ty = task.get_train_set()
        qx, qy = task.get_test_set()
        assert tx.shape == (N * K, 16, 16, 1) and qx.shape == (N * Q, 16, 16, 1)
        assert tx.dtype == np.float32 and 0.0 <= tx.min() and tx.max() <= 1.0
        assert sorted(np.bincount(ty, minlength=N)) == [K] * N
        assert sorted(np.bincount(qy, minlength=N)) == [Q] * N
        assert set(ty) == set(range(N)) and set(qy) == set(range(N))
        assert not set(task.train_indices) & set(task.test_indices)
        assert len(set(task.classes_ids)) == N
        # relabelling is consistent: label i is original class classes_ids[i]
        for rows, labels in ((task.train_indices, ty), (task.test_indices, qy)):
            np.testing.assert_array_equal(y[rows], np.asarray(task.classes_ids)[labels])
        np.testing.assert_allclose(tx, X[task.train_indices] / 255.0, rtol=1e-6)


def test_classification_task_all_classes_and_split(image_dataset):
    X, y = image_dataset
    task = ClassificationTask(X, y, split_train_test=0.8)  # all classes, all instances
    assert len(task.classes_ids) == 20
    assert len(task.train_indices) == 20 * 8 and len(task.test_indices) == 20 * 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_training_classes=21), "21 classes per task requested, but only 20"),
    (dict(num_training_samples_per_class=8, num_test_samples_per_class=3, split_train_test=-1),
     "smallest class has 10 examples"),
    (dict(num_training_samples_per_class=9, split_train_test=0.8), "cannot draw 9 train"),
    (dict(num_training_samples_per_class=0), "samples per class"),
    (dict(num_training_classes=0), "num_training_classes"),
    (dict(split_train_test=1.5), "split_train_test"),
    (dict(split_train_test=-1), "needs both"),
])
def test_classification_task_bad_requests(image_dataset, kwargs, match):
    X, y = image_dataset
    with pytest.raises(ValueError, match=match):
        ClassificationTask(X, y, **kwargs)


def test_classification_task_bad_arrays(image_dataset):
    X, y = image_dataset
    with pytest.raises(ValueError, match="same length"):
        ClassificationTask(X[:-1], y)
    with pytest.raises(ValueError, match="integers"):
        ClassificationTask(X, y.astype(np.float32))
    with pytest.raises(ValueError, match="1-D"):
        ClassificationTask(X, y[:, None])


def test_inner_batches(image_dataset):
    X, y = image_dataset
    np.random.seed(1)
    task = ClassificationTask(X, y, 3, 2, 4, split_train_test=-1)
    full = task.inner_batch_indices(5, -1)
    assert full.shape == (5, 12) and (full == np.arange(12)).all()
    mini = task.inner_batch_indices(4, 5)
    assert mini.shape == (4, 5) and all(len(set(r)) == 5 for r in mini) and mini.max() < 12
    bx, by = task.sample_batch(6)
    assert bx.shape == (6, 16, 16, 1) and by.shape == (6,)
    with pytest.raises(ValueError, match="inner batch size 13"):
        task.inner_batch_indices(1, 13)


def test_task_distribution_probabilities_and_copies(image_dataset):
    X, y = image_dataset
    a = ClassificationTask(X, y, 1, 1, 2, split_train_test=-1)
    b = ClassificationTask(X[:100], y[:100], 1, 1, 3, split_train_test=-1)
    dist = TaskDistribution([a, b], [3, 1], batch_size=4)
    assert dist.task_probabilities == [0.75, 0.25]
    np.random.seed(0)
    counts = {2: 0, 3: 0}
    for _ in range(500):
        batch = dist.sample_batch()
        assert len(batch) == 4
        for t in batch:
            counts[len(t.classes_ids)] += 1
            assert t is not a and t is not b
            assert t.X is a.X or t.X is b.X  # shared, never copied
            assert np.shares_memory(t.X, X)
    assert abs(counts[2] / 2000 - 0.75) < 0.03
    # two copies of the same prototype are independent problems
    batch = TaskDistribution([a], [1.0], batch_size=2).sample_batch()
    assert batch[0].classes_ids != batch[1].classes_ids or \
        not np.array_equal(batch[0].train_indices, batch[1].train_indices)
    assert dist.get_num_tasks() == 2 and dist.get_task_by_index(1) is b


def test_task_distribution_classes_only_once(image_dataset):
    X, y = image_dataset
    dist = TaskDistribution([ClassificationTask(X, y, 1, 1, 5, split_train_test=-1)], [1.0], batch_size=4,
                            use_classes_only_once=True)
    np.random.seed(3)
    for _ in range(20):
        classes = [c for t in dist.sample_batch() for c in t.classes_ids]
        assert len(classes) == len(set(classes)) == 20


def test_task_distribution_errors(image_dataset):
    X, y = image_dataset
    t = ClassificationTask(X, y, 1, 1, 2, split_train_test=-1)
    with pytest.raises(ValueError, match="use_classes_only_once needs tasks that draw classes.*SinusoidTask"):
        TaskDistribution([t, SinusoidTask()], [1.0, 1.0], use_classes_only_once=True)
    with pytest.raises(ValueError, match="probabilities"):
        TaskDistribution([t], [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        TaskDistribution([t], [-1.0])
    with pytest.raises(ValueError, match="at least one task"):
        TaskDistribution([], [])
    with pytest.raises(ValueError, match="without replacement"):
        TaskDistribution([t], [1.0], sample_with_replacement=False).sample_batch(2)
    with pytest.raises(IndexError):
        TaskDistribution([t], [1.0]).get_task_by_index(1)


def test_deepcopy_shares_dataset(image_dataset):
    X, y = image_dataset
    t = ClassificationTask(X, y, 2, 2, 3, split_train_test=-1)
    c = copy.deepcopy(t)
    assert c.X is t.X and c.y is t.y
    c.reset()
    assert c.train_indices is not t.train_indices


def test_sinusoid_task():
    np.random.seed(0)
    t = SinusoidTask(num_training_samples=7, num_test_samples=50)
    x, y = t.get_train_set()
    qx, qy = t.get_test_set()
    assert x.shape == (7, 1) and qx.shape == (50, 1) and x.dtype == np.float32
    assert 0.1 <= t.amplitude <= 5.0 and 0.0 <= t.phase <= np.pi
    np.testing.assert_allclose(qx[:, 0], np.linspace(-5, 5, 50), rtol=1e-6)
    np.testing.assert_allclose(y, t.amplitude * np.sin(x + t.phase), rtol=1e-5, atol=1e-6)
    tr, va, te = create_sinusoid_task_distribution(batch_size=3)
    batch = tr.sample_batch()
    assert len(batch) == 3 and len({b.amplitude for b in batch}) == 3


def test_task_from_files(tmp_path, image_dataset):
    X, y = image_dataset
    names = []
    for i in range(60):
        p = tmp_path / f"{i}.npy"
        np.save(p, X[i])
        names.append(str(p))
    task = ClassificationTaskFromFiles(names, y[:60], 2, 3, 4, split_train_test=-1, input_parse_fn=np.load)
    tx, ty = task.get_train_set()
    assert tx.shape == (8, 16, 16, 1)
    np.testing.assert_allclose(tx, X[task.train_indices] / 255.0, rtol=1e-6)


def test_sequence_of_tasks(image_dataset):
    X, y = image_dataset
    dist = TaskDistribution([ClassificationTask(X, y, 1, 1, 2, split_train_test=-1)], [1.0])
    np.random.seed(0)
    seq = TaskAsSequenceOfTasks(dist, 2, 4)
    lengths = set()
    for _ in range(30):
        seq.reset()
        lengths.add(seq.get_sequence_length())
    assert lengths == {2, 3, 4}
    assert seq.get_test_set()[0].shape == (2, 16, 16, 1)
    seqs = TaskAsSequenceOfTasksDistribution(seq, batch_size=3).sample_batch()
    assert len(seqs) == 3 and all(isinstance(s, TaskAsSequenceOfTasks) for s in seqs)
    with pytest.raises(ValueError):
        TaskAsSequenceOfTasks(dist, 3, 2)
