"""Clear errors in the task / distribution API: probabilities and counts are checked, not truncated."""

import re

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


def test_inputs_that_are_not_arrays_of_numbers_are_refused_and_lists_are_taken():
    from pymeta.core.task import ClassificationTask, ClassificationTaskFromFiles
    X, y = np.random.rand(40, 3).astype(np.float32), np.repeat(np.arange(4), 10)
    for bad in (np.array([None] * 40, dtype=object), np.array([f"img{i}.png" for i in range(40)]), np.float32(3),
                X + 1j):  # complex: cast to float32, it lost its imaginary part silently
        with pytest.raises(ValueError, match=r"^X must be an array of real numbers \[n, \.\.\.\], got "):
            ClassificationTask(bad, y, 1, 1, 2)
    np.random.seed(5)
    from_list = ClassificationTask(X.tolist(), y.tolist(), 2, 1, 2)  # a list of rows: converted
    np.random.seed(5)
    from_array = ClassificationTask(X, y, 2, 1, 2)
    np.testing.assert_array_equal(from_list.get_train_set()[0], from_array.get_train_set()[0])
    files = ClassificationTaskFromFiles([f"img{i}.png" for i in range(40)], y, 1, 1, 2,
                                       input_parse_fn=lambda name: np.full(3, float(name[3:-4]), np.float32))
    x, labels = files.get_train_set()
    assert x.shape == (2, 3) and set(labels) == {0, 1}
    with pytest.raises(ValueError, match=r"X must be a 1-D array of file names \[n\], got shape \(40, 3\)"):
        ClassificationTaskFromFiles(X, y, 1, 1, 2, input_parse_fn=lambda name: name)


def test_inputs_of_another_shape_than_the_model_takes_are_one_line():
    """Examples of 7 features for a model built on 4 ended in TensorFlow's multi-line trace error."""
    import keras

    from pymeta import FOMAMLMetaLearner
    from pymeta.core.task import ClassificationTask
    y = np.repeat(np.arange(5), 4)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
    for shape in ((20, 7), (20, 4, 1), (20,)):
        task = ClassificationTask(np.random.rand(*shape).astype(np.float32), y, 1, 1, 5)
        message = r", which does not end in the shape of the model's examples, \(4,\)$"
        stacked = re.escape(str((1, 5) + shape[1:]))  # the fast path: 1 task x 5 classes x 1 shot
        with pytest.raises(ValueError, match=rf"^a task's support inputs have shape {stacked}{message}"):
            ml.metatrain_step([task], 1, -1)
        with pytest.raises(ValueError, match=message):
            ml.task_begin(task)
            task.fit_n_iterations(model, 1, -1)
    free = keras.Sequential([keras.Input((None, 2)), keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(5)])
    free.compile(optimizer=keras.optimizers.SGD(0.1),
                 loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    task = ClassificationTask(np.random.rand(20, 6, 2).astype(np.float32), y, 1, 1, 5)  # any length
    assert np.isfinite(FOMAMLMetaLearner(free, keras.optimizers.Adam(0.01)).metatrain_step([task], 1, -1)[
        "last_minibatch_loss"])
