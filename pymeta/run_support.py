"""What every meta-training run (supervised and reinforcement learning) shares around its loop: stop
signals turned into checkpoints, notices while compiling, TensorBoard scalars, the output and resume
checks, the divergence check, and monitoring that leaves the run's random state alone."""

import contextlib
import logging
import os
import signal
import sys
import threading
import time

import numpy as np

from pymeta import checkpoint as ckpt
from pymeta.config import RunConfig, run_identity
from pymeta.model_io import kept_inner_state

logger = logging.getLogger("pymeta.training")


class Interrupted(Exception):
    """SIGINT / SIGTERM arrived; a checkpoint was written."""

    def __init__(self, signum, path):
        where = f"; checkpoint written to {path}" if path else ""  # MPI: only rank 0 writes it
        super().__init__(f"stopped by {signal.Signals(signum).name}{where}")
        self.signum, self.path = signum, path


class SignalFlag:
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
def compiling(stop, log, what, first):
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


class Summaries:
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


def check_outputs(c, run_dir, resuming):
    """Refuse to replace a model file from another run unless --overwrite."""
    if resuming or c.overwrite or not os.path.exists(c.model_save_filename):
        return
    legacy = f"{os.path.splitext(c.model_save_filename)[0]}_run"  # the default run folder of pymeta <= 0.1.0
    hint = (f"; if it is from a run in {legacy} (the default run folder of older pymeta versions), pass "
            f"--run_dir={legacy} to resume it") if not c.run_dir and ckpt.checkpoint_files(legacy) else ""
    raise ValueError(f"{c.model_save_filename} already exists and is not from this run (no checkpoint in "
                     f"{run_dir}): choose another --model_save_filename or pass --overwrite{hint}")


def find_resume_point(c, run_dir, is_root=True):
    path = newest_valid_checkpoint(run_dir, is_root) if c.resume else None
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


def newest_valid_checkpoint(run_dir, is_root=True):
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


class Diverged(ValueError):
    """The training loss or the meta-parameters stopped being finite; nothing non-finite was saved."""


def check_finite(c, it, losses, metalearner, run_dir):
    """Stop the run (Diverged) if a training loss or a meta-parameter is not finite."""
    if not np.all(np.isfinite(np.asarray(losses, dtype=np.float64))):
        diverged(c, it, "the training loss", run_dir)
    if not all(np.all(np.isfinite(v.numpy())) for v in metalearner.meta_variables):
        diverged(c, it, "the meta-parameters", run_dir)


def diverged(c, it, what, run_dir):
    last = ckpt.latest_checkpoint(run_dir)
    kept = f"the last finite checkpoint, {last}, is kept" if last else "no checkpoint was written"
    raise Diverged(f"training diverged at iteration {it}: {what} is not finite (inf or nan); the likely "
                   f"cause is a learning rate too high (--meta_lr={c.meta_lr}, --inner_lr={c.inner_lr}): "
                   f"nothing non-finite was saved, {kept}")
