"""Clear errors in the task / distribution API: probabilities and counts are checked, not truncated."""

import numpy as np
import pytest

from pymeta.core.task_distribution import TaskDistribution, as_count
from pymeta.tasks.sinusoid_tasks import SinusoidTask, create_sinusoid_task_distribution


def make(n=2, **kwargs):
    return TaskDistribution([SinusoidTask() for _ in range(n)], [1.0] * n, **kwargs)


@pytest.mark.parametrize("probs", [[3, -1], [0, 0], [np.nan, 1], [np.inf, 1], [1], [1, 2, 3], ["a", 1], None])
def test_set_task_probabilities_same_rule_as_constructor(probs):
    dist = make()
    with pytest.raises(ValueError):
        dist.set_task_probabilities(probs)
    with pytest.raises(ValueError):
        TaskDistribution(dist.tasks, probs)
    assert dist.task_probabilities == [0.5, 0.5]  # unchanged by the refused call
    dist.set_task_probabilities([3, 1])
    assert dist.task_probabilities == [0.75, 0.25]
    dist.set_task_probabilities([1e308, 1e308])  # their sum overflows float64
    assert dist.task_probabilities == [0.5, 0.5]


@pytest.mark.parametrize("bad", [2.7, 0, -1, True, "2", float("nan"), float("inf"), None])
def test_batch_sizes_are_counts(bad):
    with pytest.raises(ValueError, match="batch_size"):
        make(batch_size=bad)
    with pytest.raises(ValueError, match="batch_size"):
        make().sample_batch(bad if bad is not None else 0.5)


def test_integral_floats_are_counts():
    dist = make(batch_size=3.0)
    assert dist.batch_size == 3 and isinstance(dist.batch_size, int)
    assert len(dist.sample_batch(np.int64(2))) == 2 and len(dist.sample_batch(2.0)) == 2
    assert as_count(np.float32(4), "n") == 4 and as_count(-1, "n", allow_all=True) == -1


def test_task_index_must_be_an_integer():
    dist = make()
    with pytest.raises(ValueError, match="task index"):
        dist.get_task_by_index(0.5)
    with pytest.raises(IndexError):
        dist.get_task_by_index(2)
    assert dist.get_task_by_index(1.0) is dist.tasks[1]


@pytest.mark.parametrize("kwargs", [dict(num_training_samples=2.7), dict(num_test_samples=0.5),
                                    dict(batch_size=1.5), dict(num_test_tasks=-1), dict(min_x=-np.inf),
                                    dict(max_amplitude=np.nan), dict(min_phase="0")])
def test_sinusoid_refuses_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        create_sinusoid_task_distribution(**kwargs)


def test_sinusoid_counts():
    task = SinusoidTask(num_training_samples=3.0, num_test_samples=np.int32(7))
    assert task.get_train_set()[0].shape == (3, 1) and task.get_test_set()[0].shape == (7, 1)
