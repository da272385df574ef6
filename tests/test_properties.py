"""Property-based tests: any arguments give either a valid task / batch or a clear ValueError,
never an IndexError, another exception or a hang."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymeta.core.task import ClassificationTask
from pymeta.core.task_distribution import TaskDistribution

SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datasets(draw):
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8))
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    perm = np.random.RandomState(draw(st.integers(0, 1000))).permutation(len(y))
    y = y[perm]
    X = np.arange(len(y), dtype=np.float32)[:, None]  # X[i] = i tells which row a sample is
    return X, y, sizes


@SETTINGS
@given(data=datasets(), K=st.integers(-2, 14), Q=st.integers(-2, 14), N=st.integers(-2, 10),
       split=st.one_of(st.floats(-1.0, 1.5, allow_nan=False), st.just(-1.0)), seed=st.integers(0, 100))
def test_classification_task_valid_or_value_error(data, K, Q, N, split, seed):
    X, y, sizes = data
    np.random.seed(seed)
    try:
        task = ClassificationTask(X, y, K, Q, N, split_train_test=split)
    except ValueError as e:
        assert str(e)
        return
    for _ in range(3):
        task.reset()
        tx, ty = task.get_train_set()
        qx, qy = task.get_test_set()
        n_classes = N if N > 0 else len(sizes)
        assert len(task.classes_ids) == n_classes
        assert set(ty.tolist()) <= set(range(n_classes)) and set(qy.tolist()) <= set(range(n_classes))
        train_rows, test_rows = set(tx[:, 0].astype(int)), set(qx[:, 0].astype(int))
        assert not train_rows & test_rows
        if K > 0:
            assert np.bincount(ty, minlength=n_classes).tolist() == [K] * n_classes
        if Q > 0:
            assert np.bincount(qy, minlength=n_classes).tolist() == [Q] * n_classes
        np.testing.assert_array_equal(y[tx[:, 0].astype(int)], np.asarray(task.classes_ids)[ty])


@SETTINGS
@given(data=datasets(), probs=st.lists(st.floats(-1.0, 5.0, allow_nan=False), min_size=0, max_size=4),
       batch=st.integers(-1, 6), replace=st.booleans(), once=st.booleans(), seed=st.integers(0, 100))
def test_task_distribution_valid_or_value_error(data, probs, batch, replace, once, seed):
    X, y, sizes = data
    np.random.seed(seed)
    try:
        task = ClassificationTask(X, y, 1, 1, 1, split_train_test=0.5)
    except ValueError:
        return  # some class has a single example: covered above
    tasks = [task] * max(1, len(probs))
    try:
        dist = TaskDistribution(tasks, probs or [1.0], batch_size=max(batch, 1),
                                sample_with_replacement=replace, use_classes_only_once=once)
        out = dist.sample_batch(batch if batch != 0 else None)
    except ValueError as e:
        assert str(e)
        return
    assert len(out) == (batch if batch > 0 else max(batch, 1))
    if replace and once:
        classes = [c for t in out for c in t.classes_ids]
        assert len(classes) == len(set(classes))
