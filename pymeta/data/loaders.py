"""Loaders for the preprocessed Omniglot and Mini-ImageNet files.

Both loaders accept the pickle (read with :func:`pymeta.data.safe_pickle.safe_load`)
or the HDF5 file written by ``scripts/make_*_dataset.py``; the format is found from
the file's magic bytes. Images stay ``uint8`` in memory.

``load_omniglot(path)`` returns a dict:
    trainX / testX:   list (one per alphabet) of uint8 [n, size, size, 1]
    trainY / testY:   list of int64 [n], character label within that alphabet
    trainAlphabets / testAlphabets:     list of str (alphabet names)
    trainCharacters / testCharacters:   list of list of str (character names, indexed by label)
    ink: 'dark' (strokes 0 on 255 background, as in the original pyMeta) or 'light'
Background alphabets are the "train" ones, evaluation alphabets the "test" ones.

``load_miniimagenet(path)`` returns a dict:
    'train' / 'val' / 'test':  (X uint8 [n, h, w, 3], y int64 [n]) with ids 0..C-1 per split
    'class_names':             {'train': [wnid, ...], 'val': [...], 'test': [...]}
"""

import os

import numpy as np

from .safe_pickle import UnsafePickleError, safe_load

__all__ = ["load_omniglot", "load_miniimagenet", "HDF5_MAGIC"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SPLITS = ("train", "val", "test")

_HINT = {
    "omniglot": "run `bash fetch_data.sh omniglot` and then `python scripts/make_omniglot_dataset.py` "
                "(see README) to create it",
    "miniimagenet": "run `MINIIMAGENET_SRC=/path/to/miniimagenet bash fetch_data.sh miniimagenet` and then "
                    "`python scripts/make_miniimagenet_dataset.py` (see README) to create it",
}


def _is_hdf5(path):
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"{path}: file is empty")
    return head == HDF5_MAGIC


def _read_raw(path, which):
    """Return ('pkl', obj) or ('h5', dict-of-numpy) for ``path``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{which} dataset file not found: {path!r}; {_HINT[which]}.")
    if _is_hdf5(path):
        return "h5", _read_h5(path, which)
    try:
        return "pkl", safe_load(path)
    except UnsafePickleError:
        raise
    except ValueError as e:
        raise ValueError(f"{path}: not a valid {which} dataset file: {e}") from None


def _h5_strings(ds):
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()].tolist()]


def _read_h5(path, which):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            if which == "omniglot":
                out = {"ink": str(f.attrs.get("ink", "dark"))}
                for part in ("train", "test"):
                    if part not in f:
                        raise ValueError(f"missing group '/{part}'")
                    X, Y, alph, chars = [], [], [], []
                    for key in sorted(f[part].keys()):
                        g = f[part][key]
                        X.append(g["X"][()])
                        Y.append(g["Y"][()])
                        alph.append(str(g.attrs.get("alphabet", key)))
                        chars.append(_h5_strings(g["characters"]) if "characters" in g else None)
                    out[part + "X"], out[part + "Y"] = X, Y
                    out[part + "Alphabets"], out[part + "Characters"] = alph, chars
                return out
            out = {"class_names": {}}
            for split in SPLITS:
                if split not in f:
                    raise ValueError(f"missing group '/{split}'")
                g = f[split]
                out[split] = (g["X"][()], g["y"][()])
                if "class_names" in g:
                    out["class_names"][split] = _h5_strings(g["class_names"])
            return out
    except ValueError as e:
        raise ValueError(f"{path}: not a valid {which} HDF5 file: {e}") from None
    except (OSError, KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: corrupt or truncated {which} HDF5 file ({type(e).__name__}: {e})") from None


def _check_images(path, X, where, channels):
    if not isinstance(X, np.ndarray):
        raise ValueError(f"{path}: {where} is a {type(X).__name__}, expected a numpy array of images")
    if X.dtype != np.uint8:
        raise ValueError(f"{path}: {where} has dtype {X.dtype}, expected uint8 images (0..255)")
    if channels == 1 and X.ndim == 3:
        X = X[..., None]
    if X.ndim != 4 or X.shape[-1] != channels or X.shape[1] < 1 or X.shape[2] < 1:
        raise ValueError(f"{path}: {where} has shape {X.shape}, expected [n, height, width, {channels}]")
    if X.shape[0] == 0:
        raise ValueError(f"{path}: {where} holds no images")
    return X


def _check_labels(path, Y, n, where):
    Y = np.asarray(Y) if isinstance(Y, (list, tuple, np.ndarray)) else None
    if Y is None or Y.ndim != 1 or not (np.issubdtype(Y.dtype, np.integer) or Y.size == 0):
        raise ValueError(f"{path}: {where} must be a 1-D integer array of labels")
    if Y.shape[0] != n:
        raise ValueError(f"{path}: {where} has {Y.shape[0]} labels for {n} images")
    if Y.size and Y.min() < 0:
        raise ValueError(f"{path}: {where} contains negative labels")
    return Y.astype(np.int64, copy=False)


def _names(names, count, fmt, path, where):
    if names is None:
        return [fmt.format(i, i + 1) for i in range(count)]
    if not isinstance(names, (list, tuple)) or not all(isinstance(s, str) for s in names):
        raise ValueError(f"{path}: {where} must be a list of strings")
    if len(names) < count:
        raise ValueError(f"{path}: {where} has {len(names)} names for {count} labels")
    return list(names)


def load_omniglot(path):
    """Load the Omniglot pkl/h5 written by ``scripts/make_omniglot_dataset.py`` (layout in module doc)."""
    _, d = _read_raw(path, "omniglot")
    if not isinstance(d, dict) or not all(k in d for k in ("trainX", "trainY", "testX", "testY")):
        raise ValueError(f"{path}: not an Omniglot dataset (expected a dict with trainX, trainY, testX, testY)")
    out = {"ink": d.get("ink", "dark")}
    shape = None
    for part in ("train", "test"):
        Xs, Ys = d[part + "X"], d[part + "Y"]
        if not isinstance(Xs, (list, tuple)) or not isinstance(Ys, (list, tuple)) or len(Xs) != len(Ys) or not Xs:
            raise ValueError(f"{path}: {part}X/{part}Y must be non-empty lists of equal length (one per alphabet)")
        alph = _names(d.get(part + "Alphabets"), len(Xs), part + "_alphabet_{:02d}", path, part + "Alphabets")
        chars_in = d.get(part + "Characters") or [None] * len(Xs)
        if len(chars_in) != len(Xs):
            raise ValueError(f"{path}: {part}Characters has {len(chars_in)} entries for {len(Xs)} alphabets")
        X_out, Y_out, chars_out = [], [], []
        for i, (X, Y) in enumerate(zip(Xs, Ys)):
            X = _check_images(path, X, f"{part}X[{i}]", 1)
            if shape is None:
                shape = X.shape[1:]
            elif X.shape[1:] != shape:
                raise ValueError(f"{path}: {part}X[{i}] has image shape {X.shape[1:]}, others have {shape}")
            Y = _check_labels(path, Y, X.shape[0], f"{part}Y[{i}]")
            X_out.append(X)
            Y_out.append(Y)
            chars_out.append(_names(chars_in[i], int(Y.max()) + 1, "character{1:02d}", path,
                                    f"{part}Characters[{i}]"))
        out[part + "X"], out[part + "Y"] = X_out, Y_out
        out[part + "Alphabets"], out[part + "Characters"] = alph, chars_out
    return out


def load_miniimagenet(path):
    """Load the Mini-ImageNet pkl/h5 written by ``scripts/make_miniimagenet_dataset.py`` (layout in module doc)."""
    _, d = _read_raw(path, "miniimagenet")
    if not isinstance(d, dict) or not all(k in d for k in SPLITS):
        raise ValueError(f"{path}: not a Mini-ImageNet dataset (expected a dict with 'train', 'val', 'test')")
    names_in = d.get("class_names") or {}
    if not isinstance(names_in, dict):
        raise ValueError(f"{path}: 'class_names' must be a dict split -> list of names")
    out = {"class_names": {}}
    shape = None
    for split in SPLITS:
        pair = d[split]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"{path}: '{split}' must be a pair (X, y)")
        X = _check_images(path, pair[0], f"{split} X", 3)
        if shape is None:
            shape = X.shape[1:]
        elif X.shape[1:] != shape:
            raise ValueError(f"{path}: {split} X has image shape {X.shape[1:]}, train has {shape}")
        y = _check_labels(path, pair[1], X.shape[0], f"{split} y")
        out[split] = (X, y)
        out["class_names"][split] = _names(names_in.get(split), int(y.max()) + 1, split + "_class_{:03d}",
                                           path, f"class_names['{split}']")
    return out
