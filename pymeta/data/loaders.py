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

Every problem with a file (corrupt, truncated, hostile, wrong layout) raises
:class:`~pymeta.data.safe_pickle.DatasetFileError` (a ValueError) with a one-line message naming the
file; a missing file raises FileNotFoundError saying how to create it. Reading is bounded by the file:
pickles as in :mod:`pymeta.data.safe_pickle`; an HDF5 dataset must be stored in the file (a dataset
declaring more bytes than are stored, e.g. only a fill value, is refused; a compressed one must have
every chunk written and expand at most `h5_storage.MAX_COMPRESSION_RATIO` times), hard links only, each dataset read
once, strings read one by one within the file's size; labels must be class indices below the number of
images (or of the names given), so no label makes the loader build more than that many names. An HDF5
file is checked whole before any image is read: its layout, dtypes and shapes (as many labels as
images, one image shape), every declared size against what is stored and against ``max_bytes``, then
the labels and names; so a file that will be refused is refused before anything large is decompressed.
"""

import os

import numpy as np

from pymeta.paths import special_kind

from .h5_storage import storage_problem
from .safe_pickle import MAX_BYTES, SLACK_BYTES, DatasetFileError, one_line, safe_load

__all__ = ["load_omniglot", "load_miniimagenet", "HDF5_MAGIC", "DatasetFileError"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SPLITS = ("train", "val", "test")
_HINT = {
    "omniglot": "run `bash fetch_data.sh omniglot` and then `python scripts/make_omniglot_dataset.py` "
                "(see README) to create it",
    "miniimagenet": "run `MINIIMAGENET_SRC=/path/to/miniimagenet bash fetch_data.sh miniimagenet` and then "
                    "`python scripts/make_miniimagenet_dataset.py`, which writes "
                    "datasets/miniimagenet/miniimagenet.h5 (see README), to create it",
}


def _is_hdf5(path):
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise DatasetFileError(f"{path}: file is empty")
    return head == HDF5_MAGIC


def _read_raw(path, which, max_bytes):
    """Return (obj, file size): a pickle's object, or for HDF5 a dict-of-numpy in the pickle layout."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        kind = special_kind(path)
        if kind is not None:
            raise DatasetFileError(f"{path!r} is {kind}, not a dataset file: give the file "
                                   f"scripts/make_{which}_dataset.py wrote")
        raise FileNotFoundError(f"{which} dataset file not found: {path!r}; {_HINT[which]}.")
    size = os.path.getsize(path)
    if _is_hdf5(path):
        return _read_h5(path, which, size, max_bytes), size
    return safe_load(path, max_bytes=max_bytes), size


# ----------------------------------------------------------------------------- HDF5

class _H5Reader:
    """Reads datasets and string attributes of one HDF5 file within bounds: a dataset must be stored in
    the file (no fill-value-only / unallocated / partly written / external data; a compressed dataset
    has every chunk stored and expands at most `h5_storage.MAX_COMPRESSION_RATIO` times), and is read at most once
    (a dataset linked under two names is refused); everything read adds up to at most ``max_bytes``;
    strings add up to at most the file's size + 1 MiB and are read one by one, so strings referencing
    the same stored text cannot multiply it."""

    def __init__(self, path, file_size, max_bytes):
        import h5py
        self.h5py = h5py
        self.path = path
        self.max_bytes = max_bytes
        self.total = 0
        self.string_budget = file_size + SLACK_BYTES
        self.seen = set()

    def fail(self, msg):
        raise DatasetFileError(f"{self.path}: not a valid HDF5 dataset file: {msg}")

    def child(self, group, key, kind, where):
        """group[key], which must be a hard link to a `kind` ('group' or 'dataset')."""
        h5py = self.h5py
        link = group.get(key, getlink=True)
        if link is None:
            self.fail(f"missing {kind} '{where}'")
        if not isinstance(link, h5py.HardLink):
            self.fail(f"'{where}' is a link of type {type(link).__name__}; only plain (hard-linked) groups and "
                      "datasets are read")
        obj = group[key]
        cls = h5py.Group if kind == "group" else h5py.Dataset
        if not isinstance(obj, cls):
            found = "group" if isinstance(obj, h5py.Group) else "dataset" if isinstance(obj, h5py.Dataset) \
                else type(obj).__name__
            self.fail(f"'{where}' is a {found}, expected a {kind}")
        return obj

    def _stored(self, ds, where, nbytes):
        if ds.id in self.seen:
            self.fail(f"'{where}' is the same dataset as another one read before (linked twice)")
        self.seen.add(ds.id)
        if nbytes > self.max_bytes or self.total + nbytes > self.max_bytes:
            self.fail(f"'{where}' declares {nbytes:,} bytes: the data read would exceed the cap of "
                      f"{self.max_bytes:,} bytes")
        problem = storage_problem(ds)
        if problem is not None:
            self.fail(f"'{where}' {problem}: write it uncompressed and whole, as scripts/make_*_dataset.py do")
        self.total += nbytes

    def dataset(self, group, key, where, kind, ndims):
        """Numeric dataset group[key]: kind 'uint8' or 'int', ndim in `ndims`; checked (storage, declared
        size against the cap) but not read: returns the h5py dataset, to read with ``ds[()]``."""
        ds = self.child(group, key, "dataset", where)
        dt = ds.dtype
        ok = dt == np.uint8 if kind == "uint8" else dt.kind in "iu" and dt.fields is None
        if not ok or ds.ndim not in ndims:
            self.fail(f"'{where}' has dtype {dt} and {ds.ndim} dimensions, expected {kind} with "
                      f"{' or '.join(map(str, ndims))} dimensions")
        self._stored(ds, where, ds.size * dt.itemsize)
        return ds

    def images_and_labels(self, group, x_key, y_key, where, channels, shape):
        """Datasets X (uint8 [n, h, w(, channels)]) and y (int [n]) of group, checked, not read; `shape`:
        the (h, w) the images must have (None: any)."""
        X = self.dataset(group, x_key, f"{where}/{x_key}", "uint8", (3, 4) if channels == 1 else (4,))
        y = self.dataset(group, y_key, f"{where}/{y_key}", "int", (1,))
        if X.shape[0] == 0 or min(X.shape[1:3]) == 0 or (X.ndim == 4 and X.shape[3] != channels):
            self.fail(f"'{where}/{x_key}' has shape {X.shape}, expected [n > 0, height, width, {channels}]")
        if y.shape[0] != X.shape[0]:
            self.fail(f"'{where}/{y_key}' has {y.shape[0]:,} labels for {X.shape[0]:,} images")
        if shape is not None and tuple(X.shape[1:3]) != shape:
            self.fail(f"'{where}/{x_key}' has image shape {tuple(X.shape[1:3])}, others have {shape}")
        return X, y

    def strings(self, group, key, where, max_count):
        """1-D string dataset group[key] -> list of str (at most max_count of them)."""
        ds = self.child(group, key, "dataset", where)
        if self.h5py.check_string_dtype(ds.dtype) is None or ds.ndim != 1:
            self.fail(f"'{where}' must be a 1-D dataset of strings")
        if ds.shape[0] > max_count:
            self.fail(f"'{where}' holds {ds.shape[0]:,} names for at most {max_count:,} labels")
        self._stored(ds, where, ds.size * ds.dtype.itemsize)
        return [self._text(ds[i], where) for i in range(ds.shape[0])]

    def attr(self, obj, name, default, where):
        """String attribute obj.attrs[name] (default if absent)."""
        if name not in obj.attrs:
            return default
        aid = obj.attrs.get_id(name)
        if self.h5py.check_string_dtype(aid.dtype) is None or aid.shape not in ((), (1,)):
            self.fail(f"attribute '{name}' of '{where}' must be a string")
        value = obj.attrs[name]
        return self._text(value.reshape(-1)[0] if isinstance(value, np.ndarray) else value, where)

    def _text(self, value, where):
        if isinstance(value, np.ndarray):
            value = value.tobytes()
        if not isinstance(value, (bytes, str)):
            self.fail(f"'{where}' holds a {type(value).__name__}, expected a string")
        self.string_budget -= len(value)
        if self.string_budget < 0:
            self.fail("its strings add up to more than the file's size (text referenced many times?)")
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(f"'{where}' holds a string that is not UTF-8")
        return value


def _read_h5(path, which, file_size, max_bytes):
    """Check the whole file (layout, shapes, declared sizes), then read labels and names (checked),
    and the images last."""
    import h5py
    r = _H5Reader(path, file_size, MAX_BYTES if max_bytes is None else int(max_bytes))
    try:
        with h5py.File(path, "r") as f:
            kind = r.attr(f, "pymeta_dataset", which, "/")
            if kind != which:
                r.fail(f"it holds a {kind!r} dataset, expected {which!r}")
            if which == "omniglot":
                out = {"ink": r.attr(f, "ink", "dark", "/")}
                plan, shape = {}, None
                for part in ("train", "test"):
                    g = r.child(f, part, "group", f"/{part}")
                    plan[part] = []
                    for key in sorted(g.keys()):
                        where = f"/{part}/{key}"
                        a = r.child(g, key, "group", where)
                        X, Y = r.images_and_labels(a, "X", "Y", where, 1, shape)
                        shape = tuple(X.shape[1:3])
                        plan[part].append((where, a, X, Y))
                for part in ("train", "test"):
                    Ys, alph, chars = [], [], []
                    for where, a, X, Y in plan[part]:
                        names = (r.strings(a, "characters", where + "/characters", max(X.shape[0], 1))
                                 if "characters" in a else None)
                        Ys.append(_check_labels(path, Y[()], X.shape[0], where + "/Y", _num_names(names)))
                        alph.append(r.attr(a, "alphabet", where.rsplit("/", 1)[1], where))
                        chars.append(names)
                    out[part + "Y"], out[part + "Alphabets"], out[part + "Characters"] = Ys, alph, chars
                for part in ("train", "test"):
                    out[part + "X"] = [X[()] for _, _, X, _ in plan[part]]
                return out
            out, plan, shape = {"class_names": {}}, {}, None
            for split in SPLITS:
                g = r.child(f, split, "group", f"/{split}")
                X, y = r.images_and_labels(g, "X", "y", f"/{split}", 3, shape)
                shape = tuple(X.shape[1:3])
                plan[split] = (g, X, y)
            for split, (g, X, y) in plan.items():
                names = (r.strings(g, "class_names", f"/{split}/class_names", max(X.shape[0], 1))
                         if "class_names" in g else None)
                if names is not None:
                    out["class_names"][split] = names
                plan[split] = (X, _check_labels(path, y[()], X.shape[0], f"/{split}/y", _num_names(names)))
            for split, (X, y) in plan.items():
                out[split] = (X[()], y)
            return out
    except DatasetFileError:
        raise
    except MemoryError:
        raise DatasetFileError(f"{path}: out of memory while reading the {which} HDF5 file") from None
    except Exception as e:  # OSError, KeyError, TypeError, RuntimeError from h5py / HDF5
        raise DatasetFileError(f"{path}: corrupt or truncated {which} HDF5 file ({type(e).__name__}: "
                               f"{one_line(e, 200)})") from None


# ----------------------------------------------------------------------------- checks of the layout

def _check_images(path, X, where, channels):
    if not isinstance(X, np.ndarray):
        raise DatasetFileError(f"{path}: {where} is a {type(X).__name__}, expected a numpy array of images")
    if X.dtype != np.uint8:
        raise DatasetFileError(f"{path}: {where} has dtype {X.dtype}, expected uint8 images (0..255)")
    if channels == 1 and X.ndim == 3:
        X = X[..., None]
    if X.ndim != 4 or X.shape[-1] != channels or X.shape[1] < 1 or X.shape[2] < 1:
        raise DatasetFileError(f"{path}: {where} has shape {X.shape}, expected [n, height, width, {channels}]")
    if X.shape[0] == 0:
        raise DatasetFileError(f"{path}: {where} holds no images")
    return X


def _check_labels(path, Y, n, where, num_names=0):
    """Y: 1-D integer labels, one per image, each a class index below max(n images, num_names) (so no
    label can make the loader build more class names than there are images or given names)."""
    bad = DatasetFileError(f"{path}: {where} must be a 1-D integer array of labels")
    if isinstance(Y, (list, tuple)):
        if len(Y) != n:
            raise DatasetFileError(f"{path}: {where} has {len(Y)} labels for {n} images")
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in Y):
            raise bad
        try:
            Y = np.array(Y, dtype=np.int64)
        except OverflowError:
            raise DatasetFileError(f"{path}: {where} contains labels beyond 64-bit integers") from None
    if not isinstance(Y, np.ndarray) or Y.ndim != 1 or not (np.issubdtype(Y.dtype, np.integer) or Y.size == 0):
        raise bad
    if Y.shape[0] != n:
        raise DatasetFileError(f"{path}: {where} has {Y.shape[0]} labels for {n} images")
    if Y.size and Y.min() < 0:
        raise DatasetFileError(f"{path}: {where} contains negative labels")
    limit = max(n, num_names)
    if Y.size and Y.max() >= limit:
        raise DatasetFileError(f"{path}: {where} contains label {Y.max()}: labels must be class indices below "
                               f"the number of images ({n})" + (f" or of names ({num_names})" if num_names else ""))
    return Y.astype(np.int64, copy=False)


def _num_names(names):
    return len(names) if isinstance(names, (list, tuple)) else 0


def _names(names, count, fmt, path, where):
    if names is None:
        return [fmt.format(i, i + 1) for i in range(count)]
    if not isinstance(names, (list, tuple)) or not all(isinstance(s, str) for s in names):
        raise DatasetFileError(f"{path}: {where} must be a list of strings")
    if len(names) < count:
        raise DatasetFileError(f"{path}: {where} has {len(names)} names for {count} labels")
    return list(names)


def load_omniglot(path, max_bytes=None):
    """Load the Omniglot pkl/h5 written by ``scripts/make_omniglot_dataset.py`` (layout in module doc).

    Any problem with the file raises :class:`DatasetFileError` (a ValueError) with a one-line message;
    ``max_bytes`` caps the data read (default ``pymeta.data.safe_pickle.MAX_BYTES``).
    """
    d, size = _read_raw(path, "omniglot", max_bytes)
    if not isinstance(d, dict) or not all(k in d for k in ("trainX", "trainY", "testX", "testY")):
        raise DatasetFileError(f"{path}: not an Omniglot dataset (expected a dict with trainX, trainY, testX, "
                               "testY)")
    ink = d.get("ink", "dark")
    if not isinstance(ink, str) or ink not in ("dark", "light"):
        raise DatasetFileError(f"{path}: 'ink' must be 'dark' or 'light'")
    out = {"ink": ink}
    shape = None
    # a pickle may reference one array many times: the images, counted at each reference, must fit in
    # what the file can hold (the unpickler's own bound)
    budget = 2 * size + SLACK_BYTES
    for part in ("train", "test"):
        Xs, Ys = d[part + "X"], d[part + "Y"]
        if not isinstance(Xs, (list, tuple)) or not isinstance(Ys, (list, tuple)) or len(Xs) != len(Ys) or not Xs:
            raise DatasetFileError(f"{path}: {part}X/{part}Y must be non-empty lists of equal length (one per "
                                   "alphabet)")
        alph = _names(d.get(part + "Alphabets"), len(Xs), part + "_alphabet_{:02d}", path, part + "Alphabets")
        chars_in = d.get(part + "Characters")
        if chars_in is None or (isinstance(chars_in, (list, tuple)) and not chars_in):
            chars_in = [None] * len(Xs)
        if not isinstance(chars_in, (list, tuple)) or len(chars_in) != len(Xs):
            raise DatasetFileError(f"{path}: {part}Characters must be a list with one entry per alphabet "
                                   f"({len(Xs)})")
        X_out, Y_out, chars_out = [], [], []
        for i, (X, Y) in enumerate(zip(Xs, Ys)):
            X = _check_images(path, X, f"{part}X[{i}]", 1)
            budget -= X.nbytes
            if budget < 0:
                raise DatasetFileError(f"{path}: its image arrays, counted at each reference, add up to more "
                                       f"than the file can hold ({size:,} bytes): the same array used many times?")
            if shape is None:
                shape = X.shape[1:]
            elif X.shape[1:] != shape:
                raise DatasetFileError(f"{path}: {part}X[{i}] has image shape {X.shape[1:]}, others have {shape}")
            Y = _check_labels(path, Y, X.shape[0], f"{part}Y[{i}]", _num_names(chars_in[i]))
            X_out.append(X)
            Y_out.append(Y)
            chars_out.append(_names(chars_in[i], int(Y.max()) + 1, "character{1:02d}", path,
                                    f"{part}Characters[{i}]"))
        out[part + "X"], out[part + "Y"] = X_out, Y_out
        out[part + "Alphabets"], out[part + "Characters"] = alph, chars_out
    return out


def load_miniimagenet(path, max_bytes=None):
    """Load the Mini-ImageNet pkl/h5 written by ``scripts/make_miniimagenet_dataset.py`` (layout in module doc).

    Any problem with the file raises :class:`DatasetFileError` (a ValueError) with a one-line message;
    ``max_bytes`` caps the data read (default ``pymeta.data.safe_pickle.MAX_BYTES``).
    """
    d, _ = _read_raw(path, "miniimagenet", max_bytes)
    if not isinstance(d, dict) or not all(k in d for k in SPLITS):
        raise DatasetFileError(f"{path}: not a Mini-ImageNet dataset (expected a dict with 'train', 'val', "
                               "'test')")
    names_in = d.get("class_names")
    names_in = {} if names_in is None else names_in
    if not isinstance(names_in, dict):
        raise DatasetFileError(f"{path}: 'class_names' must be a dict split -> list of names")
    out = {"class_names": {}}
    shape = None
    for split in SPLITS:
        pair = d[split]
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DatasetFileError(f"{path}: '{split}' must be a pair (X, y)")
        X = _check_images(path, pair[0], f"{split} X", 3)
        if shape is None:
            shape = X.shape[1:]
        elif X.shape[1:] != shape:
            raise DatasetFileError(f"{path}: {split} X has image shape {X.shape[1:]}, train has {shape}")
        y = _check_labels(path, pair[1], X.shape[0], f"{split} y", _num_names(names_in.get(split)))
        out[split] = (X, y)
        out["class_names"][split] = _names(names_in.get(split), int(y.max()) + 1, split + "_class_{:03d}",
                                           path, f"class_names['{split}']")
    return out
