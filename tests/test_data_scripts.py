"""scripts/make_*_dataset.py on tiny synthetic folders -> pkl / h5 -> pymeta.data loaders."""

import os
import pickle

import numpy as np
import pytest

from data_fixtures import (class_colour, make_miniimagenet_csv, make_miniimagenet_folders,
                           make_omniglot_tree, omniglot_image, run_script)
from pymeta.data import load_miniimagenet, load_omniglot
from pymeta.data.loaders import HDF5_MAGIC


def assert_clean_error(proc, *needles):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:")
    for n in needles:
        assert n in err, err


def no_temp_files(folder):
    return [f for f in os.listdir(folder) if ".tmp" in f] == []


# ---------------------------------------------------------------- Omniglot

@pytest.fixture(scope="module")
def omniglot_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniglot")
    layout = make_omniglot_tree(root, alphabets=(2, 2), chars_per_alphabet=[3, 2], drawings=4, size=28)
    return root, layout


@pytest.fixture(scope="module")
def omniglot_files(omniglot_tree, tmp_path_factory):
    root, _ = omniglot_tree
    out = tmp_path_factory.mktemp("omniglot_out")
    pkl, h5 = out / "omniglot.pkl", out / "omniglot.h5"
    for path, fmt in ((pkl, []), (h5, ["--format", "h5"])):
        proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", path, "--size", 28, "-q", *fmt)
        assert proc.returncode == 0, proc.stderr
        assert "wrote" in proc.stdout
    return pkl, h5


def test_omniglot_pkl_layout(omniglot_tree, omniglot_files):
    _, layout = omniglot_tree
    d = load_omniglot(omniglot_files[0])
    for part, folder in (("train", "images_background"), ("test", "images_evaluation")):
        assert d[part + "Alphabets"] == [a for a, _ in layout[folder]]
        assert d[part + "Characters"] == [c for _, c in layout[folder]]
        assert len(d[part + "X"]) == len(d[part + "Y"]) == 2
        for a, (X, Y) in enumerate(zip(d[part + "X"], d[part + "Y"])):
            n_chars = len(layout[folder][a][1])
            assert X.dtype == np.uint8 and X.shape == (4 * n_chars, 28, 28, 1)
            assert np.issubdtype(Y.dtype, np.integer) and Y.shape == (4 * n_chars,)
            assert sorted(Y.tolist()) == sorted(list(range(n_chars)) * 4)
            for x, label in zip(X[..., 0], Y):
                # dark ink on white (as the original script): background 255, strokes 0
                assert x[label, a] == 0 and (x == 0).sum() == 2 and x[0, 27] == 255
            drawings = sorted(int(np.flatnonzero(x[27] == 0)[0]) for x in X[Y == 0, ..., 0])
            assert drawings == [0, 1, 2, 3]
    assert d["ink"] == "dark"


def test_omniglot_raw_pickle_matches_original_layout(omniglot_files):
    with open(omniglot_files[0], "rb") as f:
        raw = pickle.load(f)
    assert {"trainX", "trainY", "testX", "testY"} <= set(raw)
    assert isinstance(raw["trainX"], list) and raw["trainX"][0].dtype == np.uint8


def test_omniglot_h5_equals_pkl(omniglot_files):
    pkl, h5 = omniglot_files
    with open(h5, "rb") as f:
        assert f.read(8) == HDF5_MAGIC
    a, b = load_omniglot(pkl), load_omniglot(h5)
    assert set(a) == set(b)
    for key in ("trainX", "trainY", "testX", "testY"):
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key]):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    for key in ("trainAlphabets", "testAlphabets", "trainCharacters", "testCharacters", "ink"):
        assert a[key] == b[key]


def test_omniglot_resize_invert_and_format_from_extension(tmp_path):
    root = tmp_path / "in"
    make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=2, drawings=2, size=35)
    out = tmp_path / "small.hdf5"
    proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", out, "--size", 14, "--invert", "-q")
    assert proc.returncode == 0, proc.stderr
    with open(out, "rb") as f:
        assert f.read(8) == HDF5_MAGIC
    d = load_omniglot(out)
    assert d["ink"] == "light"
    X = d["trainX"][0]
    assert X.shape == (4, 14, 14, 1) and X.dtype == np.uint8
    assert np.median(X) == 0 and X.max() > 0  # background 0, ink bright
    assert no_temp_files(tmp_path)


def test_omniglot_keep_size(tmp_path):
    root = tmp_path / "in"
    make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=1, drawings=2, size=21)
    proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", tmp_path / "o.pkl", "--size", 0, "-q")
    assert proc.returncode == 0, proc.stderr
    d = load_omniglot(tmp_path / "o.pkl")
    assert d["testX"][0].shape == (2, 21, 21, 1)
    assert np.array_equal(d["testX"][0][1, ..., 0], omniglot_image(0, 0, 1, 21))


def test_omniglot_missing_input_folder(tmp_path):
    proc = run_script("make_omniglot_dataset.py", "-i", tmp_path / "nope", "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "nope", "fetch_data.sh")
    (tmp_path / "half" / "images_background" / "A" / "character01").mkdir(parents=True)
    proc = run_script("make_omniglot_dataset.py", "-i", tmp_path / "half", "-o", tmp_path / "o.pkl")
    assert_clean_error(proc)
    assert not (tmp_path / "o.pkl").exists()


def test_omniglot_empty_folders(tmp_path):
    root = tmp_path / "in"
    make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=1, drawings=1)
    (root / "images_evaluation" / "Ev_z" / "character07").mkdir()
    proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "empty character folder", "character07")
    (root / "images_evaluation" / "Ev_z" / "character07").rmdir()
    (root / "images_background" / "Empty_alphabet").mkdir()
    proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "Empty_alphabet")


def test_omniglot_corrupt_image(tmp_path):
    root = tmp_path / "in"
    make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=2, drawings=2)
    bad = root / "images_background" / "Bg_z" / "character02" / "0001_02.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    out = tmp_path / "out"
    proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", out / "o.pkl", "-q")
    assert_clean_error(proc, "cannot read image", "0001_02.png")
    assert not out.exists() or os.listdir(out) == []  # no output, no temp file left behind


def test_omniglot_does_not_replace_existing_output_on_error(tmp_path):
    root = tmp_path / "in"
    make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=1, drawings=1)
    out = tmp_path / "o.pkl"
    out.write_bytes(b"old")
    (root / "images_background" / "Bg_z" / "character01" / "0000_09.png").write_bytes(b"")
    proc = run_script("make_omniglot_dataset.py", "-i", root, "-o", out, "-q")
    assert_clean_error(proc, "0000_09.png")
    assert out.read_bytes() == b"old"


# ---------------------------------------------------------------- Mini-ImageNet

def check_miniimagenet(d, names, n_per_class, size=84):
    assert set(d) == {"train", "val", "test", "class_names"}
    for s, split in enumerate(("train", "val", "test")):
        X, y = d[split]
        assert X.dtype == np.uint8 and X.shape == (n_per_class * len(names[split]), size, size, 3)
        assert np.issubdtype(y.dtype, np.integer) and y.shape == (X.shape[0],)
        assert d["class_names"][split] == names[split]
        for c in range(len(names[split])):
            mean = X[y == c].reshape(-1, 3).mean(axis=0)
            assert np.abs(mean - class_colour(s, c)).max() < 6, (split, c, mean)
            assert (y == c).sum() == n_per_class


@pytest.fixture(scope="module")
def mini_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini_a")
    return root, make_miniimagenet_folders(root, classes=(3, 2, 2), images_per_class=3)


def test_miniimagenet_folders_pkl_and_h5(mini_folders, tmp_path):
    root, names = mini_folders
    out = {}
    for fmt in ("pkl", "h5"):
        path = tmp_path / f"mini.{fmt}"
        proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", path, "-q")
        assert proc.returncode == 0, proc.stderr
        assert "folders layout" in proc.stdout
        out[fmt] = load_miniimagenet(path)
        check_miniimagenet(out[fmt], names, 3)
    for split in ("train", "val", "test"):
        for a, b in zip(out["pkl"][split], out["h5"][split]):
            assert a.dtype == b.dtype and np.array_equal(a, b)
    assert out["pkl"]["class_names"] == out["h5"]["class_names"]
    raw = pickle.load(open(tmp_path / "mini.pkl", "rb"))
    assert isinstance(raw["train"], tuple) and len(raw["train"]) == 2
    assert no_temp_files(tmp_path)


def test_miniimagenet_csv_layout_matches_folders(mini_folders, tmp_path):
    root = tmp_path / "mini_b"
    names = make_miniimagenet_csv(root, classes=(3, 2, 2), images_per_class=3)
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / "b.pkl", "--size", 20, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "csv layout" in proc.stdout
    b = load_miniimagenet(tmp_path / "b.pkl")
    check_miniimagenet(b, names, 3, size=20)
    assert names == mini_folders[1]
    proc = run_script("make_miniimagenet_dataset.py", "-i", mini_folders[0], "-o", tmp_path / "a.pkl",
                      "--size", 20, "-q", "--layout", "folders")
    assert proc.returncode == 0, proc.stderr
    a = load_miniimagenet(tmp_path / "a.pkl")
    for split in ("train", "val", "test"):
        assert np.array_equal(a[split][1], b[split][1])
        assert np.abs(a[split][0].astype(int) - b[split][0].astype(int)).max() <= 2


def test_miniimagenet_h5_format_default_name(tmp_path):
    root = tmp_path / "mini"
    make_miniimagenet_folders(root, classes=(1, 1, 1), images_per_class=2)
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "--format", "h5", "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "datasets" / "miniimagenet" / "miniimagenet.h5").is_file()


def test_miniimagenet_errors(tmp_path):
    proc = run_script("make_miniimagenet_dataset.py", "-i", tmp_path / "missing", "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "missing")
    (tmp_path / "neither").mkdir()
    proc = run_script("make_miniimagenet_dataset.py", "-i", tmp_path / "neither", "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "train.csv")

    root = tmp_path / "b"
    make_miniimagenet_csv(root, classes=(1, 1, 1), images_per_class=2)
    with open(root / "val.csv", "a") as f:
        f.write("not_there.jpg,n01000000\n")
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "not_there.jpg", "val.csv")
    (root / "val.csv").write_text("file,class\na.jpg,x\n")
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / "o.pkl")
    assert_clean_error(proc, "filename,label")

    root = tmp_path / "a"
    make_miniimagenet_folders(root, classes=(1, 1, 1), images_per_class=2)
    bad = next((root / "test").iterdir()) / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    for fmt in ("pkl", "h5"):
        proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / f"o.{fmt}", "-q")
        assert_clean_error(proc, "cannot read image", "broken.jpg")
    bad.unlink()
    (root / "val" / "n01_empty").mkdir()
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / "o.pkl", "-q")
    assert_clean_error(proc, "n01_empty")
    assert not any(p.name.startswith("o.") for p in tmp_path.iterdir())
    assert no_temp_files(tmp_path)


# ---------------------------------------------------------------- loaders

def test_loader_missing_file_mentions_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_data.sh.*make_omniglot_dataset.py"):
        load_omniglot(tmp_path / "none.pkl")
    with pytest.raises(FileNotFoundError, match="fetch_data.sh.*make_miniimagenet_dataset.py"):
        load_miniimagenet(tmp_path / "none.h5")


@pytest.mark.parametrize("fmt", ["pkl", "h5"])
def test_loader_truncated_file(omniglot_files, tmp_path, fmt):
    src = omniglot_files[0 if fmt == "pkl" else 1]
    data = open(src, "rb").read()
    bad = tmp_path / f"cut.{fmt}"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut"):
        load_omniglot(bad)
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_omniglot(tmp_path / "empty.pkl")


def _dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=4)
    return path


def test_loader_rejects_wrong_content(tmp_path):
    img = np.zeros((4, 5, 5, 1), np.uint8)
    good = {"trainX": [img], "trainY": [np.arange(4)], "testX": [img], "testY": [np.zeros(4, np.int64)]}
    d = load_omniglot(_dump(tmp_path / "ok.pkl", good))  # original layout without names: defaults filled in
    assert d["trainCharacters"][0] == ["character01", "character02", "character03", "character04"]
    assert d["trainY"][0].dtype == np.int64
    cases = {
        "float": (dict(good, trainX=[img.astype(np.float32)]), "uint8"),
        "rgb": (dict(good, testX=[np.zeros((4, 5, 5, 3), np.uint8)]), "shape"),
        "labels": (dict(good, trainY=[np.arange(3)]), "3 labels for 4 images"),
        "floatlabels": (dict(good, trainY=[np.arange(4.0)]), "integer"),
        "notdict": ([1, 2, 3], "not an Omniglot dataset"),
        "sizes": (dict(good, testX=[np.zeros((4, 6, 6, 1), np.uint8)]), "image shape"),
    }
    for name, (obj, msg) in cases.items():
        with pytest.raises(ValueError, match=msg) as e:
            load_omniglot(_dump(tmp_path / f"{name}.pkl", obj))
        assert f"{name}.pkl" in str(e.value)
    rgb = np.zeros((2, 6, 6, 3), np.uint8)
    mini = {s: (rgb, np.array([0, 1])) for s in ("train", "val", "test")}
    d = load_miniimagenet(_dump(tmp_path / "mini.pkl", mini))
    assert d["class_names"]["val"] == ["val_class_000", "val_class_001"]
    with pytest.raises(ValueError, match="pair"):
        load_miniimagenet(_dump(tmp_path / "m1.pkl", dict(mini, val=rgb)))
    with pytest.raises(ValueError, match="shape"):
        load_miniimagenet(_dump(tmp_path / "m2.pkl", dict(mini, test=(rgb[..., :1], np.array([0, 1])))))
    with pytest.raises(ValueError, match="names"):
        load_miniimagenet(_dump(tmp_path / "m3.pkl", dict(mini, class_names={"train": ["a"]})))


def test_miniimagenet_h5_written_in_blocks_equals_pkl(tmp_path):
    """More images than the h5 writer's 256-image block, each a different grey level."""
    from PIL import Image
    root = tmp_path / "mini"
    for split, n in (("train", 300), ("val", 257), ("test", 5)):
        d = root / split / f"n{split}"
        d.mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i % 256, i // 256 * 100, 7)).save(d / f"{i:04d}.png")
    for fmt in ("pkl", "h5"):
        proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / f"m.{fmt}", "--size", 0, "-q")
        assert proc.returncode == 0, proc.stderr
    a, b = load_miniimagenet(tmp_path / "m.pkl"), load_miniimagenet(tmp_path / "m.h5")
    for split, n in (("train", 300), ("val", 257), ("test", 5)):
        assert a[split][0].shape == (n, 8, 8, 3)
        assert np.array_equal(a[split][0], b[split][0]) and np.array_equal(a[split][1], b[split][1])
        assert a[split][0][:, 0, 0, 0].tolist() == [i % 256 for i in range(n)]


def test_miniimagenet_decoding_processes_do_not_change_the_output(tmp_path):
    """The same file from 1 decoding process and from 2 with chunks of 7 images (chunk borders inside
    classes and splits), in order: image i of the train split has grey level i."""
    from PIL import Image
    root = tmp_path / "mini"
    for split, n in (("train", 30), ("val", 9), ("test", 8)):
        for c in range(2):
            d = root / split / f"n{split}{c}"
            d.mkdir(parents=True)
            for i in range(n // 2):
                Image.new("RGB", (6, 6), (c * (n // 2) + i, 9, 9)).save(d / f"{i:04d}.png")
    out = {}
    for workers, chunk in ((1, 256), (2, 7)):
        path = tmp_path / f"m{workers}.pkl"
        proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", path, "--size", 0, "-q",
                          "--workers", workers, "--chunk", chunk)
        assert proc.returncode == 0, proc.stderr
        assert f"with {workers} decoding process" in proc.stdout
        out[workers] = load_miniimagenet(path)
    for split in ("train", "val", "test"):
        assert np.array_equal(out[1][split][0], out[2][split][0]) and np.array_equal(out[1][split][1], out[2][split][1])
    assert out[2]["train"][0][:, 0, 0, 0].tolist() == list(range(30))
    assert out[2]["train"][1].tolist() == [0] * 15 + [1] * 15


def test_miniimagenet_corrupt_image_in_a_worker_is_one_clean_error(tmp_path):
    root = tmp_path / "mini"
    make_miniimagenet_folders(root, classes=(2, 1, 1), images_per_class=4)
    bad = root / "val" / os.listdir(root / "val")[0] / "zz_bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-o", tmp_path / "o.h5", "-q",
                      "--workers", 2, "--chunk", 2)
    assert_clean_error(proc, "cannot read image", "zz_bad.jpg")
    assert not (tmp_path / "o.h5").exists() and no_temp_files(tmp_path)


def test_miniimagenet_default_format_by_size(tmp_path):
    """HDF5 when the uint8 images exceed 1 GiB (the full Mini-ImageNet at 84x84), else pkl."""
    import importlib.util
    from data_fixtures import SCRIPTS
    spec = importlib.util.spec_from_file_location("make_mini", os.path.join(SCRIPTS, "make_miniimagenet_dataset.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def tree(n_train, n_val=9600, n_test=12000):
        return {s: [("c", ["x"] * n)] for s, n in (("train", n_train), ("val", n_val), ("test", n_test))}
    assert mod.default_format(tree(38400), 84) == "h5"      # 60,000 x 84 x 84 x 3 = 1.27 GB
    assert mod.default_format(tree(28000), 84) == "pkl"     # 49,600 images: 1.05 GB < 1 GiB
    assert mod.default_format(tree(38400), 64) == "pkl"     # 0.74 GB
    # no --output, no --format: a small set becomes datasets/miniimagenet/miniimagenet.pkl
    root = tmp_path / "mini"
    make_miniimagenet_folders(root, classes=(1, 1, 1), images_per_class=2)
    proc = run_script("make_miniimagenet_dataset.py", "-i", root, "-q", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert os.listdir(tmp_path / "datasets" / "miniimagenet") == ["miniimagenet.pkl"]


def test_default_data_path_takes_the_h5_when_only_that_exists(tmp_path, monkeypatch):
    from pymeta.registry import default_data_path
    monkeypatch.chdir(tmp_path)
    assert default_data_path("miniimagenet") == "datasets/miniimagenet/miniimagenet.pkl"
    os.makedirs("datasets/miniimagenet")
    open("datasets/miniimagenet/miniimagenet.h5", "wb").close()
    assert default_data_path("miniimagenet") == "datasets/miniimagenet/miniimagenet.h5"
    open("datasets/miniimagenet/miniimagenet.pkl", "wb").close()
    assert default_data_path("miniimagenet") == "datasets/miniimagenet/miniimagenet.pkl"
