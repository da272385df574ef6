"""The settings of a meta-training run (`RunConfig`) and of a meta-test (`MetaTestConfig`).

Each field's type, default and help text generate the command-line flag of the same name
(`define_flags`), so a flag and its default are defined once, here. `check_config` /
`check_metatest_config` reject impossible settings up front with one-line messages naming the fix.
`model_settings` is what a model file records about its training, `apply_model_settings` turns it
into meta-test defaults. No TensorFlow import here: `--help` stays fast.
"""

import dataclasses
import json
import math
import os
import sys
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

from pymeta.registry import (DATASETS, INNER_OPTIMIZERS, METAMODELS, OMNIGLOT_PROTOCOLS, RL_DATASETS, RL_DEFAULTS,
                             RL_GYM_DATASETS, RL_METAMODELS, SEQ_FOMAML_VARIANTS)
from pymeta.runtime import PRECISIONS


def option(default: Any, help: str, choices: Optional[Tuple[str, ...]] = None, aliases: Tuple[str, ...] = ()):
    """A config field that is also a command-line flag. `choices` are listed in the help and checked by
    `check_config` / `check_metatest_config` (one-line errors), not by the flag parser."""
    if choices:
        help = f"{help} ({', '.join(choices)})"
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "aliases": aliases})


def _redefault(cls, name: str, default: Any):
    """Field `name` of `cls` with another default (same help text and choices)."""
    base = {f.name: f for f in dataclasses.fields(cls)}[name]
    return dataclasses.field(default=default, metadata=base.metadata)


JIT_COMPILE = ("auto", "on", "off")
MAX_UNROLLED_INNER_STEPS = 20  # --jit_compile=auto: XLA compile time grows with the unrolled inner steps


@dataclasses.dataclass
class TaskConfig:
    """What the tasks are and how a task is learnt (the inner loop): shared by training and meta-test."""
    dataset: str = option("omniglot", "the task family (navigation2d, halfcheetah_vel, halfcheetah_dir, ant_dir: "
                          "meta-reinforcement learning with pymeta.rl)", DATASETS)
    data_path: str = option("", "dataset file (default datasets/<dataset>/<dataset>.pkl)")
    omniglot_protocol: str = option("standard", "standard: 1200 rotated training characters (literature); "
                                    "allcharacters: the original pyMeta's alphabet split", OMNIGLOT_PROTOCOLS)
    metamodel: str = option("fomaml", "the meta-learner (maml: second order; seqfomaml: FOMAML on sequences "
                            "of tasks)", METAMODELS)
    num_output_classes: int = option(5, "N: classes per task (N-way)")
    num_train_samples_per_class: int = option(5, "K: training (support) samples per class (K-shot); "
                                              "sinusoid: training points")
    num_test_samples_per_class: int = option(15, "Q: test (query) samples per class; sinusoid: test points")
    inner_batch_size: int = option(-1, "inner minibatch size; -1 = N*K (the whole support set)")
    inner_lr: float = option(0.001, "inner learning rate (SGD, or Adam with beta_1=0 for Reptile and sinusoid); "
                             "RL: the step size of the inner policy-gradient steps (SGD), when not given "
                             "the dataset's (navigation2d 0.5, halfcheetah and ant 0.1)")
    inner_optimizer: str = option("auto", "auto: the original's choice (Adam with beta_1=0 for Reptile and "
                                  "sinusoid, SGD otherwise)", INNER_OPTIMIZERS)
    imaml_lambda_reg: float = option(2.0, "iMAML: strength lambda of the proximal term "
                                     "(lambda/2)||phi - theta||^2 (meta-test: 0 adapts without it)")
    imaml_inner: str = option("pullback", "iMAML's inner loop: pullback (the reference implementation: plain "
                              "steps, one step on the proximal term, the implicit gradient; evaluation with "
                              "plain steps) or proximal (every step and evaluation on loss + proximal term)",
                              ("pullback", "proximal"))
    transductive: bool = option(True, "evaluate with the batch statistics of the query set (original "
                                "behaviour); --notransductive uses the support set's")
    precision: str = option("float32", "mixed_bfloat16 computes convolutions in bfloat16 (faster on CPUs "
                            "with bf16)", PRECISIONS)
    seed: int = option(100, "random seed (numpy, Python, TensorFlow)")
    horizon: int = option(0, "RL: steps per episode (0: the environment's, 100 for navigation2d, 200 for "
                          "halfcheetah and ant)")
    gamma: float = option(0.99, "RL: discount of the returns the advantages are computed from")
    gae_lambda: float = option(1.0, "RL: lambda of the generalised advantage estimate (1: plain returns minus "
                               "the linear baseline)")
    restart_episodes: bool = option(False, "RL: every environment runs the whole horizon, a new episode of "
                                    "the same task following one that terminated (batches of episodes x "
                                    "horizon steps, as rllab's samplers behind the MAML paper's numbers); "
                                    "the returns reported are each environment's first episode's")
    env_kwargs: str = option("", "RL, gymnasium datasets: a JSON dict of keyword arguments for every task's "
                             "gymnasium.make, e.g. '{\"frame_skip\": 1}' (the MAML paper's rllab HalfCheetah "
                             "stepped 0.01 s of simulation, gymnasium's HalfCheetah-v5 0.05 s); a task's own "
                             "(e.g. halfcheetah_dir's direction) take precedence")


@dataclasses.dataclass
class RunConfig(TaskConfig):
    """Everything a meta-training run needs; the flags of `pymeta-train` / `example_metatrain.py`."""
    num_outer_metatraining_iterations: int = option(10000, "meta-iterations (outer loop)")
    meta_batch_size: int = option(5, "tasks per meta-iteration (RL, when not given: navigation2d 20, "
                                  "halfcheetah and ant 40)")
    meta_lr: float = option(0.001, "outer learning rate (Adam for FOMAML, SGD for Reptile; RL: Adam's, when "
                            "not given 0.01; unused by TRPO)")
    num_validation_batches: int = option(10, "meta-batches of validation tasks averaged at each validation "
                                         "(RL, when not given: 1, i.e. meta_batch_size fixed validation tasks)")
    num_inner_training_iterations: int = option(5, "inner steps per task (RL: inner policy-gradient steps, "
                                                "when not given 1)")
    save_every_k_iterations: int = option(1000, "save the model every k (RL, when not given: 10)")
    test_every_k_iterations: int = option(100, "validate every k (RL, when not given: 10)")
    episodes_per_task: int = option(20, "RL: episodes collected per task for each inner step and after "
                                    "adaptation")
    outer_optimizer: str = option("auto", "RL: the outer step (auto: trpo for maml, adam for fomaml and "
                                  "reptile; trpo is for maml only)", ("auto", "trpo", "adam"))
    max_kl: float = option(0.01, "RL, TRPO: largest mean KL divergence of an outer step")
    model_save_filename: str = option("saved/model.h5", "where to save the model (.h5)",
                                      aliases=("model_save_filaname",))  # the original's spelling
    fast: bool = option(True, "one compiled call per meta-batch (--nofast: the step-by-step task_begin / "
                        "fit_n_iterations / task_end / update API)")
    iterations_per_call: int = option(0, "meta-iterations per compiled call (0: 10 for sinusoid, 1 otherwise)")
    progress: bool = option(True, "show a progress bar")
    anneal_meta_lr: bool = option(False, "decay meta_lr linearly to 0 over the run (Reptile's recipe)")
    num_threads: int = option(0, "TensorFlow threads (0: all cores; under MPI: cores / ranks per node)")
    inter_op_threads: int = option(0, "TensorFlow ops run at once (0: as --num_threads); --num_threads=1 "
                                   "--inter_op_threads=2 runs two tasks of a meta-batch at a time, one thread "
                                   "each (the fastest layout for the conv nets on 2 cores)")
    imaml_cg_steps: int = option(5, "iMAML: conjugate-gradient steps per task (0 = the FOMAML gradient)")
    imaml_cg_damping: float = option(1.0, "iMAML: damping added to I + H/lambda")
    imaml_lam_damping: float = option(0.0, "iMAML: the meta-gradient's system uses H/(lambda + lam_damping), "
                                      "as the reference implementation (its default: 10; 0: exact)")
    imaml_cg_tol: float = option(1e-6, "iMAML: conjugate gradient stops once its residual is below "
                                 "cg_tol * ||b|| (the remaining steps cost nothing)")
    seqfomaml_variant: str = option("loss_after_each_task", "SeqFOMAML: the auxiliary losses (Spigler 2019; "
                                    "loss_after_each_task is the paper's best)", SEQ_FOMAML_VARIANTS)
    seqfomaml_sequence_length: int = option(5, "SeqFOMAML: tasks learnt one after the other in each "
                                            "meta-training sequence")
    persistent_inner_state: bool = option(False, "keep the inner optimizer's state (Adam's moments, step "
                                          "count) from task to task, as the original Reptile code did (fomaml, "
                                          "reptile; saved in the .h5 model); default: fresh for every task")
    run_dir: str = option("", "checkpoints and TensorBoard logs (default: <model file>_run/, e.g. "
                          "saved/model.h5_run/)")
    resume: bool = option(True, "continue from the last checkpoint in --run_dir if there is one")
    init_model: str = option("", "start from the weights of this model file or checkpoint (a warm start, e.g. "
                             "to train a saved model further: iterations, optimizer state and random streams "
                             "start afresh from --seed; a resumed checkpoint takes precedence)")
    overwrite: bool = option(False, "allow replacing a model file / run directory of another run")
    keep_checkpoints: int = option(3, "checkpoints kept in --run_dir")
    tensorboard: bool = option(True, "write TensorBoard summaries to <run_dir>/tensorboard")
    jit_compile: str = option("auto", "compile the meta-training step with XLA, which unrolls every inner "
                              "step (auto: for sinusoid with <= 20 inner steps only)", ("auto", "on", "off"))

    def resolved_run_dir(self) -> str:
        """Checkpoints and TensorBoard logs: --run_dir, default <model file>_run/ (the file's whole name:
        model.h5 and model.keras never share a run folder)."""
        return self.run_dir or f"{self.model_save_filename}_run"

    def resolved_jit_compile(self) -> bool:
        """--jit_compile: on / off, or auto: XLA for sinusoid with <= MAX_UNROLLED_INNER_STEPS inner
        steps (XLA unrolls every inner step: compiling many takes minutes)."""
        if self.jit_compile != "auto":
            return self.jit_compile == "on"
        return self.dataset == "sinusoid" and self.num_inner_training_iterations <= MAX_UNROLLED_INNER_STEPS

    def resolved_inner_batch_size(self) -> int:
        """-1 means N*K (the whole support set), as in the original; sinusoid has N = 1."""
        if self.inner_batch_size < 0:
            n = 1 if self.dataset == "sinusoid" else self.num_output_classes
            return n * self.num_train_samples_per_class
        return self.inner_batch_size


@dataclasses.dataclass
class MetaTestConfig(TaskConfig):
    """A meta-test of a saved model; the flags of `pymeta-metatest` / `scripts/meta_test.py`."""
    model: str = option("", "the .h5/.keras file written by meta-training (required); the settings it "
                        "records are the defaults of the task and inner-loop flags")
    num_train_samples_per_class: int = _redefault(TaskConfig, "num_train_samples_per_class", 1)
    inner_lr: float = _redefault(TaskConfig, "inner_lr", 0.01)
    seed: int = _redefault(TaskConfig, "seed", 0)
    num_inner_iterations: int = option(10, "inner steps per test task")
    num_tasks: int = option(1000, "meta-test tasks (>= 600 for a paper table)")
    batch: int = option(25, "tasks per compiled call")
    split: str = option("test", "evaluate on the meta-test or the validation tasks", ("test", "val"))
    fresh_inner_state: bool = option(False, "ignore an inner optimizer state saved with the model (start each "
                                     "task fresh)")
    output: str = option("", "also write the result as JSON here")
    episodes_per_task: int = option(0, "RL: episodes per task and adaptation step (0: the MAML evaluation's, "
                                    "40 for navigation2d, 20 for halfcheetah and ant)")
    init: str = option("trained", "RL: evaluate the --model's initialisation, or a fresh random "
                       "initialisation of the same policy (seeded by --seed)", ("trained", "random"))
    plot: str = option("", "RL: also draw the return against the adaptation steps to this PNG")
    plot_with: str = option("", "RL: also draw in --plot the curves of these earlier meta-test JSONs (--output; "
                            "comma-separated), e.g. of --init random and of a jointly trained policy, for "
                            "the paper's meta-learnt vs pretrained vs random figure")
    test_tasks: str = option("", "RL: a JSON file of test-task parameters to adapt to (a list, or an earlier "
                             "--output's task_params), at most --num_tasks of them, instead of tasks drawn "
                             "with --seed; e.g. pretrained/navigation2d_paper_test_goals.json, the 40 goals "
                             "of the MAML paper's test script")
    repeats: int = option(1, "RL: adapt to every test task this many times, each with its own episodes "
                          "(seeds --seed, --seed + 1, ...), and report the mean (after two steps, 2D navigation's "
                          "40-task mean moves by about 1 between single passes)")
    step_sizes: str = option("", "RL: the step size of each adaptation step, comma-separated, one per step "
                             "(default: --inner_lr, then --inner_lr / 2: the MAML evaluation's), e.g. 0.25,0.25,0.25")
    num_threads: int = option(0, "TensorFlow threads per op (0: the default layout, several tasks of a batch "
                              "at once)")


@dataclasses.dataclass
class CliOptions:
    """Options of the command-line programs themselves."""
    tf_log_level: int = option(-1, "TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL: 0 all ... 3 errors "
                               "hidden); -1: TF_CPP_MIN_LOG_LEVEL if set, else TensorFlow's start-up lines "
                               "are hidden")


# --- flags -------------------------------------------------------------------------------------------------
def define_flags(cls, flag_values=None, module_name: Optional[str] = None) -> None:
    """Define one absl flag per field of the dataclass `cls` (name, default, help, choices, aliases).

    module_name: the module the flags belong to in --help (default: the running program).
    """
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    module_name = module_name or sys.argv[0]
    for f in dataclasses.fields(cls):
        help_text = f.metadata["help"]
        if f.type is bool:
            flag = flags.BooleanFlag(f.name, f.default, help_text)
        elif f.type is int:
            flag = flags.Flag(flags.IntegerParser(), flags.ArgumentSerializer(), f.name, f.default, help_text)
        elif f.type is float:
            flag = flags.Flag(flags.FloatParser(), flags.ArgumentSerializer(), f.name, f.default, help_text)
        else:
            flag = flags.Flag(flags.ArgumentParser(), flags.ArgumentSerializer(), f.name, f.default, help_text)
        flags.DEFINE_flag(flag, fv, module_name=module_name)
        for alias in f.metadata["aliases"]:
            flags.DEFINE_alias(alias, f.name, flag_values=fv, module_name=module_name)


def config_from_flags(cls, flag_values=None):
    """An instance of the dataclass `cls` with the values of its flags."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    return cls(**{f.name: fv[f.name].value for f in dataclasses.fields(cls)})


def flags_given(cls, flag_values=None) -> set:
    """The fields of `cls` whose flag was given on the command line (an alias counts)."""
    from absl import flags
    fv = flags.FLAGS if flag_values is None else flag_values
    given = {f.name for f in dataclasses.fields(cls) if fv[f.name].present}
    for f in dataclasses.fields(cls):
        if any(fv[a].present for a in f.metadata["aliases"]):
            given.add(f.name)
    return given


# --- validation --------------------------------------------------------------------------------------------
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
    _check_choice(c, "outer_optimizer", ("auto", "trpo", "adam"))
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


# RL runs: the defaults of the flags whose supervised default does not fit RL, used when the flag is not
# given (see resolve_rl_defaults); meta_batch_size, inner_lr and horizon come from RL_DEFAULTS
RL_RUN_DEFAULTS = {"num_inner_training_iterations": 1, "meta_lr": 0.01, "num_validation_batches": 1,
                   "test_every_k_iterations": 10, "save_every_k_iterations": 10}


def resolve_rl_defaults(c: RunConfig, given: Optional[Collection[str]] = None) -> RunConfig:
    """For an RL dataset: `c` with the dataset's defaults (RL_DEFAULTS: meta-batch, inner lr, horizon;
    RL_RUN_DEFAULTS) for the flags not in `given` (the flags set on the command line; None: the fields
    that still have their dataclass default count as not given), --horizon=0 replaced by the
    environment's and --outer_optimizer=auto by trpo (maml) or adam. Other datasets: `c` unchanged."""
    if c.dataset not in RL_DATASETS:
        return c
    if given is None:
        defaults = RunConfig()
        given = {f.name for f in dataclasses.fields(RunConfig) if getattr(c, f.name) != getattr(defaults, f.name)}
    values = {**RL_RUN_DEFAULTS, **{k: v for k, v in RL_DEFAULTS[c.dataset].items() if k != "horizon"}}
    changes = {k: v for k, v in values.items() if k not in given}
    if c.horizon == 0:
        changes["horizon"] = RL_DEFAULTS[c.dataset]["horizon"]
    if c.outer_optimizer == "auto":
        changes["outer_optimizer"] = "trpo" if c.metamodel == "maml" else "adam"
    return dataclasses.replace(c, **changes)


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
    _check_choice(c, "imaml_inner", ("pullback", "proximal"))
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


# --- runs and their files ------------------------------------------------------------------------------------
# the settings a checkpoint must share with the run that resumes it
RUN_IDENTITY = ("dataset", "metamodel", "num_output_classes", "num_train_samples_per_class",
                "num_test_samples_per_class", "meta_batch_size", "meta_lr", "inner_lr",
                "num_inner_training_iterations", "inner_batch_size", "seed", "omniglot_protocol",
                "precision", "anneal_meta_lr", "inner_optimizer", "fast", "iterations_per_call",
                "test_every_k_iterations", "num_validation_batches", "imaml_lambda_reg", "imaml_cg_steps",
                "imaml_cg_damping", "imaml_lam_damping", "persistent_inner_state", "seqfomaml_variant",
                "seqfomaml_sequence_length", "imaml_inner", "imaml_cg_tol", "episodes_per_task", "horizon",
                "gamma", "gae_lambda", "outer_optimizer", "max_kl", "restart_episodes", "init_model", "env_kwargs")


def run_identity(c: RunConfig) -> Dict[str, Any]:
    """The settings of `c` a checkpoint records and a resuming run must share, and the model file's
    name (`model_file`, extension included)."""
    return {**{k: getattr(c, k) for k in RUN_IDENTITY}, "model_file": os.path.basename(c.model_save_filename)}


def artifact_path(model_save_filename: str, suffix: str) -> str:
    """A file next to the model: saved/model.h5 -> saved/model_<suffix>."""
    return f"{os.path.splitext(model_save_filename)[0]}_{suffix}"


# what a model file records about its training (RunConfig fields), and the meta-test flag each one is the
# default of (None: recorded for the reader only)
MODEL_SETTINGS = {
    "dataset": "dataset", "omniglot_protocol": "omniglot_protocol", "metamodel": "metamodel",
    "num_output_classes": "num_output_classes", "num_train_samples_per_class": "num_train_samples_per_class",
    "num_test_samples_per_class": "num_test_samples_per_class", "inner_optimizer": "inner_optimizer",
    "inner_lr": "inner_lr", "num_inner_training_iterations": "num_inner_iterations",
    "inner_batch_size": "inner_batch_size", "imaml_lambda_reg": "imaml_lambda_reg", "precision": "precision",
    "imaml_inner": "imaml_inner", "imaml_cg_tol": None,
    "transductive": "transductive", "imaml_cg_steps": None, "imaml_cg_damping": None,
    "imaml_lam_damping": None, "persistent_inner_state": None, "seqfomaml_variant": None,
    "seqfomaml_sequence_length": None, "horizon": "horizon", "gamma": "gamma", "gae_lambda": "gae_lambda",
    "episodes_per_task": None, "outer_optimizer": None, "max_kl": None, "meta_batch_size": None,
    "restart_episodes": None, "env_kwargs": "env_kwargs",
}


def model_settings(c: RunConfig, inner_optimizer: Optional[str] = None) -> Dict[str, Any]:
    """The settings a model file of run `c` records (JSON-able). inner_optimizer: the one the run
    actually used ('sgd' / 'adam'), recorded instead of 'auto'."""
    from pymeta import __version__
    settings = {k: getattr(c, k) for k in MODEL_SETTINGS}
    if inner_optimizer:
        settings["inner_optimizer"] = inner_optimizer
    settings["pymeta_version"] = __version__
    return settings


def apply_model_settings(c: MetaTestConfig, settings: Mapping[str, Any],
                         given: Collection[str] = ()) -> Tuple[MetaTestConfig, Dict[str, Any]]:
    """(config, taken): `c` with the meta-test fields that a model file's `settings` know replaced by
    the recorded values, except those in `given` (set explicitly); `taken` lists the replaced ones."""
    taken = {}
    for key, field_name in MODEL_SETTINGS.items():
        if field_name and key in settings and field_name not in given:
            taken[field_name] = settings[key]
    return dataclasses.replace(c, **taken), taken
