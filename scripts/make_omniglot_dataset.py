#!/usr/bin/env python3
"""Pack the Omniglot PNGs into one pkl (or HDF5) file, in the original pyMeta layout.

Input:  <root>/images_background/<Alphabet>/<characterNN>/*.png  (30 alphabets, 964 characters)
        <root>/images_evaluation/<Alphabet>/<characterNN>/*.png  (20 alphabets, 659 characters)
        (as put in place by ``bash fetch_data.sh omniglot``)

Output (pkl): dict with
    trainX / testX: list, one entry per alphabet (sorted by name), uint8 [n, size, size, 1]
    trainY / testY: list of int64 [n], character label within the alphabet (characters sorted by name)
    trainAlphabets / testAlphabets, trainCharacters / testCharacters: the folder names
    ink: 'dark' or 'light'
Background alphabets -> train*, evaluation alphabets -> test*.
Output (h5): groups /train/NNN and /test/NNN (one per alphabet) holding datasets X, Y, characters and
the attribute 'alphabet'; root attributes 'ink' and 'pymeta_dataset' = 'omniglot'.

Pixels: the PNGs are 1-bit, black strokes on white. Like the original pyMeta script (OpenCV grayscale,
no inversion) strokes stay dark: background 255, ink 0 ('ink': 'dark'). ``--invert`` gives ink 255 on
background 0 ('ink': 'light'). Images are converted to 8-bit grayscale and resized with an antialiasing
filter (``--resample``, default lanczos), so resized strokes have intermediate grey values.

Only regular files are read (a fifo or device named like a .png is refused, not read: it would block).
Bad input ends with one line on stderr and exit status 2, leaving any existing output file as it was.
"""

import argparse
import os
import sys

import numpy as np

from pymeta.data.files import NotARegularFile, read_image, regular_files

PARTS = (("train", "images_background"), ("test", "images_evaluation"))
IMAGE_EXTS = (".png",)


class DataError(Exception):
    """A problem with the input data, reported as one line."""


def _subdirs(path):
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def scan(root):
    """Return {part: [(alphabet, [(character, [png paths])])]} with everything sorted by name."""
    if not os.path.isdir(root):
        raise DataError(f"input folder not found: {root} (run `bash fetch_data.sh omniglot` first)")
    out = {}
    for part, folder in PARTS:
        base = os.path.join(root, folder)
        if not os.path.isdir(base):
            raise DataError(f"missing folder {base} (expected {folder}/<Alphabet>/<character>/*.png; "
                            "run `bash fetch_data.sh omniglot`)")
        alphabets = []
        for alphabet in _subdirs(base):
            chars = []
            for char in _subdirs(os.path.join(base, alphabet)):
                cdir = os.path.join(base, alphabet, char)
                files = regular_files(cdir, IMAGE_EXTS)
                if not files:
                    raise DataError(f"empty character folder (no .png files): {cdir}")
                chars.append((char, [os.path.join(cdir, f) for f in files]))
            if not chars:
                raise DataError(f"empty alphabet folder (no character folders): {os.path.join(base, alphabet)}")
            alphabets.append((alphabet, chars))
        if not alphabets:
            raise DataError(f"no alphabet folders in {base}")
        out[part] = alphabets
    return out


def load_image(path, size, invert, resample):
    try:
        a = read_image(path, "L", size, resample)
    except Exception as e:  # OSError, UnidentifiedImageError, DecompressionBombWarning / Error, ...
        raise DataError(f"cannot read image {path}: {e}") from None
    return 255 - a if invert else a


def build(tree, size, invert, resample, quiet=False):
    """Load all images: returns the output dict (see module docstring)."""
    from tqdm import tqdm
    total = sum(len(f) for part in tree.values() for _, chars in part for _, f in chars)
    d = {"ink": "light" if invert else "dark"}
    shape = None
    with tqdm(total=total, desc="omniglot", unit="img", disable=quiet) as bar:
        for part, alphabets in tree.items():
            Xs, Ys, names, chars_all = [], [], [], []
            for alphabet, chars in alphabets:
                n = sum(len(files) for _, files in chars)
                X, Y, k = None, np.empty(n, dtype=np.int64), 0
                for label, (_, files) in enumerate(chars):
                    for path in files:
                        img = load_image(path, size, invert, resample)
                        if shape is None:
                            shape = img.shape
                        if img.shape != shape:
                            raise DataError(f"image {path} has size {img.shape[::-1]}, others have "
                                            f"{shape[::-1]} (use --size to resize)")
                        if X is None:
                            X = np.empty((n,) + shape + (1,), dtype=np.uint8)
                        X[k, ..., 0] = img
                        Y[k] = label
                        k += 1
                        bar.update(1)
                Xs.append(X)
                Ys.append(Y)
                names.append(alphabet)
                chars_all.append([c for c, _ in chars])
            d[part + "X"], d[part + "Y"] = Xs, Ys
            d[part + "Alphabets"], d[part + "Characters"] = names, chars_all
    return d


def write_pkl(d, tmp):
    import pickle
    with open(tmp, "wb") as f:
        pickle.dump(d, f, protocol=pickle.HIGHEST_PROTOCOL)


def write_h5(d, tmp):
    import h5py
    with h5py.File(tmp, "w") as f:
        f.attrs["pymeta_dataset"] = "omniglot"
        f.attrs["ink"] = d["ink"]
        for part in ("train", "test"):
            g = f.create_group(part)
            for i, (X, Y, name, chars) in enumerate(zip(d[part + "X"], d[part + "Y"],
                                                        d[part + "Alphabets"], d[part + "Characters"])):
                a = g.create_group(f"{i:03d}")
                a.attrs["alphabet"] = name
                a.create_dataset("X", data=X)
                a.create_dataset("Y", data=Y)
                a.create_dataset("characters", data=chars, dtype=h5py.string_dtype())


def write_atomically(output, writer, d):
    from pymeta.atomic import atomic_write
    out_dir = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create output folder {out_dir}: {e}") from None
    try:
        with atomic_write(output) as tmp:
            writer(d, tmp)
    except OSError as e:
        raise DataError(f"cannot write {output}: {e}") from None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", "-i", default=os.path.join("datasets", "omniglot"),
                   help="folder holding images_background/ and images_evaluation/ (default: %(default)s)")
    p.add_argument("--output", "-o", default=None,
                   help="output file (default: datasets/omniglot/omniglot.pkl, or .h5 with --format h5)")
    p.add_argument("--size", type=int, default=28, help="resize to SIZE x SIZE; 0 keeps 105x105 (default: 28)")
    p.add_argument("--format", choices=("pkl", "h5"), default=None,
                   help="output format (default: from the output extension, else pkl)")
    p.add_argument("--invert", action="store_true", help="store ink as 255 on a 0 background")
    p.add_argument("--resample", choices=("lanczos", "bilinear", "bicubic", "box", "nearest"), default="lanczos",
                   help="PIL resampling filter for --size (default: %(default)s)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.size < 0:
        a.size = 0
    if a.format is None:
        a.format = "h5" if a.output and a.output.lower().endswith((".h5", ".hdf5")) else "pkl"
    if a.output is None:
        a.output = os.path.join("datasets", "omniglot", "omniglot." + a.format)
    return a


def main(argv=None):
    a = parse_args(argv)
    from PIL import Image
    resample = getattr(Image.Resampling, a.resample.upper())
    try:
        d = build(scan(a.input), a.size, a.invert, resample, a.quiet)
        write_atomically(a.output, write_h5 if a.format == "h5" else write_pkl, d)
    except (DataError, NotARegularFile) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    n_chars = {p: sum(len(c) for c in d[p + "Characters"]) for p in ("train", "test")}
    n_imgs = {p: sum(len(y) for y in d[p + "Y"]) for p in ("train", "test")}
    print(f"wrote {a.output}: train {len(d['trainX'])} alphabets / {n_chars['train']} characters / "
          f"{n_imgs['train']} images, test {len(d['testX'])} alphabets / {n_chars['test']} characters / "
          f"{n_imgs['test']} images, image shape {d['trainX'][0].shape[1:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
