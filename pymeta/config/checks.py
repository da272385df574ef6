"""Impossible settings refused up front, each with a one-line message naming the fix: `check_config`
(training), `check_metatest_config` (meta-test), `check_output_folders`; and the parsing of the flags
whose values are text (`env_kwargs`, `parse_step_sizes`).

What a single field's value must be (its type, `check_type`; its own bounds, the `*_RULES` tables, which
take a hyperparameter's rule from `pymeta.core.bounds`, the Python API's) is written once and checked by
`check_field`, for a flag and for the settings a model file records (`pymeta.config.stored`) alike; the
checks that relate several fields follow in `check_config` / `check_metatest_config`."""

import dataclasses
import numbers
import os
from typing import Any, Callable, Dict, List, Union

from pymeta.atomic import check_not_special
from pymeta.config.bounded_json import load_json_file, loads_bounded
from pymeta.config.gym_kwargs import check_env_kwargs
from pymeta.config.memory import check_memory
from pymeta.config.sections import MetaTestConfig, RunConfig, TaskConfig
from pymeta.core import bounds
from pymeta.paths import ZOO_DIR, inside_zoo, special_kind
from pymeta.registry import RL_DATASETS, RL_GYM_DATASETS, RL_METAMODELS
from pymeta.runtime import PRECISIONS


# --- one field at a time: its type and its own bounds -------------------------------------------------
Rule = Callable[[Any, str], None]  # (config, field name): raise ValueError (one line) for a bad value
INT_LIMIT = 2 ** 63 - 1  # an integer setting must fit int64 (numpy, TensorFlow)


def check_type(cls: type, name: str, value: Any) -> Any:
    """`value` as field `name` of the config dataclass `cls` holds it (an integer becomes a float for a
    float field), or ValueError('--name must be ...') if it is not of the field's type: what absl's
    parser guarantees for a flag, checked again for values from elsewhere (a model file, Python)."""
    kind = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    if kind is bool:
        ok, what = isinstance(value, bool), "true or false"
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(int(value)) <= INT_LIMIT
        what = f"an integer of at most {len(str(INT_LIMIT))} digits"
    elif kind is float:
        ok, what = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        if ok:
            try:
                value = float(value)
            except OverflowError:
                ok, what = False, "a number in float range"
    else:
        ok, what = isinstance(value, str), "text"
    if not ok:
        raise ValueError(f"--{name} must be {what}, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    if isinstance(value, int) and abs(value) >= 10 ** 30:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rule(ok: Callable[[Any, Any], bool], message: str) -> Rule:
    """A rule refusing a value `v` of config `c` for which `ok(v, c)` is false; `message` formatted
    with the field's `name` and `value`."""
    def rule(c: Any, name: str) -> None:
        value = getattr(c, name)
        if not ok(value, c):
            raise ValueError(message.format(name=name, value=value))
    return rule


def _bound(bound: bounds.Bound) -> Rule:
    """A rule refusing a value outside `bound` (`pymeta.core.bounds`: the Python API's rule for the same
    quantity): '--name must be a finite number > 0, got 0.0'."""
    def rule(c: Any, name: str) -> None:
        bound.check(getattr(c, name), f"--{name}")
    return rule


def _choice(c: Any, name: str) -> None:
    choices = _CHOICES[name]
    if getattr(c, name) not in choices:
        raise ValueError(f"unknown --{name}={getattr(c, name)!r}: use one of {', '.join(choices)}")


def _precision(c: Any, name: str) -> None:
    if c.precision not in PRECISIONS:
        raise ValueError(f"--precision must be float32 or mixed_bfloat16, got {c.precision!r}")


_CHOICES = {f.name: f.metadata["choices"] for cls in (RunConfig, MetaTestConfig) for f in dataclasses.fields(cls)
            if f.metadata.get("choices")}
_AT_LEAST_1 = _rule(lambda v, c: v >= 1, "--{name} must be >= 1, got {value}")
_AT_LEAST_0 = _rule(lambda v, c: v >= 0, "--{name} must be >= 0, got {value}")
# TensorFlow aborts the process when it cannot create a thread pool (16,384 threads did here)
MAX_THREADS = 1024
_THREADS = _rule(lambda v, c: 0 <= v <= MAX_THREADS,
                 f"--{{name}} must be between 0 (the default layout) and {MAX_THREADS}, got {{value}}")

# the task and its inner loop (training and meta-test)
TASK_RULES: Dict[str, Rule] = {
    **{name: _choice for name in _CHOICES if name in {f.name for f in dataclasses.fields(TaskConfig)}},
    "precision": _precision,
    "num_output_classes": _rule(lambda v, c: v >= 1 or c.dataset == "sinusoid", "--{name} must be >= 1, got {value}"),
    "num_train_samples_per_class": _AT_LEAST_1,
    "seed": _rule(lambda v, c: 0 <= v < 2 ** 32, "--{name} must be in 0..4294967295 (numpy's seeds), got {value}"),
    "num_test_samples_per_class": _rule(lambda v, c: v >= 1 or (v == -1 and c.dataset != "sinusoid"),
                                        "--{name} must be >= 1, got {value}"),
    "inner_lr": _bound(bounds.LEARNING_RATE),
    "inner_batch_size": _rule(lambda v, c: v >= 1 or v == -1,
                              "--{name} must be -1 (the whole support set) or >= 1, got {value}"),
    "imaml_lambda_reg": _bound(bounds.PROXIMAL_STRENGTH),  # a meta-test's: 0 is plain inner steps
}
TASK_RL_RULES: Dict[str, Rule] = {  # checked for the RL datasets only
    "horizon": _rule(lambda v, c: v >= 0, "--{name} must be >= 1 (or 0: the environment's), got {value}"),
    "gamma": _rule(lambda v, c: 0 < v <= 1, "--{name} must be in (0, 1], got {value}"),
    "gae_lambda": _rule(lambda v, c: 0 <= v <= 1, "--{name} must be in [0, 1], got {value}"),
}
RUN_RULES: Dict[str, Rule] = {
    **TASK_RULES,
    **{name: _choice for name in ("jit_compile", "seqfomaml_variant")},
    **{name: _AT_LEAST_1 for name in ("num_outer_metatraining_iterations", "meta_batch_size", "num_validation_batches",
                                      "save_every_k_iterations", "test_every_k_iterations",
                                      "seqfomaml_sequence_length")},
    "num_inner_training_iterations": _AT_LEAST_0,
    "meta_lr": _bound(bounds.LEARNING_RATE),
    "imaml_lambda_reg": _bound(bounds.LAMBDA_REG),
    "imaml_cg_steps": _AT_LEAST_0,
    "imaml_cg_damping": _bound(bounds.DAMPING),
    "imaml_lam_damping": _bound(bounds.DAMPING),
    "imaml_cg_tol": _bound(bounds.CG_TOL),
    "iterations_per_call": _rule(lambda v, c: v >= 0, "--{name} must be >= 1 (or 0: 10 for sinusoid, 1 otherwise), "
                                                      "got {value}"),
    "num_threads": _THREADS,
    "inter_op_threads": _THREADS,
    "keep_checkpoints": _rule(lambda v, c: v >= 1, "--{name} must be >= 1 (the newest checkpoint is always kept), "
                                                   "got {value}"),
}
RUN_RL_RULES: Dict[str, Rule] = {
    **TASK_RL_RULES,
    "outer_optimizer": _choice,
    "episodes_per_task": _AT_LEAST_1,
    "max_kl": _bound(bounds.MAX_KL),
}
METATEST_RULES: Dict[str, Rule] = {
    **TASK_RULES,
    "split": _choice,
    "num_tasks": _rule(lambda v, c: v >= 2, "--{name} must be >= 2 for a confidence interval, got {value}"),
    "batch": _AT_LEAST_1,
    "num_inner_iterations": _AT_LEAST_0,
    "num_threads": _THREADS,
}
METATEST_RL_RULES: Dict[str, Rule] = {
    **TASK_RL_RULES,
    "init": _choice,
    "episodes_per_task": _rule(lambda v, c: v >= 0, "--{name} must be >= 1 (or 0: the MAML evaluation's), got {value}"),
    "repeats": _AT_LEAST_1,
}


def check_field(c: Any, name: str) -> None:
    """Check field `name` of config `c` (a RunConfig or MetaTestConfig) on its own: its type, then its
    rule (the RL rules for an RL dataset only); ValueError (one line) otherwise."""
    check_type(type(c), name, getattr(c, name))
    rules, rl_rules = (RUN_RULES, RUN_RL_RULES) if isinstance(c, RunConfig) else (METATEST_RULES, METATEST_RL_RULES)
    rule = rules.get(name) or (rl_rules.get(name) if c.dataset in RL_DATASETS else None)
    if rule is not None:
        rule(c, name)


def _check_fields(c: Any) -> None:
    """Every field of `c` on its own; the dataset first (the other rules depend on it)."""
    names = [f.name for f in dataclasses.fields(c)]
    for name in ["dataset"] + [n for n in names if n != "dataset"]:
        check_field(c, name)
    env_kwargs(c)
    check_memory(c)  # sizes that cannot fit (pymeta.config.memory)


def check_config(c: RunConfig) -> None:
    """Raise ValueError with a one-line message naming the fix for any impossible training setting."""
    _check_fields(c)
    if c.dataset in RL_DATASETS:
        _check_rl(c)
    _check_inner_batch(c)
    if c.persistent_inner_state and (c.metamodel not in ("fomaml", "reptile")
                                     or not c.model_save_filename.endswith(".h5")):
        raise ValueError("--persistent_inner_state needs --metamodel=fomaml or reptile and an .h5 "
                         "--model_save_filename (the kept state is saved with the model)")
    if os.path.splitext(c.model_save_filename)[1] not in (".h5", ".keras"):
        raise ValueError(f"--model_save_filename must end in .h5 or .keras, got {c.model_save_filename!r}")
    if c.init_model and not os.path.isfile(c.init_model):
        kind = special_kind(c.init_model)
        raise ValueError(f"--init_model: {c.init_model!r} is {kind}, not a model file" if kind else
                         f"--init_model: no model file at {c.init_model!r}")


def check_ranks(c: RunConfig, ranks: int) -> None:
    """Refuse a run of `ranks` MPI processes that cannot work: an RL run gives every rank its own share
    of each meta-batch, so it needs at least one task per rank (a supervised run does not: a rank
    without a task adds nothing to the mean)."""
    if c.dataset in RL_DATASETS and c.meta_batch_size < ranks:
        raise ValueError(f"--meta_batch_size={c.meta_batch_size} leaves some of the {ranks} MPI ranks without a task "
                         f"(an RL run spreads each meta-batch over the ranks): use --meta_batch_size >= {ranks} or "
                         f"mpiexec -n {c.meta_batch_size}")


def _check_rl(c: RunConfig) -> None:
    """An RL training run's settings that relate several fields."""
    if c.metamodel not in RL_METAMODELS:
        raise ValueError(f"--metamodel={c.metamodel} does not do reinforcement learning (--dataset={c.dataset}): "
                         f"use one of {', '.join(RL_METAMODELS)}")
    if c.outer_optimizer == "trpo" and c.metamodel != "maml":
        raise ValueError(f"--outer_optimizer=trpo is MAML's outer step: use --outer_optimizer=adam (or auto) with "
                         f"--metamodel={c.metamodel}")
    if c.persistent_inner_state or c.inner_optimizer == "adam":
        raise ValueError("RL's inner steps are plain policy-gradient steps (SGD): drop --persistent_inner_state "
                         "and --inner_optimizer=adam")


def env_kwargs(c: TaskConfig, from_file: bool = False) -> Dict[str, Any]:
    """--env_kwargs as a dict ({} when not given); ValueError (one line) if it is not a JSON object, the
    dataset has no gymnasium environment or a keyword may not be passed (`pymeta.config.gym_kwargs`:
    from_file, the value a model file records, allows the declared keywords only)."""
    if not c.env_kwargs:
        return {}
    try:
        value = loads_bounded(c.env_kwargs, "--env_kwargs", max_depth=4)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"--env_kwargs must be a JSON object such as '{{\"frame_skip\": 1}}', got "
                         f"{_short(c.env_kwargs)}")
    if c.dataset not in RL_GYM_DATASETS:
        raise ValueError(f"--env_kwargs applies to the gymnasium datasets ({', '.join(RL_GYM_DATASETS)}), "
                         f"not --dataset={c.dataset}")
    check_env_kwargs(c.dataset, value, "--env_kwargs", from_file)
    return value


def parse_step_sizes(text: str, num_steps: int) -> List[float]:
    """--step_sizes "a,b,c" -> [a, b, c] (finite, >= 0, one per adaptation step); "" -> []."""
    if not text.strip():
        return []
    try:
        sizes = [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--step_sizes={text}: not comma-separated numbers") from None
    if len(sizes) != num_steps:
        raise ValueError(f"--step_sizes={text}: {len(sizes)} step sizes for --num_inner_iterations={num_steps}"
                         " (one per step)")
    if not all(bounds.STEP_SIZE.holds(x) for x in sizes):
        raise ValueError(f"--step_sizes={text}: step sizes must be finite and >= 0")
    return sizes


def check_metatest_config(c: MetaTestConfig) -> None:
    """Raise ValueError with a one-line message for any impossible meta-test setting. Reads no model,
    imports no TensorFlow (the --test_tasks file is parsed, within bounds)."""
    if not c.model:
        raise ValueError("--model is required: the model file written by meta-training")
    _check_fields(c)
    if c.dataset in RL_DATASETS:
        if c.plot_with and not c.plot:
            raise ValueError("--plot_with draws into --plot: give --plot=FILE.png too")
        for path in filter(None, c.plot_with.split(",")):
            if not os.path.isfile(path):
                raise ValueError(f"--plot_with: {path}: no such file (a JSON written by --output)")
        if c.test_tasks:
            read_test_tasks(c.test_tasks)
        parse_step_sizes(c.step_sizes, c.num_inner_iterations)
    elif c.test_tasks or c.repeats != 1 or c.step_sizes:
        raise ValueError("--test_tasks, --repeats and --step_sizes are for RL datasets (navigation2d, "
                         "halfcheetah_*, ant_dir)")
    else:  # the inner batch may be the training's, read from the model file (e.g. Reptile's 10, tested 1-shot)
        _check_inner_batch(c, " (given, or read from the model file)")


def _check_inner_batch(c: Union[RunConfig, MetaTestConfig], origin: str = "") -> None:
    """The inner minibatch must fit in the support set (N*K examples; K for sinusoid)."""
    support = (1 if c.dataset == "sinusoid" else c.num_output_classes) * c.num_train_samples_per_class
    if c.inner_batch_size > support:
        raise ValueError(f"--inner_batch_size={c.inner_batch_size}{origin} is not possible with a support set of "
                         f"{support} examples: use 1..{support}, or -1 for all of them")


MAX_TEST_TASKS_BYTES = 16 << 20  # a meta-test JSON of 1,000 tasks (--output) is about 0.5 MB


def read_test_tasks(path: str) -> List[Any]:
    """The task parameters of the --test_tasks file `path`: JSON within bounds (MAX_TEST_TASKS_BYTES,
    MAX_DEPTH) holding a list of at least 2 of them, or a meta-test JSON whose task_params is one;
    ValueError (one line) otherwise."""
    what = f"--test_tasks: {path}"
    try:
        data = load_json_file(path, what, MAX_TEST_TASKS_BYTES)
    except FileNotFoundError:
        raise ValueError(f"{what}: no such file (a JSON list of task parameters)") from None
    if isinstance(data, dict):
        data = data.get("task_params")
    if not isinstance(data, list) or len(data) < 2:
        raise ValueError(f"{what} must hold a list of at least 2 task parameters (or a meta-test JSON with "
                         "task_params)")
    return data


def check_not_in_zoo(path: str) -> str:
    """`path`, unless it is inside the model zoo `pretrained/`: ValueError (one line). A run that wrote
    there could replace a model behind a results table; publishing one is a deliberate copy."""
    if inside_zoo(path):
        raise ValueError(f"cannot write to {path}: it is inside the model zoo ({ZOO_DIR}), which holds the "
                         "models behind the results tables: write under runs/, then publish a finished model "
                         "as docs/how-to/add-to-zoo.md says")
    return path


def check_output_folders(*paths: str) -> None:
    """Raise ValueError naming the folder if a file cannot be created at each of `paths` (a path
    ending in os.sep is a folder itself; a link: where it points): the nearest existing folder must be a
    writable directory, and the path no device or pipe (`pymeta.atomic.check_not_special`), nor inside the
    model zoo (`pymeta.paths.inside_zoo`)."""
    for path in paths:
        is_folder = path.endswith(os.sep)
        check_not_in_zoo(path)
        path = os.path.realpath(check_not_special(path))
        folder = path if is_folder else os.path.dirname(path)
        probe = folder
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            raise ValueError(f"cannot write to {folder}: {probe} is not a folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write to {folder}: {probe} is not writable")
