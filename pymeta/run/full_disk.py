"""A run stopped by a full disk: any write of the run (model, checkpoint, history, plots, TensorBoard,
locks) failing for lack of space becomes one line naming the file and the fix. Every file is written
atomically, so what was written before stays intact and the same command resumes the run."""

import contextlib
import os
from typing import Iterator

from pymeta.atomic import disk_full, exception_chain
from pymeta.config.sections import RunSection


@contextlib.contextmanager
def full_disk_is_one_line(run: RunSection) -> Iterator[None]:
    """Within the block, a disk-full failure is re-raised as a one-line ValueError (others pass as they are)."""
    try:
        yield
    except Exception as e:
        if not disk_full(e):
            raise
        path = next(filter(None, (getattr(x, "filename", None) for x in exception_chain(e))), None) or \
            f"{run.resolved_run_dir()} or {os.path.dirname(os.path.abspath(run.model_save_filename))}"
        raise ValueError(f"no space left on device to write {path}: the run stopped (the model and checkpoints "
                         "written before are intact; the same command resumes it): free space on that disk, or "
                         "choose another --model_save_filename (and --run_dir) on a disk with room") from e
