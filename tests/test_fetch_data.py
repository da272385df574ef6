"""fetch_data.sh against a local file:// mirror of tiny synthetic Omniglot zips (never the network), and
its Mini-ImageNet part against tiny synthetic folders and archives, including unsafe and broken ones."""

import io
import os
import random
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

from data_fixtures import (REPO, count_omniglot, make_miniimagenet_csv, make_miniimagenet_folders,
                           make_omniglot_tree, pack_folder, run_script, zip_omniglot_tree)

SCRIPT = os.path.join(REPO, "fetch_data.sh")
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")

# the synthetic tree: background 2 alphabets x 3 characters, evaluation 1 x 3; 2 drawings each
COUNTS = {"OMNIGLOT_BACKGROUND_CHARS": "6", "OMNIGLOT_BACKGROUND_IMAGES": "12",
          "OMNIGLOT_EVALUATION_CHARS": "3", "OMNIGLOT_EVALUATION_IMAGES": "6"}
MINI_COUNTS = {"MINIIMAGENET_TRAIN_CLASSES": "3", "MINIIMAGENET_VAL_CLASSES": "2",
               "MINIIMAGENET_TEST_CLASSES": "2", "MINIIMAGENET_IMAGES_PER_CLASS": "2"}


def fetch(*args, data_dir, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIGLOT_", "MINIIMAGENET_"))}
    full.update(COUNTS, DATA_DIR=str(data_dir), OMNIGLOT_BASE_URL="file:///nonexistent-mirror", PYTHON=sys.executable)
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
    assert sorted(os.listdir(mini)) == [".pymeta_complete"] + items
    assert all(os.path.islink(mini / i) == (copy == "0") for i in items)
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode == 0 and "already in place" in proc.stdout
    out = run_script("make_miniimagenet_dataset.py", "-i", mini, "-o", mini / "m.pkl", "--size", 8, "-q")
    assert out.returncode == 0, out.stderr
    assert f"({layout} layout, pkl" in out.stdout


def test_miniimagenet_wrong_class_counts(tmp_path):
    src = tmp_path / "src"
    make_miniimagenet_folders(src, classes=(3, 2, 1), images_per_class=2, size=(8, 8))
    proc = fetch("miniimagenet", data_dir=tmp_path / "data", MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode != 0
    assert "test has 1 class folders, expected 2" in proc.stderr
    assert not os.path.exists(tmp_path / "data" / "miniimagenet" / "train")


# --- Mini-ImageNet from archives (synthetic data) ------------------------------------------------------------

def mini_csv_source(tmp_path):
    """Layout (c) with 3 / 2 / 2 classes x 2 images of 12x12 (file names n<split:02d>...)."""
    c = tmp_path / "c"
    make_miniimagenet_csv(c, classes=(3, 2, 2), images_per_class=2, size=(12, 12))
    return c


def split_images(s):
    return lambda rel: rel.startswith(f"images/n{s:02d}")


def make_archives_folder(c, folder, exts=(".tar.xz", ".zip", ".tar.gz")):
    """Layout (a): one archive of images/ per split (formats mixed) + the three CSVs."""
    folder.mkdir()
    for s, (split, ext) in enumerate(zip(("train", "val", "test"), exts)):
        pack_folder(c, folder / f"images_{split}{ext}", select=split_images(s))
        shutil.copyfile(c / f"{split}.csv", folder / f"{split}.csv")
    return folder


def make_mini_input(kind, tmp_path, edit=None):
    """(source of `kind`, layout); edit(folder) changes the packed folder first."""
    c = mini_csv_source(tmp_path)
    if edit:
        edit(c)
    if kind == "a: archives + csv folder":
        return make_archives_folder(c, tmp_path / "a"), "csv"
    if kind == "b: tar.gz, csv layout in a top folder":
        return pack_folder(c, tmp_path / "mini.tar.gz", arcroot="mini-imagenet"), "csv"
    if kind == "b: plain tar, csv layout":
        return pack_folder(c, tmp_path / "mini.tar"), "csv"
    if kind == "b: tar.bz2 holding (a)":
        a = make_archives_folder(c, tmp_path / "a", exts=(".tar", ".tgz", ".tar.xz"))
        return pack_folder(a, tmp_path / "mini.tar.bz2", arcroot="download"), "csv"
    d = tmp_path / "d"
    make_miniimagenet_folders(d, classes=(3, 2, 2), images_per_class=2, size=(12, 12))
    if edit:
        edit(d)
    return pack_folder(d, tmp_path / "mini.zip"), "folders"


MINI_INPUTS = ["a: archives + csv folder", "b: tar.gz, csv layout in a top folder", "b: plain tar, csv layout",
               "b: tar.bz2 holding (a)", "b: zip, folders layout"]


@pytest.mark.parametrize("kind", MINI_INPUTS)
def test_miniimagenet_from_archives(tmp_path, kind):
    src, layout = make_mini_input(kind, tmp_path)
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode == 0, proc.stderr
    assert "unpacked into" in proc.stdout
    mini = data / "miniimagenet"
    items = ["images", "test.csv", "train.csv", "val.csv"] if layout == "csv" else ["test", "train", "val"]
    assert sorted(os.listdir(mini)) == [".pymeta_complete"] + items
    assert not any(os.path.islink(mini / i) for i in items)
    assert os.listdir(data) == ["miniimagenet"]  # no temporary folder left
    if layout == "csv":  # byte for byte what was packed
        name = sorted(os.listdir(tmp_path / "c" / "images"))[0]
        assert (mini / "images" / name).read_bytes() == (tmp_path / "c" / "images" / name).read_bytes()
        assert len(os.listdir(mini / "images")) == 14
    before = {p: os.stat(mini / p).st_mtime_ns for p in os.listdir(mini)}
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode == 0 and "already in place" in proc.stdout and "unpacking" not in proc.stdout
    assert {p: os.stat(mini / p).st_mtime_ns for p in os.listdir(mini)} == before
    out = run_script("make_miniimagenet_dataset.py", "-i", mini, "-o", mini / "m.pkl", "--size", 8, "-q")
    assert out.returncode == 0, out.stderr
    assert f"({layout} layout" in out.stdout


def test_miniimagenet_unpacks_into_an_existing_folder(tmp_path):
    """An existing datasets/miniimagenet (e.g. holding an older dataset file) receives the data; its
    other files stay."""
    src = pack_folder(mini_csv_source(tmp_path), tmp_path / "mini.tar.gz")
    mini = tmp_path / "data" / "miniimagenet"
    mini.mkdir(parents=True)
    (mini / "old.pkl").write_bytes(b"keep me")
    proc = fetch("miniimagenet", data_dir=tmp_path / "data", MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(mini)) == [".pymeta_complete", "images", "old.pkl", "test.csv", "train.csv", "val.csv"]
    assert (mini / "old.pkl").read_bytes() == b"keep me"
    assert os.listdir(tmp_path / "data") == ["miniimagenet"]


def test_miniimagenet_wrong_images_per_class_and_half_done_folder(tmp_path):
    src = pack_folder(mini_csv_source(tmp_path), tmp_path / "mini.tar.gz")
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src,
                 **dict(MINI_COUNTS, MINIIMAGENET_IMAGES_PER_CLASS="3"))
    assert proc.returncode != 0
    assert "has 2 images, expected 3" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(data) == []
    # a half-unpacked folder (no marker, images missing) is never taken as done, and is left alone
    mini = data / "miniimagenet"
    shutil.copytree(tmp_path / "c", mini)
    os.remove(mini / "images" / sorted(os.listdir(mini / "images"))[0])
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode != 0 and "missing" in proc.stderr and "remove it and run again" in proc.stderr
    assert len(os.listdir(mini / "images")) == 13
    # a complete folder without the marker (unpacked by hand) is checked and marked
    shutil.rmtree(mini)
    shutil.copytree(tmp_path / "c", mini)
    proc = fetch("miniimagenet", data_dir=data, **MINI_COUNTS)
    assert proc.returncode == 0 and "already in place" in proc.stdout
    assert (mini / ".pymeta_complete").is_file()
    # a marked folder that lost an image fails the check
    os.remove(mini / "images" / sorted(os.listdir(mini / "images"))[0])
    proc = fetch("miniimagenet", data_dir=data, **MINI_COUNTS)
    assert proc.returncode != 0 and "marked complete but fails the check" in proc.stderr


# --- unsafe, truncated and corrupt archives: each a few hundred bytes --------------------------------------------

def _tar_member(t, name, data=b"x" * 100, **attrs):
    info = tarfile.TarInfo(name)
    info.size = len(data) if not attrs.get("type") or attrs["type"] == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(info, k, v)
    t.addfile(info, io.BytesIO(data) if info.size else None)


RNG = random.Random(0)


def _tiny_tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode, format=tarfile.GNU_FORMAT) as t:
        _tar_member(t, "images/n0000000100000000.jpg", RNG.randbytes(200))
        for name, attrs in members:
            _tar_member(t, name, **attrs)
    return path


def _tiny_zip(path, name, attr=None):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("images/n0000000100000000.jpg", RNG.randbytes(200))
        info = zipfile.ZipInfo(name)
        if attr is not None:
            info.create_system, info.external_attr = 3, attr << 16
        z.writestr(info, b"/etc/passwd" if attr is not None else b"x" * 100)
    return path


def _cut(path, where):
    data = path.read_bytes()
    path.write_bytes(data[:where(len(data))])
    return path


def _flip(path, at):
    data = bytearray(path.read_bytes())
    data[at(len(data))] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def bad_archive(case, tmp_path):
    """(archive path, words the one-line error must contain)."""
    p = tmp_path / "in"
    p.mkdir()
    rnd = [(f"images/n00000001000000{i:02d}.jpg", {"data": RNG.randbytes(300)}) for i in range(1, 3)]
    if case == "tar ../x":
        return _tiny_tar(p / "m.tar.gz", [("../x", {})]), "outside the target folder"
    if case == "tar images/../../x":
        return _tiny_tar(p / "m.tar.gz", [("images/../../x", {})]), "outside the target folder"
    if case == "tar absolute path":
        return _tiny_tar(p / "m.tar.gz", [(str(tmp_path / "abs_target"), {})]), "absolute path"
    if case == "tar symlink":
        return _tiny_tar(p / "m.tar.gz", [("images/evil", {"type": tarfile.SYMTYPE, "linkname": "/etc"})]), \
            "symbolic link"
    if case == "tar hard link":
        return _tiny_tar(p / "m.tar.gz", [("images/evil", {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"})]), \
            "hard link"
    if case == "tar device":
        return _tiny_tar(p / "m.tar.gz", [("images/evil", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3})]), \
            "device"
    if case == "zip ../x":
        return _tiny_zip(p / "m.zip", "../x"), "outside the target folder"
    if case == "zip symlink":
        return _tiny_zip(p / "m.zip", "images/evil", attr=0o120777), "symbolic link"
    if case == "truncated tar.gz":
        return _cut(_tiny_tar(p / "m.tar.gz", rnd), lambda n: n // 2), "truncated or corrupt"
    if case == "truncated tar.xz":
        return _cut(_tiny_tar(p / "m.tar.xz", rnd, "w:xz"), lambda n: n // 2), "truncated or corrupt"
    if case == "truncated tar, at a member boundary":  # tarfile alone would take it as complete
        return _cut(_tiny_tar(p / "m.tar", rnd, "w"), lambda n: 2 * 512), "truncated or corrupt"
    if case == "truncated tar, inside a member":
        return _cut(_tiny_tar(p / "m.tar", rnd, "w"), lambda n: 3 * 512 + 100), "truncated or corrupt"
    if case == "truncated zip":
        return _cut(_tiny_zip(p / "m.zip", "images/b.jpg"), lambda n: n - 30), "truncated or corrupt"
    if case == "corrupt tar.gz (one byte flipped)":
        return _flip(_tiny_tar(p / "m.tar.gz", rnd), lambda n: n // 2), "truncated or corrupt"
    raise AssertionError(case)


BAD_CASES = ["tar ../x", "tar images/../../x", "tar absolute path", "tar symlink", "tar hard link", "tar device",
             "zip ../x", "zip symlink", "truncated tar.gz", "truncated tar.xz", "truncated tar, at a member boundary",
             "truncated tar, inside a member", "truncated zip", "corrupt tar.gz (one byte flipped)"]


def all_paths(root):
    return {os.path.join(d, f) for d, dirs, files in os.walk(root) for f in dirs + files}


@pytest.mark.parametrize("case", BAD_CASES)
def test_miniimagenet_unsafe_or_broken_archive_refused(tmp_path, case):
    archive, words = bad_archive(case, tmp_path)
    assert archive.stat().st_size < 2000 or "member boundary" in case
    before = all_paths(tmp_path)
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=archive, **MINI_COUNTS)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[fetch_data] ERROR: ") and words in lines[0], proc.stderr
    assert "m." in lines[0]  # names the archive
    # nothing written anywhere: only the (empty) data folder fetch_data.sh creates first
    assert all_paths(tmp_path) == before | {str(data)}
    assert os.listdir(data) == []


def test_miniimagenet_one_bad_archive_among_several(tmp_path):
    """Layout (a) with a truncated val archive: refused while the others unpack in parallel; nothing left."""
    a = make_archives_folder(mini_csv_source(tmp_path), tmp_path / "a")
    _cut(a / "images_val.zip", lambda n: n // 2)
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=a, **MINI_COUNTS)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "images_val.zip" in lines[0] and "truncated" in lines[0], proc.stderr
    assert os.listdir(data) == []


# --- only the members the dataset needs are written (issue #38, item 3) ----------------------------------------

def _add_extras(folder):
    """Files the dataset does not need: an image the CSVs do not list, a file of another kind, a folder
    beside the layout (folders layout: a text file in a class folder, a folder beside the splits)."""
    if (folder / "images").is_dir():
        (folder / "images" / "n00_unlisted.jpg").write_bytes(RNG.randbytes(300))
        (folder / "images" / "n00_extra.bin").write_bytes(b"\0" * 100_000)
    else:
        (sorted((folder / "train").iterdir())[0] / "notes.txt").write_text("not an image")
    (folder / "extra").mkdir()
    (folder / "extra" / "big.bin").write_bytes(b"\0" * 100_000)


EXTRAS = {"n00_unlisted.jpg", "n00_extra.bin", "notes.txt", "extra", "big.bin"}


@pytest.mark.parametrize("kind", MINI_INPUTS)
def test_miniimagenet_archives_write_only_what_the_dataset_needs(tmp_path, kind):
    src, layout = make_mini_input(kind, tmp_path, _add_extras)
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=src, **MINI_COUNTS)
    assert proc.returncode == 0, proc.stderr
    assert "not needed skipped" in proc.stdout, proc.stdout
    written = {os.path.basename(p) for p in all_paths(data)}
    assert not written & EXTRAS, written & EXTRAS
    if layout == "csv":
        assert len(os.listdir(data / "miniimagenet" / "images")) == 14


def _zeros_member(t, name, size):
    info = tarfile.TarInfo(name)
    info.size = size

    class Zeros(io.RawIOBase):
        left = size

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), self.left)
            b[:n] = bytes(n)
            self.left -= n
            return n
    t.addfile(info, io.BufferedReader(Zeros(), 1 << 20))


def test_miniimagenet_archive_with_an_extra_big_member(tmp_path):
    """The issue's case (there 1 GiB; 128 MiB here, to keep the test short): a member beside the dataset
    in one archive is read past, never written."""
    c = mini_csv_source(tmp_path)
    archive = tmp_path / "mini.tar.gz"
    import gzip
    with gzip.open(archive, "wb", compresslevel=1) as g, tarfile.open(fileobj=g, mode="w|") as t:
        _zeros_member(t, "mini/images/huge.jpg", 2 ** 27)
        for dirpath, _, files in sorted(os.walk(c)):
            for f in sorted(files):
                path = os.path.join(dirpath, f)
                t.add(path, "mini/" + os.path.relpath(path, c))
    assert archive.stat().st_size < 10 * 2 ** 20
    data = tmp_path / "data"
    proc = fetch("miniimagenet", data_dir=data, MINIIMAGENET_SRC=archive, **MINI_COUNTS)
    assert proc.returncode == 0, proc.stderr
    assert "1 member(s) not needed skipped (e.g. 'mini/images/huge.jpg')" in proc.stdout, proc.stdout
    assert sum(os.path.getsize(p) for p in all_paths(data) if os.path.isfile(p)) < 2 ** 20
    assert not (data / "miniimagenet" / "images" / "huge.jpg").exists()


@pytest.mark.parametrize("kind", ["a: archives + csv folder", "b: tar.gz, csv layout in a top folder"])
def test_miniimagenet_listed_member_over_the_bound_is_refused(tmp_path, kind):
    c = mini_csv_source(tmp_path)
    big = sorted((c / "images").iterdir())[0]
    big.write_bytes(b"\xff\xd8" + b"\0" * (2 * 2 ** 20))  # 2 MiB, listed in train.csv
    src = make_archives_folder(c, tmp_path / "a") if kind.startswith("a") else \
        pack_folder(c, tmp_path / "mini.tar.gz", arcroot="mini")
    dest = tmp_path / "data" / "miniimagenet"
    proc = run_script("fetch_miniimagenet.py", "--dest", dest, "--src", src, "--classes", 3, 2, 2,
                      "--images-per-class", 2, "--max-member-mb", 1)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and big.name in lines[0] and "more than the 1,048,576 a member may have" in lines[0], lines
    assert os.listdir(dest.parent) == []


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/omniglot", "file:///nonexistent-mirror"])
def test_omniglot_without_network_says_how_to_use_local_copies(tmp_path, url):
    """Issue #37: no network (here a closed port, or a missing mirror) -> one line naming both ways to point
    the script at local data."""
    data = tmp_path / "data"
    proc = fetch("omniglot", data_dir=data, OMNIGLOT_BASE_URL=url)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"[fetch_data] ERROR: cannot download {url}/images_background.zip (no network?)")
    assert "OMNIGLOT_SRC=<folder holding images_background/ and images_evaluation/>" in lines[0]
    assert "OMNIGLOT_BASE_URL=file://<folder holding images_background.zip and images_evaluation.zip>" in lines[0]
    assert os.listdir(data / "omniglot") == []


def test_parallel_unpacking_stops_the_others_at_the_first_error(monkeypatch, tmp_path):
    """unpack_all's workers: the first archive that fails ends the call at once with its error (re-raised
    as the worker raised it); the archive still unpacking is stopped, not waited for; a worker that dies
    without a result is an error too. (multiprocessing.Pool, used before, hung once in its terminate.)"""
    import importlib.util
    import time
    spec = importlib.util.spec_from_file_location("fetch_miniimagenet", os.path.join(REPO, "scripts",
                                                                                      "fetch_miniimagenet.py"))
    fm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fm)
    monkeypatch.setitem(sys.modules, "fetch_miniimagenet", fm)  # its errors pickle, as the script's do

    def unpack(archive, target, want):
        if archive == "slow":
            time.sleep(60)
        if archive == "dies":
            os._exit(3)
        if archive == "oserror":
            raise PermissionError(13, "Permission denied", archive)
        raise fm.FetchError(f"{archive}: truncated")

    monkeypatch.setattr(fm, "unpack", unpack)  # the forked workers run it
    for archives, error, message in ((["slow", "bad"], fm.FetchError, "bad: truncated"),
                                     (["slow", "oserror"], PermissionError, "Permission denied"),
                                     (["slow", "dies"], fm.FetchError, "ended with exit code 3")):
        start = time.monotonic()
        with pytest.raises(error, match=message):
            fm.unpack_all(archives, str(tmp_path), workers=2)
        assert time.monotonic() - start < 20
    import multiprocessing
    assert multiprocessing.active_children() == []  # the slow ones were killed and joined
