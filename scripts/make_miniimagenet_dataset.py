#!/usr/bin/env python3
"""Pack Mini-ImageNet images into one pkl (or HDF5) file of 84x84 RGB uint8 arrays.

Input, either layout (auto-detected, or ``--layout``):
  folders: <root>/{train,val,test}/<wnid>/*.jpg
  csv:     <root>/images/<file>.jpg + <root>/{train,val,test}.csv with columns ``filename,label``
           (Ravi & Larochelle split)
(``bash fetch_data.sh miniimagenet`` puts either layout at datasets/miniimagenet.)

Output (pkl): {'train': (X, y), 'val': (X, y), 'test': (X, y),
               'class_names': {'train': [wnid, ...], 'val': [...], 'test': [...]}}
  X uint8 [n, size, size, 3], y int64 [n] with ids 0..C-1 within each split (classes sorted by name).
Output (h5): groups /train, /val, /test with datasets X, y, class_names; written block by block, so the
whole dataset is never held in memory.

Format: from --format, else from the --output extension (.pkl / .h5 / .hdf5), else by size: HDF5 when the
uint8 images take more than 1 GiB (PKL_LIMIT_BYTES), pkl below. A pkl is built whole in memory before it
is written (writing the full data as pkl peaked at 1.27 GB, as HDF5 at 0.18 GB summed over all processes);
loading takes the images' size either way. The full Mini-ImageNet at 84x84 (60,000 x 84 x 84 x 3 uint8 =
1.27 GB) therefore becomes datasets/miniimagenet/miniimagenet.h5, a subset or a smaller --size a .pkl.

Only regular files are read (a fifo or device named like an image or CSV is refused, not read: it
would block); CSVs must be UTF-8 with fields of at most 128 KiB. Bad input ends with one line on
stderr and exit status 2, leaving any existing output file as it was.

The images are decoded by a pool of processes, one per core (--workers), in jobs of --chunk images whose
results are taken in order, so the output does not depend on the number of processes. A progress bar
(tqdm) shows the images done (--quiet: none).
"""

import argparse
import csv
import os
import sys
import time

import numpy as np

from pymeta.data.files import NotARegularFile, open_regular, read_image, regular_files
from pymeta.data.processes import WorkerDied, Workers

SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
PKL_LIMIT_BYTES = 1 << 30


class DataError(Exception):
    """A problem with the input data, reported as one line."""


def detect_layout(root):
    if not os.path.isdir(root):
        raise DataError(f"input folder not found: {root} (see `bash fetch_data.sh miniimagenet`)")
    if all(os.path.isdir(os.path.join(root, s)) for s in SPLITS):
        return "folders"
    if os.path.isdir(os.path.join(root, "images")) and all(
            os.path.exists(os.path.join(root, s + ".csv")) for s in SPLITS):
        return "csv"
    raise DataError(f"{root} has neither train/ val/ test/ folders nor images/ + train.csv val.csv test.csv")


def scan_folders(root):
    """Return {split: [(class_name, [paths])]} for the folders layout."""
    out = {}
    for split in SPLITS:
        base = os.path.join(root, split)
        if not os.path.isdir(base):
            raise DataError(f"missing folder {base}")
        classes = []
        for c in sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith(".")):
            cdir = os.path.join(base, c)
            files = regular_files(cdir, IMAGE_EXTS)
            if not files:
                raise DataError(f"empty class folder (no images): {cdir}")
            classes.append((c, [os.path.join(cdir, f) for f in files]))
        if not classes:
            raise DataError(f"no class folders in {base}")
        out[split] = classes
    return out


def scan_csv(root):
    """Return {split: [(class_name, [paths])]} for the images/ + csv layout."""
    images = os.path.join(root, "images")
    if not os.path.isdir(images):
        raise DataError(f"missing folder {images}")
    out = {}
    for split in SPLITS:
        path = os.path.join(root, split + ".csv")
        if not os.path.exists(path):
            raise DataError(f"missing file {path}")
        by_class, line = {}, 1
        try:
            with open_regular(path) as raw, open(raw.fileno(), newline="", encoding="utf-8", closefd=False) as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
                    raise DataError(f"{path}: expected a header with columns 'filename,label'")
                for line, row in enumerate(reader, start=2):
                    name, label = (row["filename"] or "").strip(), (row["label"] or "").strip()
                    if not name or not label:
                        raise DataError(f"{path}:{line}: empty filename or label")
                    p = os.path.join(images, name)
                    if not os.path.exists(p):  # a fifo or device is refused when read (open_regular)
                        alt = os.path.join(images, label, name)
                        if not os.path.exists(alt):
                            raise DataError(f"{path}:{line}: image not found: {p}")
                        p = alt
                    by_class.setdefault(label, []).append(p)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} after line {line}); save it "
                            "as UTF-8 (a CSV of filename,label rows)") from None
        except csv.Error as e:
            raise DataError(f"{path}:{line + 1}: not a valid CSV ({e}); a CSV of filename,label rows is "
                            "needed") from None
        if not by_class:
            raise DataError(f"{path}: no rows")
        out[split] = sorted(by_class.items())
    return out


def load_image(path, size):
    from PIL import Image
    try:
        return read_image(path, "RGB", size, Image.Resampling.LANCZOS)
    except Exception as e:  # OSError, UnidentifiedImageError, DecompressionBombWarning / Error, ...
        raise DataError(f"cannot read image {path}: {e}") from None


def decode_chunk(paths, size):
    """uint8 [len(paths), h, w, 3] from image files, all of the same size."""
    imgs = [load_image(p, size) for p in paths]
    for p, img in zip(paths, imgs):
        if img.shape != imgs[0].shape:
            raise DataError(f"image {p} has size {img.shape[1::-1]}, {paths[0]} has {imgs[0].shape[1::-1]} "
                            "(use --size to resize)")
    return np.stack(imgs)


def _decode_job(job):
    return decode_chunk(*job)


class Decoder:
    """Decodes chunks of images in order, in `workers` processes (1: in this process)."""

    def __init__(self, workers, size, chunk):
        self.size, self.chunk = size, max(1, chunk)
        self.workers = Workers(_decode_job, workers) if workers > 1 else None

    def split(self, classes, bar):
        """Yield (start, labels, X) chunks of one split, in order; checks that all images have one size."""
        items = [(path, label) for label, (_, files) in enumerate(classes) for path in files]
        jobs = [([p for p, _ in items[i:i + self.chunk]], self.size) for i in range(0, len(items), self.chunk)]
        results = self.workers.map(jobs) if self.workers else map(_decode_job, jobs)
        shape, start = None, 0
        for (paths, _), X in zip(jobs, results):
            if shape is None:
                shape = X.shape[1:]
            elif X.shape[1:] != shape:
                raise DataError(f"image {paths[0]} has size {X.shape[2:0:-1]}, others have {shape[1::-1]} "
                                "(use --size to resize)")
            yield start, np.array([lab for _, lab in items[start:start + len(X)]], np.int64), X
            start += len(X)
            bar.update(len(X))

    def close(self):
        if self.workers:
            self.workers.close()
            self.workers = None


def first_shape(classes, size):
    return load_image(classes[0][1][0], size).shape


def write_pkl(tree, size, tmp, bar, decoder):
    import pickle
    d = {"class_names": {}}
    for split in SPLITS:
        classes = tree[split]
        n = sum(len(f) for _, f in classes)
        X, y = None, np.empty(n, dtype=np.int64)
        for start, labels, chunk in decoder.split(classes, bar):
            if X is None:
                X = np.empty((n,) + chunk.shape[1:], dtype=np.uint8)
            X[start:start + len(chunk)], y[start:start + len(chunk)] = chunk, labels
        d[split] = (X, y)
        d["class_names"][split] = [c for c, _ in classes]
    with open(tmp, "wb") as f:
        pickle.dump(d, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_h5(tree, size, tmp, bar, decoder):
    import h5py
    with h5py.File(tmp, "w") as f:
        f.attrs["pymeta_dataset"] = "miniimagenet"
        for split in SPLITS:
            classes = tree[split]
            n = sum(len(files) for _, files in classes)
            g = f.create_group(split)
            X, y = None, np.empty(n, dtype=np.int64)
            for start, labels, chunk in decoder.split(classes, bar):
                if X is None:
                    shape = chunk.shape[1:]
                    X = g.create_dataset("X", shape=(n,) + shape, dtype=np.uint8, chunks=(min(n, 64),) + shape)
                X[start:start + len(chunk)], y[start:start + len(chunk)] = chunk, labels
            g.create_dataset("y", data=y)
            g.create_dataset("class_names", data=[c for c, _ in classes], dtype=h5py.string_dtype())


def default_format(tree, size):
    """'h5' when the uint8 images would take more than PKL_LIMIT_BYTES, else 'pkl'."""
    n = sum(len(f) for s in SPLITS for _, f in tree[s])
    h, w, c = (size, size, 3) if size > 0 else first_shape(tree["train"], size)
    return "h5" if n * h * w * c > PKL_LIMIT_BYTES else "pkl"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", "-i", default=os.path.join("datasets", "miniimagenet"),
                   help="Mini-ImageNet folder in one of the two layouts (default: %(default)s)")
    p.add_argument("--output", "-o", default=None,
                   help="output file (default: datasets/miniimagenet/miniimagenet.h5 or .pkl, see --format)")
    p.add_argument("--layout", choices=("auto", "folders", "csv"), default="auto")
    p.add_argument("--size", type=int, default=84, help="resize to SIZE x SIZE; 0 keeps the input size")
    p.add_argument("--format", choices=("pkl", "h5"), default=None,
                   help="output format (default: from the output extension, else h5 when the images take "
                        f"more than {PKL_LIMIT_BYTES >> 30} GiB, as the full Mini-ImageNet does, else pkl)")
    p.add_argument("--workers", type=int, default=0, help="decoding processes (0: one per core)")
    p.add_argument("--chunk", type=int, default=256, help="images per decoding job")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    a.size = max(a.size, 0)
    if a.workers <= 0:
        a.workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if a.format is None and a.output:
        ext = os.path.splitext(a.output)[1].lower()
        a.format = "h5" if ext in (".h5", ".hdf5") else "pkl" if ext == ".pkl" else None
    return a


def main(argv=None):
    a = parse_args(argv)
    from tqdm import tqdm
    from pymeta.atomic import atomic_write
    decoder, begin = None, time.time()
    try:
        layout = detect_layout(a.input) if a.layout == "auto" else a.layout
        tree = scan_folders(a.input) if layout == "folders" else scan_csv(a.input)
        if a.format is None:
            a.format = default_format(tree, a.size)
        if a.output is None:
            a.output = os.path.join("datasets", "miniimagenet", "miniimagenet." + a.format)
        decoder = Decoder(a.workers, a.size, a.chunk)  # before any output file is open (fork)
        total = sum(len(f) for s in SPLITS for _, f in tree[s])
        with tqdm(total=total, desc="miniimagenet", unit="img", disable=a.quiet) as bar, \
                atomic_write(a.output) as tmp:
            (write_h5 if a.format == "h5" else write_pkl)(tree, a.size, tmp, bar, decoder)
    except (DataError, NotARegularFile, WorkerDied) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {a.output}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if decoder:
            decoder.close()
    counts = ", ".join(f"{s} {len(tree[s])} classes / {sum(len(f) for _, f in tree[s])} images" for s in SPLITS)
    print(f"wrote {a.output} ({layout} layout, {a.format}, {os.path.getsize(a.output) / 1e6:.1f} MB) in "
          f"{time.time() - begin:.1f} s with {a.workers} decoding process{'es' if a.workers > 1 else ''}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
