"""Helpers shared by the Omniglot and Mini-ImageNet task builders."""

import numpy as np

from pymeta.core.task import ClassificationTask
from pymeta.core.task_distribution import TaskDistribution


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
