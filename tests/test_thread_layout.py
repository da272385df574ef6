"""Which TensorFlow thread pools a run asks for (pymeta.runtime.thread_layout), how they are set,
and the CPU check behind the bfloat16 warning."""

import subprocess
import sys
import warnings

import pytest
import tensorflow as tf

from pymeta.config import RunConfig, check_config
from pymeta.runtime import apply_thread_layout, thread_layout


def omniglot(**kw):
    return RunConfig(dataset="omniglot", **kw)


def sections(c):
    """The three sections thread_layout reads, of the flat config `c`."""
    s = c.sections()
    return s.run, s.task, s.algorithm


def test_conv_net_meta_batches_run_one_thread_per_op_and_tasks_side_by_side():
    assert thread_layout(*sections(omniglot(meta_batch_size=5)), cores=2) == (1, 2)
    assert thread_layout(*sections(omniglot(meta_batch_size=5)), cores=8) == (1, 5)  # no more at once than tasks
    assert thread_layout(*sections(RunConfig(dataset="miniimagenet", meta_batch_size=4)), cores=2) == (1, 2)


def test_tensorflow_default_where_tasks_cannot_run_side_by_side():
    assert thread_layout(*sections(RunConfig(dataset="sinusoid", meta_batch_size=5)), cores=2) == (0, 0)
    assert thread_layout(*sections(omniglot(meta_batch_size=5, fast=False)), cores=2) == (0, 0)  # one task at a time
    assert thread_layout(*sections(omniglot(meta_batch_size=1)), cores=2) == (0, 0)
    assert thread_layout(*sections(omniglot(meta_batch_size=5)), cores=1) == (0, 0)


def test_explicit_threads_win():
    assert thread_layout(*sections(omniglot(num_threads=1)), cores=2) == (1, 1)
    assert thread_layout(*sections(omniglot(num_threads=2, inter_op_threads=1)), cores=2) == (2, 1)
    assert thread_layout(*sections(omniglot(inter_op_threads=2)), cores=8) == (0, 2)
    assert thread_layout(*sections(RunConfig(dataset="sinusoid", num_threads=3)), cores=8) == (3, 3)


def test_mpi_ranks_share_the_cores_of_a_node(monkeypatch):
    monkeypatch.setenv("MPI_LOCALNRANKS", "2")
    assert thread_layout(*sections(omniglot(meta_batch_size=5)), distributed=True, cores=8) == (4, 4)
    assert thread_layout(*sections(omniglot(num_threads=1)), distributed=True, cores=8) == (1, 1)


def test_thread_counts_outside_0_to_1024_are_refused():
    """Negative counts mean nothing; TensorFlow aborts the process (and pymeta-train hung) when it cannot
    create a pool of 100,000 threads."""
    for name, value in (("num_threads", -1), ("inter_op_threads", -2), ("num_threads", 100_000),
                        ("inter_op_threads", 1025)):
        with pytest.raises(ValueError, match=f"^--{name} must be between 0 \\(the default layout\\) and 1024, "
                                             f"got {value}$"):
            check_config(RunConfig(dataset="sinusoid", **{name: value}))
    check_config(RunConfig(dataset="sinusoid", num_threads=1024, inter_op_threads=1024))


@pytest.mark.slow
def test_layout_is_applied_in_a_fresh_process():
    code = ("from pymeta.runtime import apply_thread_layout; import tensorflow as tf; "
            "apply_thread_layout(1, 2); tf.constant(0); "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "2"]


def test_started_tensorflow_keeps_its_pools_and_warns_only_when_asked_explicitly():
    tf.constant(0)  # started (conftest does this too)
    before = (tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
    wanted = (before[0] + 1, before[1] + 1)
    with pytest.warns(UserWarning, match="thread pools stay as they are"):
        apply_thread_layout(*wanted, explicit=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_thread_layout(*wanted, explicit=False)
    assert (tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads()) == before


def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path):
    from pymeta.runtime import cpu_has_native_bfloat16
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_has_native_bfloat16(str(with_bf16)) is True
    assert cpu_has_native_bfloat16(str(without)) is False
    assert cpu_has_native_bfloat16(str(tmp_path / "missing")) is None


def test_bfloat16_without_native_support_warns(monkeypatch):
    from pymeta import runtime
    from pymeta.training import setup_run
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match="without native bfloat16"):
        setup_run(RunConfig(dataset="sinusoid", precision="mixed_bfloat16"))
    monkeypatch.setattr(runtime, "cpu_has_native_bfloat16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        setup_run(RunConfig(dataset="sinusoid", precision="mixed_bfloat16"))


@pytest.mark.slow
def test_an_rl_run_applies_the_thread_flags(tmp_path):
    """--num_threads / --inter_op_threads reach TensorFlow in an RL run (fresh process)."""
    code = ("from pymeta.config import RunConfig, resolve_rl_defaults; from pymeta.training import metatrain; "
            "import tensorflow as tf; "
            "metatrain(resolve_rl_defaults(RunConfig(dataset='navigation2d', metamodel='fomaml', num_threads=1, "
            "inter_op_threads=2, meta_batch_size=2, episodes_per_task=2, horizon=5, "
            "num_outer_metatraining_iterations=1, tensorboard=False, progress=False, "
            f"model_save_filename={str(tmp_path / 'm.h5')!r}))); "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["1", "2"]
