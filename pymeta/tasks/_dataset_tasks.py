"""Helpers shared by the Omniglot and Mini-ImageNet task builders."""

import numpy as np

from pymeta.core.task import ClassificationTask
from pymeta.core.task_distribution import TaskDistribution, as_count


def check_counts(K, Q, N, meta_batch_size):
    """The usual N-way K-shot counts as ints: K, Q, N >= 1 or -1 (all), meta_batch_size >= 1; a
    non-integer (e.g. 2.7) raises ValueError instead of being truncated."""
    return (as_count(K, "num_training_samples_per_class", allow_all=True),
            as_count(Q, "num_test_samples_per_class", allow_all=True),
            as_count(N, "num_training_classes", allow_all=True),
            as_count(meta_batch_size, "meta_batch_size"))


def check_flag(value, name):
    """None / True / False (also numpy booleans): anything else raises ValueError."""
    if value is None or isinstance(value, (bool, np.bool_)):
        return value if value is None else bool(value)
    raise ValueError(f"{name} must be True, False or None, got {value!r:.80}")


def split_by_label(X, y):
    """[X[y == label] for label in np.unique(y)] in O(n log n) (one stable sort instead of a pass per label)."""
    y = np.asarray(y)
    order = np.argsort(y, kind="stable")
    bounds = np.flatnonzero(np.diff(y[order])) + 1
    return [X[rows] for rows in np.split(order, bounds)] if len(y) else []


def split_for(K, Q, class_size):
    """`split_train_test` for K train + Q test examples per class, classes having >= `class_size` examples.

    K, Q >= 1: -1 (the task uses K / (K + Q), as the original pyMeta). Q == -1 ("all the rest"):
    K / class_size, so the train part holds exactly K examples. K == -1: the train part holds all but Q.
    Both -1: half and half.
    """
    if K >= 1 and Q >= 1:
        return -1
    if K >= 1:
        return K / class_size
    if Q >= 1:
        return (class_size - Q) / class_size
    return 0.5


def distribution(X, y, K, Q, N, split, meta_batch_size, use_classes_only_once):
    """One-task TaskDistribution over ClassificationTask(X uint8 [n, ...], y int [n])."""
    task = ClassificationTask(X, y, K, Q, N, split_train_test=split)
    return TaskDistribution([task], [1.0], batch_size=meta_batch_size, sample_with_replacement=True,
                            use_classes_only_once=use_classes_only_once)


def classes_only_once(flag, N, meta_batch_size, num_classes):
    """Resolve `use_classes_only_once=None` (auto): on if a meta-batch of distinct classes is possible."""
    if flag is not None:
        return bool(flag)
    return N > 0 and N * meta_batch_size <= num_classes


def min_class_size(y):
    """Number of examples of the smallest class in y [n]."""
    return int(np.unique(np.asarray(y), return_counts=True)[1].min())
