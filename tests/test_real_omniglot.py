"""The real Omniglot (env PYMETA_OMNIGLOT_DIR, else <repo>/../shared/datasets/omniglot) through the
make script, the loader and both task protocols. Skipped when the data is not there."""

import os
import time

import numpy as np
import pytest

from data_fixtures import REPO, run_script
from pymeta.data import load_omniglot

pytestmark = pytest.mark.slow

OMNIGLOT_DIR = os.environ.get("PYMETA_OMNIGLOT_DIR") or os.path.join(
    os.path.dirname(REPO), "shared", "datasets", "omniglot")


@pytest.fixture(scope="module")
def omniglot_pkl(tmp_path_factory):
    if not all(os.path.isdir(os.path.join(OMNIGLOT_DIR, p)) for p in ("images_background", "images_evaluation")):
        pytest.skip(f"real Omniglot not found at {OMNIGLOT_DIR} (set PYMETA_OMNIGLOT_DIR)")
    out = tmp_path_factory.mktemp("real_omniglot") / "omniglot.pkl"
    start = time.time()
    proc = run_script("make_omniglot_dataset.py", "-i", OMNIGLOT_DIR, "-o", out, "--size", 28, "-q")
    assert proc.returncode == 0, proc.stderr
    print(f"built {out} in {time.time() - start:.1f} s: {proc.stdout.strip()}")
    return out


@pytest.fixture(scope="module")
def omniglot(omniglot_pkl):
    return load_omniglot(omniglot_pkl)


def test_counts(omniglot):
    d = omniglot
    assert len(d["trainX"]) == 30 and len(d["testX"]) == 20
    assert sum(len(c) for c in d["trainCharacters"]) == 964
    assert sum(len(c) for c in d["testCharacters"]) == 659
    for part, n_images in (("train", 19280), ("test", 13180)):
        assert sum(len(y) for y in d[part + "Y"]) == n_images
        for X, Y, chars in zip(d[part + "X"], d[part + "Y"], d[part + "Characters"]):
            assert X.dtype == np.uint8 and X.shape[1:] == (28, 28, 1)
            assert np.array_equal(np.bincount(Y), np.full(len(chars), 20))
    assert d["trainAlphabets"][0] == "Alphabet_of_the_Magi" and "Latin" in d["trainAlphabets"]
    assert d["trainAlphabets"] == sorted(d["trainAlphabets"])
    assert d["testAlphabets"] == sorted(d["testAlphabets"])
    x = d["trainX"][0]
    assert np.median(x) == 255 and x.min() == 0  # dark strokes on a white background


def test_known_duplicate_drawing(omniglot):
    """images_background/Braille/character01/0192_03.png and 0192_19.png are identical in the data."""
    d = omniglot
    a = d["trainAlphabets"].index("Braille")
    X = d["trainX"][a][d["trainY"][a] == d["trainCharacters"][a].index("character01")]
    assert np.array_equal(X[2], X[18])


def test_standard_protocol(omniglot):
    from pymeta.tasks.omniglot_tasks import create_omniglot_task_distribution
    np.random.seed(0)
    tr, va, te = create_omniglot_task_distribution(omniglot, num_training_samples_per_class=1,
                                                   num_test_samples_per_class=-1, num_training_classes=20,
                                                   meta_batch_size=4)
    assert len(np.unique(tr.tasks[0].y)) == 1200 * 4 and tr.tasks[0].X.shape == (96000, 28, 28, 1)
    assert len(np.unique(va.tasks[0].y)) == 100 and len(np.unique(te.tasks[0].y)) == 323
    assert tr.tasks[0].X.dtype == np.uint8
    for d in (tr, va, te):
        for task in d.sample_batch():
            assert task.get_train_set()[0].shape == (20, 28, 28, 1)
            assert task.get_test_set()[0].shape == (20 * 19, 28, 28, 1)


def test_original_allcharacters_protocol(omniglot):
    from pymeta.tasks.omniglot_tasks import create_omniglot_allcharacters_task_distribution
    np.random.seed(0)
    tr, va, te = create_omniglot_allcharacters_task_distribution(omniglot)
    n_test = sum(len(c) for c in omniglot["testCharacters"][6:])
    assert len(np.unique(tr.tasks[0].y)) == 1623 - n_test
    assert len(np.unique(te.tasks[0].y)) == n_test == len(np.unique(va.tasks[0].y))
    task = tr.sample_batch()[0]
    assert task.get_train_set()[0].shape == (200, 28, 28, 1)
    assert task.get_test_set()[0].shape == (200, 28, 28, 1)


def test_cli_training_and_meta_test_on_real_omniglot(omniglot_pkl, tmp_path):
    """example_metatrain.py on the real Omniglot (standard protocol), then scripts/meta_test.py."""
    import json
    import subprocess
    import sys
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    model = tmp_path / "model.h5"
    train = subprocess.run(
        [sys.executable, os.path.join(REPO, "example_metatrain.py"), "--dataset=omniglot", "--metamodel=fomaml",
         f"--data_path={omniglot_pkl}", "--num_output_classes=5", "--num_train_samples_per_class=1",
         "--num_test_samples_per_class=5", "--num_inner_training_iterations=3", "--inner_lr=0.1",
         "--num_outer_metatraining_iterations=30", "--test_every_k_iterations=30", "--num_validation_batches=2",
         f"--model_save_filename={model}", "--noprogress"],
        capture_output=True, text=True, env=env, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "val acc" in train.stdout and model.exists()
    out = tmp_path / "result.json"
    test = run_script("meta_test.py", "--model", model, "--dataset", "omniglot", "--data_path", omniglot_pkl,
                      "--num_train_samples_per_class", 1, "--num_test_samples_per_class", 5, "--inner_lr", 0.1,
                      "--num_inner_iterations", 3, "--num_tasks", 50, "--output", out)
    assert test.returncode == 0, test.stderr[-3000:]
    result = json.load(open(out))
    assert result["num_tasks"] == 50 and 20.0 < result["mean"] <= 100.0 and 0 < result["ci95"] < 20
