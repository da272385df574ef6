"""Datasets and meta-learners by name: the factories behind `--dataset` and `--metamodel`, with the
optimizers the original pyMeta used. Names are importable without TensorFlow; the factories import
what they build on first use."""

import dataclasses
import os
from typing import Any, Callable, Optional

import numpy as np

SUPERVISED_DATASETS = ("sinusoid", "omniglot", "miniimagenet")
# reinforcement learning (pymeta.rl): the MAML experiments' defaults of each task distribution
# (cbfinn/maml_rl; `pymeta.rl.problems.DEFAULTS` is this dict)
RL_DEFAULTS = {
    "navigation2d": {"meta_batch_size": 20, "inner_lr": 0.5, "horizon": 100},
    "halfcheetah_vel": {"meta_batch_size": 40, "inner_lr": 0.1, "horizon": 200},
    "halfcheetah_dir": {"meta_batch_size": 40, "inner_lr": 0.1, "horizon": 200},
    "ant_dir": {"meta_batch_size": 40, "inner_lr": 0.1, "horizon": 200},
}
RL_DATASETS = tuple(RL_DEFAULTS)
RL_GYM_DATASETS = tuple(d for d in RL_DATASETS if d != "navigation2d")  # on gymnasium environments
RL_METAMODELS = ("maml", "fomaml", "reptile")
DATASETS = SUPERVISED_DATASETS + RL_DATASETS
METAMODELS = ("fomaml", "reptile", "imaml", "maml", "seqfomaml")
OMNIGLOT_PROTOCOLS = ("standard", "allcharacters")
INNER_OPTIMIZERS = ("auto", "sgd", "adam")
# pymeta.metalearners.seq_fomaml.SEQ_FOMAML_VARIANTS, repeated to keep TensorFlow out of `--help`
SEQ_FOMAML_VARIANTS = ("plain", "loss_after_each_task", "sampled_loss_after_each_task",
                       "all_losses_after_each_task")
DEFAULT_DATA_PATHS = {"omniglot": "datasets/omniglot/omniglot.pkl",
                      "miniimagenet": "datasets/miniimagenet/miniimagenet.pkl"}


def default_data_path(dataset):
    """DEFAULT_DATA_PATHS[dataset], or the .h5 beside it when only that exists (the make scripts write
    HDF5 for large data, e.g. the full Mini-ImageNet)."""
    pkl = DEFAULT_DATA_PATHS[dataset]
    h5 = os.path.splitext(pkl)[0] + ".h5"
    return h5 if not os.path.exists(pkl) and os.path.exists(h5) else pkl


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
    path = data_path or default_data_path(dataset)
    if not os.path.exists(path):
        script = f"scripts/make_{dataset}_dataset.py"
        raise FileNotFoundError(f"no {dataset} data file at {path!r}: run `bash fetch_data.sh {dataset}` "
                                f"then `python {script}` (or pass its path with --data_path)")
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


def inner_optimizer_name(metamodel: str, dataset: str, choice: str = "auto") -> str:
    """'sgd' or 'adam': choice 'auto' is the original's, Adam(beta_1=0) for Reptile and for FOMAML
    (and SeqFOMAML) on sinusoid, plain SGD otherwise (MAML differentiates through the inner steps:
    Adam's sqrt(v) has an infinite derivative where a gradient is exactly zero)."""
    if choice not in INNER_OPTIMIZERS:
        raise ValueError(f"unknown inner optimizer {choice!r}: auto, sgd or adam")
    if choice != "auto":
        return choice
    original_adam = metamodel == "reptile" or (metamodel in ("fomaml", "seqfomaml") and dataset == "sinusoid")
    return "adam" if original_adam else "sgd"


def default_inner_optimizer(metamodel: str, dataset: str, inner_lr: float, choice: str = "auto"):
    """The Keras inner optimizer `inner_optimizer_name` names: Adam(inner_lr, beta_1=0) or SGD(inner_lr).
    Its state starts fresh for every task unless the meta-learner keeps it."""
    import keras
    if inner_optimizer_name(metamodel, dataset, choice) == "adam":
        return keras.optimizers.Adam(inner_lr, beta_1=0.0)
    return keras.optimizers.SGD(inner_lr)


def default_meta_optimizer(metamodel: str, meta_lr: float, anneal_steps: int = 0):
    """The original's choice: plain SGD for Reptile, Adam for the MAML family.

    anneal_steps > 0: the learning rate decays linearly to 0 over that many steps (Reptile's recipe).
    """
    import keras
    if anneal_steps > 0:
        meta_lr = keras.optimizers.schedules.PolynomialDecay(meta_lr, anneal_steps, 0.0, power=1.0)
    if metamodel == "reptile":
        return keras.optimizers.SGD(meta_lr)
    return keras.optimizers.Adam(meta_lr)


def build_metalearner(metamodel: str, model, meta_optimizer, jit_compile: bool = False,
                      imaml_lambda_reg: float = 2.0, imaml_cg_steps: int = 5, imaml_cg_damping: float = 1.0,
                      imaml_lam_damping: float = 0.0, persistent_inner_state: bool = False,
                      imaml_inner: str = "proximal", imaml_cg_tol: float = 1e-6,
                      seqfomaml_variant: str = "plain"):
    """The meta-learner called `metamodel` on `model` (compiled with loss and inner optimizer)."""
    from pymeta import metalearners
    if persistent_inner_state and metamodel not in ("fomaml", "reptile"):
        raise ValueError(f"--persistent_inner_state is for fomaml and reptile, not {metamodel}")
    if metamodel == "fomaml":
        return metalearners.FOMAMLMetaLearner(model, meta_optimizer, jit_compile=jit_compile,
                                              persistent_inner_state=persistent_inner_state)
    if metamodel == "reptile":
        return metalearners.ReptileMetaLearner(model, meta_optimizer, jit_compile=jit_compile,
                                               persistent_inner_state=persistent_inner_state)
    if metamodel == "imaml":
        return metalearners.iMAMLMetaLearner(model, meta_optimizer, lambda_reg=imaml_lambda_reg,
                                             n_iters_optimizer=imaml_cg_steps, cg_damping=imaml_cg_damping,
                                             lam_damping=imaml_lam_damping, inner_mode=imaml_inner,
                                             cg_tol=imaml_cg_tol, jit_compile=jit_compile)
    if metamodel == "maml":
        return metalearners.MAMLMetaLearner(model, meta_optimizer, first_order=False, jit_compile=jit_compile)
    if metamodel == "seqfomaml":
        return metalearners.SeqFOMAMLMetaLearner(model, meta_optimizer, variant=seqfomaml_variant,
                                                 jit_compile=jit_compile)
    raise ValueError(f"unknown metamodel {metamodel!r}: use one of {', '.join(METAMODELS)}")


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
