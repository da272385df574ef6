"""The meta-training run behind `pymeta-train` / `example_metatrain.py`: set-up from a `RunConfig`,
outer loop, validation, saving, checkpoints and resume, TensorBoard summaries, signals, and MPI (rank 0
logs, reports validation and saves). Progress is logged to the `pymeta.training` logger."""

import contextlib
import dataclasses
import fcntl
import logging
import os
import time
from typing import List, Optional

import numpy as np

from pymeta import checkpoint as ckpt
from pymeta import mpi, registry, runtime
from pymeta.atomic import write_json_atomic
from pymeta.config import (RunConfig, artifact_path, check_config, check_output_folders, model_settings,
                           run_identity)
from pymeta.evaluation import validate
from pymeta.model_io import kept_inner_state, save_model, warm_start
from pymeta.plots import plot_learning_curve, plot_sinusoid
from pymeta.run_support import (Diverged, Interrupted, SignalFlag, Summaries, check_finite,  # noqa: F401
                                check_outputs, compiling, diverged, find_resume_point,
                                monitoring_leaves_the_run_alone)

logger = logging.getLogger(__name__)


def setup_run(c: RunConfig, distributed: bool = False):
    """Seed everything, then build (problem, model, metalearner) for config `c`.

    distributed: wrap the meta-learner for an MPI run (`DistributedMetaLearner`); every rank uses the
    same seed and draws the same meta-batches, each processing its share of the tasks. SeqFOMAML
    meta-trains on sequences of `c.seqfomaml_sequence_length` tasks (problem.metatrain).
    """
    check_config(c)
    if distributed and c.metamodel == "seqfomaml":
        raise ValueError("--metamodel=seqfomaml does not run under MPI: start it without mpiexec")
    runtime.warn_if_bfloat16_is_emulated(c.precision)
    runtime.apply_thread_layout(*runtime.thread_layout(c, distributed),
                                explicit=c.num_threads > 0 or c.inter_op_threads > 0)
    problem, model = registry.seeded_problem_and_model(
        c.seed, c.precision, c.dataset, c.metamodel, c.inner_lr, c.num_output_classes,
        c.num_train_samples_per_class, c.num_test_samples_per_class, c.meta_batch_size, c.data_path or None,
        c.omniglot_protocol, inner_optimizer=c.inner_optimizer)
    if c.metamodel == "seqfomaml":
        problem = dataclasses.replace(problem, metatrain=registry.as_sequences(
            problem.metatrain, c.seqfomaml_sequence_length, c.meta_batch_size))
    anneal = c.num_outer_metatraining_iterations if c.anneal_meta_lr else 0
    metalearner = registry.build_metalearner(
        c.metamodel, model, registry.default_meta_optimizer(c.metamodel, c.meta_lr, anneal),
        jit_compile=c.resolved_jit_compile(), imaml_lambda_reg=c.imaml_lambda_reg,
        imaml_cg_steps=c.imaml_cg_steps, imaml_cg_damping=c.imaml_cg_damping,
        imaml_lam_damping=c.imaml_lam_damping, persistent_inner_state=c.persistent_inner_state,
        imaml_inner=c.imaml_inner, imaml_cg_tol=c.imaml_cg_tol,
        seqfomaml_variant=c.seqfomaml_variant)
    metalearner.initialize()
    if c.init_model:
        warm_start(metalearner, c.init_model)
    if distributed:
        from pymeta.metalearners.distributed import DistributedMetaLearner
        metalearner = DistributedMetaLearner(metalearner)
        metalearner.broadcast_state()
    return problem, model, metalearner


def inner_loss_curve(metalearner, task, num_inner_iterations, inner_batch_size):
    """Training-set loss of `task` after 0, 1, ..., T inner steps from theta (step-by-step API)."""
    model = metalearner.model
    metalearner.task_begin(task)
    curve = [task.evaluate(model, evaluate_on_train=True)["loss"]]
    for _ in range(num_inner_iterations):
        task.fit_n_iterations(model, 1, inner_batch_size)
        curve.append(task.evaluate(model, evaluate_on_train=True)["loss"])
    metalearner.task_begin(task)
    return curve


def metatrain(c: RunConfig, distributed: Optional[bool] = None) -> List[dict]:
    """Run (or resume) meta-training for config `c`; returns the validation history (list of dicts).

    Validation every `test_every_k_iterations` (and at iteration 0); the model (`.h5`) saved every
    `save_every_k_iterations` and at the end; a checkpoint at the same points and on SIGINT/SIGTERM
    (then `Interrupted` is raised); history JSON, learning-curve PNG (and for sinusoid a plot of one
    adapted task) next to the model; TensorBoard scalars in <run_dir>/tensorboard. An RL dataset runs
    `pymeta.rl.training.run` (call `config.resolve_rl_defaults(c)` first for the dataset's defaults).
    """
    if distributed is None:
        distributed = mpi.is_mpi_run()
    check_config(c)
    check_output_folders(c.model_save_filename, c.resolved_run_dir() + os.sep)  # before any work
    rl = c.dataset in registry.RL_DATASETS
    root = not distributed or mpi.get_rank_and_size()[0] == 0
    # from the start: a signal during set-up still ends in a checkpoint
    with SignalFlag() as stop, (run_lock(c.resolved_run_dir()) if root else contextlib.nullcontext()):
        if rl:  # pymeta.rl's run loop (its per-dataset defaults: see config.resolve_rl_defaults)
            from pymeta.rl.training import run
            return run(c, stop, distributed)
        return _metatrain(c, distributed, stop)


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold the lock of `run_dir` (an flock on <run_dir>/run.lock, released when the process ends,
    however it ends); ValueError at once if another run holds it."""
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "run.lock")
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise ValueError(f"another run is using {run_dir} ({path} is locked"
                         f"{' by process ' + holder if holder else ''}): wait for it to end, or choose another "
                         "--model_save_filename or --run_dir") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield path
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()


def _metatrain(c, distributed, stop):
    from tqdm import tqdm

    problem, model, metalearner = setup_run(c, distributed)
    is_root = getattr(metalearner, "is_root", True)
    log = logger.info if is_root else _silent
    if c.init_model:
        log(f"initial theta from --init_model={c.init_model}")
    settings = model_settings(c, registry.inner_optimizer_name(c.metamodel, c.dataset, c.inner_optimizer))
    run_dir = c.resolved_run_dir()
    if is_root:  # files a killed run was writing
        ckpt.remove_stale_temporaries(run_dir)
        ckpt.remove_stale_temporaries(os.path.dirname(os.path.abspath(c.model_save_filename)),
                                      "." + os.path.splitext(os.path.basename(c.model_save_filename))[0])
    resume_from = find_resume_point(c, run_dir, is_root)
    check_outputs(c, run_dir, resume_from is not None)
    T, B = c.num_inner_training_iterations, c.resolved_inner_batch_size()
    n_iter = c.num_outer_metatraining_iterations
    per_call = c.iterations_per_call or (10 if c.dataset == "sinusoid" else 1)
    history, train_losses, it = [], [], 0
    extra_aux = {}
    if resume_from:
        it, history = ckpt.load_checkpoint(resume_from, metalearner)
        if distributed:
            metalearner.broadcast_state()
        log(f"resumed from {resume_from} at iteration {it}")
    summaries = Summaries(os.path.join(run_dir, "tensorboard"), c.tensorboard and is_root)
    # training time continues from the checkpoint's (not from the last validation's)
    start = time.time() - (ckpt.elapsed_seconds(resume_from, history) if resume_from else 0.0)
    last_time, last_it = time.time(), it

    saved_at = []  # iterations at which this process wrote the model file

    def save():  # the model file records its settings (and the kept inner optimizer state)
        save_model(model, c.model_save_filename, inner_state=kept_inner_state(metalearner), settings=settings)
        saved_at.append(it)

    def checkpoint():
        if is_root:
            return ckpt.save_checkpoint(run_dir, it, metalearner, history, run_identity(c), c.keep_checkpoints,
                                        seconds=time.time() - start)
        return None

    first_calls = {"validation", "training"}  # not compiled yet

    def validation():
        with compiling(stop, log, "the validation step", "validation" in first_calls):
            loss, acc = validate(metalearner, problem.metaval, c.num_validation_batches, T, B,
                                 c.transductive, c.fast)
        first_calls.discard("validation")
        entry = {"iteration": it, "val_loss": loss, "val_accuracy": acc,
                 "train_loss": float(np.mean(train_losses)) if train_losses else None,
                 "seconds": round(time.time() - start, 2)}
        if not np.isfinite(loss):
            diverged(c, it, "the validation loss", run_dir)
        history.append(entry)
        train_losses.clear()
        if not is_root:
            return
        metric = f"val acc {100 * acc:.2f}%  " if problem.is_classification else ""
        log(f"iter {it:6d}  {metric}val loss {loss:.4f}  ({entry['seconds']:.0f} s)")
        write_json_atomic(artifact_path(c.model_save_filename, "history.json"), history)
        curve = []
        if c.tensorboard and not distributed:  # an extra task: drawn without touching the run's generators
            with monitoring_leaves_the_run_alone(metalearner):
                curve = inner_loss_curve(metalearner, problem.metaval.sample_batch(1)[0], T, B)
        values = {"validation/loss": loss, "train/last_inner_minibatch_loss": entry["train_loss"],
                  "learning_rate/meta": float(_current_lr(metalearner.optimizer)),
                  "learning_rate/inner": c.inner_lr}
        if problem.is_classification:
            values["validation/accuracy"] = acc
        values.update({f"inner_loop/train_loss_after_step_{k}": v for k, v in enumerate(curve)})
        summaries.scalars(it, values)

    if not history:
        validation()
    bar = tqdm(total=n_iter, initial=it, disable=not (c.progress and is_root), unit="it",
               dynamic_ncols=True, mininterval=1.0)
    while it < n_iter:
        # run up to the next validation / save point, in chunks of `per_call` meta-iterations
        next_event = min(n_iter, (it // c.test_every_k_iterations + 1) * c.test_every_k_iterations,
                         (it // c.save_every_k_iterations + 1) * c.save_every_k_iterations)
        steps = min(per_call, next_event - it)
        batches = [problem.metatrain.sample_batch() for _ in range(steps)]
        if c.fast:
            xla = "with XLA, every inner step unrolled" if c.resolved_jit_compile() else "without XLA"
            with compiling(stop, log, f"the meta-training step ({xla})", "training" in first_calls):
                results = metalearner.metatrain_steps(batches, T, B)
            first_calls.discard("training")
            train_losses.extend(r["last_minibatch_loss"] for r in results)
            extra_aux = {k: float(np.mean([r[k] for r in results])) for k in results[0]
                         if k != "last_minibatch_loss"} if results else {}
        else:
            for tasks in batches:
                train_losses.extend(_step_by_step_iteration(metalearner, tasks, T, B))
        it += steps
        check_finite(c, it, train_losses[-steps:], metalearner, run_dir)
        bar.update(steps)
        if train_losses:
            bar.set_postfix(loss=f"{train_losses[-1]:.3f}", refresh=False)
        now = time.time()
        if now - last_time > 5.0 or it == n_iter:
            summaries.scalars(it, {"speed/meta_iterations_per_second": (it - last_it) / (now - last_time),
                                   "train/last_inner_minibatch_loss": float(np.mean(train_losses[-steps:])),
                                   # the algorithm's other per-task values (iMAML: cg_residual, cg_steps)
                                   **{f"train/{k}": v for k, v in extra_aux.items()}})
            last_time, last_it = now, it
        if it % c.test_every_k_iterations == 0 or it == n_iter:
            validation()
        if it % c.save_every_k_iterations == 0 or it == n_iter:
            if is_root:
                save()
            checkpoint()
        signum = stop.signum
        if distributed:  # every rank stops at the same iteration, or the others would wait forever
            signum = metalearner.allreduce_max(signum or 0) or None
        if signum is not None:
            bar.close()
            path = checkpoint()
            if is_root:
                save()
            raise Interrupted(signum, path)
    bar.close()
    if is_root and not os.path.exists(c.model_save_filename):  # a finished run whose model was deleted
        save()
        log(f"{c.model_save_filename} was missing: written again from the checkpoint of iteration {it}")
    if is_root:
        plot_learning_curve(history, artifact_path(c.model_save_filename, "learning_curve.png"),
                            problem.is_classification)
        if c.dataset == "sinusoid":
            task = problem.metaval.sample_batch(1)[0]
            path = plot_sinusoid(metalearner, task, T, B, artifact_path(c.model_save_filename, "sinusoid.png"))
            log(f"sinusoid plot: {path}")
        if saved_at:
            log(f"model saved to {c.model_save_filename} ({time.time() - start:.0f} s)")
        else:
            log(f"the run had already finished at iteration {it}: its model is {c.model_save_filename}")
    return history


def _step_by_step_iteration(metalearner, tasks, T, B):
    """One meta-iteration through the original API; returns the tasks' last inner losses."""
    local = metalearner.local_tasks(tasks, T, B) if hasattr(metalearner, "local_tasks") else tasks
    results, losses = [], []
    for task in local:
        metalearner.task_begin(task)
        losses.append(_last_loss(task.fit_n_iterations(metalearner.model, T, B)))
        results.append(metalearner.task_end(task))
    metalearner.update(results)
    return losses


def _last_loss(fit_result):
    """The last inner minibatch loss of a task, or of the last task of a sequence ('..._<i>' keys)."""
    if "last_minibatch_loss" in fit_result:
        return fit_result["last_minibatch_loss"]
    last = max(int(k.rsplit("_", 1)[1]) for k in fit_result if k.startswith("last_minibatch_loss_"))
    return fit_result[f"last_minibatch_loss_{last}"]


def _silent(*args, **kwargs):
    pass


def _current_lr(optimizer):
    lr = optimizer.learning_rate
    return lr.numpy() if hasattr(lr, "numpy") else lr
