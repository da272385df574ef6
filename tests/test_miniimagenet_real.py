"""The real Mini-ImageNet pipeline end to end on a small subset of the real archives: fetch_data.sh ->
make_miniimagenet_dataset.py -> the dataset file -> task distributions -> example_metatrain.py ->
scripts/meta_test.py.

The real data (images_{train,val,test}.tar.xz + train.csv val.csv test.csv, see its SOURCE.md) is read
from $PYMETA_MINIIMAGENET_SRC, else <repo>/../shared/datasets/miniimagenet; skipped when absent. Its terms
allow research use only: the subset is written to a temporary folder, never into the repository.
The subset: the first 3 train / 2 val / 2 test classes of the archives (members are sorted by name, so
reading stops after about 4,000 members, about 2 s), 20 images each, packed again as
images_{train,val,test}.tar.xz with the CSV rows of those images.
"""

import csv
import io
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest

from data_fixtures import REPO, run_script

pytestmark = pytest.mark.slow

SRC = os.environ.get("PYMETA_MINIIMAGENET_SRC") or os.path.join(
    os.path.dirname(REPO), "shared", "datasets", "miniimagenet")
FILES = [f"images_{s}.tar.xz" for s in ("train", "val", "test")] + [f"{s}.csv" for s in ("train", "val", "test")]
SUBSET = {"train": 3, "val": 2, "test": 2}
PER_CLASS = 20
COUNTS = {"MINIIMAGENET_TRAIN_CLASSES": "3", "MINIIMAGENET_VAL_CLASSES": "2", "MINIIMAGENET_TEST_CLASSES": "2",
          "MINIIMAGENET_IMAGES_PER_CLASS": str(PER_CLASS)}


def _read_first_classes(archive, n_classes, per_class):
    """{member name: bytes} of the first `per_class` images of the first `n_classes` classes."""
    out, classes = {}, []
    with tarfile.open(archive, "r:xz") as t:
        for m in t:
            name = os.path.basename(m.name)
            wnid = name[:9]
            if not classes or classes[-1] != wnid:
                if len(classes) == n_classes:
                    break  # the archive is sorted by name: no more of the classes we keep
                classes.append(wnid)
            if m.isfile() and sum(k.startswith("images/" + wnid) for k in out) < per_class:
                out[m.name] = t.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """Layout (a) folder: images_{split}.tar.xz with the subset's images + the filtered CSVs."""
    if not all(os.path.isfile(os.path.join(SRC, f)) for f in FILES):
        pytest.skip(f"real Mini-ImageNet archives not found in {SRC} (set PYMETA_MINIIMAGENET_SRC)")
    out = tmp_path_factory.mktemp("real_mini_subset")
    start = time.time()
    for split, n in SUBSET.items():
        members = _read_first_classes(os.path.join(SRC, f"images_{split}.tar.xz"), n, PER_CLASS)
        with tarfile.open(out / f"images_{split}.tar.xz", "w:xz", preset=0) as t:
            for name, data in sorted(members.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o644, 1650844800
                t.addfile(info, io.BytesIO(data))
        keep = {os.path.basename(k) for k in members}
        with open(os.path.join(SRC, f"{split}.csv"), newline="") as f:
            rows = [r for r in csv.reader(f)]
        with open(out / f"{split}.csv", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([rows[0]] + [r for r in rows[1:] if r[0] in keep])
        assert len(keep) == n * PER_CLASS
    print(f"subset of the real archives built in {time.time() - start:.1f} s")
    return out


@pytest.fixture(scope="module")
def dataset_file(subset, tmp_path_factory):
    """fetch_data.sh then make_miniimagenet_dataset.py with its defaults, in a scratch folder."""
    work = tmp_path_factory.mktemp("real_mini_work")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIIMAGENET_")}
    env.update(COUNTS, DATA_DIR="datasets", MINIIMAGENET_SRC=str(subset), PYTHON=sys.executable)
    for attempt in ("first", "second"):
        proc = subprocess.run(["bash", os.path.join(REPO, "fetch_data.sh"), "miniimagenet"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert ("unpacked into" if attempt == "first" else "already in place") in proc.stdout, proc.stdout
    mini = work / "datasets" / "miniimagenet"
    assert sorted(os.listdir(mini)) == [".pymeta_complete", "images", "test.csv", "train.csv", "val.csv"]
    assert len(os.listdir(mini / "images")) == 7 * PER_CLASS
    proc = run_script("make_miniimagenet_dataset.py", "-q", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "(csv layout, pkl" in proc.stdout
    return work, mini / "miniimagenet.pkl"


def test_dataset_file(dataset_file):
    from PIL import Image
    from pymeta.data import load_miniimagenet
    work, path = dataset_file
    d = load_miniimagenet(path)
    names = d["class_names"]
    for split, n in SUBSET.items():
        X, y = d[split]
        assert X.dtype == np.uint8 and X.shape == (n * PER_CLASS, 84, 84, 3)
        assert np.array_equal(np.bincount(y), np.full(n, PER_CLASS))
        assert len(names[split]) == n and names[split] == sorted(names[split])
        assert 20 < X.mean() < 235 and X.std() > 20  # real photographs, not flat colours
    assert not set(names["train"]) & set(names["val"]) and not set(names["val"]) & set(names["test"])
    assert not set(names["train"]) & set(names["test"])
    # the first train image is the first JPEG of the first train class, decoded exactly
    mini = work / "datasets" / "miniimagenet"
    first = sorted(f for f in os.listdir(mini / "images") if f.startswith(names["train"][0]))[0]
    with Image.open(mini / "images" / first) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), d["train"][0][0])


def test_task_distributions(dataset_file):
    from pymeta.tasks.miniimagenet_tasks import create_miniimagenet_task_distribution
    np.random.seed(0)
    tr, va, te = create_miniimagenet_task_distribution(str(dataset_file[1]), num_training_samples_per_class=1,
                                                       num_test_samples_per_class=5, num_training_classes=2,
                                                       meta_batch_size=2)
    classes = {}
    for name, dist, n in (("train", tr, 3), ("val", va, 2), ("test", te, 2)):
        X = dist.tasks[0].X
        assert X.dtype == np.uint8 and X.shape == (n * PER_CLASS, 84, 84, 3)
        classes[name] = {X[i].tobytes() for i in range(len(X))}  # the images themselves
        for task in dist.sample_batch():
            (xs, ys), (xq, yq) = task.get_train_set(), task.get_test_set()
            assert xs.shape == (2, 84, 84, 3) and xq.shape == (10, 84, 84, 3)
            assert sorted(ys.tolist()) == [0, 1] and sorted(yq.tolist()) == [0] * 5 + [1] * 5
            assert xs.dtype == xq.dtype
    assert not classes["train"] & classes["val"] and not classes["val"] & classes["test"]
    assert not classes["train"] & classes["test"]


@pytest.fixture(scope="module")
def trained_model(dataset_file, tmp_path_factory):
    work, path = dataset_file
    model = tmp_path_factory.mktemp("real_mini_model") / "model.h5"
    start = time.time()
    train = subprocess.run(
        [sys.executable, os.path.join(REPO, "example_metatrain.py"), "--dataset=miniimagenet", "--metamodel=fomaml",
         f"--data_path={path}", "--num_output_classes=2", "--num_train_samples_per_class=1",
         "--num_test_samples_per_class=3", "--meta_batch_size=2", "--num_inner_training_iterations=1",
         "--inner_lr=0.01", "--num_outer_metatraining_iterations=3", "--test_every_k_iterations=3",
         "--num_validation_batches=1", f"--model_save_filename={model}", "--noprogress"],
        capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=300)
    print(f"example_metatrain.py: {time.time() - start:.1f} s")
    return train, model


def test_metatrain_on_the_subset(trained_model):
    train, model = trained_model
    assert train.returncode == 0, train.stderr[-3000:]
    assert "val acc" in train.stdout and model.exists()


def test_meta_test_on_the_subset(dataset_file, trained_model, tmp_path):
    train, model = trained_model
    assert train.returncode == 0, "training failed (see test_metatrain_on_the_subset)"
    out = tmp_path / "result.json"
    start = time.time()
    proc = run_script("meta_test.py", "--model", model, "--dataset", "miniimagenet", "--data_path", dataset_file[1],
                      "--num_output_classes", 2, "--num_train_samples_per_class", 1, "--num_test_samples_per_class",
                      3, "--inner_lr", 0.01, "--num_inner_iterations", 2, "--num_tasks", 10, "--batch", 5,
                      "--output", out)
    print(f"meta_test.py: {time.time() - start:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.load(open(out))
    assert result["num_tasks"] == 10 and 0.0 <= result["mean"] <= 100.0 and result["ci95"] >= 0
