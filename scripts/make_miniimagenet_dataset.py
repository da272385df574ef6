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
Output (h5): groups /train, /val, /test with datasets X, y, class_names; written image by image, so the
whole dataset is never held in memory.
"""

import argparse
import csv
import os
import sys

import numpy as np

SPLITS = ("train", "val", "test")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


class DataError(Exception):
    """A problem with the input data, reported as one line."""


def detect_layout(root):
    if not os.path.isdir(root):
        raise DataError(f"input folder not found: {root} (see `bash fetch_data.sh miniimagenet`)")
    if all(os.path.isdir(os.path.join(root, s)) for s in SPLITS):
        return "folders"
    if os.path.isdir(os.path.join(root, "images")) and all(
            os.path.isfile(os.path.join(root, s + ".csv")) for s in SPLITS):
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
            files = sorted(f for f in os.listdir(cdir) if f.lower().endswith(IMAGE_EXTS))
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
        if not os.path.isfile(path):
            raise DataError(f"missing file {path}")
        by_class = {}
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"filename", "label"} <= set(reader.fieldnames):
                raise DataError(f"{path}: expected a header with columns 'filename,label'")
            for line, row in enumerate(reader, start=2):
                name, label = (row["filename"] or "").strip(), (row["label"] or "").strip()
                if not name or not label:
                    raise DataError(f"{path}:{line}: empty filename or label")
                p = os.path.join(images, name)
                if not os.path.isfile(p):
                    alt = os.path.join(images, label, name)
                    if not os.path.isfile(alt):
                        raise DataError(f"{path}:{line}: image not found: {p}")
                    p = alt
                by_class.setdefault(label, []).append(p)
        if not by_class:
            raise DataError(f"{path}: no rows")
        out[split] = sorted(by_class.items())
    return out


def load_image(path, size):
    from PIL import Image
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size > 0 and im.size != (size, size):
                im = im.resize((size, size), resample=Image.Resampling.LANCZOS)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # OSError, UnidentifiedImageError, DecompressionBombError, ...
        raise DataError(f"cannot read image {path}: {e}") from None
    return a


def iter_split(classes, size, bar):
    """Yield (index, label, image) over one split, checking that all images have the same shape."""
    shape, i = None, 0
    for label, (_, files) in enumerate(classes):
        for path in files:
            img = load_image(path, size)
            if shape is None:
                shape = img.shape
            elif img.shape != shape:
                raise DataError(f"image {path} has size {img.shape[1::-1]}, others have {shape[1::-1]} "
                                "(use --size to resize)")
            yield i, label, img
            i += 1
            bar.update(1)


def _first_shape(classes, size):
    return load_image(classes[0][1][0], size).shape


def write_pkl(tree, size, tmp, bar):
    import pickle
    d = {"class_names": {}}
    for split in SPLITS:
        classes = tree[split]
        n = sum(len(f) for _, f in classes)
        X = np.empty((n,) + _first_shape(classes, size), dtype=np.uint8)
        y = np.empty(n, dtype=np.int64)
        for i, label, img in iter_split(classes, size, bar):
            if img.shape != X.shape[1:]:
                raise DataError(f"split {split}: image sizes differ (use --size)")
            X[i], y[i] = img, label
        d[split] = (X, y)
        d["class_names"][split] = [c for c, _ in classes]
    with open(tmp, "wb") as f:
        pickle.dump(d, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_h5(tree, size, tmp, bar, block=256):
    import h5py
    with h5py.File(tmp, "w") as f:
        f.attrs["pymeta_dataset"] = "miniimagenet"
        for split in SPLITS:
            classes = tree[split]
            n = sum(len(files) for _, files in classes)
            shape = _first_shape(classes, size)
            g = f.create_group(split)
            X = g.create_dataset("X", shape=(n,) + shape, dtype=np.uint8, chunks=(min(n, 64),) + shape)
            y = np.empty(n, dtype=np.int64)
            buf, start = np.empty((block,) + shape, dtype=np.uint8), 0
            for i, label, img in iter_split(classes, size, bar):
                if img.shape != shape:
                    raise DataError(f"split {split}: image sizes differ (use --size)")
                buf[i - start], y[i] = img, label
                if i - start + 1 == block:
                    X[start:i + 1] = buf
                    start = i + 1
            if start < n:
                X[start:n] = buf[:n - start]
            g.create_dataset("y", data=y)
            g.create_dataset("class_names", data=[c for c, _ in classes], dtype=h5py.string_dtype())


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", "-i", default=os.path.join("datasets", "miniimagenet"),
                   help="Mini-ImageNet folder in one of the two layouts (default: %(default)s)")
    p.add_argument("--output", "-o", default=None,
                   help="output file (default: datasets/miniimagenet/miniimagenet.pkl, or .h5 with --format h5)")
    p.add_argument("--layout", choices=("auto", "folders", "csv"), default="auto")
    p.add_argument("--size", type=int, default=84, help="resize to SIZE x SIZE; 0 keeps the input size")
    p.add_argument("--format", choices=("pkl", "h5"), default=None,
                   help="output format (default: from the output extension, else pkl)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    a.size = max(a.size, 0)
    if a.format is None:
        a.format = "h5" if a.output and a.output.lower().endswith((".h5", ".hdf5")) else "pkl"
    if a.output is None:
        a.output = os.path.join("datasets", "miniimagenet", "miniimagenet." + a.format)
    return a


def main(argv=None):
    a = parse_args(argv)
    from tqdm import tqdm

    from pymeta.atomic import atomic_write
    try:
        layout = detect_layout(a.input) if a.layout == "auto" else a.layout
        tree = scan_folders(a.input) if layout == "folders" else scan_csv(a.input)
        total = sum(len(f) for s in SPLITS for _, f in tree[s])
        with tqdm(total=total, desc="miniimagenet", unit="img", disable=a.quiet) as bar, \
                atomic_write(a.output) as tmp:
            (write_h5 if a.format == "h5" else write_pkl)(tree, a.size, tmp, bar)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: cannot write {a.output}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    counts = ", ".join(f"{s} {len(tree[s])} classes / {sum(len(f) for _, f in tree[s])} images" for s in SPLITS)
    print(f"wrote {a.output} ({layout} layout): {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
