"""The supervised experiment (sinusoid, Omniglot, Mini-ImageNet) for the run loop (`pymeta.run.loop`):
set-up from a run's `RunSections`, meta-training steps (compiled chunks of `iterations_per_call`, or the
step-by-step API with --nofast), validation, the model file, and the final plots. MPI: every rank
trains and validates its share of each meta-batch (`DistributedMetaLearner`); rank 0 records."""

import dataclasses
import logging
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pymeta import mpi, problems, runtime
from pymeta.metalearner_factory import metalearner_from_config
from pymeta.checkpoint import kept_inner_state
from pymeta.config import RunSections, artifact_path, model_settings
from pymeta.evaluation import validate
from pymeta.model_io import save_model, warm_start
from pymeta.optimizer_defaults import inner_optimizer_name
from pymeta.plots import plot_learning_curve, plot_sinusoid
from pymeta.run.experiment import Step, Validation
from pymeta.run.monitoring import monitoring_leaves_the_run_alone
from pymeta.run.signals import SignalFlag, compiling

logger = logging.getLogger("pymeta.training")


def seeded_setup(s: RunSections, distributed: bool = False) -> Tuple[Any, Any, Any]:
    """Seed everything, then build (problem, model, metalearner) for the (checked) run `s`.

    distributed: wrap the meta-learner for an MPI run (`DistributedMetaLearner`); every rank uses the
    same seed and draws the same meta-batches, each processing its share of the tasks. SeqFOMAML
    meta-trains on sequences of `s.seqfomaml.seqfomaml_sequence_length` tasks (problem.metatrain).
    """
    task, algorithm, run = s.task, s.algorithm, s.run
    if distributed and task.metamodel == "seqfomaml":
        raise ValueError("--metamodel=seqfomaml does not run under MPI: start it without mpiexec")
    runtime.warn_if_bfloat16_is_emulated(task.precision)
    runtime.apply_thread_layout(*runtime.thread_layout(run, task, algorithm, distributed),
                                explicit=run.num_threads > 0 or run.inter_op_threads > 0)
    problem, model = problems.seeded_problem_and_model(
        task.seed, task.precision, task.dataset, task.metamodel, task.inner_lr, task.num_output_classes,
        task.num_train_samples_per_class, task.num_test_samples_per_class, algorithm.meta_batch_size,
        task.data_path or None, task.omniglot_protocol, inner_optimizer=task.inner_optimizer)
    if task.metamodel == "seqfomaml":
        problem = dataclasses.replace(problem, metatrain=problems.as_sequences(
            problem.metatrain, s.seqfomaml.seqfomaml_sequence_length, algorithm.meta_batch_size))
    metalearner = metalearner_from_config(s, model)
    metalearner.initialize()
    if run.init_model:
        warm_start(metalearner, run.init_model)
    if distributed:
        from pymeta.metalearners.distributed import DistributedMetaLearner
        metalearner = DistributedMetaLearner(metalearner)
        metalearner.broadcast_state()
    return problem, model, metalearner


def inner_loss_curve(metalearner: Any, task: Any, num_inner_iterations: int, inner_batch_size: int) -> List[float]:
    """Training-set loss of `task` after 0, 1, ..., T inner steps from theta (step-by-step API)."""
    model = metalearner.model
    metalearner.task_begin(task)
    curve = [task.evaluate(model, evaluate_on_train=True)["loss"]]
    for _ in range(num_inner_iterations):
        task.fit_n_iterations(model, 1, inner_batch_size)
        curve.append(task.evaluate(model, evaluate_on_train=True)["loss"])
    metalearner.task_begin(task)
    return curve


class SupervisedExperiment:
    """`pymeta.run.experiment.Experiment` of a supervised dataset."""

    def __init__(self, s: RunSections, distributed: bool = False):
        self.s, self.distributed = s, distributed
        task, algorithm = s.task, s.algorithm
        self.is_root = not distributed or mpi.get_rank_and_size()[0] == 0
        self.settings = model_settings(s, inner_optimizer_name(task.metamodel, task.dataset, task.inner_optimizer))
        self.T, self.B = algorithm.num_inner_training_iterations, task.resolved_inner_batch_size()
        self.per_call = algorithm.iterations_per_call or (10 if task.dataset == "sinusoid" else 1)
        self.train_losses: List[float] = []  # since the last validation
        self.first_calls = {"validation", "training"}  # not compiled yet

    def _log(self, text: str) -> None:
        if self.is_root:
            logger.info(text)

    def setup(self, stop: SignalFlag) -> None:
        self.stop = stop
        self.problem, self.model, self.metalearner = seeded_setup(self.s, self.distributed)
        if self.s.run.init_model:
            self._log(f"initial theta from --init_model={self.s.run.init_model}")

    def synchronize(self) -> None:
        if self.distributed:
            self.metalearner.broadcast_state()

    def _compiling(self, what: str, key: str) -> Any:
        first = key in self.first_calls
        self.first_calls.discard(key)
        return compiling(self.stop, self._log, what, first)

    def step(self, iteration: int, max_steps: int) -> Step:
        algorithm, ml = self.s.algorithm, self.metalearner
        batches = [self.problem.metatrain.sample_batch() for _ in range(min(self.per_call, max_steps))]
        aux: Dict[str, float] = {}
        if algorithm.fast:
            xla = "with XLA, every inner step unrolled" if algorithm.resolved_jit_compile(self.s.task.dataset) \
                else "without XLA"
            with self._compiling(f"the meta-training step ({xla})", "training"):
                results = ml.metatrain_steps(batches, self.T, self.B)
            losses = [r["last_minibatch_loss"] for r in results]
            # the algorithm's other per-task values (iMAML: cg_residual, cg_steps)
            aux = {f"train/{k}": float(np.mean([r[k] for r in results])) for k in results[0]
                   if k != "last_minibatch_loss"} if results else {}
        else:
            losses = [loss for tasks in batches for loss in _step_by_step_iteration(ml, tasks, self.T, self.B)]
        self.train_losses.extend(losses)
        return Step(len(batches), losses=losses,
                    scalars={"train/last_inner_minibatch_loss": float(np.mean(losses)) if losses else None, **aux},
                    postfix={"loss": f"{losses[-1]:.3f}"} if losses else {})

    def validate(self, iteration: int, seconds: float) -> Optional[Validation]:
        s, ml, problem = self.s, self.metalearner, self.problem
        with self._compiling("the validation step", "validation"):
            loss, acc = validate(ml, problem.metaval, s.run.num_validation_batches, self.T, self.B,
                                 s.task.transductive, s.algorithm.fast)
        entry = {"iteration": iteration, "val_loss": loss, "val_accuracy": acc,
                 "train_loss": float(np.mean(self.train_losses)) if self.train_losses else None,
                 "seconds": seconds}
        self.train_losses.clear()
        metric = f"val acc {100 * acc:.2f}%  " if problem.is_classification else ""
        curve = []
        if self.is_root and s.run.tensorboard and not self.distributed:  # an extra task, drawn without
            with monitoring_leaves_the_run_alone(ml):                # touching the run's generators
                curve = inner_loss_curve(ml, problem.metaval.sample_batch(1)[0], self.T, self.B)
        scalars = {"validation/loss": loss, "train/last_inner_minibatch_loss": entry["train_loss"],
                   "learning_rate/meta": float(_current_lr(ml.optimizer)), "learning_rate/inner": s.task.inner_lr,
                   **({"validation/accuracy": acc} if problem.is_classification else {}),
                   **{f"inner_loop/train_loss_after_step_{k}": v for k, v in enumerate(curve)}}
        return Validation(entry, loss, "the validation loss",
                          f"iter {iteration:6d}  {metric}val loss {loss:.4f}  ({seconds:.0f} s)", scalars)

    def save(self) -> None:
        """The model file, with its settings and the kept inner optimizer state."""
        save_model(self.model, self.s.run.model_save_filename, inner_state=kept_inner_state(self.metalearner),
                   settings=self.settings)

    def agree_stop(self, signum: Optional[int]) -> Optional[int]:
        if self.distributed:  # every rank stops at the same iteration, or the others would wait forever
            return self.metalearner.allreduce_max(signum or 0) or None
        return signum

    def finish(self, history: List[dict]) -> None:
        model_file, problem = self.s.run.model_save_filename, self.problem
        plot_learning_curve(history, artifact_path(model_file, "learning_curve.png"), problem.is_classification)
        if self.s.task.dataset == "sinusoid":
            task = problem.metaval.sample_batch(1)[0]
            path = plot_sinusoid(self.metalearner, task, self.T, self.B, artifact_path(model_file, "sinusoid.png"))
            self._log(f"sinusoid plot: {path}")


def _step_by_step_iteration(metalearner: Any, tasks: List[Any], T: int, B: int) -> List[float]:
    """One meta-iteration through the original API; returns the tasks' last inner losses."""
    local = metalearner.local_tasks(tasks, T, B)  # this rank's share (all of them on one process)
    results, losses = [], []
    for task in local:
        metalearner.task_begin(task)
        losses.append(_last_loss(task.fit_n_iterations(metalearner.model, T, B)))
        results.append(metalearner.task_end(task))
    metalearner.update(results)
    return losses


def _last_loss(fit_result: Dict[str, float]) -> float:
    """The last inner minibatch loss of a task, or of the last task of a sequence ('..._<i>' keys)."""
    if "last_minibatch_loss" in fit_result:
        return fit_result["last_minibatch_loss"]
    last = max(int(k.rsplit("_", 1)[1]) for k in fit_result if k.startswith("last_minibatch_loss_"))
    return fit_result[f"last_minibatch_loss_{last}"]


def _current_lr(optimizer: Any) -> float:
    lr = optimizer.learning_rate
    return lr.numpy() if hasattr(lr, "numpy") else lr
