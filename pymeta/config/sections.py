"""The settings of a run, one dataclass per concern: the task and its inner loop (shared by training
and meta-test: `TaskSection`, `SupervisedTaskSection`, `IMAMLInnerSection`, `RLTaskSection`), the
meta-learning algorithm (`AlgorithmSection`, `IMAMLSection`, `SeqFOMAMLSection`, `RLSection`), the
run itself (`RunSection`: length, cadence, files). `RunConfig` (`pymeta-train`) and `MetaTestConfig`
(`pymeta-metatest`) are made of them; every field is the command-line flag of the same name (the
original pyMeta's names). The algorithm sections' defaults are their constructors' (checked by
tests/test_defaults.py). No TensorFlow import here: `--help` stays fast."""

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Tuple, Type, TypeVar

from pymeta.config.fields import option, redefault
from pymeta.registry import (DATASETS, INNER_OPTIMIZERS, METAMODELS, OMNIGLOT_PROTOCOLS, RL_METAMODELS,
                             SEQ_FOMAML_VARIANTS)
from pymeta.runtime import PRECISIONS

JIT_COMPILE = ("auto", "on", "off")
IMAML_INNER_MODES = ("pullback", "proximal")  # pymeta.metalearners.imaml.IMAML_INNER_MODES
OUTER_OPTIMIZERS = ("auto", "trpo", "adam")
MAX_UNROLLED_INNER_STEPS = 20  # --jit_compile=auto: XLA compile time grows with the unrolled inner steps


@dataclasses.dataclass
class TaskSection:
    """Which tasks and which meta-learner; the inner loop's step size; the seed."""
    dataset: str = option("omniglot", "the task family (navigation2d, halfcheetah_vel, halfcheetah_dir, ant_dir: "
                          "meta-reinforcement learning with pymeta.rl)", DATASETS, record="flag")
    data_path: str = option("", "dataset file (default datasets/<dataset>/<dataset>.pkl)", identity=False)
    metamodel: str = option("fomaml", "the meta-learner (maml: second order; seqfomaml: FOMAML on sequences "
                            "of tasks)", METAMODELS, record="flag")
    inner_lr: float = option(0.001, "inner learning rate (SGD, or Adam with beta_1=0 for Reptile and sinusoid); "
                             "RL: the step size of the inner policy-gradient steps (SGD), when not given "
                             "the dataset's (navigation2d 0.5, halfcheetah and ant 0.1)", record="flag")
    seed: int = option(100, "random seed (numpy, Python, TensorFlow)")


@dataclasses.dataclass
class SupervisedTaskSection:
    """The supervised datasets' tasks (N-way K-shot, Q queries) and inner loop."""
    omniglot_protocol: str = option("standard", "standard: 1200 rotated training characters (literature); "
                                    "allcharacters: the original pyMeta's alphabet split", OMNIGLOT_PROTOCOLS,
                                    record="flag")
    num_output_classes: int = option(5, "N: classes per task (N-way)", record="flag")
    num_train_samples_per_class: int = option(5, "K: training (support) samples per class (K-shot); "
                                              "sinusoid: training points", record="flag")
    num_test_samples_per_class: int = option(15, "Q: test (query) samples per class; sinusoid: test points",
                                             record="flag")
    inner_batch_size: int = option(-1, "inner minibatch size; -1 = N*K (the whole support set)", record="flag")
    inner_optimizer: str = option("auto", "auto: the original's choice (Adam with beta_1=0 for Reptile and "
                                  "sinusoid, SGD otherwise)", INNER_OPTIMIZERS, record="flag")
    transductive: bool = option(True, "evaluate with the batch statistics of the query set (original "
                                "behaviour); --notransductive uses the support set's", identity=False,
                                record="flag")
    precision: str = option("float32", "mixed_bfloat16 computes convolutions in bfloat16 (faster on CPUs "
                            "with bf16)", PRECISIONS, record="flag")


@dataclasses.dataclass
class IMAMLInnerSection:
    """iMAML's inner loop (`iMAMLMetaLearner`'s lambda_reg and inner_mode): shared with the meta-test."""
    metamodels: ClassVar[Tuple[str, ...]] = ("imaml",)
    imaml_lambda_reg: float = option(2.0, "iMAML: strength lambda of the proximal term "
                                     "(lambda/2)||phi - theta||^2 (meta-test: 0 adapts without it)",
                                     record="flag", param="lambda_reg")
    imaml_inner: str = option("pullback", "iMAML's inner loop: pullback (the reference implementation: plain "
                              "steps, one step on the proximal term, the implicit gradient; evaluation with "
                              "plain steps) or proximal (every step and evaluation on loss + proximal term)",
                              IMAML_INNER_MODES, record="flag", param="inner_mode")


@dataclasses.dataclass
class RLTaskSection:
    """The RL datasets' tasks: episodes and returns (shared with the meta-test)."""
    horizon: int = option(0, "RL: steps per episode (0: the environment's, 100 for navigation2d, 200 for "
                          "halfcheetah and ant)", record="flag")
    gamma: float = option(0.99, "RL: discount of the returns the advantages are computed from", record="flag")
    gae_lambda: float = option(1.0, "RL: lambda of the generalised advantage estimate (1: plain returns minus "
                               "the linear baseline)", record="flag")
    restart_episodes: bool = option(False, "RL: every environment runs the whole horizon, a new episode of "
                                    "the same task following one that terminated (batches of episodes x "
                                    "horizon steps, as rllab's samplers behind the MAML paper's numbers); "
                                    "the returns reported are each environment's first episode's",
                                    record="reader")
    env_kwargs: str = option("", "RL, gymnasium datasets: a JSON dict of keyword arguments for every task's "
                             "gymnasium.make, e.g. '{\"frame_skip\": 1}' (the MAML paper's rllab HalfCheetah "
                             "stepped 0.01 s of simulation, gymnasium's HalfCheetah-v5 0.05 s); a task's own "
                             "(e.g. halfcheetah_dir's direction) take precedence. Any keyword but the rendering "
                             "ones; frame_skip (1..50), the reward weights, reset_noise_scale and the observation "
                             "and health options are typed and bounded, and they are all a model file's recorded "
                             "value may set (pymeta.config.gym_kwargs)", record="flag")


@dataclasses.dataclass
class TaskConfig(RLTaskSection, IMAMLInnerSection, SupervisedTaskSection, TaskSection):
    """What the tasks are and how a task is learnt (the inner loop): shared by training and meta-test."""

    def resolved_inner_batch_size(self) -> int:
        """-1 means N*K (the whole support set), as in the original; sinusoid has N = 1."""
        if self.inner_batch_size < 0:
            n = 1 if self.dataset == "sinusoid" else self.num_output_classes
            return n * self.num_train_samples_per_class
        return self.inner_batch_size


@dataclasses.dataclass
class AlgorithmSection:
    """The outer loop of every meta-learner (`GradBasedMetaLearner`'s arguments and the meta-batch)."""
    metamodels: ClassVar[Tuple[str, ...]] = METAMODELS
    meta_batch_size: int = option(5, "tasks per meta-iteration (RL, when not given: navigation2d 20, "
                                  "halfcheetah and ant 40)", record="reader")
    meta_lr: float = option(0.001, "outer learning rate (Adam for FOMAML, SGD for Reptile; RL: Adam's, when "
                            "not given 0.01; unused by TRPO)")
    num_inner_training_iterations: int = option(5, "inner steps per task (RL: inner policy-gradient steps, "
                                                "when not given 1)", record="num_inner_iterations")
    anneal_meta_lr: bool = option(False, "decay meta_lr linearly to 0 over the run (Reptile's recipe)")
    persistent_inner_state: bool = option(False, "keep the inner optimizer's state (Adam's moments, step "
                                          "count) from task to task, as the original Reptile code did (fomaml, "
                                          "reptile; saved in the .h5 model); default: fresh for every task",
                                          record="reader", param="persistent_inner_state")
    fast: bool = option(True, "one compiled call per meta-batch (--nofast: the step-by-step task_begin / "
                        "fit_n_iterations / task_end / update API)")
    iterations_per_call: int = option(0, "meta-iterations per compiled call (0: 10 for sinusoid, 1 otherwise)")
    jit_compile: str = option("auto", "compile the meta-training step with XLA, which unrolls every inner "
                              "step (auto: for sinusoid with <= 20 inner steps only)", JIT_COMPILE, identity=False)

    def resolved_jit_compile(self, dataset: str) -> bool:
        """--jit_compile: on / off, or auto: XLA for sinusoid with <= MAX_UNROLLED_INNER_STEPS inner
        steps (XLA unrolls every inner step: compiling many takes minutes)."""
        if self.jit_compile != "auto":
            return self.jit_compile == "on"
        return dataset == "sinusoid" and self.num_inner_training_iterations <= MAX_UNROLLED_INNER_STEPS


@dataclasses.dataclass
class IMAMLSection:
    """iMAML's implicit meta-gradient (`iMAMLMetaLearner`'s conjugate-gradient solver)."""
    metamodels: ClassVar[Tuple[str, ...]] = ("imaml",)
    imaml_cg_steps: int = option(5, "iMAML: conjugate-gradient steps per task (0 = the FOMAML gradient)",
                                 record="reader", param="n_iters_optimizer")
    imaml_cg_damping: float = option(1.0, "iMAML: damping added to I + H/lambda", record="reader",
                                     param="cg_damping")
    imaml_lam_damping: float = option(0.0, "iMAML: the meta-gradient's system uses H/(lambda + lam_damping), "
                                      "as the reference implementation (its default: 10; 0: exact)",
                                      record="reader", param="lam_damping")
    imaml_cg_tol: float = option(1e-6, "iMAML: conjugate gradient stops once its residual is below "
                                 "cg_tol * ||b|| (the remaining steps cost nothing)", record="reader", param="cg_tol")


@dataclasses.dataclass
class SeqFOMAMLSection:
    """SeqFOMAML (`SeqFOMAMLMetaLearner`): the auxiliary losses and the sequences' length."""
    metamodels: ClassVar[Tuple[str, ...]] = ("seqfomaml",)
    seqfomaml_variant: str = option("loss_after_each_task", "SeqFOMAML: the auxiliary losses (Spigler 2019; "
                                    "loss_after_each_task is the paper's best)", SEQ_FOMAML_VARIANTS,
                                    record="reader", param="variant")
    seqfomaml_sequence_length: int = option(5, "SeqFOMAML: tasks learnt one after the other in each "
                                            "meta-training sequence", record="reader")


@dataclasses.dataclass
class RLSection:
    """Meta-RL training (`pymeta.rl.problems.build_problem`): episodes and the outer step."""
    metamodels: ClassVar[Tuple[str, ...]] = RL_METAMODELS
    episodes_per_task: int = option(20, "RL: episodes collected per task for each inner step and after "
                                    "adaptation", record="reader")
    outer_optimizer: str = option("auto", "RL: the outer step (auto: trpo for maml, adam for fomaml and "
                                  "reptile; trpo is for maml only)", OUTER_OPTIMIZERS, record="reader")
    max_kl: float = option(0.01, "RL, TRPO: largest mean KL divergence of an outer step", record="reader")


@dataclasses.dataclass
class RunSection:
    """The run: its length, validation / save cadence, files, resume, threads and output."""
    num_outer_metatraining_iterations: int = option(10000, "meta-iterations (outer loop)", identity=False)
    num_validation_batches: int = option(10, "meta-batches of validation tasks averaged at each validation "
                                         "(RL, when not given: 1, i.e. meta_batch_size fixed validation tasks)")
    save_every_k_iterations: int = option(1000, "save the model every k (RL, when not given: 10)", identity=False)
    test_every_k_iterations: int = option(100, "validate every k (RL, when not given: 10)")
    model_save_filename: str = option("saved/model.h5", "where to save the model (.h5)",
                                      aliases=("model_save_filaname",), identity=False)  # the original's spelling
    progress: bool = option(True, "show a progress bar", identity=False)
    num_threads: int = option(0, "TensorFlow threads (0: all cores; under MPI: cores / ranks per node)",
                              identity=False)
    inter_op_threads: int = option(0, "TensorFlow ops run at once (0: as --num_threads); --num_threads=1 "
                                   "--inter_op_threads=2 runs two tasks of a meta-batch at a time, one thread "
                                   "each (the fastest layout for the conv nets on 2 cores)", identity=False)
    run_dir: str = option("", "checkpoints and TensorBoard logs (default: <model file>_run/, e.g. "
                          "saved/model.h5_run/)", identity=False)
    resume: bool = option(True, "continue from the last checkpoint in --run_dir if there is one", identity=False)
    init_model: str = option("", "start from the weights of this model file or checkpoint (a warm start, e.g. "
                             "to train a saved model further: iterations, optimizer state and random streams "
                             "start afresh from --seed; a resumed checkpoint takes precedence)")
    overwrite: bool = option(False, "allow replacing a model file / run directory of another run", identity=False)
    keep_checkpoints: int = option(3, "checkpoints kept in --run_dir", identity=False)
    tensorboard: bool = option(True, "write TensorBoard summaries to <run_dir>/tensorboard", identity=False)

    def resolved_run_dir(self) -> str:
        """Checkpoints and TensorBoard logs: --run_dir, default <model file>_run/ (the file's whole name:
        model.h5 and model.keras never share a run folder)."""
        return self.run_dir or f"{self.model_save_filename}_run"


if TYPE_CHECKING:
    from _typeshed import DataclassInstance
_S = TypeVar("_S", bound="DataclassInstance")


def _section(cls: Type[_S], flat: object) -> _S:
    """The section `cls` with the values of the fields of the same names in `flat`."""
    return cls(**{f.name: getattr(flat, f.name) for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class RunSections:
    """A meta-training run's settings split by concern (`RunConfig.sections()`): what the run code reads,
    each field from the section that holds it (so that mypy rejects a field read from the wrong one)."""
    task: TaskConfig
    algorithm: AlgorithmSection
    imaml: IMAMLSection
    seqfomaml: SeqFOMAMLSection
    rl: RLSection
    run: RunSection

    def values(self) -> Dict[str, Any]:
        """{field name: value} of every section: the flat record (what checkpoints and model files record)."""
        return {k: v for f in dataclasses.fields(self) for k, v in dataclasses.asdict(getattr(self, f.name)).items()}


@dataclasses.dataclass
class RunConfig(RunSection, RLSection, SeqFOMAMLSection, IMAMLSection, AlgorithmSection, TaskConfig):
    """Everything a meta-training run needs, one field per flag of `pymeta-train` / `example_metatrain.py`
    (the original pyMeta's flat names); the run code reads its `sections()`."""

    def sections(self) -> RunSections:
        """The settings split by concern (each section a copy: changing it leaves this config alone)."""
        return RunSections(task=_section(TaskConfig, self), algorithm=_section(AlgorithmSection, self),
                           imaml=_section(IMAMLSection, self), seqfomaml=_section(SeqFOMAMLSection, self),
                           rl=_section(RLSection, self), run=_section(RunSection, self))


@dataclasses.dataclass
class MetaTestConfig(TaskConfig):
    """A meta-test of a saved model; the flags of `pymeta-metatest` / `scripts/meta_test.py`."""
    model: str = option("", "the .h5/.keras file written by meta-training (required); the settings it "
                        "records are the defaults of the task and inner-loop flags")
    pretrained: str = option("", "a model of the zoo by name (pretrained/index.json), NAME or NAME:RESULT (e.g. "
                             "omniglot_imaml_5w1s:5shot): its file and the whole protocol of its results row "
                             "(shots, queries, steps, tasks, seed); flags given still win")
    num_train_samples_per_class: int = redefault(TaskConfig, "num_train_samples_per_class", 1)
    inner_lr: float = redefault(TaskConfig, "inner_lr", 0.01)
    seed: int = redefault(TaskConfig, "seed", 0)
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
    progress: bool = option(True, "show progress: a bar on a terminal, else a line per tenth of the tasks or 30 s")


@dataclasses.dataclass
class CliOptions:
    """Options of the command-line programs themselves."""
    tf_log_level: int = option(-1, "TensorFlow's C++ log level (TF_CPP_MIN_LOG_LEVEL: 0 all ... 3 errors "
                               "hidden); -1: TF_CPP_MIN_LOG_LEVEL if set, else TensorFlow's start-up lines "
                               "are hidden")


# the sections whose fields are meta-learner constructor arguments (`param`), for their `metamodels`
ALGORITHM_SECTIONS = (AlgorithmSection, IMAMLInnerSection, IMAMLSection, SeqFOMAMLSection)
