"""The lock of a run folder: one run at a time writes its checkpoints and model."""

import contextlib
import fcntl
import os


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
