"""Checkpoints: a run killed with SIGKILL and resumed ends with exactly the parameters of an
uninterrupted run; SIGTERM writes a checkpoint; nothing of another run is silently replaced."""

import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO, tiny_sinusoid_run
from pymeta.model_io import load_model
from pymeta.training import metatrain

ARGS = ["--dataset=sinusoid", "--metamodel=fomaml", "--num_train_samples_per_class=10",
        "--num_test_samples_per_class=50", "--inner_batch_size=5", "--inner_lr=0.01", "--meta_lr=0.003",
        "--num_validation_batches=2", "--test_every_k_iterations=20", "--save_every_k_iterations=20",
        "--iterations_per_call=5", "--noprogress", "--seed=3"]


def command(model, iterations, *extra):
    return [sys.executable, os.path.join(REPO, "example_metatrain.py"), *ARGS, f"--model_save_filename={model}",
            f"--num_outer_metatraining_iterations={iterations}", *extra]


def run(cmd, timeout=600):
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def checkpoints(model):
    return sorted(glob.glob(str(model) + "_run" + "/ckpt-*.h5"))


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    n = 400
    reference = tmp_path / "a" / "model.h5"
    run(command(reference, n))
    killed = tmp_path / "b" / "model.h5"
    proc = subprocess.Popen(command(killed, n), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 300
    while time.time() < deadline and not any(int(p[-11:-3]) >= 60 for p in checkpoints(killed)):
        time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = int(checkpoints(killed)[-1][-11:-3])
    assert 60 <= killed_at < n
    out = run(command(killed, n))
    assert "resumed from" in out.stdout and f"at iteration {killed_at}" in out.stdout
    a, b = load_model(reference).get_weights(), load_model(killed).get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # the history continues where it stopped, without duplicates
    import json
    iters = [h["iteration"] for h in json.load(open(tmp_path / "b" / "model_history.json"))["history"]]
    assert iters == list(range(0, n + 1, 20))
    assert len(checkpoints(killed)) == 3  # keep_checkpoints


@pytest.mark.slow
@pytest.mark.parametrize("copies", [1, 2])
def test_sigterm_writes_a_checkpoint_and_exits(tmp_path, copies):
    """copies=2: `timeout` signals the process and then its process group; the second copy, 0.1 s
    later, is the same request and must not end the run before its checkpoint is written."""
    model = tmp_path / "model.h5"
    proc = subprocess.Popen(command(model, 100000, "--save_every_k_iterations=100000",
                                    "--test_every_k_iterations=100000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    deadline = time.time() + 120
    # after the first compiled training call: a SIGTERM while compiling ends the process at once
    while time.time() < deadline and "compiled the meta-training step" not in (proc.stdout.readline() or ""):
        pass
    time.sleep(2.0)
    for _ in range(copies):
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM" in err and "at once" not in err and checkpoints(model) and model.exists()


@pytest.mark.slow
def test_resume_refuses_other_settings_and_nothing_is_overwritten(tmp_path):
    model = tmp_path / "model.h5"
    run(command(model, 20, "--tensorboard"))
    events = glob.glob(str(tmp_path / "model.h5_run" / "tensorboard" / "events*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "model.h5_run" / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"validation/loss", "learning_rate/meta", "speed/meta_iterations_per_second",
            "inner_loop/train_loss_after_step_0", "train/last_inner_minibatch_loss"} <= tags
    # other settings, same run directory: refused with a one-line error
    other = subprocess.run(command(model, 40, "--inner_lr=0.02"), capture_output=True, text=True, cwd=REPO,
                           env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert other.returncode == 2 and "inner_lr: 0.01 there, 0.02 here" in other.stderr
    # a model file that is not from this run is not replaced
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"someone else's model")
    out = subprocess.run(command(foreign, 20), capture_output=True, text=True, cwd=REPO,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    assert out.returncode == 2 and "already exists and is not from this run" in out.stderr
    assert foreign.read_bytes() == b"someone else's model"
    # a checkpoint written before a setting existed (here imaml_lam_damping) counts as its default
    with h5py.File(checkpoints(model)[-1], "r+") as f:
        config = json.loads(f.attrs["config"])
        del config["imaml_lam_damping"]
        f.attrs["config"] = json.dumps(config)
        del f.attrs["sha256"]  # nor a checksum
    # the same run extended to more iterations resumes
    out = run(command(model, 40))
    assert "resumed from" in out.stdout and "at iteration 20" in out.stdout


@pytest.mark.slow
@pytest.mark.parametrize("metamodel,extra", [
    ("reptile", {}), ("maml", {}), ("seqfomaml", {}),
    ("imaml", {"imaml_inner": "pullback", "imaml_cg_steps": 3, "imaml_lambda_reg": 0.5}),
])
def test_every_meta_learner_resumes_exactly(tmp_path, metamodel, extra):
    """What a checkpoint restores (theta, the outer optimizer's slots, the random generators, a
    learner's own state) is each meta-learner's: a run of 20, extended to 30 (resumed from its checkpoint
    at 20), ends with the parameters of a run of 30. Without XLA (tiny_sinusoid_run); FOMAML with XLA and
    a SIGKILL: the first test above."""
    whole = tiny_sinusoid_run(tmp_path / "a", metamodel=metamodel, **extra)
    metatrain(whole)
    stopped = tiny_sinusoid_run(tmp_path / "b", metamodel=metamodel, num_outer_metatraining_iterations=20, **extra)
    metatrain(stopped)
    assert [int(p[-11:-3]) for p in checkpoints(stopped.model_save_filename)][-1] == 20
    history = metatrain(dataclasses.replace(stopped, num_outer_metatraining_iterations=30))
    assert history[-1]["iteration"] == 30
    a, b = load_model(whole.model_save_filename).get_weights(), load_model(stopped.model_save_filename).get_weights()
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
