"""Impossible settings refused up front, each with a one-line message naming the fix: `check_config`
(training), `check_metatest_config` (meta-test), `check_output_folders`; and the parsing of the flags
whose values are text (`env_kwargs`, `parse_step_sizes`)."""

import json
import math
import os
from typing import Any, Dict, List

from pymeta.config.sections import (IMAML_INNER_MODES, JIT_COMPILE, OUTER_OPTIMIZERS, MetaTestConfig, RunConfig,
                                    TaskConfig)
from pymeta.registry import (DATASETS, INNER_OPTIMIZERS, METAMODELS, OMNIGLOT_PROTOCOLS, RL_DATASETS, RL_GYM_DATASETS,
                             RL_METAMODELS, SEQ_FOMAML_VARIANTS)
from pymeta.runtime import PRECISIONS


def _check_choice(c, name, choices):
    if getattr(c, name) not in choices:
        raise ValueError(f"unknown --{name}={getattr(c, name)!r}: use one of {', '.join(choices)}")


def _check_task(c: TaskConfig) -> None:
    for name, choices in (("dataset", DATASETS), ("metamodel", METAMODELS),
                          ("omniglot_protocol", OMNIGLOT_PROTOCOLS), ("inner_optimizer", INNER_OPTIMIZERS)):
        _check_choice(c, name, choices)
    if c.precision not in PRECISIONS:
        raise ValueError(f"--precision must be float32 or mixed_bfloat16, got {c.precision!r}")
    env_kwargs(c)
    from pymeta.config.memory import check_memory; check_memory(c)  # sizes that cannot fit (issue #38, item 2)


def check_config(c: RunConfig) -> None:
    """Raise ValueError with a one-line message naming the fix for any impossible training setting."""
    _check_task(c)
    if c.dataset in RL_DATASETS:
        _check_rl(c)
    if (not c.imaml_lambda_reg > 0 or c.imaml_cg_steps < 0 or c.imaml_cg_damping < 0
            or c.imaml_lam_damping < 0 or not c.imaml_cg_tol >= 0):
        raise ValueError("--imaml_lambda_reg must be > 0, --imaml_cg_steps, --imaml_cg_damping, "
                         "--imaml_lam_damping and --imaml_cg_tol >= 0")
    _check_choice(c, "seqfomaml_variant", SEQ_FOMAML_VARIANTS)
    positive = ["num_outer_metatraining_iterations", "meta_batch_size", "num_validation_batches",
                "num_train_samples_per_class", "save_every_k_iterations", "test_every_k_iterations",
                "seqfomaml_sequence_length"]
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
        _check_learning_rate(name, getattr(c, name))
    for name in ("imaml_lambda_reg", "imaml_cg_damping", "imaml_lam_damping"):
        if not math.isfinite(getattr(c, name)):
            raise ValueError(f"--{name} must be finite, got {getattr(c, name)}")
    if c.iterations_per_call < 0:
        raise ValueError(f"--iterations_per_call must be >= 1 (or 0: 10 for sinusoid, 1 otherwise), "
                         f"got {c.iterations_per_call}")
    if c.keep_checkpoints < 1:
        raise ValueError(f"--keep_checkpoints must be >= 1 (the newest checkpoint is always kept), "
                         f"got {c.keep_checkpoints}")
    _check_choice(c, "jit_compile", JIT_COMPILE)
    support = (1 if c.dataset == "sinusoid" else c.num_output_classes) * c.num_train_samples_per_class
    if c.inner_batch_size < -1:
        raise ValueError(f"--inner_batch_size must be -1 (the whole support set) or >= 1, got {c.inner_batch_size}")
    if c.inner_batch_size == 0 or c.inner_batch_size > support:
        raise ValueError(f"--inner_batch_size={c.inner_batch_size} is not possible with a support set of "
                         f"{support} examples: use 1..{support}, or -1 for all of them")
    if c.persistent_inner_state and (c.metamodel not in ("fomaml", "reptile")
                                     or not c.model_save_filename.endswith(".h5")):
        raise ValueError("--persistent_inner_state needs --metamodel=fomaml or reptile and an .h5 "
                         "--model_save_filename (the kept state is saved with the model)")
    if c.num_threads < 0 or c.inter_op_threads < 0:
        raise ValueError("--num_threads and --inter_op_threads must be >= 0 (0: TensorFlow's default)")
    if os.path.splitext(c.model_save_filename)[1] not in (".h5", ".keras"):
        raise ValueError(f"--model_save_filename must end in .h5 or .keras, got {c.model_save_filename!r}")
    if c.init_model and not os.path.isfile(c.init_model):
        raise ValueError(f"--init_model: no model file at {c.init_model!r}")


def _check_rl(c: TaskConfig) -> None:
    """The settings shared by RL training and meta-test."""
    if c.horizon < 0:
        raise ValueError(f"--horizon must be >= 1 (or 0: the environment's), got {c.horizon}")
    if not 0 < c.gamma <= 1 or not 0 <= c.gae_lambda <= 1:
        raise ValueError(f"--gamma must be in (0, 1] and --gae_lambda in [0, 1], got {c.gamma} and {c.gae_lambda}")
    if not isinstance(c, RunConfig):
        return
    if c.metamodel not in RL_METAMODELS:
        raise ValueError(f"--metamodel={c.metamodel} does not do reinforcement learning (--dataset={c.dataset}): "
                         f"use one of {', '.join(RL_METAMODELS)}")
    _check_choice(c, "outer_optimizer", OUTER_OPTIMIZERS)
    if c.outer_optimizer == "trpo" and c.metamodel != "maml":
        raise ValueError(f"--outer_optimizer=trpo is MAML's outer step: use --outer_optimizer=adam (or auto) with "
                         f"--metamodel={c.metamodel}")
    if c.episodes_per_task < 1:
        raise ValueError(f"--episodes_per_task must be >= 1, got {c.episodes_per_task}")
    if not (math.isfinite(c.max_kl) and c.max_kl > 0):
        raise ValueError(f"--max_kl must be a finite number > 0, got {c.max_kl}")
    if c.persistent_inner_state or c.inner_optimizer == "adam":
        raise ValueError("RL's inner steps are plain policy-gradient steps (SGD): drop --persistent_inner_state "
                         "and --inner_optimizer=adam")


def env_kwargs(c: TaskConfig) -> Dict[str, Any]:
    """--env_kwargs as a dict ({} when not given); ValueError (one line) if it is not a JSON object or
    the dataset has no gymnasium environment."""
    if not c.env_kwargs:
        return {}
    try:
        value = json.loads(c.env_kwargs)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValueError(f"--env_kwargs must be a JSON object such as '{{\"frame_skip\": 1}}', got {c.env_kwargs!r}")
    if c.dataset not in RL_GYM_DATASETS:
        raise ValueError(f"--env_kwargs applies to the gymnasium datasets ({', '.join(RL_GYM_DATASETS)}), "
                         f"not --dataset={c.dataset}")
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
    if not all(math.isfinite(x) and x >= 0 for x in sizes):
        raise ValueError(f"--step_sizes={text}: step sizes must be finite and >= 0")
    return sizes


def check_metatest_config(c: MetaTestConfig) -> None:
    """Raise ValueError with a one-line message for any impossible meta-test setting."""
    if not c.model:
        raise ValueError("--model is required: the model file written by meta-training")
    _check_task(c)
    if c.dataset in RL_DATASETS:
        _check_rl(c)
        _check_choice(c, "init", ("trained", "random"))
        if c.plot_with and not c.plot:
            raise ValueError("--plot_with draws into --plot: give --plot=FILE.png too")
        for path in filter(None, c.plot_with.split(",")):
            if not os.path.isfile(path):
                raise ValueError(f"--plot_with: {path}: no such file (a JSON written by --output)")
        if c.episodes_per_task < 0:
            raise ValueError(f"--episodes_per_task must be >= 1 (or 0: the MAML evaluation's), "
                             f"got {c.episodes_per_task}")
        if c.test_tasks and not os.path.isfile(c.test_tasks):
            raise ValueError(f"--test_tasks: {c.test_tasks}: no such file (a JSON list of task parameters)")
        if c.repeats < 1:
            raise ValueError(f"--repeats must be >= 1, got {c.repeats}")
        parse_step_sizes(c.step_sizes, c.num_inner_iterations)
    elif c.test_tasks or c.repeats != 1 or c.step_sizes:
        raise ValueError("--test_tasks, --repeats and --step_sizes are for RL datasets (navigation2d, "
                         "halfcheetah_*, ant_dir)")
    _check_choice(c, "split", ("test", "val"))
    _check_choice(c, "imaml_inner", IMAML_INNER_MODES)
    if c.num_tasks < 2:
        raise ValueError(f"--num_tasks must be >= 2 for a confidence interval, got {c.num_tasks}")
    if c.imaml_lambda_reg < 0:
        raise ValueError(f"--imaml_lambda_reg must be >= 0, got {c.imaml_lambda_reg}")
    for name in ("batch", "num_train_samples_per_class"):
        if getattr(c, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(c, name)}")
    if c.num_inner_iterations < 0:
        raise ValueError(f"--num_inner_iterations must be >= 0, got {c.num_inner_iterations}")
    _check_learning_rate("inner_lr", c.inner_lr)
    if not math.isfinite(c.imaml_lambda_reg):
        raise ValueError(f"--imaml_lambda_reg must be finite, got {c.imaml_lambda_reg}")
    if c.inner_batch_size < -1 or c.inner_batch_size == 0:
        raise ValueError(f"--inner_batch_size must be -1 (the whole support set) or >= 1, got {c.inner_batch_size}")
    if c.num_threads < 0:
        raise ValueError(f"--num_threads must be >= 0 (0: the default layout), got {c.num_threads}")


def _check_learning_rate(name: str, value: float) -> None:
    """A learning rate must be a finite number > 0 (inf / nan are refused; there is no upper bound,
    since a sane one depends on the model and optimizer: a rate that makes training diverge is caught
    when the loss or the meta-parameters stop being finite)."""
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--{name} must be a finite number > 0, got {value}")


def check_output_folders(*paths: str) -> None:
    """Raise ValueError naming the folder if a file cannot be created at each of `paths` (a path
    ending in os.sep is a folder itself): the nearest existing folder must be a writable directory."""
    for path in paths:
        folder = os.path.abspath(path if path.endswith(os.sep) else (os.path.dirname(path) or "."))
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
