"""The locks of a run: one run at a time writes a run folder (its checkpoints, TensorBoard logs) and one
run at a time writes a model file and the files named after it (history, plots). An flock, released when
the process ends however it ends: the lock of a killed run is taken over by the next one."""

import contextlib
import fcntl
import os
from typing import Iterator, Optional


@contextlib.contextmanager
def run_lock(run_dir: str, model_file: Optional[str] = None) -> Iterator[str]:
    """Hold the lock of `run_dir` (<run_dir>/run.lock) and, given `model_file`, the lock of its outputs
    (`output_lock_path`); ValueError at once, naming the other run's process, if another run holds one."""
    os.makedirs(run_dir, exist_ok=True)
    with contextlib.ExitStack() as locks:
        path = os.path.join(run_dir, "run.lock")
        locks.enter_context(_flock(path, lambda holder: (
            f"another run is using {run_dir} ({path} is locked{holder}): wait for it to end, or choose "
            "another --model_save_filename or --run_dir")))
        if model_file is not None:
            outputs = output_lock_path(model_file)
            stem = os.path.splitext(os.path.basename(model_file))[0]
            locks.enter_context(_flock(outputs, lambda holder: (
                f"another run is writing {model_file} or the files named after it ({stem}_history.json, "
                f"the plots; {outputs} is locked{holder}): wait for it to end, or choose another "
                "--model_save_filename")))
        yield path


def output_lock_path(model_file: str) -> str:
    """The lock of a model file's outputs: <folder>/.<stem>.lock, where <stem> is the file's name without
    its extension (real folder: links resolved). Every file a run writes next to its model is named
    <stem>_<suffix> (`pymeta.config.artifact_path`), so m.h5 and m.keras in one folder, which share
    m_history.json and the plots, share this lock too, whatever their --run_dir."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(model_file)))
    return os.path.join(folder, f".{os.path.splitext(os.path.basename(model_file))[0]}.lock")


@contextlib.contextmanager
def _flock(path, refusal):
    """An exclusive flock on `path` holding this process's id; `refusal(holder)`: the ValueError's
    message when another process holds it (holder: ' by process <pid>', or '' if unknown)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise ValueError(refusal(f" by process {holder}" if holder else "")) from None
    try:
        try:  # unbuffered (a+: appended to the now empty file)
            os.ftruncate(f.fileno(), 0)
            os.write(f.fileno(), str(os.getpid()).encode())
        except OSError as e:  # a full disk: name the file
            raise OSError(e.errno, e.strerror, path) from e
        yield path
    finally:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        f.close()
