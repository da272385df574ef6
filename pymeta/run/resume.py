"""Where a run starts: the newest trustworthy checkpoint of its run folder (`find_resume_point`),
refused when it is from a run with other settings; the refusal to replace another run's model; a
finished run's model file that is not its last checkpoint's (`stale_model_file`)."""

import json
import logging
import os
from typing import Any, Mapping, Optional

from pymeta import checkpoint as ckpt
from pymeta.config import default_run_identity
from pymeta.config.sections import RunSection

logger = logging.getLogger("pymeta.training")


def check_outputs(run: RunSection, run_dir: str, resuming: bool,
                  settings: Optional[Mapping[str, Any]] = None) -> None:
    """Refuse to replace a model file from another run unless --overwrite. `settings`: those this run's
    model file records; a model file recording the same ones is from this run (or one with the same
    flags) whose first checkpoint was not written (pymeta 0.1.0 wrote the model first): the message says so."""
    model = run.model_save_filename
    if resuming or run.overwrite or not os.path.exists(model):
        return
    legacy = f"{os.path.splitext(model)[0]}_run"  # the default run folder of pymeta <= 0.1.0
    if not run.run_dir and ckpt.checkpoint_files(legacy):
        raise ValueError(f"{model} already exists and is not from this run (no checkpoint in {run_dir}): "
                         f"choose another --model_save_filename or pass --overwrite; if it is from a run in "
                         f"{legacy} (the default run folder of older pymeta versions), pass --run_dir={legacy} "
                         "to resume it")
    if settings is not None and _same_settings(model, settings):
        raise ValueError(f"{model} is from a run with these settings whose checkpoints are not in {run_dir} "
                         "(its first checkpoint was never written, e.g. the disk was full), so it cannot be "
                         "resumed: pass --overwrite to train again from iteration 0 (the model file is replaced "
                         "at the first save), or choose another --model_save_filename to keep it")
    raise ValueError(f"{model} already exists and is not from this run (no checkpoint in {run_dir}): "
                     "choose another --model_save_filename or pass --overwrite")


def _same_settings(model_file: str, settings: Mapping[str, Any]) -> bool:
    """True if the model file records `settings` (its pymeta version and later additions aside)."""
    from pymeta.model_io import load_settings
    try:
        recorded = load_settings(model_file)
    except (OSError, ValueError):
        return False
    mine = json.loads(json.dumps(dict(settings)))
    if not isinstance(recorded, dict):
        return False
    return all(recorded.get(k) == v for k, v in mine.items() if k != "pymeta_version")


def find_resume_point(run: RunSection, run_dir: str, identity: Mapping[str, Any],
                      is_root: bool = True) -> Optional[str]:
    """The checkpoint to resume from (None: start afresh); `identity`: this run's `run_identity`, which
    the checkpoint's must equal."""
    path = newest_valid_checkpoint(run_dir, is_root) if run.resume else None
    if path is None:
        if not run.resume and ckpt.checkpoint_files(run_dir) and not run.overwrite:
            raise ValueError(f"{run_dir} holds checkpoints of an earlier run: resume it (drop --noresume), "
                             "pass --overwrite to start afresh, or choose another --run_dir")
        return None
    # a setting added after the checkpoint was written had its default value in that run; a checkpoint
    # that does not record its model file's name is taken to be of this one
    saved = {**default_run_identity(), "model_file": identity["model_file"], **ckpt.read_checkpoint_config(path)}
    diff = {k: (saved.get(k), identity[k]) for k in identity if saved.get(k) != identity[k]}
    if diff:
        raise ValueError(f"the checkpoint {path} is from a run with other settings "
                         f"({', '.join(f'{k}: {a} there, {b} here' for k, (a, b) in diff.items())}): "
                         "use the same flags to resume, or another --run_dir")
    return path


def newest_valid_checkpoint(run_dir: str, is_root: bool = True) -> Optional[str]:
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


def stale_model_file(model_file: str, checkpoint: Optional[str]) -> Optional[str]:
    """Why `model_file` is not the model of the `checkpoint` a finished run resumed from (None if it is):
    missing, or older (the checkpoint is written first at every save point, then the model)."""
    if not os.path.exists(model_file):
        return "was missing"
    if checkpoint is not None and os.path.getmtime(model_file) < os.path.getmtime(checkpoint):
        return "was older than its checkpoint (written before it, or its last write failed)"
    return None
