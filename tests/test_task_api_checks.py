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


def test_classification_task_counts_are_checked_not_truncated():
    """ClassificationTask, TaskAsSequenceOfTasks and inner_batch_indices refuse 2.7, True, '3' (the
    original int() turned 2.7 into 2); integral floats such as 2.0 are accepted."""
    from pymeta.core.task import ClassificationTask, TaskAsSequenceOfTasks
    X, y = np.zeros((40, 2), np.float32), np.repeat(np.arange(4), 10)
    for kwargs in ({"num_training_classes": 2.7}, {"num_training_samples_per_class": True},
                   {"num_test_samples_per_class": "3"}, {"num_training_classes": 0}):
        with pytest.raises(ValueError, match="must be"):
            ClassificationTask(X, y, **{"num_training_samples_per_class": 2, "num_test_samples_per_class": 2,
                                        "num_training_classes": 2, **kwargs})
    task = ClassificationTask(X, y, 2.0, 2, 2)
    assert len(task.get_train_set()[1]) == 4
    for bad in (1.5, True):
        with pytest.raises(ValueError, match="must be"):
            task.inner_batch_indices(bad, -1)
        with pytest.raises(ValueError, match="must be"):
            task.inner_batch_indices(2, bad)

    class Dist:
        def sample_batch(self, batch_size):
            return [task] * batch_size

    with pytest.raises(ValueError, match="min_length"):
        TaskAsSequenceOfTasks(Dist(), 2.5, 3)
    seq = TaskAsSequenceOfTasks(Dist(), 1, 2)
    with pytest.raises(ValueError, match="min_length <= max_length"):
        seq.set_length_of_sequence(3, 2)


def test_zero_inner_steps_with_a_minibatch_size():
    """evaluate_tasks with 0 inner steps and an inner batch smaller than the support set evaluates theta
    (it used to fail stacking an empty list of minibatches)."""
    from pymeta.core.task import ClassificationTask
    X, y = np.random.rand(40, 2).astype(np.float32), np.repeat(np.arange(4), 10)
    task = ClassificationTask(X, y, 3, 2, 2)
    assert task.inner_batch_indices(0, 2).shape == (0, 2)
    assert task.task_data(0, 2).inner[0].shape == (0, 2, 2)


def test_images_too_small_for_the_network_get_a_one_line_error():
    """2x2 images used to end in Keras' multi-line pooling error."""
    from pymeta.networks import make_miniimagenet_cnn_model, make_omniglot_cnn_model
    with pytest.raises(ValueError, match=r"images of shape \(2, 2, 1\) are too small for this network"):
        make_omniglot_cnn_model(5, input_shape=(2, 2, 1))
    assert make_omniglot_cnn_model(5, input_shape=(16, 16, 1)).output_shape == (None, 5)
    assert make_miniimagenet_cnn_model(5, input_shape=(2, 2, 3)).output_shape == (None, 5)  # "same" pooling
