"""The run loop's writes (issue 38, items 4 and 5): a full disk ends a run with one line (exit 2) and
leaves the model, checkpoints and history written before byte-identical; the checkpoint of a save point
is written before its model, so a model file of a run always has a checkpoint to resume from (and one
left by an older version is refused with what to do); the outputs of a model file are locked, so two runs
never write one model (or m.h5 and m.keras one m_history.json). The disk-full cases run on a small tmpfs:
as root where mounting one is allowed, skipped with the reason elsewhere."""

import dataclasses
import errno
import glob
import hashlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO
from pymeta import checkpoint as ckpt
from pymeta.atomic import atomic_write, disk_full
from pymeta.config import RunConfig, artifact_path, run_identity
from pymeta.model_io import load_model, save_model
from pymeta.run.experiment import Step, Validation
from pymeta.run.lock import output_lock_path, run_lock
from pymeta.run.loop import run
from test_run_loop import FakeMetaLearner


class WritingExperiment:
    """The fake experiment of test_run_loop, whose model file is written as the real ones are (a Keras
    model holding theta as its bias, with the run's settings; `pymeta.model_io.save_model`), and a plot."""

    is_root = True

    def __init__(self, settings=None):
        self.settings = settings or {"dataset": "fake", "inner_lr": 0.1}
        self.saves = 0

    def setup(self, stop):
        np.random.seed(7)
        self.metalearner = FakeMetaLearner()
        self.keras_model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(3)])

    def synchronize(self):
        pass

    def step(self, iteration, max_steps):
        count = min(2, max_steps)
        for _ in range(count):
            self.metalearner.meta_variables[0].assign_add(np.random.rand(3).astype(np.float32))
        return Step(count, losses=[1.0] * count, scalars={"train/x": 1.0})

    def validate(self, iteration, seconds):
        value = float(self.metalearner.meta_variables[0][0])
        return Validation({"iteration": iteration, "val": value, "seconds": seconds}, value, "the value",
                          f"validated at {iteration}", {"validation/value": value})

    def save(self):
        self.saves += 1
        self.keras_model.layers[0].bias.assign(self.metalearner.meta_variables[0])
        save_model(self.keras_model, self.model_file, settings=self.settings)

    def agree_stop(self, signum):
        return signum

    def finish(self, history):
        with atomic_write(artifact_path(self.model_file, "learning_curve.png")) as tmp, open(tmp, "wb") as f:
            f.write(os.urandom(20_000))  # a plot of some size


def theta(model_file):
    return load_model(model_file).get_weights()[1]


def config(folder, n=10, **kw):
    kw = {"test_every_k_iterations": 4, "save_every_k_iterations": 4, "progress": False, "tensorboard": False,
          **kw}
    return RunConfig(model_save_filename=os.path.join(folder, "m.h5"), num_outer_metatraining_iterations=n, **kw)


def go(c, experiment=None):
    experiment = experiment or WritingExperiment()
    experiment.model_file = c.model_save_filename
    return run(c.sections().run, run_identity(c.sections()), experiment)


def digests(folder):
    """sha256 of every file under `folder` (TensorBoard's event files aside: TensorFlow appends to them)."""
    out = {}
    for path in glob.glob(os.path.join(folder, "**"), recursive=True):
        if os.path.isfile(path) and "tfevents" not in path and not path.endswith(".lock"):
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return out


def temporaries(folder):
    return [p for p in glob.glob(os.path.join(folder, "**", ".*"), recursive=True) if ".tmp" in p]


# --- a small disk ----------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs at tmp_path/disk (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs, which only root can mount")
    disk = tmp_path / "disk"
    disk.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                         text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {out.stderr.strip() or out.returncode}")
    yield str(disk)
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(folder):
    """Fill the disk of `folder` (a file `filler` as large as the free space); returns its path."""
    path = os.path.join(folder, "filler")
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return path


def test_disk_full_is_recognised_through_wrappers():
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(RuntimeError("Can't write data (errno = 28, error message = 'No space left on device')"))
    wrapped = ValueError("cannot save")
    wrapped.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert disk_full(wrapped)
    assert not disk_full(OSError(errno.EACCES, "Permission denied")) and not disk_full(ValueError("bad"))


@pytest.mark.parametrize("tensorboard", [False, True])
def test_a_full_disk_ends_the_run_with_one_line_and_keeps_what_was_written(small_disk, tensorboard):
    c = config(small_disk, n=8, tensorboard=tensorboard)
    go(c)
    before = digests(small_disk)
    assert {"m.h5", "m_history.json", "m_learning_curve.png", "m.h5_run/ckpt-00000008.h5"} <= set(before)
    filler = fill(small_disk)
    with pytest.raises(ValueError) as info:
        go(dataclasses.replace(c, num_outer_metatraining_iterations=16))  # resumes at 8, validates, saves...
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"no space left on device to write {small_disk}")
    assert "free space on that disk, or choose another --model_save_filename" in message
    os.remove(filler)
    assert digests(small_disk) == before and temporaries(small_disk) == []
    # with room again, the same run resumes from its last checkpoint and ends as an uninterrupted one
    resumed = go(dataclasses.replace(c, num_outer_metatraining_iterations=16))
    whole = go(config(os.path.join(small_disk, "whole"), n=16))
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(resumed) == strip(whole)


def test_a_run_on_a_full_disk_from_the_start_names_a_file_and_writes_nothing(small_disk):
    filler = fill(small_disk)
    with pytest.raises(ValueError, match=f"^no space left on device to write {small_disk}/"):
        go(config(small_disk, n=8))
    os.remove(filler)
    assert not os.path.exists(os.path.join(small_disk, "m.h5")) and temporaries(small_disk) == []
    assert ckpt.checkpoint_files(os.path.join(small_disk, "m.h5_run")) == []


def test_each_kind_of_write_failing_for_a_full_disk_is_one_line(tmp_path, monkeypatch):
    """Without a tmpfs: the model file, the checkpoint, the history and the plot each fail in turn."""
    from pymeta.run import loop
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def failing(*a, **k):
        raise full
    c = config(str(tmp_path), n=8)
    for where, patch in [("model", lambda e: setattr(e, "save", failing)),
                         ("plot", lambda e: setattr(e, "finish", failing)),
                         ("history", lambda e: monkeypatch.setattr(loop, "write_history", failing)),
                         ("checkpoint", lambda e: monkeypatch.setattr(ckpt, "save_checkpoint", failing))]:
        e = WritingExperiment()
        patch(e)
        with pytest.raises(ValueError, match="^no space left on device to write .*--model_save_filename") as info:
            go(dataclasses.replace(c, model_save_filename=str(tmp_path / f"{where}.h5")), e)
        assert "\n" not in str(info.value), where
        monkeypatch.undo()


# --- the checkpoint first, then the model ----------------------------------------------------------------
def test_a_failed_checkpoint_leaves_no_model_and_the_run_starts_again(tmp_path, monkeypatch):
    c = config(str(tmp_path), n=8)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "ckpt-00000004.h5")
    monkeypatch.setattr(ckpt, "save_checkpoint", full)
    e = WritingExperiment()
    with pytest.raises(ValueError, match="no space left on device to write ckpt-00000004.h5"):
        go(c, e)
    assert e.saves == 0 and not os.path.exists(c.model_save_filename)  # the model comes after its checkpoint
    monkeypatch.undo()
    go(c)  # nothing to refuse: the run starts afresh
    assert os.path.exists(c.model_save_filename)


def test_a_model_whose_last_write_failed_is_written_again_from_its_checkpoint(tmp_path, caplog):
    c = config(str(tmp_path), n=8)
    e = WritingExperiment()
    original = WritingExperiment.save

    def save_fails_at_the_end(self):  # the second save, at iteration 8
        if self.saves == 1:
            self.saves += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.model_file)
        original(self)
    e.save = save_fails_at_the_end.__get__(e)
    with pytest.raises(ValueError, match="no space left"):
        go(c, e)  # the model of iteration 4 is on disk, the checkpoint of iteration 8 too
    stale = theta(c.model_save_filename)
    os.utime(c.model_save_filename, (0, 0))  # older than the checkpoint, whatever the clock's resolution
    with caplog.at_level("INFO", logger="pymeta.training"):
        go(c)
    assert "m.h5 was older than its checkpoint (written before it, or its last write failed): written again " \
           "from the checkpoint of iteration 8" in caplog.text
    whole = WritingExperiment()
    go(config(str(tmp_path / "whole"), n=8), whole)
    np.testing.assert_array_equal(theta(c.model_save_filename), theta(whole.model_file))
    assert not np.array_equal(theta(c.model_save_filename), stale)


def test_a_model_without_a_checkpoint_from_an_older_version_says_what_to_do(tmp_path):
    c = config(str(tmp_path), n=8)
    go(c)
    for path in ckpt.checkpoint_files(c.resolved_run_dir()):  # as pymeta 0.1.0 left a run whose first
        os.remove(path)                                        # checkpoint failed after its model was saved
    before = digests(str(tmp_path))
    with pytest.raises(ValueError) as info:
        go(c)
    assert str(info.value) == (
        f"{c.model_save_filename} is from a run with these settings whose checkpoints are not in "
        f"{c.resolved_run_dir()} (its first checkpoint was never written, e.g. the disk was full), so it cannot "
        "be resumed: pass --overwrite to train again from iteration 0 (the model file is replaced at the first "
        "save), or choose another --model_save_filename to keep it")
    assert digests(str(tmp_path)) == before
    # another run's model: the message of before
    with pytest.raises(ValueError, match="already exists and is not from this run"):
        go(c, WritingExperiment({"dataset": "fake", "inner_lr": 0.2}))
    go(dataclasses.replace(c, overwrite=True))  # as the message says
    assert [os.path.basename(p) for p in ckpt.checkpoint_files(c.resolved_run_dir())] == \
        ["ckpt-00000004.h5", "ckpt-00000008.h5"]


# --- one run per model file ------------------------------------------------------------------------------
HOLD = ("import sys; from pymeta.run.lock import run_lock\n"
        "with run_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True); sys.stdin.read()")


@pytest.fixture
def holder():
    """holder(run_dir, model_file): another process holding the locks of that run; killed afterwards."""
    procs = []

    def start(run_dir, model_file):
        p = subprocess.Popen([sys.executable, "-c", HOLD, run_dir, model_file], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": REPO})
        assert p.stdout.readline().strip() == "held"
        procs.append(p)
        return p
    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_two_runs_writing_one_model_file_from_two_run_folders(tmp_path, holder):
    c = config(str(tmp_path), n=8, run_dir=str(tmp_path / "mine"))
    other = holder(str(tmp_path / "theirs"), c.model_save_filename)
    with pytest.raises(ValueError) as info:
        go(c)
    lock = output_lock_path(c.model_save_filename)
    assert str(info.value) == (
        f"another run is writing {c.model_save_filename} or the files named after it (m_history.json, the "
        f"plots; {lock} is locked by process {other.pid}): wait for it to end, or choose another "
        "--model_save_filename")
    assert not os.path.exists(c.model_save_filename) and not os.path.exists(tmp_path / "m_history.json")
    assert ckpt.checkpoint_files(str(tmp_path / "mine")) == []
    # the other run is killed (kill -9): its lock is taken over
    other.kill()
    other.wait()
    go(c)
    assert os.path.exists(c.model_save_filename)


def test_h5_and_keras_files_of_one_name_share_their_outputs_lock(tmp_path, holder):
    h5 = config(str(tmp_path), n=8)
    keras_file = dataclasses.replace(h5, model_save_filename=str(tmp_path / "m.keras"))
    assert output_lock_path(h5.model_save_filename) == output_lock_path(keras_file.model_save_filename)
    holder(h5.resolved_run_dir(), h5.model_save_filename)
    with pytest.raises(ValueError, match=r"another run is writing .*m\.keras or the files named after it"):
        go(keras_file)
    assert not os.path.exists(tmp_path / "m_history.json")
    # the same file through a link to its folder is the same lock; other names are not
    os.symlink(tmp_path, tmp_path / "link")
    assert output_lock_path(str(tmp_path / "link" / "m.h5")) == output_lock_path(h5.model_save_filename)
    go(dataclasses.replace(h5, model_save_filename=str(tmp_path / "m2.h5")))


def test_the_run_folder_lock_is_still_checked_first(tmp_path):
    c = config(str(tmp_path), n=8)
    with run_lock(c.resolved_run_dir()):
        with pytest.raises(ValueError, match=f"another run is using {c.resolved_run_dir()} .* is locked by "
                                             f"process {os.getpid()}"):
            go(c)


# --- the real runs, through the command line --------------------------------------------------------------
SINUSOID = ["--dataset=sinusoid", "--metamodel=fomaml", "--num_train_samples_per_class=10",
            "--num_test_samples_per_class=20", "--inner_batch_size=5", "--num_inner_training_iterations=3",
            "--meta_batch_size=2", "--num_validation_batches=1", "--test_every_k_iterations=10",
            "--save_every_k_iterations=10", "--iterations_per_call=5", "--jit_compile=off", "--seed=3"]
NAVIGATION = ["--dataset=navigation2d", "--metamodel=fomaml", "--meta_batch_size=2", "--episodes_per_task=2",
              "--horizon=10", "--seed=3", "--save_every_k_iterations=2", "--test_every_k_iterations=2"]


def train(model, iterations, flags, *extra):
    return subprocess.run([sys.executable, os.path.join(REPO, "example_metatrain.py"), *flags, "--noprogress",
                           f"--model_save_filename={model}", f"--num_outer_metatraining_iterations={iterations}",
                           *extra], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env=_env())


def _env():
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what a user sees: the CLI quiets TensorFlow itself
    return env


def one_error_line(out):
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("flags,first,then", [(SINUSOID, 10, 20), (NAVIGATION, 2, 4)], ids=["sinusoid", "rl"])
def test_a_full_disk_through_the_command_line(small_disk, flags, first, then):
    model = os.path.join(small_disk, "m.h5")
    assert train(model, first, flags, "--tensorboard").returncode == 0
    before = digests(small_disk)
    filler = fill(small_disk)
    out = train(model, then, flags, "--tensorboard")
    line = one_error_line(out)
    assert line.startswith(f"error: no space left on device to write {small_disk}") and \
        "choose another --model_save_filename" in line
    os.remove(filler)
    assert digests(small_disk) == before and temporaries(small_disk) == []


@pytest.mark.slow
def test_a_second_run_on_the_same_model_file_through_the_command_line(tmp_path):
    model = str(tmp_path / "m.h5")
    with run_lock(str(tmp_path / "first_run"), model):
        out = train(model, 10, SINUSOID, f"--run_dir={tmp_path / 'second_run'}")
    line = one_error_line(out)
    assert line == (f"error: another run is writing {model} or the files named after it (m_history.json, the "
                    f"plots; {tmp_path}/.m.lock is locked by process {os.getpid()}): wait for it to end, or "
                    "choose another --model_save_filename")
    assert not os.path.exists(model)
