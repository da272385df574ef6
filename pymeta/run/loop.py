"""The meta-training loop, the one every run goes through (`pymeta.training.metatrain`). It drives an
`Experiment` (`pymeta.run.experiment`) and owns what every run shares: the run lock, resume from the
newest trustworthy checkpoint, the validate / save / checkpoint cadence, SIGINT / SIGTERM (a checkpoint,
then `Interrupted`) and the MPI stop (every rank stops at the same iteration), the divergence check,
TensorBoard scalars, the history JSON (`pymeta.run.history`), the progress bar with the log lines
written above it, and the final save. Under MPI rank 0 alone logs and writes files."""

import contextlib
import io
import logging
import math
import os
import time
from typing import List

from pymeta import checkpoint as ckpt
from pymeta.atomic import disk_full, exception_chain
from pymeta.config import RunConfig, artifact_path, check_output_folders, run_identity
from pymeta.run.divergence import check_finite, diverged
from pymeta.run.experiment import Experiment
from pymeta.run.history import write_history
from pymeta.run.lock import run_lock
from pymeta.run.resume import check_outputs, find_resume_point
from pymeta.run.signals import Interrupted, SignalFlag
from pymeta.run.summaries import Summaries

logger = logging.getLogger("pymeta.training")
SPEED_EVERY_SECONDS = 5.0  # TensorBoard's meta-iterations per second (and a flush) at most this often


def run(c: RunConfig, experiment: Experiment) -> List[dict]:
    """Run (or resume) `experiment` with the run settings of `c` (iterations, cadence, files);
    returns the history (also in <model>_history.json). A write that fails because the disk is full
    (any of them: model, checkpoint, history, plots, TensorBoard, locks) ends the run with a one-line
    ValueError; every file is written atomically, so what was written before stays intact."""
    try:
        return _run(c, experiment)
    except Exception as e:
        if not disk_full(e):
            raise
        path = next((x.filename for x in exception_chain(e) if getattr(x, "filename", None)), None) or \
            f"{c.resolved_run_dir()} or {os.path.dirname(os.path.abspath(c.model_save_filename))}"
        raise ValueError(f"no space left on device to write {path}: the run stopped (the model and checkpoints "
                         "written before are intact; the same command resumes it): free space on that disk, or "
                         "choose another --model_save_filename (and --run_dir) on a disk with room") from e


def _run(c: RunConfig, experiment: Experiment) -> List[dict]:
    run_dir, model_file, n = c.resolved_run_dir(), c.model_save_filename, c.num_outer_metatraining_iterations
    check_output_folders(model_file, run_dir + os.sep)  # before any work
    root = experiment.is_root
    log = logger.info if root else (lambda *a, **k: None)
    # from the start: a signal during set-up still ends in a checkpoint
    with SignalFlag() as stop, (run_lock(run_dir, model_file) if root else contextlib.nullcontext()):
        experiment.setup(stop)
        if root:  # files a killed run was writing
            ckpt.remove_stale_temporaries(run_dir)
            ckpt.remove_stale_temporaries(os.path.dirname(os.path.abspath(model_file)),
                                          "." + os.path.splitext(os.path.basename(model_file))[0])
        resume_from = find_resume_point(c, run_dir, root)
        check_outputs(c, run_dir, resume_from is not None, experiment.settings)
        history: List[dict] = []
        it = 0
        if resume_from:
            it, history = ckpt.load_checkpoint(resume_from, experiment.metalearner)
        experiment.synchronize()
        if resume_from:
            log(f"resumed from {resume_from} at iteration {it}")
        summaries = Summaries(os.path.join(run_dir, "tensorboard"), c.tensorboard and root)
        # training time continues from the checkpoint's (not from the last validation's)
        start = time.time() - (ckpt.elapsed_seconds(resume_from, history) if resume_from else 0.0)
        history_file = artifact_path(model_file, "history.json")
        saved = []  # iterations at which this process wrote the model file

        def save():
            if root:
                experiment.save()
                write_history(history_file, history, experiment.settings)
                saved.append(it)

        def checkpoint():
            if not root:
                return None
            return ckpt.save_checkpoint(run_dir, it, experiment.metalearner, history, run_identity(c),
                                        c.keep_checkpoints, seconds=time.time() - start)

        def validation():
            v = experiment.validate(it, round(time.time() - start, 2))
            if v is None:  # not this rank's to record
                return
            if not math.isfinite(v.value):
                diverged(c, it, v.what, run_dir)
            history.append(v.entry)
            if root:
                log(v.log)
                write_history(history_file, history, experiment.settings)
                summaries.scalars(it, v.scalars, flush=True)

        if not history:
            validation()
        last_time, last_it = time.time(), it
        with _progress_bar(c.progress and root, n, it) as bar:
            while it < n:
                # up to the next validation / save point
                next_event = min(n, (it // c.test_every_k_iterations + 1) * c.test_every_k_iterations,
                                 (it // c.save_every_k_iterations + 1) * c.save_every_k_iterations)
                step = experiment.step(it, next_event - it)
                it += step.count
                check_finite(c, it, step.losses, experiment.metalearner, run_dir)
                for entry in step.entries:  # the run's training time so far
                    entry["seconds"] = round(time.time() - start, 2)
                history.extend(step.entries)
                bar.update(step.count)
                if step.postfix:
                    bar.set_postfix(**step.postfix, refresh=False)
                if step.log:
                    log(step.log)
                now, scalars = time.time(), dict(step.scalars)
                flush = now - last_time > SPEED_EVERY_SECONDS or it == n
                if flush:
                    scalars["speed/meta_iterations_per_second"] = (it - last_it) / max(now - last_time, 1e-9)
                    last_time, last_it = now, it
                summaries.scalars(it, scalars, flush=flush)
                if it % c.test_every_k_iterations == 0 or it == n:
                    validation()
                if it % c.save_every_k_iterations == 0 or it == n:
                    checkpoint()  # first: a model file of this run always has a checkpoint as new
                    save()
                signum = experiment.agree_stop(stop.signum)
                if signum is not None:
                    bar.close()
                    path = checkpoint()
                    save()
                    raise Interrupted(signum, path)
        if not root:
            return history
        stale = None if saved else _stale(model_file, resume_from)  # deleted, or its last write failed
        if stale:
            save()
            log(f"{model_file} {stale}: written again from the checkpoint of iteration {it}")
        experiment.finish(history)
        if saved:
            log(f"model saved to {model_file} ({time.time() - start:.0f} s)")
        else:
            log(f"the run had already finished at iteration {it}: its model is {model_file}")
        return history


def _stale(model_file, checkpoint):
    """Why `model_file` is not the model of the `checkpoint` a finished run resumed from (None if it is):
    missing, or older (the checkpoint is written first at every save point, then the model)."""
    if not os.path.exists(model_file):
        return "was missing"
    if checkpoint is not None and os.path.getmtime(model_file) < os.path.getmtime(checkpoint):
        return "was older than its checkpoint (written before it, or its last write failed)"
    return None


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, initial: int):
    """A tqdm bar on stderr (when `enabled`); meanwhile the log lines of pymeta's console handlers
    are written above it (through `tqdm.write`), keeping their streams, levels and prefixes."""
    from tqdm import tqdm
    bar = tqdm(total=total, initial=initial, disable=not enabled, unit="it", dynamic_ncols=True,
               mininterval=1.0)
    handlers = [h for name in ("pymeta", "") for h in logging.getLogger(name).handlers
                if type(h) is logging.StreamHandler] if enabled else []
    streams = [h.stream for h in handlers]
    try:
        for h in handlers:
            h.setStream(_AboveTheBar(h.stream))
        with bar:
            yield bar
    finally:
        for h, s in zip(handlers, streams):
            h.setStream(s)


class _AboveTheBar(io.TextIOBase):
    """A text stream whose writes go through `tqdm.write` (the bar is cleared, then redrawn below)."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text):
        from tqdm import tqdm
        tqdm.write(text, file=self.stream, end="")
        return len(text)

    def flush(self):
        self.stream.flush()
