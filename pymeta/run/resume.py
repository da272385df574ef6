"""Where a run starts: the newest trustworthy checkpoint of its run folder (`find_resume_point`),
refused when it is from a run with other settings, and the refusal to replace another run's model."""

import logging
import os

from pymeta import checkpoint as ckpt
from pymeta.config import RunConfig, run_identity

logger = logging.getLogger("pymeta.training")


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
