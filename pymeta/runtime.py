"""How TensorFlow runs in this process: thread pools, CPU feature sniffing, precision policy, and
the quieting of TensorFlow's C++ start-up messages. Nothing here imports TensorFlow at module level."""

import contextlib
import os
import sys
import tempfile
import warnings
from typing import TYPE_CHECKING, Optional, Tuple

from pymeta import mpi

if TYPE_CHECKING:
    from pymeta.config.sections import AlgorithmSection, RunSection, TaskSection

PRECISIONS = ("float32", "mixed_bfloat16")


def thread_layout(run: "RunSection", task: "TaskSection", algorithm: "AlgorithmSection",
                  distributed: bool = False, cores: Optional[int] = None) -> Tuple[int, int]:
    """(intra-op, inter-op) TensorFlow threads for a run with these sections (`RunConfig.sections()`);
    0 means TensorFlow's default (all cores).

    --num_threads / --inter_op_threads, when given, win. Under MPI every rank gets cores / ranks per
    node. Otherwise the conv nets' compiled meta-batches run "task-parallel": one thread per op and as
    many tasks of the meta-batch at once as there are cores (the tasks are independent iterations of
    one tf.while_loop); measured with benchmarks/bench_metatrain.py.
    """
    cores = cores or os.cpu_count() or 1
    if run.num_threads > 0 or run.inter_op_threads > 0:
        return run.num_threads, run.inter_op_threads or run.num_threads
    if distributed:
        threads = max(1, cores // mpi.ranks_on_this_node())
        return threads, threads
    if task.dataset != "sinusoid" and algorithm.fast and cores > 1 and algorithm.meta_batch_size > 1:
        return 1, min(cores, algorithm.meta_batch_size)
    return 0, 0


def apply_thread_layout(intra: int, inter: int, explicit: bool = True) -> None:
    """Set TensorFlow's thread pools (0: its default). They are fixed once TensorFlow has started
    (an earlier run in this process): then the layout is left as it is, with a warning if it was
    asked for explicitly."""
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        if explicit:
            warnings.warn(f"TensorFlow has already started in this process: its thread pools stay as they "
                          f"are ({tf.config.threading.get_intra_op_parallelism_threads()} intra-op, "
                          f"{tf.config.threading.get_inter_op_parallelism_threads()} inter-op threads); "
                          f"--num_threads / --inter_op_threads are ignored", stacklevel=2)


def cpu_has_native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> Optional[bool]:
    """True if the CPU computes bfloat16 natively (AVX-512 BF16 or AMX-BF16 in `cpuinfo`'s flags),
    False if it does not, None where that cannot be read (not Linux)."""
    try:
        with open(cpuinfo) as f:
            flags = {w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()}
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def warn_if_bfloat16_is_emulated(precision: str) -> None:
    """A UserWarning for mixed_bfloat16 on a CPU that would emulate it (slower than float32)."""
    if precision == "mixed_bfloat16" and cpu_has_native_bfloat16() is False:
        warnings.warn("--precision=mixed_bfloat16 on a CPU without native bfloat16 (no avx512_bf16 or "
                      "amx_bf16 in /proc/cpuinfo): TensorFlow emulates it, which is slower than float32",
                      stacklevel=3)


def set_precision(precision: str) -> None:
    """Keras' global dtype policy: 'float32' or 'mixed_bfloat16'."""
    import keras
    keras.mixed_precision.set_global_policy(precision)


def quiet_tensorflow(level: Optional[int] = None) -> None:
    """Call before TensorFlow is imported: keep its C++ start-up lines (CUDA probe, cpu_feature_guard,
    oneDNN notice) off the terminal unless the user asked for them.

    level >= 0 (e.g. --tf_log_level) sets TF_CPP_MIN_LOG_LEVEL to it; a TF_CPP_MIN_LOG_LEVEL the user
    set is kept. In both cases TensorFlow logs as that level says. Otherwise TF_CPP_MIN_LOG_LEVEL=2 and
    TensorFlow is imported and its devices listed with the process's stderr silenced, because some
    start-up lines are written before TensorFlow reads the variable. Does not touch oneDNN itself.
    """
    if level is not None and level >= 0:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(level)
        return
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    with _stderr_silenced() as captured:
        try:
            import tensorflow as tf
            tf.config.list_physical_devices()
        except BaseException:
            captured.replay = True  # an import that fails shows what TensorFlow said
            raise


class _Captured:
    replay = False


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 goes to a temporary file for the block (written to stderr if `replay`)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (e.g. embedded): nothing to silence
        yield _Captured()
        return
    captured = _Captured()
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if captured.replay:
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))
