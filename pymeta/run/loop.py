"""The meta-training loop, the one every run goes through (`pymeta.training.metatrain`). It drives an
`Experiment` (`pymeta.run.experiment`) and owns what every run shares: the run lock, resume from the
newest trustworthy checkpoint, the validate / save / checkpoint cadence, SIGINT / SIGTERM (a checkpoint,
then `Interrupted`) and the MPI stop (every rank stops at the same iteration), the divergence check,
TensorBoard scalars, the history JSON (`pymeta.run.history`), the progress bar with the log lines
written above it, and the final save. Under MPI rank 0 alone logs and writes files."""

import contextlib
import logging
import math
import os
import time
from typing import Any, List, Mapping

from pymeta import checkpoint as ckpt
from pymeta.config import artifact_path, check_output_folders
from pymeta.config.sections import RunSection
from pymeta.run.divergence import check_finite, diverged
from pymeta.run.experiment import Experiment
from pymeta.run.full_disk import full_disk_is_one_line
from pymeta.run.history import write_history
from pymeta.run.lock import run_lock
from pymeta.run.progress_bar import progress_bar
from pymeta.run.resume import check_outputs, find_resume_point, stale_model_file
from pymeta.run.signals import Interrupted, SignalFlag
from pymeta.run.summaries import Summaries

logger = logging.getLogger("pymeta.training")
SPEED_EVERY_SECONDS = 5.0  # TensorBoard's meta-iterations per second (and a flush) at most this often


def run(section: RunSection, identity: Mapping[str, Any], experiment: Experiment) -> List[dict]:
    """Run (or resume) `experiment` with the settings of the run `section` (iterations, cadence, files);
    `identity` (`pymeta.config.run_identity`): what its checkpoints record and a resumed one must match.
    Returns the history (also in <model>_history.json). A write that fails because the disk is full
    ends the run with a one-line ValueError (`pymeta.run.full_disk`)."""
    with full_disk_is_one_line(section):
        return _run(section, identity, experiment)


def _run(section: RunSection, identity: Mapping[str, Any], experiment: Experiment) -> List[dict]:
    run_dir, model_file = section.resolved_run_dir(), section.model_save_filename
    n, test_every, save_every = (section.num_outer_metatraining_iterations, section.test_every_k_iterations,
                                 section.save_every_k_iterations)
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
        resume_from = find_resume_point(section, run_dir, identity, root)
        check_outputs(section, run_dir, resume_from is not None, experiment.settings)
        history: List[dict] = []
        it = 0
        if resume_from:
            it, history = ckpt.load_checkpoint(resume_from, experiment.metalearner)
        experiment.synchronize()
        if resume_from:
            log(f"resumed from {resume_from} at iteration {it}")
        summaries = Summaries(os.path.join(run_dir, "tensorboard"), section.tensorboard and root)
        # training time continues from the checkpoint's (not from the last validation's)
        start = time.time() - (ckpt.elapsed_seconds(resume_from, history) if resume_from else 0.0)
        history_file = artifact_path(model_file, "history.json")
        saved: List[int] = []  # iterations at which this process wrote the model file

        def save():
            if root:
                experiment.save()
                write_history(history_file, history, experiment.settings)
                saved.append(it)

        def checkpoint():
            if not root:
                return None
            return ckpt.save_checkpoint(run_dir, it, experiment.metalearner, history, identity,
                                        section.keep_checkpoints, seconds=time.time() - start)

        def validation():
            v = experiment.validate(it, round(time.time() - start, 2))
            if v is None:  # not this rank's to record
                return
            if not math.isfinite(v.value):
                diverged(identity, it, v.what, run_dir)
            history.append(v.entry)
            if root:
                log(v.log)
                write_history(history_file, history, experiment.settings)
                summaries.scalars(it, v.scalars, flush=True)

        if not history:
            validation()
        last_time, last_it = time.time(), it
        with progress_bar(section.progress and root, n, it) as bar:
            while it < n:
                # up to the next validation / save point
                next_event = min(n, (it // test_every + 1) * test_every, (it // save_every + 1) * save_every)
                step = experiment.step(it, next_event - it)
                it += step.count
                check_finite(identity, it, step.losses, experiment.metalearner, run_dir)
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
                if it % test_every == 0 or it == n:
                    validation()
                if it % save_every == 0 or it == n:
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
        stale = None if saved else stale_model_file(model_file, resume_from)  # deleted, or its last write failed
        if stale:
            save()
            log(f"{model_file} {stale}: written again from the checkpoint of iteration {it}")
        experiment.finish(history)
        if saved:
            log(f"model saved to {model_file} ({time.time() - start:.0f} s)")
        else:
            log(f"the run had already finished at iteration {it}: its model is {model_file}")
        return history

