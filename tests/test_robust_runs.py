"""Runs that cannot hang, fill a disk, lose a checkpoint or report a wrong number (issue 16): flags
checked up front, divergence caught, checksummed checkpoints with fall-back, locked run folders,
monitoring that does not touch the run's random numbers, interruptible compilation."""

import dataclasses
import glob
import os
import signal
import subprocess
import sys

import h5py
import numpy as np
import pytest

from conftest import REPO
from pymeta import checkpoint as ckpt
from pymeta.config import MetaTestConfig, RunConfig, check_config, check_metatest_config
from pymeta.model_io import load_model
from pymeta.training import metatrain


def tiny(tmp_path, name="model.h5", **kw):
    """A sinusoid run of a few seconds."""
    base = dict(dataset="sinusoid", metamodel="fomaml", num_train_samples_per_class=10,
                num_test_samples_per_class=20, inner_batch_size=5, inner_lr=0.01, meta_lr=0.003,
                num_inner_training_iterations=3, meta_batch_size=2, num_validation_batches=1,
                test_every_k_iterations=10, save_every_k_iterations=10, iterations_per_call=5,
                num_outer_metatraining_iterations=30, progress=False, tensorboard=False, seed=3,
                model_save_filename=str(tmp_path / name))
    base.update(kw)
    return RunConfig(**base)


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
