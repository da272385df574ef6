"""The pieces of a meta-training run, shared by `example_metatrain.py` and `scripts/meta_test.py`:
the problem (task distributions + network), the optimizers and meta-learner the original pyMeta
used, validation, and the outer loop with progress, logging and saving."""

import dataclasses
import os
import warnings

import keras
import numpy as np

from pymeta.atomic import atomic_write, write_json_atomic  # noqa: F401  (write_json_atomic: for training)
from pymeta import mpi
from pymeta.inner_loop import kept_inner_state

DATASETS = ("sinusoid", "omniglot", "miniimagenet")
METAMODELS = ("fomaml", "reptile", "imaml", "maml")
DEFAULT_DATA_PATHS = {"omniglot": "datasets/omniglot/omniglot.pkl",
                      "miniimagenet": "datasets/miniimagenet/miniimagenet.pkl"}


@dataclasses.dataclass
class Problem:
    """Task distributions and a network factory for one dataset."""
    metatrain: object
    metaval: object
    metatest: object
    make_model: object  # () -> keras.Model
    is_classification: bool


def build_problem(dataset, num_output_classes=5, num_train_samples_per_class=5,
                  num_test_samples_per_class=15, meta_batch_size=5, data_path=None,
                  omniglot_protocol="standard"):
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
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")
    path = data_path or DEFAULT_DATA_PATHS[dataset]
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


def default_inner_optimizer(metamodel, dataset, inner_lr, choice="auto"):
    """choice 'auto' is the original's: Adam(beta_1=0) for Reptile and for FOMAML on sinusoid, plain
    SGD otherwise (MAML differentiates through the inner steps: Adam's sqrt(v) has an infinite
    derivative where a gradient is exactly zero). 'sgd' / 'adam' force one. The inner optimizer's state
    starts fresh for every task."""
    if choice not in ("auto", "sgd", "adam"):
        raise ValueError(f"unknown inner optimizer {choice!r}: auto, sgd or adam")
    original_adam = metamodel == "reptile" or (metamodel == "fomaml" and dataset == "sinusoid")
    if choice == "adam" or (choice == "auto" and original_adam):
        return keras.optimizers.Adam(inner_lr, beta_1=0.0)
    return keras.optimizers.SGD(inner_lr)


def default_meta_optimizer(metamodel, meta_lr, anneal_steps=0):
    """The original's choice: plain SGD for Reptile, Adam for the MAML family.

    anneal_steps > 0: the learning rate decays linearly to 0 over that many steps (Reptile's recipe).
    """
    if anneal_steps > 0:
        meta_lr = keras.optimizers.schedules.PolynomialDecay(meta_lr, anneal_steps, 0.0, power=1.0)
    if metamodel == "reptile":
        return keras.optimizers.SGD(meta_lr)
    return keras.optimizers.Adam(meta_lr)


def build_metalearner(metamodel, model, meta_optimizer, jit_compile=False, imaml_lambda_reg=2.0,
                      imaml_cg_steps=5, imaml_cg_damping=1.0, imaml_lam_damping=0.0,
                      persistent_inner_state=False):
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
                                             lam_damping=imaml_lam_damping,
                                             jit_compile=jit_compile)
    if metamodel == "maml":
        return metalearners.MAMLMetaLearner(model, meta_optimizer, first_order=False, jit_compile=jit_compile)
    raise ValueError(f"unknown metamodel {metamodel!r}: use one of {', '.join(METAMODELS)}")


def validate(metalearner, distribution, num_batches, num_inner_iterations, inner_batch_size,
             transductive=True, fast=True):
    """Mean (loss, accuracy) after adaptation over `num_batches` meta-batches of `distribution`.

    fast=True: one compiled call per meta-batch; False: the step-by-step API, task by task.
    """
    losses, accs = [], []
    evaluate = getattr(metalearner, "evaluate_tasks_distributed", metalearner.evaluate_tasks)
    kept = None if fast else kept_inner_state(metalearner.model)
    saved_state = None if kept is None else kept.read()
    for _ in range(num_batches):
        tasks = distribution.sample_batch()
        if fast:
            l, a = evaluate(tasks, num_inner_iterations, inner_batch_size, transductive)
            losses.extend(l)
            accs.extend(a)
            continue
        for task in tasks:
            metalearner.task_begin(task)
            task.fit_n_iterations(metalearner.model, num_inner_iterations, inner_batch_size)
            out = task.evaluate(metalearner.model, transductive=transductive)
            losses.append(out["loss"])
            accs.append(out.get("sparse_categorical_accuracy", 0.0))
    if not fast:
        metalearner.task_begin(None)  # leave the model at theta
        if kept is not None:  # validation does not change the kept inner optimizer state
            kept.write(saved_state)
    return float(np.mean(losses)), float(np.mean(accs))


def mean_confidence_interval(values, z=1.96):
    """(mean, half-width of the 95% normal confidence interval) of `values`."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(z * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0


def plot_learning_curve(history, path, is_classification):
    """PNG of the validation metric against the meta-iteration."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    its = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    if is_classification:
        ax.plot(its, [100 * h["val_accuracy"] for h in history], "o-")
        ax.set_ylabel("validation accuracy after adaptation (%)")
    else:
        ax.plot(its, [h["val_loss"] for h in history], "o-")
        ax.set_ylabel("validation MSE after adaptation")
        ax.set_yscale("log")
    ax.set_xlabel("meta-iteration")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def plot_sinusoid(metalearner, task, num_inner_iterations, inner_batch_size, path):
    """PNG: a sinusoid task's ground truth, training points, and the prediction before and after
    adaptation (step-by-step API). The model is left at theta."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    model = metalearner.model
    metalearner.task_begin(task)
    test_x, test_y = task.get_test_set()
    before = model.predict(test_x, verbose=0)
    task.fit_n_iterations(model, num_inner_iterations, inner_batch_size)
    after = model.predict(test_x, verbose=0)
    metalearner.task_begin(task)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(test_x[:, 0], test_y[:, 0], "k", label="ground truth")
    ax.plot(task.X[:, 0], task.y[:, 0], "ok", label=f"{len(task.X)} training points")
    ax.plot(test_x[:, 0], before[:, 0], "--r", label="before adaptation (meta-learnt init)")
    ax.plot(test_x[:, 0], after[:, 0], "r", label=f"after {num_inner_iterations} inner steps")
    ax.legend(fontsize=8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def artifact_path(model_save_filename, suffix):
    """A file next to the model: saved/model.h5 -> saved/model_<suffix>."""
    return f"{os.path.splitext(model_save_filename)[0]}_{suffix}"


@dataclasses.dataclass
class RunConfig:
    """Everything a meta-training run needs; the flags of `example_metatrain.py`."""
    dataset: str = "omniglot"
    metamodel: str = "fomaml"
    num_output_classes: int = 5
    num_train_samples_per_class: int = 5
    num_test_samples_per_class: int = 15
    num_outer_metatraining_iterations: int = 10000
    meta_batch_size: int = 5
    meta_lr: float = 0.001
    num_validation_batches: int = 10
    num_inner_training_iterations: int = 5
    inner_batch_size: int = -1
    inner_lr: float = 0.001
    save_every_k_iterations: int = 1000
    test_every_k_iterations: int = 100
    model_save_filename: str = "saved/model.h5"
    seed: int = 100
    data_path: str = ""
    omniglot_protocol: str = "standard"
    transductive: bool = True
    precision: str = "float32"
    fast: bool = True
    iterations_per_call: int = 0
    progress: bool = True
    anneal_meta_lr: bool = False
    num_threads: int = 0
    inter_op_threads: int = 0
    inner_optimizer: str = "auto"
    imaml_lambda_reg: float = 2.0
    imaml_cg_steps: int = 5
    imaml_cg_damping: float = 1.0
    imaml_lam_damping: float = 0.0
    persistent_inner_state: bool = False
    run_dir: str = ""
    resume: bool = True
    overwrite: bool = False
    keep_checkpoints: int = 3
    tensorboard: bool = True

    def resolved_run_dir(self):
        """Checkpoints and TensorBoard logs: --run_dir, default <model file without extension>_run/."""
        return self.run_dir or f"{os.path.splitext(self.model_save_filename)[0]}_run"

    def resolved_inner_batch_size(self):
        """-1 means N*K (the whole support set), as in the original; sinusoid has N = 1."""
        if self.inner_batch_size < 0:
            n = 1 if self.dataset == "sinusoid" else self.num_output_classes
            return n * self.num_train_samples_per_class
        return self.inner_batch_size


def check_config(c):
    """Raise ValueError with a one-line message naming the fix for any impossible setting."""
    if c.dataset not in DATASETS:
        raise ValueError(f"unknown --dataset={c.dataset!r}: use one of {', '.join(DATASETS)}")
    if c.metamodel not in METAMODELS:
        raise ValueError(f"unknown --metamodel={c.metamodel!r}: use one of {', '.join(METAMODELS)}")
    if (not c.imaml_lambda_reg > 0 or c.imaml_cg_steps < 0 or c.imaml_cg_damping < 0
            or c.imaml_lam_damping < 0):
        raise ValueError("--imaml_lambda_reg must be > 0, --imaml_cg_steps, --imaml_cg_damping and "
                         "--imaml_lam_damping >= 0")
    positive = ["num_outer_metatraining_iterations", "meta_batch_size", "num_validation_batches",
                "num_train_samples_per_class", "save_every_k_iterations", "test_every_k_iterations"]
    if c.dataset != "sinusoid":
        positive.append("num_output_classes")
    for name in positive:
        if getattr(c, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(c, name)}")
    if c.num_inner_training_iterations < 0:
        raise ValueError(f"--num_inner_training_iterations must be >= 0, got {c.num_inner_training_iterations}")
    if c.num_test_samples_per_class < 1 and not (c.dataset != "sinusoid" and c.num_test_samples_per_class == -1):
        raise ValueError(f"--num_test_samples_per_class must be >= 1, got {c.num_test_samples_per_class}")
    for name in ("meta_lr", "inner_lr"):
        if not getattr(c, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(c, name)}")
    support = (1 if c.dataset == "sinusoid" else c.num_output_classes) * c.num_train_samples_per_class
    if c.inner_batch_size == 0 or c.inner_batch_size > support:
        raise ValueError(f"--inner_batch_size={c.inner_batch_size} is not possible with a support set of "
                         f"{support} examples: use 1..{support}, or -1 for all of them")
    if c.persistent_inner_state and (c.metamodel not in ("fomaml", "reptile")
                                     or not c.model_save_filename.endswith(".h5")):
        raise ValueError("--persistent_inner_state needs --metamodel=fomaml or reptile and an .h5 "
                         "--model_save_filename (the kept state is saved with the model)")
    if c.num_threads < 0 or c.inter_op_threads < 0:
        raise ValueError("--num_threads and --inter_op_threads must be >= 0 (0: TensorFlow's default)")
    if c.precision not in ("float32", "mixed_bfloat16"):
        raise ValueError(f"--precision must be float32 or mixed_bfloat16, got {c.precision!r}")
    if os.path.splitext(c.model_save_filename)[1] not in (".h5", ".keras"):
        raise ValueError(f"--model_save_filename must end in .h5 or .keras, got {c.model_save_filename!r}")


def seeded_problem_and_model(seed, precision, dataset, metamodel, inner_lr, *problem_args,
                             inner_optimizer="auto"):
    """Seed numpy / Python / TensorFlow, set the precision policy, then build the problem and its
    network compiled with the loss and the original's inner optimizer; returns (problem, model)."""
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(precision)
    problem = build_problem(dataset, *problem_args)
    model = problem.make_model()
    loss = "sparse_categorical_crossentropy" if problem.is_classification else "mse"
    inner = default_inner_optimizer(metamodel, dataset, inner_lr, inner_optimizer)
    model.compile(optimizer=inner, loss=loss)
    return problem, model


# the settings a checkpoint must share with the run that resumes it
RUN_IDENTITY = ("dataset", "metamodel", "num_output_classes", "num_train_samples_per_class",
                "num_test_samples_per_class", "meta_batch_size", "meta_lr", "inner_lr",
                "num_inner_training_iterations", "inner_batch_size", "seed", "omniglot_protocol",
                "precision", "anneal_meta_lr", "inner_optimizer", "fast", "iterations_per_call",
                "test_every_k_iterations", "num_validation_batches", "imaml_lambda_reg", "imaml_cg_steps",
                "imaml_cg_damping", "imaml_lam_damping", "persistent_inner_state")


def thread_layout(c, distributed=False, cores=None):
    """(intra-op, inter-op) TensorFlow threads for run `c`; 0 means TensorFlow's default (all cores).

    --num_threads / --inter_op_threads, when given, win. Under MPI every rank gets cores / ranks per
    node. Otherwise the conv nets' compiled meta-batches run "task-parallel": one thread per op and as
    many tasks of the meta-batch at once as there are cores (the tasks are independent iterations of
    one tf.while_loop); measured with benchmarks/bench_metatrain.py.
    """
    cores = cores or os.cpu_count() or 1
    if c.num_threads > 0 or c.inter_op_threads > 0:
        return c.num_threads, c.inter_op_threads or c.num_threads
    if distributed:
        threads = max(1, cores // mpi.ranks_on_this_node())
        return threads, threads
    if c.dataset != "sinusoid" and c.fast and cores > 1 and c.meta_batch_size > 1:
        return 1, min(cores, c.meta_batch_size)
    return 0, 0


def cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """True if the CPU computes bfloat16 natively (AVX-512 BF16 or AMX-BF16 in `cpuinfo`'s flags),
    False if it does not, None where that cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()}
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def apply_thread_layout(intra, inter, explicit=True):
    """Set TensorFlow's thread pools (0: its default). They are fixed once TensorFlow has started
    (an earlier run in this process): then the layout is left as it is, with a warning if it was
    asked for explicitly."""
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        if explicit:
            warnings.warn(f"TensorFlow has already started in this process: its thread pools stay as they "
                          f"are ({tf.config.threading.get_intra_op_parallelism_threads()} intra-op, "
                          f"{tf.config.threading.get_inter_op_parallelism_threads()} inter-op threads); "
                          f"--num_threads / --inter_op_threads are ignored", stacklevel=2)


def setup_run(c, distributed=False):
    """Seed everything, then build (problem, model, metalearner) for config `c`.

    distributed: wrap the meta-learner for an MPI run (pymeta.metalearners.distributed); every rank
    uses the same seed and draws the same meta-batches, each processing its share of the tasks.
    """
    check_config(c)
    if c.precision == "mixed_bfloat16" and cpu_has_native_bfloat16() is False:
        warnings.warn("--precision=mixed_bfloat16 on a CPU without native bfloat16 (no avx512_bf16 or "
                      "amx_bf16 in /proc/cpuinfo): TensorFlow emulates it, which is slower than float32",
                      stacklevel=2)
    apply_thread_layout(*thread_layout(c, distributed), explicit=c.num_threads > 0 or c.inter_op_threads > 0)
    problem, model = seeded_problem_and_model(c.seed, c.precision, c.dataset, c.metamodel, c.inner_lr,
                                              c.num_output_classes, c.num_train_samples_per_class,
                                              c.num_test_samples_per_class, c.meta_batch_size,
                                              c.data_path or None, c.omniglot_protocol,
                                              inner_optimizer=c.inner_optimizer)
    anneal = c.num_outer_metatraining_iterations if c.anneal_meta_lr else 0
    metalearner = build_metalearner(c.metamodel, model, default_meta_optimizer(c.metamodel, c.meta_lr, anneal),
                                    jit_compile=(c.dataset == "sinusoid"), imaml_lambda_reg=c.imaml_lambda_reg,
                                    imaml_cg_steps=c.imaml_cg_steps, imaml_cg_damping=c.imaml_cg_damping,
                                    imaml_lam_damping=c.imaml_lam_damping,
                                    persistent_inner_state=c.persistent_inner_state)
    metalearner.initialize()
    if distributed:
        from pymeta.metalearners.distributed import DistributedMetaLearner
        metalearner = DistributedMetaLearner(metalearner)
        metalearner.broadcast_state()
    return problem, model, metalearner
