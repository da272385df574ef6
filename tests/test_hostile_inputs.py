"""Hostile input folders and CSVs for the data preparation scripts (issue #38, item 7): a fifo named like
an image or a CSV, a CSV field over csv's 128 KiB limit, a byte that is not UTF-8 in a CSV, a small PNG
that declares 90 million pixels. Each ends
within seconds with exit status 2 and one line naming the file, and leaves any earlier output as it was."""

import os
import struct
import time
import zlib

import pytest

from data_fixtures import make_miniimagenet_csv, make_miniimagenet_folders, make_omniglot_tree, run_script

pytestmark = pytest.mark.timeout(120)
SECONDS = 10


def run_timed(script, *args):
    start = time.monotonic()
    proc = run_script(script, *args)
    return proc, time.monotonic() - start


def assert_one_line(proc, seconds, *needles, prefix="error:"):
    assert seconds < SECONDS, seconds
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(prefix), err
    for n in needles:
        assert n in err, err


@pytest.fixture
def old_output(tmp_path):
    out = tmp_path / "out" / "data.pkl"
    out.parent.mkdir()
    out.write_bytes(b"earlier output")
    return out


def test_omniglot_fifo_named_png_is_refused_not_read(tmp_path, old_output):
    root = tmp_path / "in"
    make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=2, drawings=2)
    os.mkfifo(root / "images_background" / "Bg_z" / "character02" / "x.png")  # opening it would block forever
    proc, secs = run_timed("make_omniglot_dataset.py", "-i", root, "-o", old_output, "-q")
    assert_one_line(proc, secs, "x.png", "is a fifo, not a regular file", "remove it")
    assert old_output.read_bytes() == b"earlier output"
    assert os.listdir(old_output.parent) == ["data.pkl"]


def test_miniimagenet_fifo_in_a_class_folder(tmp_path, old_output):
    root = tmp_path / "in"
    make_miniimagenet_folders(root, classes=(1, 1, 1), images_per_class=2, size=(8, 8))
    os.mkfifo(next((root / "val").iterdir()) / "x.jpg")
    proc, secs = run_timed("make_miniimagenet_dataset.py", "-i", root, "-o", old_output, "-q", "--workers", 1)
    assert_one_line(proc, secs, "x.jpg", "is a fifo")
    assert old_output.read_bytes() == b"earlier output"


@pytest.mark.parametrize("what", ["image", "csv"])
def test_miniimagenet_fifo_in_the_csv_layout(tmp_path, old_output, what):
    root = tmp_path / "in"
    make_miniimagenet_csv(root, classes=(1, 1, 1), images_per_class=2, size=(8, 8))
    if what == "image":
        target = next(p for p in sorted((root / "images").iterdir()))
    else:
        target = root / "test.csv"
    target.unlink()
    os.mkfifo(target)
    proc, secs = run_timed("make_miniimagenet_dataset.py", "-i", root, "-o", old_output, "-q", "--workers", 2)
    assert_one_line(proc, secs, target.name, "is a fifo")
    assert old_output.read_bytes() == b"earlier output"


def _bad_csv(root, case):
    path = root / "train.csv"
    rows = path.read_bytes()
    if case == "field over 128 KiB":
        path.write_bytes(rows + b"x" * 200_000 + b".jpg,n01000000\n")
        return "field larger than field limit"
    path.write_bytes(rows.replace(b"filename,label\n", b"filename,label\n\xff\xfe\xfa.jpg,n0\n"))
    return "not UTF-8 text (byte 0xff"


@pytest.mark.parametrize("case", ["field over 128 KiB", "byte not UTF-8"])
def test_miniimagenet_bad_csv_is_one_line(tmp_path, old_output, case):
    root = tmp_path / "in"
    make_miniimagenet_csv(root, classes=(1, 1, 1), images_per_class=2, size=(8, 8))
    words = _bad_csv(root, case)
    proc, secs = run_timed("make_miniimagenet_dataset.py", "-i", root, "-o", old_output, "-q", "--workers", 1)
    assert_one_line(proc, secs, "train.csv", words)
    assert old_output.read_bytes() == b"earlier output"


@pytest.mark.parametrize("case", ["field over 128 KiB", "byte not UTF-8", "fifo image", "fifo csv"])
def test_fetch_miniimagenet_bad_source_is_one_line(tmp_path, case):
    src = tmp_path / "src"
    make_miniimagenet_csv(src, classes=(1, 1, 1), images_per_class=2, size=(8, 8))
    if case.startswith("fifo"):
        target = sorted((src / "images").iterdir())[0] if case == "fifo image" else src / "val.csv"
        target.unlink()
        os.mkfifo(target)
        words = (target.name, "not a regular file")
    else:
        words = ("train.csv", _bad_csv(src, case))
    dest = tmp_path / "data" / "miniimagenet"
    proc, secs = run_timed("fetch_miniimagenet.py", "--dest", dest, "--src", src, "--classes", 1, 1, 1,
                           "--images-per-class", 0)
    assert_one_line(proc, secs, *words, prefix="[fetch_data] ERROR:")
    assert not dest.exists() and os.listdir(dest.parent) == []  # nothing half-done left behind


def _png_of_zeros(path, width, height):
    """A grayscale PNG of `width` x `height` black pixels: 90 million of them compress to 90 KB."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


@pytest.mark.parametrize("script", ["make_omniglot_dataset.py", "make_miniimagenet_dataset.py"])
def test_an_image_of_90_million_pixels_is_refused_before_it_is_decoded(tmp_path, old_output, script):
    """PIL only warned between 89 and 179 million pixels, and decoded it (270 MB in RGB; 144 million: 432 MB)."""
    root = tmp_path / "in"
    if script == "make_omniglot_dataset.py":
        make_omniglot_tree(root, alphabets=(1, 1), chars_per_alphabet=2, drawings=2)
        folder = root / "images_background" / "Bg_z" / "character02"
    else:
        make_miniimagenet_folders(root, classes=(1, 1, 1), images_per_class=2, size=(8, 8))
        folder = next((root / "val").iterdir())
    _png_of_zeros(folder / "big.png", 10_000, 9_000)
    assert (folder / "big.png").stat().st_size < 200_000
    proc, secs = run_timed(script, "-i", root, "-o", old_output, "-q", *(["--workers", 1] if "mini" in script else []))
    assert_one_line(proc, secs, "cannot read image", "big.png", "Image size (90000000 pixels) exceeds limit of")
    assert old_output.read_bytes() == b"earlier output"
