"""example_metatrain.py end to end: the README's commands, the files it writes, clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from pymeta.config import RunConfig
from pymeta.training import metatrain, setup_run
from pymeta.model_io import load_model

SINUSOID_README = ["--dataset=sinusoid", "--num_train_samples_per_class=10", "--num_test_samples_per_class=100",
                   "--num_inner_training_iterations=5", "--inner_batch_size=10", "--meta_lr=0.001",
                   "--inner_lr=0.01", "--meta_batch_size=5", "--num_validation_batches=10"]


def run_cli(*args, timeout=600):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, os.path.join(REPO, "example_metatrain.py"), *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)


@pytest.mark.slow
def test_in_process_run_writes_model_history_and_plots(tmp_path):
    model_file = str(tmp_path / "saved" / "model.h5")
    config = RunConfig(dataset="sinusoid", metamodel="fomaml", num_train_samples_per_class=10,
                       num_test_samples_per_class=100, num_inner_training_iterations=5, inner_batch_size=10,
                       meta_lr=0.001, inner_lr=0.01, num_outer_metatraining_iterations=300,
                       test_every_k_iterations=100, save_every_k_iterations=100, num_validation_batches=4,
                       model_save_filename=model_file, progress=False)
    history = metatrain(config)
    assert [h["iteration"] for h in history] == [0, 100, 200, 300]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    written = json.load(open(tmp_path / "saved" / "model_history.json"))  # one format for every run
    assert written["history"] == history and written["settings"]["dataset"] == "sinusoid"
    for png in ("model_learning_curve.png", "model_sinusoid.png"):
        assert (tmp_path / "saved" / png).read_bytes()[:4] == b"\x89PNG"
    # the saved file is the meta-learnt initialisation: a fresh run's model with these weights
    # reproduces it, and reloading gives the same outputs
    model = load_model(model_file)
    x = np.linspace(-5, 5, 11, dtype=np.float32)[:, None]
    _, fresh, _ = setup_run(config)
    fresh.set_weights(model.get_weights())
    np.testing.assert_array_equal(model.predict(x, verbose=0), fresh.predict(x, verbose=0))


@pytest.mark.slow
def test_step_by_step_and_fast_runs_agree(tmp_path):
    """--nofast (the original task_begin / fit / task_end / update loop) trains the same model."""
    finals = []
    for fast in (True, False):
        config = RunConfig(dataset="sinusoid", metamodel="reptile", num_train_samples_per_class=10,
                           num_test_samples_per_class=20, inner_batch_size=5, meta_lr=0.1, inner_lr=0.01,
                           num_outer_metatraining_iterations=20, test_every_k_iterations=10,
                           num_validation_batches=1, model_save_filename=str(tmp_path / f"{fast}.h5"),
                           fast=fast, progress=False)
        metatrain(config)
        finals.append(load_model(config.model_save_filename).get_weights())
    for a, b in zip(*finals):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("metamodel", ["fomaml", "reptile"])
def test_readme_sinusoid_commands_run_unchanged(tmp_path, metamodel):
    """The original README's sinusoid commands (10,000 meta-iterations), only the output path moved."""
    out = run_cli(f"--metamodel={metamodel}", *SINUSOID_README, f"--model_save_filename={tmp_path}/model.h5",
                  "--num_outer_metatraining_iterations=10000", "--noprogress")
    assert out.returncode == 0, out.stderr[-2000:]
    history = json.load(open(tmp_path / "model_history.json"))["history"]
    assert history[-1]["iteration"] == 10000
    first, last = history[0]["val_loss"], np.mean([h["val_loss"] for h in history[-10:]])
    if metamodel == "fomaml":  # validation MSE after 5 inner steps: from ~4-5 to well below 1
        assert first > 2.0 and last < 1.0, (first, last)
    else:  # Reptile with the README's outer SGD(0.001) learns, but slowly (measured ~4.8 -> ~3.4)
        assert last < 0.85 * first, (first, last)
    assert (tmp_path / "model.h5").exists() and (tmp_path / "model_sinusoid.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--dataset=mnist"], "unknown --dataset='mnist'"),
    (["--dataset=sinusoid", "--metamodel=maml2"], "unknown --metamodel='maml2'"),
    (["--dataset=sinusoid", "--inner_batch_size=50", "--num_train_samples_per_class=10"],
     "--inner_batch_size=50 is not possible with a support set of 10"),
    (["--dataset=sinusoid", "--meta_lr=0"], "--meta_lr must be a finite number > 0"),
    (["--dataset=sinusoid", "--num_outer_metatraining_iterations=0"], "must be >= 1"),
    (["--dataset=omniglot", "--data_path=/nonexistent/omniglot.pkl"], "fetch_data.sh"),
    (["--dataset=sinusoid", "--model_save_filename=out.txt"], "must end in .h5"),
])
def test_bad_settings_give_one_line_errors(args, message):
    out = run_cli(*args, "--noprogress", timeout=120)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert message in out.stderr
    error_lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
    assert len(error_lines) == 1


def test_unknown_flag_is_rejected():
    out = run_cli("--no_such_flag=1", timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "no_such_flag" in out.stderr


@pytest.fixture(scope="module")
def small_omniglot_pkl(tmp_path_factory):
    """A tiny Omniglot-layout pkl with the 50 alphabets the original protocol splits (2 chars each)."""
    import pickle
    from data_fixtures import synthetic_omniglot_dict
    path = tmp_path_factory.mktemp("omni") / "omniglot.pkl"
    with open(path, "wb") as f:
        pickle.dump(synthetic_omniglot_dict(alphabets=(30, 20), chars_per_alphabet=2, drawings=20, size=16), f)
    return path


@pytest.mark.parametrize("args,message", [
    (["--num_output_classes=100"], "100 classes per task requested, but only"),
    (["--num_train_samples_per_class=15", "--num_test_samples_per_class=10"], "cannot draw 15 train + 10 test"),
])
def test_impossible_tasks_on_a_dataset_give_one_line_errors(small_omniglot_pkl, args, message):
    out = run_cli("--dataset=omniglot", "--omniglot_protocol=allcharacters", f"--data_path={small_omniglot_pkl}",
                  *args, "--noprogress", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and message in out.stderr, out.stderr[-1500:]


@pytest.mark.slow
def test_original_protocol_trains_on_a_dataset_file(small_omniglot_pkl, tmp_path):
    out = run_cli("--dataset=omniglot", "--omniglot_protocol=allcharacters", f"--data_path={small_omniglot_pkl}",
                  "--num_output_classes=3", "--num_train_samples_per_class=1", "--num_test_samples_per_class=2",
                  "--num_outer_metatraining_iterations=4", "--test_every_k_iterations=2",
                  "--num_validation_batches=1", f"--model_save_filename={tmp_path}/m.h5", "--noprogress",
                  timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "val acc" in out.stdout and (tmp_path / "m.h5").exists()


@pytest.mark.parametrize("content,message", [
    (b"\x80\x04\x95", "omniglot.pkl"),  # truncated pickle
    (b"this is not a dataset at all", "omniglot.pkl"),
])
def test_unreadable_dataset_file_gives_one_line_error(tmp_path, content, message):
    path = tmp_path / "omniglot.pkl"
    path.write_bytes(content)
    out = run_cli("--dataset=omniglot", f"--data_path={path}", "--noprogress", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and message in out.stderr, out.stderr[-1500:]


def test_wrong_shapes_in_dataset_file(tmp_path):
    import pickle
    path = tmp_path / "omniglot.pkl"
    with open(path, "wb") as f:
        pickle.dump({"trainX": [np.zeros((4, 28, 28, 3), np.uint8)], "trainY": [np.zeros(4, np.int64)],
                     "testX": [], "testY": []}, f)
    out = run_cli("--dataset=omniglot", f"--data_path={path}", "--noprogress", timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-1500:]
    assert "error:" in out.stderr
