"""Helpers that build tiny synthetic dataset folders (no network) for the data pipeline tests.

Omniglot: <root>/images_{background,evaluation}/<Alphabet>/characterNN/NNNN_DD.png, 1-bit PNGs, white
background; drawing d of character c (label c within its alphabet a) has black pixels at (c, a) and
(size - 1, d), so a loaded image tells its character.
Mini-ImageNet: JPEGs of one flat colour per class (see ``class_colour``), layout (a) folders or
(b) images/ + csv.
"""

import os
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(REPO, "scripts")
OMNIGLOT_PARTS = ("images_background", "images_evaluation")
SPLITS = ("train", "val", "test")


def run_script(name, *args, env=None, cwd=None):
    """Run scripts/<name> with this interpreter; returns CompletedProcess (text, captured)."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, os.path.join(SCRIPTS, name), *map(str, args)],
                          capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=300)


def omniglot_image(alphabet_index, char_index, drawing_index, size):
    a = np.full((size, size), 255, np.uint8)
    a[char_index, alphabet_index] = 0
    a[size - 1, drawing_index] = 0
    return a


def alphabet_names(part, n):
    """n alphabet names of one part, in sorted order."""
    return [f"{'Bg' if part == 'images_background' else 'Ev'}_{chr(ord('z') - i)}" for i in range(n)][::-1]


def make_omniglot_tree(root, alphabets=(2, 2), chars_per_alphabet=3, drawings=4, size=28):
    """Create the Omniglot layout under root. alphabets: (#background, #evaluation).

    Returns {'images_background': [(alphabet, [character, ...]), ...], 'images_evaluation': ...}
    with alphabets and characters sorted by name (the order the make script uses).
    """
    layout = {}
    for part, n_alph in zip(OMNIGLOT_PARTS, alphabets):
        entries = []
        for a, alphabet in enumerate(alphabet_names(part, n_alph)):
            n_chars = chars_per_alphabet[a] if isinstance(chars_per_alphabet, (list, tuple)) else chars_per_alphabet
            chars = [f"character{c + 1:02d}" for c in range(n_chars)]
            for c, char in enumerate(chars):
                d_ = os.path.join(root, part, alphabet, char)
                os.makedirs(d_, exist_ok=True)
                for d in range(drawings):
                    img = Image.fromarray(omniglot_image(a, c, d, size)).convert("1")
                    img.save(os.path.join(d_, f"{1000 + 10 * a + c:04d}_{d + 1:02d}.png"))
            entries.append((alphabet, chars))
        layout[part] = entries
    return layout


def zip_omniglot_tree(root, out_dir):
    """Zip <root>/images_background and images_evaluation into <out_dir>/<part>.zip (top folder kept)."""
    os.makedirs(out_dir, exist_ok=True)
    for part in OMNIGLOT_PARTS:
        with zipfile.ZipFile(os.path.join(out_dir, part + ".zip"), "w") as z:
            for dirpath, dirnames, filenames in os.walk(os.path.join(root, part)):
                dirnames.sort()
                rel = os.path.relpath(dirpath, root)
                z.write(dirpath, rel + "/")
                for f in sorted(filenames):
                    z.write(os.path.join(dirpath, f), os.path.join(rel, f))
    return out_dir


def count_omniglot(part_dir):
    """(number of character folders, number of PNGs) under an images_* folder."""
    chars = imgs = 0
    for alphabet in os.listdir(part_dir):
        for char in os.listdir(os.path.join(part_dir, alphabet)):
            chars += 1
            imgs += len([f for f in os.listdir(os.path.join(part_dir, alphabet, char)) if f.endswith(".png")])
    return chars, imgs


def class_colour(split_index, class_index):
    """RGB colour of every pixel of every image of that class (far apart, survives JPEG)."""
    return (40 + 80 * split_index, 30 + 50 * class_index, 200 - 40 * class_index)


def _wnids(split_index, n):
    return [f"n{split_index:02d}{9 - i:06d}" for i in range(n)][::-1]


def _jpeg(path, colour, size):
    Image.new("RGB", size, colour).save(path, quality=95)


def make_miniimagenet_folders(root, classes=(3, 2, 2), images_per_class=4, size=(40, 30)):
    """Layout (a): <root>/{train,val,test}/<wnid>/*.jpg. Returns {split: [wnid, ...]} sorted."""
    names = {}
    for s, (split, n) in enumerate(zip(SPLITS, classes)):
        names[split] = _wnids(s, n)
        for c, wnid in enumerate(names[split]):
            d = os.path.join(root, split, wnid)
            os.makedirs(d, exist_ok=True)
            for i in range(images_per_class):
                _jpeg(os.path.join(d, f"{wnid}_{i:04d}.jpg"), class_colour(s, c), size)
    return names


def make_miniimagenet_csv(root, classes=(3, 2, 2), images_per_class=4, size=(40, 30)):
    """Layout (b): <root>/images/*.jpg + {train,val,test}.csv (filename,label). Returns {split: [wnid]}."""
    names = {}
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    for s, (split, n) in enumerate(zip(SPLITS, classes)):
        names[split] = _wnids(s, n)
        rows = ["filename,label"]
        for c, wnid in enumerate(names[split]):
            for i in range(images_per_class):
                fname = f"{wnid}{i:08d}.jpg"
                _jpeg(os.path.join(root, "images", fname), class_colour(s, c), size)
                rows.append(f"{fname},{wnid}")
        with open(os.path.join(root, split + ".csv"), "w") as f:
            f.write("\n".join(rows) + "\n")
    return names


def synthetic_omniglot_dict(alphabets=(3, 2), chars_per_alphabet=10, drawings=20, size=8):
    """In-memory dict in the load_omniglot layout. Every image is filled with its global character id
    (0, 1, ... in background-then-evaluation order) except a 255 marker at [0, 0], so the id is the
    image's median and rotations are visible."""
    d, gid = {"ink": "dark"}, 0
    for part, n_alph in zip(("train", "test"), alphabets):
        Xs, Ys, names, chars = [], [], [], []
        for a in range(n_alph):
            X = np.empty((chars_per_alphabet * drawings, size, size, 1), np.uint8)
            Y = np.repeat(np.arange(chars_per_alphabet), drawings).astype(np.int64)
            for c in range(chars_per_alphabet):
                X[c * drawings:(c + 1) * drawings] = gid
                gid += 1
            X[:, 0, 0, 0] = 255
            Xs.append(X)
            Ys.append(Y)
            names.append(f"{part}_alphabet_{a}")
            chars.append([f"character{c + 1:02d}" for c in range(chars_per_alphabet)])
        d[part + "X"], d[part + "Y"], d[part + "Alphabets"], d[part + "Characters"] = Xs, Ys, names, chars
    return d


def synthetic_miniimagenet_dict(classes=(8, 6, 6), images_per_class=40, size=6):
    """In-memory dict in the load_miniimagenet layout; image value = 100 * split index + class id."""
    d = {"class_names": {}}
    for s, (split, n) in enumerate(zip(SPLITS, classes)):
        y = np.repeat(np.arange(n), images_per_class).astype(np.int64)
        X = np.broadcast_to((100 * s + y).astype(np.uint8)[:, None, None, None],
                            (len(y), size, size, 3)).copy()
        d[split] = (X, y)
        d["class_names"][split] = [f"n{s}{c:07d}" for c in range(n)]
    return d


def pack_folder(folder, archive, arcroot="", select=None):
    """Pack the files under `folder` (sorted, paths relative to it, under `arcroot`/ when given) into
    `archive`: .zip, .tar, .tar.gz/.tgz, .tar.bz2 or .tar.xz (from the name). `select(relative posix
    path)`: which files to include (default all). Returns the archive path."""
    import tarfile
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for f in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, "/")
            if select is None or select(rel):
                entries.append((os.path.join(dirpath, f), f"{arcroot}/{rel}" if arcroot else rel))
    name = str(archive)
    if name.endswith(".zip"):
        with zipfile.ZipFile(name, "w") as z:
            for path, arcname in entries:
                z.write(path, arcname)
        return archive
    mode = {".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".xz": "w:xz"}.get(os.path.splitext(name)[1], "w")
    with tarfile.open(name, mode, format=tarfile.PAX_FORMAT) as t:
        for path, arcname in entries:
            t.add(path, arcname)
    return archive
