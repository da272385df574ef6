"""MPI plumbing: is this process part of an MPI launch, the collectives pymeta needs, seeding, and
ending the whole job when one rank fails. mpi4py is imported only when an MPI launch is detected (or
the caller already uses it), so pymeta runs without it.

    from pymeta.mpi import mpi_abort_on_exception, seed_everything
    mpi_abort_on_exception()        # a rank that raises ends the whole job (MPI_Abort), never a hang
    seed_everything(seed)           # the same task stream on every rank
"""

import os
import random
import sys
import time
import traceback
from types import TracebackType
from typing import Any, Callable, List, Literal, NoReturn, Optional, Sequence, Tuple, Type

import numpy as np

# environment variables that give the number of processes of an MPI launch, by launcher
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE",   # Open MPI
                   "PMI_SIZE",               # MPICH / Hydra, Intel MPI, srun --mpi=pmi2
                   "MV2_COMM_WORLD_SIZE",    # MVAPICH2
                   "MPI_LOCALNRANKS")        # MPICH (ranks on this node only: a lower bound)
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
_LOCAL_SIZE_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


# --- detecting and reaching MPI ----------------------------------------------------------------------
def _env_int(names: Sequence[str]) -> Optional[int]:
    for name in names:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                pass
    return None


def is_mpi_run() -> bool:
    """True when this process was started by an MPI launcher (mpiexec, mpirun, srun) with more than
    one process. Reads the launcher's environment variables only: mpi4py is not imported."""
    size = _env_int(_SIZE_VARIABLES)
    return size is not None and size > 1


def launch_size_and_rank() -> Tuple[int, int]:
    """(processes of the MPI launch, this process's rank) from the launcher's environment variables,
    without mpi4py (so before MPI or TensorFlow start); (1, 0) outside an MPI launch."""
    return _env_int(_SIZE_VARIABLES) or 1, _env_int(_RANK_VARIABLES) or 0


def ranks_on_this_node() -> int:
    """How many ranks of the launch share this machine (1 outside MPI)."""
    return _env_int(_LOCAL_SIZE_VARIABLES) or 1


def mpi_module() -> Any:
    """mpi4py's MPI module (imported here, on first use: importing it initialises MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("this process runs under MPI but mpi4py is missing: pip install -e .[mpi] "
                          "(or pip install mpi4py built against your MPI)") from e
    return MPI


def default_comm() -> Any:
    """MPI.COMM_WORLD in an MPI run (or when mpi4py is already in use), else None (one process), so
    that pymeta runs without mpi4py and without initialising MPI."""
    if is_mpi_run() or "mpi4py.MPI" in sys.modules:
        return mpi_module().COMM_WORLD
    return None


def get_rank_and_size(comm: Any = None) -> Tuple[int, int]:
    """(rank, number of processes) of `comm` (default: MPI.COMM_WORLD in an MPI run, else (0, 1))."""
    if comm is None:
        comm = default_comm()
    if comm is None:
        return 0, 1
    return comm.Get_rank(), comm.Get_size()


class Collectives:
    """The few collectives pymeta needs, on an mpi4py communicator or on one process (comm None)."""

    def __init__(self, comm: Any = None):
        self.comm = comm
        self.rank, self.size = get_rank_and_size(comm) if comm is not None else (0, 1)
        self._buffer: Optional[np.ndarray] = None  # reused by `allreduce_sum_arrays`

    @property
    def _many(self) -> bool:
        return self.comm is not None and self.size > 1

    def allreduce_sum_(self, buf: np.ndarray) -> np.ndarray:
        """Sum of `buf` (contiguous numpy array) over the ranks, in place."""
        if self._many:
            MPI = mpi_module()
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return buf

    def allreduce_max(self, value: float) -> float:
        """The largest `value` over the ranks (a small Python number)."""
        if self._many:
            return self.comm.allreduce(value, op=mpi_module().MAX)
        return value

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """`buf` of rank `root` copied into `buf` of every rank, in place."""
        if self._many:
            self.comm.Bcast(buf, root=root)
        return buf

    def allgather(self, obj: Any) -> List[Any]:
        """List of the (small, picklable) objects of every rank."""
        if self._many:
            return self.comm.allgather(obj)
        return [obj]

    # --- the one cross-rank reduction of several arrays, and its broadcast --------------------------
    def allreduce_sum_arrays(self, arrays: Sequence[Any], dtype: Any = np.float32) -> List[np.ndarray]:
        """The sums over the ranks of several arrays (any shapes; scalars too), with ONE in-place
        Allreduce of a flat buffer of `dtype` (float32: 4 bytes a value; float64 holds int64 counts
        and steps exactly). Returns arrays of `dtype` shaped like the inputs."""
        buf = flatten_arrays(arrays, dtype, self._reusable_buffer(arrays, dtype))
        self.allreduce_sum_(buf)
        return [a.copy() for a in unflatten_arrays(buf, arrays, dtype)]

    def bcast_arrays(self, arrays: Sequence[Any], root: int = 0, dtype: Any = np.float64) -> List[np.ndarray]:
        """`arrays` of rank `root` on every rank (ONE Bcast of a flat buffer of `dtype`); returned with
        each input's dtype and shape."""
        buf = flatten_arrays(arrays, dtype)
        self.bcast_(buf, root)
        return unflatten_arrays(buf, arrays)

    def allreduce_sum_tensors(self, tensors: Sequence[Any]) -> List[Any]:
        """Inside a `tf.function`: the sums over the ranks of several tensors, with ONE float64
        Allreduce of a flat buffer, run as a stateful op so every rank runs its Allreduces in the same
        (program) order. Returns tensors shaped and typed like the inputs."""
        import tensorflow as tf
        flat = tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], 0)
        summed = tf.numpy_function(lambda b: self.allreduce_sum_(np.array(b, np.float64)), [flat], tf.float64,
                                   stateful=True)
        summed.set_shape(flat.shape)
        parts = tf.split(summed, [int(np.prod(t.shape)) for t in tensors])
        return [tf.cast(tf.reshape(p, tf.shape(t)), t.dtype) for p, t in zip(parts, tensors)]

    def _reusable_buffer(self, arrays: Sequence[Any], dtype: Any) -> np.ndarray:
        n = sum(int(np.prod(np.shape(a))) for a in arrays)
        buf = self._buffer
        if buf is None or buf.size != n or buf.dtype != np.dtype(dtype):
            buf = self._buffer = np.empty(n, dtype)
        return buf


def flatten_arrays(arrays: Sequence[Any], dtype: Any, out: Optional[np.ndarray] = None) -> np.ndarray:
    """The arrays' values, one after the other, in one flat array of `dtype` (into `out` if given)."""
    sizes = [int(np.prod(np.shape(a))) for a in arrays]
    out = np.empty(sum(sizes), dtype) if out is None else out
    offset = 0
    for a, k in zip(arrays, sizes):
        out[offset:offset + k] = np.asarray(a).reshape(-1)
        offset += k
    return out


def unflatten_arrays(buf: np.ndarray, like: Sequence[Any], dtype: Any = None) -> List[np.ndarray]:
    """The inverse of `flatten_arrays`: views of `buf` shaped like each of `like`, cast to `dtype`
    (default: each one's own dtype; a view when the dtype is buf's)."""
    values, offset = [], 0
    for a in like:
        shape = np.shape(a)
        k = int(np.prod(shape))
        target = np.asarray(a).dtype if dtype is None else np.dtype(dtype)
        part = buf[offset:offset + k].reshape(shape)
        values.append(part if part.dtype == target else part.astype(target))
        offset += k
    return values


# --- seeding -----------------------------------------------------------------------------------------
def rank_seed(seed: int, rank: int) -> int:
    """A seed for `rank` derived from the global `seed` (numpy SeedSequence: independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(rank)]).generate_state(1, np.uint32)[0])


def seed_everything(seed: int, rank: Optional[int] = None, per_rank: bool = False) -> int:
    """Seed Python's `random`, numpy's global generator (which draws pymeta's tasks) and Keras/TF.

    per_rank=False (for task_sampling="replicated"): every rank gets `seed` itself, so all ranks draw
    the same meta-batches, and a run on P ranks reproduces the single-process run with `seed`.
    per_rank=True (for task_sampling="per_rank"): rank r gets `rank_seed(seed, r)`.
    rank: default this process's rank. Returns the seed used.
    """
    if rank is None:
        rank = get_rank_and_size()[0] if per_rank else 0
    used = rank_seed(seed, rank) if per_rank else int(seed)
    random.seed(used)
    np.random.seed(used)
    import keras
    keras.utils.set_random_seed(used)  # also seeds TF and Keras' global seed generator
    return used


# --- ending the whole job on an error --------------------------------------------------------------------
class AbortOnException:
    """Context manager / excepthook: print the traceback with the rank, then MPI_Abort the whole job.

    Without it, a rank that dies leaves the others blocked in their next collective forever.
    """

    def __init__(self, comm: Any = None, errorcode: int = 1):
        self.comm = comm
        self.errorcode = errorcode
        self._previous_hook: Optional[Callable[..., Any]] = None

    @property
    def active(self) -> bool:
        return self.comm is not None or is_mpi_run()

    def install(self) -> "AbortOnException":
        if self.active and self._previous_hook is None:
            self._previous_hook = sys.excepthook
            sys.excepthook = self._excepthook
        return self

    def uninstall(self) -> None:
        if self._previous_hook is not None:
            sys.excepthook = self._previous_hook
            self._previous_hook = None

    def _excepthook(self, exc_type: Type[BaseException], exc: BaseException,
                    tb: Optional[TracebackType]) -> None:
        self.abort(exc_type, exc, tb)

    def abort(self, exc_type: Type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> NoReturn:
        comm = self.comm
        try:
            if comm is None:
                comm = mpi_module().COMM_WORLD
            rank, size = comm.Get_rank(), comm.Get_size()
        except Exception:  # noqa: BLE001 - report and end anyway
            rank, size = _env_int(_RANK_VARIABLES), _env_int(_SIZE_VARIABLES)
        try:
            sys.stdout.flush()
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            sys.stderr.write(f"\n[pymeta rank {rank}/{size}] uncaught {exc_type.__name__}: {exc}\n{text}"
                             f"[pymeta rank {rank}/{size}] aborting the whole MPI job "
                             f"(MPI_Abort, error code {self.errorcode})\n")
            sys.stderr.flush()
            # give the launcher a moment to forward this rank's output before Abort kills the job
            # (seen under load: mpiexec dropped the message otherwise)
            time.sleep(1.0)
        finally:
            if comm is not None:
                comm.Abort(self.errorcode)
            os._exit(self.errorcode)  # pragma: no cover - Abort does not return

    def __enter__(self) -> "AbortOnException":
        return self

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> Literal[False]:
        if exc_type is None or not self.active:
            return False
        if isinstance(exc, SystemExit) and exc.code in (None, 0):
            return False
        self.abort(exc_type, exc if exc is not None else exc_type(), tb)


def mpi_abort_on_exception(comm: Any = None, errorcode: int = 1) -> AbortOnException:
    """In an MPI run, make an uncaught exception on any rank end the whole job with MPI_Abort.

    Installs a `sys.excepthook` (call it once at the top of a script) and returns a context manager
    that does the same for its block (`with mpi_abort_on_exception(): main()`), also for a non-zero
    `sys.exit`. Does nothing outside an MPI run (no mpi4py import). `python -m mpi4py script.py`
    gives the same protection.
    """
    return AbortOnException(comm, errorcode).install()
