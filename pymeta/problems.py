"""The supervised datasets' problems (sinusoid, Omniglot, Mini-ImageNet): their meta-train / val / test
task distributions and the network, by dataset name (`--dataset`); SeqFOMAML's sequences of tasks."""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from pymeta.optimizer_defaults import default_inner_optimizer
from pymeta.registry import SUPERVISED_DATASETS, check_data_file


@dataclasses.dataclass
class Problem:
    """Task distributions and a network factory for one dataset."""
    metatrain: Any
    metaval: Any
    metatest: Any
    make_model: Callable  # () -> keras.Model
    is_classification: bool


def build_problem(dataset: str, num_output_classes: int = 5, num_train_samples_per_class: int = 5,
                  num_test_samples_per_class: int = 15, meta_batch_size: int = 5, data_path: Optional[str] = None,
                  omniglot_protocol: str = "standard") -> Problem:
    """The (meta-train, meta-val, meta-test) distributions and network for `dataset`.

    Raises ValueError for impossible requests and FileNotFoundError (saying how to prepare the data)
    when a dataset file is missing.
    """
    N, K, Q = num_output_classes, num_train_samples_per_class, num_test_samples_per_class
    if dataset == "sinusoid":
        from pymeta.networks import make_sinusoid_model
        from pymeta.tasks.sinusoid_tasks import create_sinusoid_task_distribution
        dists = create_sinusoid_task_distribution(num_training_samples=K, num_test_samples=Q,
                                                  batch_size=meta_batch_size)
        return Problem(*dists, make_model=make_sinusoid_model, is_classification=False)
    if dataset not in SUPERVISED_DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(SUPERVISED_DATASETS)}")
    path = check_data_file(dataset, data_path)
    if dataset == "omniglot":
        from pymeta.networks import make_omniglot_cnn_model
        from pymeta.tasks import omniglot_tasks
        if omniglot_protocol == "standard":
            make = omniglot_tasks.create_omniglot_task_distribution
        elif omniglot_protocol == "allcharacters":
            make = omniglot_tasks.create_omniglot_allcharacters_task_distribution
        else:
            raise ValueError(f"unknown Omniglot protocol {omniglot_protocol!r}: standard or allcharacters")
        dists = make(path, num_training_samples_per_class=K, num_test_samples_per_class=Q,
                     num_training_classes=N, meta_batch_size=meta_batch_size)
        shape = dists[0].tasks[0].X.shape[1:]
        return Problem(*dists, make_model=lambda: make_omniglot_cnn_model(N, input_shape=shape),
                       is_classification=True)
    from pymeta.networks import make_miniimagenet_cnn_model
    from pymeta.tasks.miniimagenet_tasks import create_miniimagenet_task_distribution
    dists = create_miniimagenet_task_distribution(path, num_training_samples_per_class=K,
                                                  num_test_samples_per_class=Q, num_training_classes=N,
                                                  meta_batch_size=meta_batch_size)
    shape = dists[0].tasks[0].X.shape[1:]
    return Problem(*dists, make_model=lambda: make_miniimagenet_cnn_model(N, input_shape=shape),
                   is_classification=True)


def as_sequences(distribution, length: int, meta_batch_size: int):
    """A distribution of `TaskAsSequenceOfTasks` of `length` tasks of `distribution` (SeqFOMAML's
    meta-training tasks), `meta_batch_size` sequences per batch."""
    from pymeta.core.task import TaskAsSequenceOfTasks
    from pymeta.core.task_distribution import TaskAsSequenceOfTasksDistribution
    return TaskAsSequenceOfTasksDistribution(TaskAsSequenceOfTasks(distribution, length, length),
                                             batch_size=meta_batch_size)


def seeded_problem_and_model(seed: int, precision: str, dataset: str, metamodel: str, inner_lr: float,
                             *problem_args, inner_optimizer: str = "auto"):
    """Seed numpy / Python / TensorFlow, set the precision policy, then build the problem and its
    network compiled with the loss and the original's inner optimizer; returns (problem, model)."""
    import keras

    from pymeta.runtime import set_precision
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    set_precision(precision)
    problem = build_problem(dataset, *problem_args)
    model = problem.make_model()
    loss = "sparse_categorical_crossentropy" if problem.is_classification else "mse"
    model.compile(optimizer=default_inner_optimizer(metamodel, dataset, inner_lr, inner_optimizer), loss=loss)
    return problem, model
