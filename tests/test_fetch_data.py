"""fetch_data.sh against a local file:// mirror of tiny synthetic Omniglot zips (never the network)."""

import os
import shutil
import subprocess

import pytest

from data_fixtures import (REPO, count_omniglot, make_miniimagenet_csv, make_miniimagenet_folders,
                           make_omniglot_tree, run_script, zip_omniglot_tree)

SCRIPT = os.path.join(REPO, "fetch_data.sh")
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

# the synthetic tree: background 2 alphabets x 3 characters, evaluation 1 x 3; 2 drawings each
COUNTS = {"OMNIGLOT_BACKGROUND_CHARS": "6", "OMNIGLOT_BACKGROUND_IMAGES": "12",
          "OMNIGLOT_EVALUATION_CHARS": "3", "OMNIGLOT_EVALUATION_IMAGES": "6"}
MINI_COUNTS = {"MINIIMAGENET_TRAIN_CLASSES": "3", "MINIIMAGENET_VAL_CLASSES": "2",
               "MINIIMAGENET_TEST_CLASSES": "2"}


def fetch(*args, data_dir, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIGLOT_", "MINIIMAGENET_"))}
    full.update(COUNTS, DATA_DIR=str(data_dir), OMNIGLOT_BASE_URL="file:///nonexistent-mirror")
    full.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, env=full, timeout=300)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    tree = tmp_path_factory.mktemp("omniglot_tree")
    make_omniglot_tree(tree, alphabets=(2, 1), chars_per_alphabet=[3, 3], drawings=2, size=10)
    return zip_omniglot_tree(tree, str(tmp_path_factory.mktemp("mirror")))


def leftovers(folder):
    return [f for f in os.listdir(folder) if f.startswith(".tmp") or f.endswith(".part")]


def test_omniglot_download_and_idempotent(mirror, tmp_path):
    data = tmp_path / "data"
    proc = fetch("omniglot", data_dir=data, OMNIGLOT_BASE_URL=f"file://{mirror}")
    assert proc.returncode == 0, proc.stderr
    omni = data / "omniglot"
    assert count_omniglot(omni / "images_background") == (6, 12)
    assert count_omniglot(omni / "images_evaluation") == (3, 6)
    assert (omni / "images_background" / "Bg_y" / "character01").is_dir()
    assert sorted(os.listdir(omni)) == ["images_background", "images_evaluation"]
    assert not (data / "miniimagenet").exists()

    before = os.stat(omni / "images_background").st_mtime_ns
    # second run: complete data is skipped (the mirror is not even needed any more)
    proc = fetch("omniglot", data_dir=data)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("already complete") == 2
    assert os.stat(omni / "images_background").st_mtime_ns == before
    assert sorted(os.listdir(omni)) == ["images_background", "images_evaluation"]

    # the make script consumes what fetch_data.sh produced
    out = run_script("make_omniglot_dataset.py", "-i", omni, "-o", omni / "omniglot.pkl", "-q")
    assert out.returncode == 0, out.stderr
    assert "train 2 alphabets / 6 characters / 12 images" in out.stdout


def test_omniglot_incomplete_existing_folder_is_reported(mirror, tmp_path):
    data = tmp_path / "data"
    (data / "omniglot" / "images_background" / "Half").mkdir(parents=True)
    proc = fetch("omniglot", data_dir=data, OMNIGLOT_BASE_URL=f"file://{mirror}")
    assert proc.returncode != 0
    assert "incomplete" in proc.stderr
    assert (data / "omniglot" / "images_background" / "Half").is_dir()  # user data is left alone


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing", "wrong_counts"])
def test_omniglot_failures_leave_nothing_half_written(mirror, tmp_path, damage):
    bad = tmp_path / "bad_mirror"
    shutil.copytree(mirror, bad)
    env = {"OMNIGLOT_BASE_URL": f"file://{bad}"}
    if damage == "garbage":
        (bad / "images_evaluation.zip").write_bytes(b"PK\x03\x04 definitely not a zip file" * 10)
    elif damage == "truncated":
        z = (bad / "images_evaluation.zip").read_bytes()
        (bad / "images_evaluation.zip").write_bytes(z[: len(z) // 2])
    elif damage == "missing":
        (bad / "images_evaluation.zip").unlink()
    else:
        env["OMNIGLOT_EVALUATION_IMAGES"] = "7"
    data = tmp_path / "data"
    proc = fetch("omniglot", data_dir=data, **env)
    assert proc.returncode != 0
    assert "ERROR" in proc.stderr
    omni = data / "omniglot"
    # background was complete and stays; evaluation never appears half-written; no temp files remain
    assert count_omniglot(omni / "images_background") == (6, 12)
    assert not (omni / "images_evaluation").exists()
    assert leftovers(omni) == []
    # after fixing the mirror, a re-run completes
    proc = fetch("omniglot", data_dir=data, OMNIGLOT_BASE_URL=f"file://{mirror}")
    assert proc.returncode == 0, proc.stderr
    assert count_omniglot(omni / "images_evaluation") == (3, 6)


def test_omniglot_from_local_copy(mirror, tmp_path):
    src = tmp_path / "src"
    make_omniglot_tree(src, alphabets=(2, 1), chars_per_alphabet=[3, 3], drawings=2, size=10)
    data = tmp_path / "data"
    proc = fetch("omniglot", data_dir=data, OMNIGLOT_SRC=src)
    assert proc.returncode == 0, proc.stderr
    assert count_omniglot(data / "omniglot" / "images_evaluation") == (3, 6)
    assert os.path.islink(data / "omniglot" / "images_background")


def test_bad_argument(tmp_path):
    proc = fetch("imagenet", data_dir=tmp_path)
    assert proc.returncode == 2 and "unknown argument" in proc.stderr


def test_miniimagenet_missing_prints_instructions(tmp_path):
    proc = fetch("miniimagenet", data_dir=tmp_path / "data")
    assert proc.returncode == 0, proc.stderr
    assert "MINIIMAGENET_SRC" in proc.stdout and "train.csv" in proc.stdout
    proc = fetch("miniimagenet", "--require-miniimagenet", data_dir=tmp_path / "data",
                 MINIIMAGENET_SRC=tmp_path / "nothing")
    assert proc.returncode != 0
    assert "MINIIMAGENET_SRC" in proc.stdout and "required" in proc.stderr


def test_all_without_miniimagenet_still_fetches_omniglot(mirror, tmp_path):
    proc = fetch(data_dir=tmp_path / "data", OMNIGLOT_BASE_URL=f"file://{mirror}")
    assert proc.returncode == 0, proc.stderr
    assert "MINIIMAGENET_SRC" in proc.stdout
    assert count_omniglot(tmp_path / "data" / "omniglot" / "images_background") == (6, 12)


@pytest.mark.parametrize("layout,copy", [("folders", "0"), ("folders", "1"), ("csv", "0")])
def test_miniimagenet_from_source(tmp_path, layout, copy):
    src = tmp_path / "src"
    maker = make_miniimagenet_folders if layout == "folders" else make_miniimagenet_csv
    maker(src, classes=(3, 2, 2), images_per_class=2, size=(12, 12))
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, MINIIMAGENET_COPY=copy, **MINI_COUNTS)
    assert proc.returncode == 0, proc.stderr
    mini = data / "miniimagenet"
    items = ["test", "train", "val"] if layout == "folders" else ["images", "test.csv", "train.csv", "val.csv"]
    assert sorted(os.listdir(mini)) == items
    assert all(os.path.islink(mini / i) == (copy == "0") for i in items)
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode == 0 and "already in place" in proc.stdout
    out = run_script("make_miniimagenet_dataset.py", "-i", mini, "-o", mini / "m.pkl", "--size", 8, "-q")
    assert out.returncode == 0, out.stderr
    assert f"({layout} layout)" in out.stdout


def test_miniimagenet_wrong_class_counts(tmp_path):
    src = tmp_path / "src"
    make_miniimagenet_folders(src, classes=(3, 2, 1), images_per_class=1, size=(8, 8))
    proc = fetch("miniimagenet", data_dir=tmp_path / "data", MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode != 0
    assert "test has 1 class folders, expected 2" in proc.stderr
    assert not os.path.exists(tmp_path / "data" / "miniimagenet" / "train")
