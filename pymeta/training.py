"""The meta-training run behind `pymeta-train` / `example_metatrain.py`: set-up from a `RunConfig`,
outer loop, validation, saving, checkpoints and resume, TensorBoard summaries, signals, and MPI (rank 0
logs, reports validation and saves). Progress is logged to the `pymeta.training` logger."""

import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from typing import List, Optional

import numpy as np

from pymeta import checkpoint as ckpt
from pymeta import mpi, registry, runtime
from pymeta.atomic import write_json_atomic
from pymeta.config import (RunConfig, artifact_path, check_config, check_output_folders, model_settings,
                           run_identity)
from pymeta.evaluation import validate
from pymeta.model_io import kept_inner_state, save_model
from pymeta.plots import plot_learning_curve, plot_sinusoid

logger = logging.getLogger(__name__)


class Interrupted(Exception):
    """SIGINT / SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum, path):
        where = f"; checkpoint written to {path}" if path else ""  # MPI: only rank 0 writes it
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}")
        self.signum, self.path = signum, path


class _SignalFlag:
    """Turns SIGINT/SIGTERM into a flag the loop checks between compiled calls (then a checkpoint is
    written). A second signal, or a SIGTERM while a function is traced or compiled (`compiling`), ends
    the process at once (exit code 128 + signal): a watcher thread reads the signal numbers Python's C
    handler writes to a wakeup pipe, so this works even while the main thread is stuck in TensorFlow's
    C++ code, where Python signal handlers cannot run."""

    def __init__(self):
        self.signum = None
        self.compiling = False
        self._old = {}
        self._wakeup = None

    def __enter__(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handle)
        try:
            r, w = os.pipe()
            os.set_blocking(w, False)
            old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        except (ValueError, OSError):  # not the main thread, or no pipes: the flag alone
            return self
        self._wakeup = (w, old)
        threading.Thread(target=self._watch, args=(r,), name="pymeta-signals", daemon=True).start()
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def _watch(self, r):
        seen = 0
        while True:
            try:
                data = os.read(r, 64)
            except OSError:
                data = b""
            if not data:
                os.close(r)
                return
            for signum in data:
                if signum not in (signal.SIGINT, signal.SIGTERM):
                    continue
                seen += 1
                if seen >= 2 or (signum == signal.SIGTERM and self.compiling):
                    why = "a second signal" if seen >= 2 else "while compiling"
                    try:
                        sys.stderr.write(f"error: stopped at once by {signal.Signals(signum).name} ({why}); "
                                         "the run resumes from its last checkpoint\n")
                        sys.stderr.flush()
                    finally:
                        os._exit(128 + signum)

    def __exit__(self, *exc):
        if self._wakeup is not None:
            w, old = self._wakeup
            signal.set_wakeup_fd(old)
            os.close(w)  # the watcher reads end-of-file and ends
        for s, h in self._old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _compiling(stop, log, what, first):
    """Log a 'compiling ...' line before a first compiled call; a SIGTERM meanwhile ends the process."""
    if not first:
        yield
        return
    log(f"compiling {what} (first call) ...")
    stop.compiling = True
    start = time.time()
    try:
        yield
    finally:
        stop.compiling = False
    log(f"compiled {what}; first call done in {time.time() - start:.0f} s")


class _Summaries:
    """TensorBoard scalars (tf.summary) in <run_dir>/tensorboard; does nothing when disabled."""

    def __init__(self, directory, enabled):
        self.writer = None
        if enabled:
            import tensorflow as tf
            self.tf = tf
            self.writer = tf.summary.create_file_writer(directory)

    def scalars(self, step, values):
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            for name, value in values.items():
                if value is not None:
                    self.tf.summary.scalar(name, value)
        self.writer.flush()


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
    if distributed:
        from pymeta.metalearners.distributed import DistributedMetaLearner
        metalearner = DistributedMetaLearner(metalearner)
        metalearner.broadcast_state()
    return problem, model, metalearner


def _check_outputs(c, run_dir, resuming):
    """Refuse to replace a model file from another run unless --overwrite."""
    if resuming or c.overwrite or not os.path.exists(c.model_save_filename):
        return
    legacy = f"{os.path.splitext(c.model_save_filename)[0]}_run"  # the default run folder of pymeta <= 0.1.0
    hint = (f"; if it is from a run in {legacy} (the default run folder of older pymeta versions), pass "
            f"--run_dir={legacy} to resume it") if not c.run_dir and ckpt.checkpoint_files(legacy) else ""
    raise ValueError(f"{c.model_save_filename} already exists and is not from this run (no checkpoint in "
                     f"{run_dir}): choose another --model_save_filename or pass --overwrite{hint}")


def _find_resume_point(c, run_dir, is_root=True):
    path = _newest_valid_checkpoint(run_dir, is_root) if c.resume else None
    if path is None:
        if not c.resume and ckpt.checkpoint_files(run_dir) and not c.overwrite:
            raise ValueError(f"{run_dir} holds checkpoints of an earlier run: resume it (drop --noresume), "
                             "pass --overwrite to start afresh, or choose another --run_dir")
        return None
    # a setting added after the checkpoint was written had its default value in that run; a checkpoint
    # that does not record its model file's name is taken to be of this one
    mine = run_identity(c)
    saved = {**run_identity(RunConfig()), "model_file": mine["model_file"], **ckpt.read_checkpoint_config(path)}
    diff = {k: (saved.get(k), mine[k]) for k in mine if saved.get(k) != mine[k]}
    if diff:
        raise ValueError(f"the checkpoint {path} is from a run with other settings "
                         f"({', '.join(f'{k}: {a} there, {b} here' for k, (a, b) in diff.items())}): "
                         "use the same flags to resume, or another --run_dir")
    return path


def _newest_valid_checkpoint(run_dir, is_root=True):
    """The newest checkpoint in `run_dir` that can be trusted; each newer one that cannot is set aside
    (renamed to <name>.invalid, so that rotation never counts it) with a warning naming it."""
    for path in reversed(ckpt.checkpoint_files(run_dir)):
        problem = ckpt.checkpoint_problem(path)
        if problem is None:
            return path
        if is_root:
            logger.warning(f"checkpoint {path} is not usable ({problem}): set aside as {path}.invalid; "
                           "resuming from the previous one")
            try:
                os.replace(path, path + ".invalid")
            except OSError:
                pass
    return None


@contextlib.contextmanager
def monitoring_leaves_the_run_alone(metalearner=None):
    """For monitoring (TensorBoard's extra validation task, plots): the random generators the run
    draws from (numpy's and Python's global ones, TensorFlow's global generator) and the meta-learner's
    kept inner optimizer state are restored afterwards, so that a run's parameters are the same with
    monitoring on or off."""
    import random

    import tensorflow as tf
    np_state, py_state = np.random.get_state(), random.getstate()
    tf_state = tf.random.get_global_generator().state.numpy()
    kept = kept_inner_state(metalearner) if metalearner is not None else None
    kept_state = None if kept is None else kept.read()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        tf.random.get_global_generator().reset(tf_state)
        if kept is not None:
            kept.write(kept_state)


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
    if rl and distributed:
        raise ValueError(f"--dataset={c.dataset} (reinforcement learning) does not run under MPI: start it "
                         "without mpiexec")
    root = not distributed or mpi.get_rank_and_size()[0] == 0
    # from the start: a signal during set-up still ends in a checkpoint
    with _SignalFlag() as stop, (run_lock(c.resolved_run_dir()) if root else contextlib.nullcontext()):
        if rl:  # pymeta.rl's run loop (its per-dataset defaults: see config.resolve_rl_defaults)
            from pymeta.rl.training import run
            return run(c, stop)
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
    settings = model_settings(c, registry.inner_optimizer_name(c.metamodel, c.dataset, c.inner_optimizer))
    run_dir = c.resolved_run_dir()
    if is_root:  # files a killed run was writing
        ckpt.remove_stale_temporaries(run_dir)
        ckpt.remove_stale_temporaries(os.path.dirname(os.path.abspath(c.model_save_filename)),
                                      "." + os.path.splitext(os.path.basename(c.model_save_filename))[0])
    resume_from = _find_resume_point(c, run_dir, is_root)
    _check_outputs(c, run_dir, resume_from is not None)
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
    summaries = _Summaries(os.path.join(run_dir, "tensorboard"), c.tensorboard and is_root)
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
        with _compiling(stop, log, "the validation step", "validation" in first_calls):
            loss, acc = validate(metalearner, problem.metaval, c.num_validation_batches, T, B,
                                 c.transductive, c.fast)
        first_calls.discard("validation")
        entry = {"iteration": it, "val_loss": loss, "val_accuracy": acc,
                 "train_loss": float(np.mean(train_losses)) if train_losses else None,
                 "seconds": round(time.time() - start, 2)}
        if not np.isfinite(loss):
            _diverged(c, it, "the validation loss", run_dir)
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
            with _compiling(stop, log, f"the meta-training step ({xla})", "training" in first_calls):
                results = metalearner.metatrain_steps(batches, T, B)
            first_calls.discard("training")
            train_losses.extend(r["last_minibatch_loss"] for r in results)
            extra_aux = {k: float(np.mean([r[k] for r in results])) for k in results[0]
                         if k != "last_minibatch_loss"} if results else {}
        else:
            for tasks in batches:
                train_losses.extend(_step_by_step_iteration(metalearner, tasks, T, B))
        it += steps
        _check_finite(c, it, train_losses[-steps:], metalearner, run_dir)
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


class Diverged(ValueError):
    """The training loss or the meta-parameters stopped being finite; nothing non-finite was saved."""


def _check_finite(c, it, losses, metalearner, run_dir):
    """Stop the run (Diverged) if a training loss or a meta-parameter is not finite."""
    if not np.all(np.isfinite(np.asarray(losses, dtype=np.float64))):
        _diverged(c, it, "the training loss", run_dir)
    if not all(np.all(np.isfinite(v.numpy())) for v in metalearner.meta_variables):
        _diverged(c, it, "the meta-parameters", run_dir)


def _diverged(c, it, what, run_dir):
    last = ckpt.latest_checkpoint(run_dir)
    kept = f"the last finite checkpoint, {last}, is kept" if last else "no checkpoint was written"
    raise Diverged(f"training diverged at iteration {it}: {what} is not finite (inf or nan); the likely "
                   f"cause is a learning rate too high (--meta_lr={c.meta_lr}, --inner_lr={c.inner_lr}): "
                   f"nothing non-finite was saved, {kept}")


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
