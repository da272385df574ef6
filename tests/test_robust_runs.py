"""Runs that cannot hang, fill a disk, lose a checkpoint or report a wrong number (issue 16): flags
checked up front, divergence caught, checksummed checkpoints with fall-back, locked run folders,
monitoring that does not touch the run's random numbers, interruptible compilation."""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO, tiny_sinusoid_run as tiny
from pymeta import checkpoint as ckpt
from pymeta.config import MetaTestConfig, check_config, check_metatest_config
from pymeta.model_io import load_model
from pymeta.training import metatrain


def run_script(script, *args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(REPO, script), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=timeout)


def one_error_line(stderr):
    lines = [l for l in stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return errors[0]


# --- 1. flags ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("field,value,words", [
    ("iterations_per_call", -1, "--iterations_per_call must be >= 1"),
    ("keep_checkpoints", 0, "--keep_checkpoints must be >= 1"),
    ("keep_checkpoints", -1, "--keep_checkpoints must be >= 1"),
    ("meta_lr", float("inf"), "--meta_lr must be a finite number > 0"),
    ("meta_lr", float("nan"), "--meta_lr must be a finite number > 0"),
    ("inner_lr", float("inf"), "--inner_lr must be a finite number > 0"),
    ("inner_lr", -1.0, "--inner_lr must be a finite number > 0"),
    ("inner_batch_size", -5, "--inner_batch_size must be -1"),
    ("jit_compile", "maybe", "unknown --jit_compile"),
])
def test_bad_run_flags_are_refused_up_front(tmp_path, field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace("+", r"\+")):
        check_config(tiny(tmp_path, **{field: value}))


@pytest.mark.parametrize("field,value", [("inner_lr", float("nan")), ("inner_lr", -1.0),
                                         ("inner_lr", float("inf")), ("inner_batch_size", -5)])
def test_bad_metatest_flags_are_refused(field, value):
    with pytest.raises(ValueError, match=f"--{field} must be"):
        check_metatest_config(MetaTestConfig(model="m.h5", **{field: value}))


def test_negative_iterations_per_call_is_a_one_line_error_with_exit_code_2(tmp_path):
    out = run_script("example_metatrain.py", "--dataset=sinusoid", "--iterations_per_call=-1", "--noprogress",
                     f"--model_save_filename={tmp_path}/m.h5")
    assert out.returncode == 2
    assert "--iterations_per_call must be >= 1" in one_error_line(out.stderr)
    assert not os.listdir(tmp_path)


def test_unwritable_output_folders_are_refused_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match=f"cannot write to {blocker}/sub"):
        metatrain(tiny(tmp_path, model_save_filename=str(blocker / "sub" / "m.h5")))
    with pytest.raises(ValueError, match=f"cannot write to {blocker}/run"):
        metatrain(tiny(tmp_path, run_dir=str(blocker / "run")))
    assert not (tmp_path / "model.h5").exists()
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match=f"cannot write to {locked}"):
            metatrain(tiny(tmp_path, model_save_filename=str(locked / "m.h5")))


def test_metatest_output_folder_is_checked_before_evaluating(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_script("scripts/meta_test.py", "--model=/nonexistent.h5", "--dataset=sinusoid",
                     f"--output={blocker}/r.json")
    assert out.returncode == 2 and "cannot write to" in one_error_line(out.stderr)


def test_rotation_never_deletes_the_newest_checkpoint(tmp_path):
    from pymeta.training import setup_run
    _, _, ml = setup_run(tiny(tmp_path))
    for i, keep in enumerate((3, 1, 0, -1)):
        path = ckpt.save_checkpoint(str(tmp_path), 10 * (i + 1), ml, [], {}, keep)
        assert ckpt.latest_checkpoint(str(tmp_path)) == path
    assert len(ckpt.checkpoint_files(str(tmp_path))) == 1


@pytest.mark.slow
def test_a_resumed_run_continues_the_training_time_its_checkpoint_recorded(tmp_path):
    """Checkpoints record the training time (covered by the checksum); a resumed run's history continues
    from it, not from its last validation (a run validated every 500 iterations and resumed from 944
    used to lose the time of 444)."""
    metatrain(tiny(tmp_path, num_outer_metatraining_iterations=20, test_every_k_iterations=100))
    run_dir = str(tmp_path / "model.h5_run")
    first, last = ckpt.checkpoint_files(run_dir)[-2:]
    os.remove(last)  # resume from iteration 10, whose history has only the validation at 0
    with h5py.File(first, "r") as f:
        assert [h["iteration"] for h in json.loads(f.attrs["history"])] == [0]
        assert float(f.attrs["seconds"]) > 0
    with h5py.File(first, "r+") as f:
        f.attrs["seconds"] = 10000.0
    assert "checksum" in ckpt.checkpoint_problem(first)  # the checksum covers it
    with h5py.File(first, "r+") as f:
        f.attrs["sha256"] = ckpt._digest(f)
    assert ckpt.checkpoint_problem(first) is None
    assert ckpt.elapsed_seconds(first, [{"seconds": 3.0}]) == 10000.0
    history = metatrain(tiny(tmp_path, num_outer_metatraining_iterations=20, test_every_k_iterations=100))
    assert history[-1]["iteration"] == 20 and 10000 < history[-1]["seconds"] < 10000 + 600


# --- 2. divergence -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_divergence_stops_the_run_and_keeps_the_last_finite_checkpoint(tmp_path):
    from pymeta.training import Diverged
    c = tiny(tmp_path)
    metatrain(c)  # 30 finite iterations: checkpoints 10, 20, 30 and the model
    finite = ckpt.checkpoint_files(c.resolved_run_dir())
    weights = load_model(c.model_save_filename).get_weights()
    bad = dataclasses.replace(c, num_outer_metatraining_iterations=60, run_dir=c.resolved_run_dir(),
                              inner_lr=1e30)
    # a run that diverges after resuming from the finite one (its other inner_lr accepted for the test)
    import pymeta.run.loop as loop
    original = loop.find_resume_point
    loop.find_resume_point = lambda c, run_dir, *rest: ckpt.latest_checkpoint(run_dir)
    try:
        with pytest.raises(Diverged, match=r"training diverged at iteration \d+: .* not finite .*learning rate"):
            metatrain(bad)
    finally:
        loop.find_resume_point = original
    assert ckpt.checkpoint_files(c.resolved_run_dir()) == finite
    for a, b in zip(weights, load_model(c.model_save_filename).get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_divergence_is_a_one_line_error_and_nothing_non_finite_is_saved(tmp_path):
    out = run_script("example_metatrain.py", "--dataset=sinusoid", "--meta_lr=1e30", "--noprogress",
                     "--num_validation_batches=1", "--num_outer_metatraining_iterations=20",
                     "--test_every_k_iterations=10", "--save_every_k_iterations=10", "--notensorboard",
                     f"--model_save_filename={tmp_path}/m.h5")
    assert out.returncode == 2
    assert "training diverged at iteration" in one_error_line(out.stderr)
    assert not (tmp_path / "m.h5").exists()
    for path in glob.glob(f"{tmp_path}/**/ckpt-*.h5", recursive=True):
        with h5py.File(path) as f:
            assert all(np.all(np.isfinite(f["theta"][k][()])) for k in f["theta"])


@pytest.mark.slow
def test_metatest_refuses_non_finite_models_and_learning_rates(tmp_path):
    c = tiny(tmp_path, num_outer_metatraining_iterations=10)
    metatrain(c)
    out = run_script("scripts/meta_test.py", f"--model={c.model_save_filename}", "--inner_lr=nan",
                     "--num_tasks=4")
    assert out.returncode == 2 and "--inner_lr must be a finite number > 0" in one_error_line(out.stderr)
    with h5py.File(c.model_save_filename, "r+") as f:
        names = []
        f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and "kernel" in n else None)
        data = f[names[0]][()]
        data.flat[0] = np.nan
        f[names[0]][...] = data
    out = run_script("scripts/meta_test.py", f"--model={c.model_save_filename}", "--num_tasks=4")
    assert out.returncode == 2 and "non-finite weights" in one_error_line(out.stderr)


# --- 3. checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_checkpoint_meta_tests_like_the_model_file_it_became(tmp_path):
    """--model <run_dir>/ckpt-N.h5 for a supervised run: the last checkpoint gives the final model file's
    meta-test result exactly, an earlier one (other weights) another."""
    from pymeta.evaluation import meta_test
    c = tiny(tmp_path)
    metatrain(c)
    run_dir = c.model_save_filename + "_run"
    mt = MetaTestConfig(dataset="sinusoid", metamodel="fomaml", num_train_samples_per_class=10, inner_lr=0.01,
                        inner_batch_size=5, num_inner_iterations=3, num_tasks=4, seed=1)
    results = [meta_test(dataclasses.replace(mt, model=path))
               for path in (c.model_save_filename, os.path.join(run_dir, "ckpt-00000030.h5"),
                            os.path.join(run_dir, "ckpt-00000020.h5"))]
    assert results[0]["mean"] == results[1]["mean"] != results[2]["mean"]
    with h5py.File(os.path.join(run_dir, "ckpt-00000020.h5"), "r+") as f:  # its checksum no longer matches
        f["theta"]["0"][0, ...] = 0.5
    with pytest.raises(ValueError, match="ckpt-00000020.h5' cannot be used: its checksum does not match"):
        meta_test(dataclasses.replace(mt, model=os.path.join(run_dir, "ckpt-00000020.h5")))


@pytest.mark.slow
def test_init_model_starts_a_supervised_run_from_that_file(tmp_path):
    """--init_model for a supervised run: theta starts as the file's weights (checked before any step),
    and 30 further iterations from them give another model than 30 from the seed's initialisation."""
    from pymeta.training import setup_run
    first = tiny(tmp_path, "first.h5")
    metatrain(first)
    saved = load_model(first.model_save_filename).get_weights()
    _, _, metalearner = setup_run(tiny(tmp_path, "warm.h5", init_model=first.model_save_filename))
    assert len(saved) == len(metalearner.current_initial_parameters)
    for a, b in zip(saved, metalearner.current_initial_parameters):
        np.testing.assert_array_equal(a, b)
    warm, cold = tiny(tmp_path, "warm.h5", init_model=first.model_save_filename), tiny(tmp_path, "cold.h5")
    metatrain(warm)
    metatrain(cold)
    w, c = (load_model(x.model_save_filename).get_weights() for x in (warm, cold))
    assert not np.array_equal(w[0], c[0]) and not np.array_equal(w[0], saved[0])


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.slow
def test_corrupt_and_truncated_checkpoints_fall_back_to_the_newest_valid_one(tmp_path, caplog):
    reference = tiny(tmp_path / "a", num_outer_metatraining_iterations=50)
    metatrain(reference)
    c = tiny(tmp_path / "b", num_outer_metatraining_iterations=30)
    metatrain(c)
    run_dir = c.resolved_run_dir()
    first, second, newest = ckpt.checkpoint_files(run_dir)
    with h5py.File(newest, "r") as f:  # flip bytes of the meta-parameters in the newest
        offset = f["theta"]["0"].id.get_offset()
    with open(newest, "r+b") as f:
        f.seek(offset)
        b = f.read(4)
        f.seek(offset)
        f.write(bytes(x ^ 0x5A for x in b))
    size = os.path.getsize(second)  # and truncate the one before it
    with open(second, "r+b") as f:
        f.truncate(size // 2)
    assert "checksum" in ckpt.checkpoint_problem(newest) and "cannot be read" in ckpt.checkpoint_problem(second)
    assert ckpt.checkpoint_problem(first) is None
    # a killed run's half-written files
    stale = [os.path.join(run_dir, f".ckpt-00000040.tmp{dead_pid()}_0123abcd.h5"),
             str(tmp_path / "b" / f".model.tmp{dead_pid()}_0123abcd.h5")]
    for path in stale:
        open(path, "wb").write(b"half")
    with caplog.at_level("WARNING", logger="pymeta"):
        history = metatrain(dataclasses.replace(c, num_outer_metatraining_iterations=50))
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert f"checkpoint {newest} is not usable" in warned and f"checkpoint {second} is not usable" in warned
    assert not glob.glob(str(tmp_path / "b" / "**" / ".*tmp*"), recursive=True)
    assert [h["iteration"] for h in history] == [0, 10, 20, 30, 40, 50]
    for x, y in zip(load_model(reference.model_save_filename).get_weights(),
                    load_model(c.model_save_filename).get_weights()):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_a_checkpoint_with_non_finite_values_is_not_resumed(tmp_path):
    c = tiny(tmp_path, num_outer_metatraining_iterations=20)
    metatrain(c)
    older, newest = ckpt.checkpoint_files(c.resolved_run_dir())
    with h5py.File(newest, "r+") as f:  # NaN with a matching checksum: still refused
        f["theta"]["0"][...] = np.nan
        f.attrs["sha256"] = ckpt._digest(f)
    assert "not finite" in ckpt.checkpoint_problem(newest)
    from pymeta.run.resume import newest_valid_checkpoint
    assert newest_valid_checkpoint(c.resolved_run_dir()) == older


# --- 4. run folders ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_run_on_a_locked_run_folder_fails_at_once(tmp_path):
    from pymeta.training import run_lock
    c = tiny(tmp_path, num_outer_metatraining_iterations=10)
    with run_lock(c.resolved_run_dir()):
        with pytest.raises(ValueError, match="another run is using .* is locked by process"):
            metatrain(c)
    assert not os.path.exists(c.model_save_filename)
    metatrain(c)  # released: the run goes ahead
    assert os.path.exists(c.model_save_filename)


@pytest.mark.slow
def test_h5_and_keras_model_files_never_share_a_run_folder(tmp_path):
    h5 = tiny(tmp_path, name="my model.h5", num_outer_metatraining_iterations=10)
    keras_file = tiny(tmp_path, name="my model.keras", num_outer_metatraining_iterations=10)
    assert h5.resolved_run_dir() != keras_file.resolved_run_dir()
    metatrain(h5)
    metatrain(keras_file)
    assert (tmp_path / "my model.h5").exists() and (tmp_path / "my model.keras").exists()
    # one run folder given for both: the other model file's checkpoints are not resumed
    shared = dataclasses.replace(keras_file, run_dir=h5.resolved_run_dir(), overwrite=True)
    with pytest.raises(ValueError, match="model_file: my model.h5 there, my model.keras here"):
        metatrain(shared)


@pytest.mark.slow
def test_a_finished_run_whose_model_was_deleted_writes_it_again(tmp_path, caplog):
    c = tiny(tmp_path, num_outer_metatraining_iterations=20)
    metatrain(c)
    weights = load_model(c.model_save_filename).get_weights()
    os.remove(c.model_save_filename)
    with caplog.at_level("INFO", logger="pymeta"):
        metatrain(c)
    log = " ".join(r.getMessage() for r in caplog.records)
    assert "was missing: written again from the checkpoint of iteration 20" in log
    for a, b in zip(weights, load_model(c.model_save_filename).get_weights()):
        np.testing.assert_array_equal(a, b)
    caplog.clear()
    with caplog.at_level("INFO", logger="pymeta"):
        metatrain(c)  # nothing to do: nothing saved, and no line saying so
    log = " ".join(r.getMessage() for r in caplog.records)
    assert "model saved to" not in log and "had already finished at iteration 20" in log


# --- 5. monitoring -------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("extra", [{}, dict(persistent_inner_state=True, metamodel="reptile", meta_lr=0.1)])
def test_tensorboard_on_or_off_gives_the_same_parameters(tmp_path, extra):
    finals = []
    for tb in (True, False):
        c = tiny(tmp_path, name=f"tb{tb}.h5", tensorboard=tb, num_outer_metatraining_iterations=20, **extra)
        metatrain(c)
        finals.append(load_model(c.model_save_filename).get_weights())
    assert os.listdir(tmp_path / "tbTrue.h5_run" / "tensorboard")
    for a, b in zip(*finals):
        np.testing.assert_array_equal(a, b)


# --- 6. compilation ------------------------------------------------------------------------------------------
def test_jit_compile_auto_uses_xla_only_for_short_sinusoid_inner_loops(tmp_path):
    def xla(**kw):
        s = tiny(tmp_path, **kw).sections()
        return s.algorithm.resolved_jit_compile(s.task.dataset)
    assert xla(jit_compile="auto")
    assert not xla(jit_compile="auto", num_inner_training_iterations=150)
    assert xla(num_inner_training_iterations=150, jit_compile="on")
    assert not xla(jit_compile="off")
    assert not xla(jit_compile="auto", dataset="omniglot")


@pytest.mark.slow
@pytest.mark.parametrize("signals,code", [((signal.SIGINT, signal.SIGINT), 130), ((signal.SIGTERM,), 143)])
def test_signals_end_a_long_compilation_at_once(tmp_path, signals, code):
    """150 unrolled inner steps take minutes to compile with XLA: a second Ctrl-C (1.5 s after the
    first: signals within a second are copies of one request), or a SIGTERM while compiling, ends the
    process without waiting for it."""
    import time
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "example_metatrain.py"), "--dataset=sinusoid", "--jit_compile=on",
         "--num_inner_training_iterations=150", "--noprogress", "--notensorboard", "--num_validation_batches=1",
         f"--model_save_filename={tmp_path}/m.h5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    try:
        for line in proc.stdout:
            if "compiling the" in line:
                break
        time.sleep(1.0)
        for s in signals:
            proc.send_signal(s)
            time.sleep(1.5)
        _, err = proc.communicate(timeout=120)  # a guard against hanging, not a timing assertion
    finally:
        proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert "stopped at once by" in err


# --- 7. minor ------------------------------------------------------------------------------------------------
def test_files_are_written_with_the_umask_permissions(tmp_path):
    from pymeta.atomic import atomic_write
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "m.h5") as tmp:  # a writer that creates its file 0600 (mkstemp)
            os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "m.h5").st_mode & 0o777 == 0o640


def test_a_rank_without_checkpoint_does_not_report_one():
    from pymeta.training import Interrupted
    assert str(Interrupted(signal.SIGTERM, None)) == "stopped by SIGTERM"
    assert str(Interrupted(signal.SIGINT, "r/ckpt-1.h5")) == "stopped by SIGINT; checkpoint written to r/ckpt-1.h5"


def test_metatest_has_num_threads():
    from absl import flags
    from pymeta.config import define_flags
    fv = flags.FlagValues()
    define_flags(MetaTestConfig, fv)
    fv(["prog", "--model=m.h5", "--num_threads=1"])
    assert fv.num_threads == 1
    for value in (-1, 1025):
        with pytest.raises(ValueError, match="--num_threads must be between 0"):
            check_metatest_config(MetaTestConfig(model="m.h5", num_threads=value))
