"""Hostile dataset files (issue #16): tiny pickles / HDF5 files, built here, that used to hang the loader,
fill the memory or end in a traceback. Each is loaded in its own subprocess, so that the subprocess's
peak RSS is that case's alone: every case must end within seconds with a one-line DatasetFileError
naming the file, and raise the peak RSS by less than RSS_BOUND_MB."""

import io
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from pymeta.data import DatasetFileError, UnsafePickleError, load_omniglot, safe_load, safe_loads
from pymeta.data import safe_pickle

pytestmark = pytest.mark.timeout(300)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RSS_BOUND_MB = 100
SECONDS = 10

CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (6 * 2 ** 30, 6 * 2 ** 30))  # a regression must not take the machine
from pymeta.data import DatasetFileError, UnsafePickleError, load_miniimagenet, load_omniglot, safe_load
if sys.argv[1] != "safe_load":
    import h5py  # noqa: F401  (imported before the baseline: the loaders import it for HDF5 files)
fn = {"safe_load": safe_load, "omniglot": load_omniglot, "miniimagenet": load_miniimagenet}[sys.argv[1]]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.time()
out = {"error": None}
try:
    fn(sys.argv[2])
except Exception as e:
    out = {"error": type(e).__name__, "dataset_error": isinstance(e, DatasetFileError),
           "unsafe": isinstance(e, UnsafePickleError), "message": str(e)}
out["seconds"] = time.time() - start
out["rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(out))
"""


def run_case(path, loader="safe_load"):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD, loader, str(path)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def assert_refused(path, pattern, loader="safe_load", unsafe=None):
    import re
    out = run_case(path, loader)
    assert out["error"] is not None, f"{path.name} was loaded"
    msg = out["message"]
    assert out["dataset_error"], out
    assert "\n" not in msg and path.name in msg and len(msg) < 600, msg
    assert re.search(pattern, msg), msg
    assert "out of memory" not in msg, msg
    if unsafe is not None:
        assert out["unsafe"] == unsafe, out
    assert out["seconds"] < SECONDS, out
    assert out["rss_mb"] < RSS_BOUND_MB, out
    return out


class R:
    """Pickles as the given __reduce__ value."""

    def __init__(self, *rv):
        self.rv = rv

    def __reduce__(self):
        return self.rv


RECONSTRUCT = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
SCALAR = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
U8 = np.dtype("u1")


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else pickle.dumps(data, protocol=4))
    return path


def nested(n, make):
    x = 1
    for _ in range(n):
        x = make(x)
    return x


def _self_list():
    a = []
    a.append(a)
    return a


def _self_dict():
    d = {}
    d["d"] = d
    return d


def _cycle_through_tuple():
    a = []
    a.append((a,))
    return a


def _dict_with_key(key):
    """Pickle of {key: 1}, written without hashing key (protocol 2 has no frames to strip)."""
    body = pickle.dumps(key, protocol=2)[2:-1]
    return b"\x80\x02}" + body + b"K\x01s."


# ------------------------------------------------------------------------- pickles

PICKLE_CASES = {
    # reference cycles: the old type check looped forever (the dict one growing its memory)
    "self_list": (_self_list, r"reference cycle"),
    "self_dict": (_self_dict, r"reference cycle"),
    "cycle_tuple": (_cycle_through_tuple, r"reference cycle"),
    # a dict key that is a DAG of 2**40 tuples (hashing it would never end)
    "dag_key": (lambda: _dict_with_key(nested(40, lambda x: (x, x))), r"dict key"),
    # arrays declaring more data than the file holds
    "reconstruct_1e6_images": (lambda: R(RECONSTRUCT, (np.ndarray, (10 ** 6, 28, 28, 1), b"B")),
                               r"declaring 784,000,000 bytes of data: the file holds only"),
    "reconstruct_1TB": (lambda: R(RECONSTRUCT, (np.ndarray, (10 ** 12,), b"B")), r"declaring|cap"),
    "state_1e6_images": (lambda: R(RECONSTRUCT, (np.ndarray, (0,), b"b"),
                                   (1, (10 ** 6, 28, 28, 1), U8, False, b"\0" * 16)),
                         r"needs 784,000,000 bytes, its data has 16"),
    "zero_itemsize_1e18": (lambda: R(RECONSTRUCT, (np.ndarray, (10 ** 18,), "V0")), r"declaring"),
    "scalar_1GB_dtype": (lambda: R(SCALAR, (R(np.dtype, ("V1000000000", False, True)),)), r"scalar"),
    # allowed constructors asked for a size
    "bytes_1GB": (lambda: R(bytes, (10 ** 9,)), r"refusing bytes\(\)"),
    "bytearray_1GB": (lambda: R(bytearray, (10 ** 9,)), r"refusing bytearray\(\)"),
    "list_of_bytes": (lambda: R(list, (b"x" * 100,)), r"refusing list\(\)"),
    "ndarray_strided_view": (lambda: R(np.ndarray, ((10 ** 9,), "u1", b"x", 0, (0,))), r"numpy.ndarray directly"),
    # a dtype rebuilt by __setstate__ so that an array would read outside its memory
    "dtype_field_outside": (lambda: R(np.dtype, ("V8", False, True),
                                      (3, "|", None, ("a",), {"a": (np.dtype("u8"), 100)}, 8, 1, 0)),
                            r"field outside its item size"),
    "dtype_subarray_1e9": (lambda: R(np.dtype, ("V8", False, True),
                                     (3, "|", (np.dtype("u1"), (10 ** 9,)), None, None, 8, 1, 0)),
                           r"sub-array"),
    "dtype_from_list": (lambda: R(np.dtype, ([("a", "u1")], False, True)), r"dtype built from a list"),
    "build_on_list": (lambda: R(list, (), {"a": 1}), r"set the state of a list"),
}


@pytest.mark.parametrize("case", sorted(PICKLE_CASES))
def test_hostile_pickle(tmp_path, case):
    make, pattern = PICKLE_CASES[case]
    path = write(tmp_path, f"{case}.pkl", make())
    assert path.stat().st_size < 1000
    assert_refused(path, pattern, unsafe=None)


RAW_CASES = {
    # lengths declared by opcodes: the C unpickler allocates them before reading
    "binbytes8_1TB": b"\x80\x04\x8e" + struct.pack("<Q", 10 ** 12) + b".",
    "bytearray8_1TB": b"\x80\x05\x96" + struct.pack("<Q", 10 ** 12) + b".",
    "binunicode8_1TB": b"\x80\x04\x8d" + struct.pack("<Q", 10 ** 12) + b".",
    "frame_1PB": b"\x80\x04\x95" + struct.pack("<Q", 10 ** 15) + b"N.",
    "binbytes_4GB": b"\x80\x03B" + struct.pack("<I", 2 ** 32 - 1) + b".",
    # APPENDS onto a bytearray, SETITEMS onto something that is not a dict
    "appends_on_bytearray": b"\x80\x04C\x01x\x94\x8c\x08builtins\x8c\tbytearray\x93h\x00\x85R(K\x01e.",
    "set": pickle.dumps({1, 2}, protocol=4),
}


@pytest.mark.parametrize("case", sorted(RAW_CASES))
def test_hostile_raw_pickle(tmp_path, case):
    path = write(tmp_path, f"{case}.pkl", RAW_CASES[case])
    assert_refused(path, r"truncated|declared|refusing")


def test_dags_are_checked_in_linear_time(tmp_path):
    """A 2**30-leaf DAG of shared lists / dicts (a few hundred bytes): loaded as it is, in well under a second."""
    for name, obj in (("dag_list", nested(30, lambda x: [x, x])),
                      ("dag_dict", nested(30, lambda x: {"a": x, "b": x, 3: (x, x)}))):
        path = write(tmp_path, f"{name}.pkl", obj)
        assert path.stat().st_size < 1000
        out = run_case(path)
        assert out["error"] is None and out["seconds"] < 2 and out["rss_mb"] < RSS_BOUND_MB, out
        loaded = safe_load(path)
        depth = 0
        while isinstance(loaded, (list, dict)):
            loaded = loaded[0] if isinstance(loaded, list) else loaded["b"]
            depth += 1
        assert depth == 30 and loaded == 1


def test_memo_shared_payload_cannot_be_multiplied(tmp_path):
    """2,000 arrays whose state is one memoised 1 KiB payload: 2 MiB of arrays out of a ~20 KB file."""
    args = (np.ndarray, (0,), b"b")
    state = (1, (1024,), U8, False, b"\x01" * 1024)
    path = write(tmp_path, "shared.pkl", [R(RECONSTRUCT, args, state) for _ in range(2000)])
    assert path.stat().st_size < 25_000
    assert_refused(path, r"twice its .* bytes \+ 1 MiB", unsafe=True)
    # the same number of distinct arrays is loaded
    path = write(tmp_path, "distinct.pkl", [np.full(1024, i % 256, np.uint8) for i in range(2000)])
    assert len(safe_load(path)) == 2000


# ------------------------------------------------------------------------- issue #38: cost not linear in the file

MB = 2 ** 20
_GLOBAL = b"\x8c\x16numpy._core.multiarray\x94\x8c\x0c_reconstruct\x94\x93\x94"  # memo 0, 1, 2
_ARGS = b"\x8c\x05numpy\x94\x8c\x07ndarray\x94\x93\x94K\x00\x85\x94C\x01b\x94\x87\x94"  # memo 3..8


def _long1(v):
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)


def _dict_of(items):
    """A protocol-4 pickle of a dict of the pickled (key, value) pairs `items`, written without hashing the
    keys, in SETITEMS batches of 1,000 as pickle writes them."""
    items = list(items)
    return b"\x80\x04}" + b"".join(b"(" + b"".join(items[i:i + 1000]) + b"u" for i in range(0, len(items), 1000)) + b"."


def _int_keys(values):
    return [_long1(v) + b"N" for v in values]


FLOOD_CASES = {
    # (pickle bytes, pattern); the figures before: 4 MB of TUPLE1 9.5 s / 951 MB, 20 MB 48 s / 5.3 GB,
    # empty lists or dicts 1.5 GB from 20 MB, colliding keys 66 s for 100k keys (1.3 MB)
    "tuple1": (b"\x80\x04N" + b"\x85" * (4 * MB) + b".", r"objects would take .* at opcode TUPLE1"),
    "empty_lists": (b"\x80\x04(" + b"]" * (4 * MB) + b"l.", r"objects would take .* at opcode EMPTY_LIST"),
    "empty_dicts": (b"\x80\x04(" + b"}" * (4 * MB) + b"l.", r"objects would take .* at opcode EMPTY_DICT"),
    "memo_flood": (b"\x80\x04N" + b"\x94" * (4 * MB) + b".", r"objects would take .* at opcode MEMOIZE"),
    "marks": (b"\x80\x04N" + b"(" * (4 * MB) + b".", r"objects would take .* at opcode MARK"),
    "stack_of_nones": (b"\x80\x04" + b"N" * (4 * MB) + b".", r"objects would take .* at opcode NONE"),
    "shared_refs": (b"\x80\x04N\x94(" + b"h\x00" * (2 * MB) + b"l.", r"objects would take"),
    "empty_arrays": (b"\x80\x04" + _GLOBAL + _ARGS + b"(" + b"h\x02h\x08R" * (MB // 2) + b"l.",
                     r"objects would take .* at .*(array|REDUCE)"),
    # 100,000 int keys that all hash to 0 (i * (2**61 - 1)): refused at the second one
    "colliding_int_keys": (_dict_of(_int_keys(i * (2 ** 61 - 1) for i in range(1, 100_001))),
                           r"refusing dict keys 2305843009213693951 and 4611686018427387902 of one dict, which "
                           r"have the same hash"),
    "colliding_minus_one": (_dict_of(_int_keys([-1, -2])), r"refusing dict keys -1 and -2 .* same hash"),
    "colliding_tuple_keys": (_dict_of([_long1(i * (2 ** 61 - 1)) + b"\x85N" for i in range(1, 9)]),
                             r"refusing dict keys \(2305843009213693951,\) and \(4611686018427387902,\) .* same hash"),
    "colliding_float_keys": (_dict_of([b"G" + struct.pack(">d", 2.0 ** 61) + b"N", b"K\x01N"]),
                             r"refusing dict keys 2.305843009213694e\+18 and 1 .* same hash"),
    "big_int_key": (_dict_of(_int_keys([2 ** 100])), r"dict key that is an int of more than 64 bits"),
    "long_bytes_key": (_dict_of([b"C\xff" + b"x" * 255 + b"N", b"B" + struct.pack("<I", 300) + b"x" * 300 + b"N"]),
                       r"dict key of 300 bytes"),
    "nested_tuple_key": (_dict_of([b"K\x01\x85\x85N"]), r"dict key that is a nested tuple"),
    "list_key": (_dict_of([b"]N"]), r"dict key of type list"),
}


@pytest.mark.parametrize("case", sorted(FLOOD_CASES))
def test_pickle_cost_is_linear_in_the_file(tmp_path, case):
    """Files of cheap opcodes that each make an object, and dicts of colliding keys (issue #38 item 3):
    refused within seconds, in a few MiB, with one line naming the file."""
    data, pattern = FLOOD_CASES[case]
    path = write(tmp_path, f"{case}.pkl", data)
    assert path.stat().st_size < 5 * MB
    assert_refused(path, pattern, unsafe=True)


def test_legit_keys_still_load():
    keys = {"a": 1, 3: 2, -1: 3, 2 ** 63: 4, 1.5: 5, None: 6, b"k": 7, ("t", 1, 2.0): 8, True: 9, np.int64(11): 10}
    for protocol in range(6):
        out = safe_loads(pickle.dumps(keys, protocol=protocol))
        assert out == keys
    # keys equal to each other (1, 1.0, True) share a hash without colliding: the dict keeps one, as Python does
    assert safe_loads(_dict_of(_int_keys([1, 1, 5]))) == {1: None, 5: None}
    # 10,000 distinct int keys (0 .. 9,999 * 2**20, all with the same low bits) load in linear time
    d = safe_loads(_dict_of(_int_keys(i << 20 for i in range(10_000))))
    assert len(d) == 10_000 and (9_999 << 20) in d


def test_many_distinct_arrays_and_names_still_load(tmp_path):
    """What a dataset holds: a few thousand arrays and names (Omniglot: 1,623 characters in 50 alphabets)."""
    obj = {"trainX": [np.full((20, 8, 8, 1), i % 256, np.uint8) for i in range(50)],
           "trainCharacters": [[f"character{c:02d}" for c in range(40)] for _ in range(50)],
           "arrays": [np.arange(i, dtype=np.int64) for i in range(2000)]}
    for protocol in (2, 4, 5):
        out = safe_loads(pickle.dumps(obj, protocol=protocol))
        assert out["trainCharacters"][49][39] == "character39" and np.array_equal(out["arrays"][1999], np.arange(1999))


# ------------------------------------------------------------------------- loader layouts (pkl)

def _omniglot(**over):
    img = np.zeros((10, 5, 5, 1), np.uint8)
    d = {"trainX": [img], "trainY": [np.arange(10)], "testX": [img.copy()], "testY": [np.arange(10)]}
    d.update(over)
    return d


def test_label_of_1e9_is_refused_before_building_names(tmp_path):
    labels = np.arange(10)
    labels[-1] = 10 ** 9
    path = write(tmp_path, "label.pkl", _omniglot(trainY=[labels]))
    assert path.stat().st_size < 1000
    assert_refused(path, r"trainY\[0\] contains label 1000000000: labels must be class indices below the "
                         r"number of images \(10\)", loader="omniglot")
    labels[-1] = 10  # one past the images, but names are given for it: accepted
    d = load_omniglot(write(tmp_path, "named.pkl", _omniglot(
        trainY=[labels], trainCharacters=[[f"c{i}" for i in range(11)]])))
    assert d["trainCharacters"][0][10] == "c10"


def test_one_array_referenced_many_times_is_refused(tmp_path):
    img = np.zeros((50, 20, 20, 1), np.uint8)  # 20 KB, referenced 2,000 times: 40 MB of images
    path = write(tmp_path, "shared.pkl", _omniglot(trainX=[img] * 2000, trainY=[np.zeros(50, np.int64)] * 2000))
    assert_refused(path, r"counted at each reference", loader="omniglot")


def test_dag_labels_are_refused_without_expanding(tmp_path):
    path = write(tmp_path, "daglabels.pkl", _omniglot(trainY=[nested(30, lambda x: [x, x])]))
    assert_refused(path, r"2 labels for 10 images", loader="omniglot")


# ------------------------------------------------------------------------- HDF5

def _mini_h5(path, edit=None):
    import h5py
    with h5py.File(path, "w") as f:
        for split in ("train", "val", "test"):
            g = f.create_group(split)
            g.create_dataset("X", data=np.zeros((4, 6, 6, 3), np.uint8))
            g.create_dataset("y", data=np.array([0, 0, 1, 1]))
            g.create_dataset("class_names", data=["a", "b"], dtype=h5py.string_dtype())
        if edit:
            edit(f)
    return path


def _replace(name, **kw):
    def edit(f):
        del f[name]
        f.create_dataset(name, **kw)
    return edit


def _train_is_a_dataset(f):
    del f["train"]
    f.create_dataset("train", data=np.zeros(3))


def _hard_link(f):
    del f["val/X"]
    f["val/X"] = f["train/X"]


def _soft_link(f):
    del f["val/X"]
    f["val/X"] = __import__("h5py").SoftLink("/train/X")


def _external_link(f):
    del f["val"]
    f["val"] = __import__("h5py").ExternalLink("/etc/other.h5", "/val")


def _partly_written_gzip(f):
    del f["train/X"]
    ds = f.create_dataset("train/X", shape=(1000, 6, 6, 3), dtype=np.uint8, chunks=(10, 6, 6, 3),
                          compression="gzip")
    ds[:10] = 1  # one chunk of 100 written


def _label_1e9(f):
    del f["train/y"]
    f.create_dataset("train/y", data=np.array([0, 0, 1, 10 ** 9]))


def _too_many_names(f):
    del f["val/class_names"]
    f.create_dataset("val/class_names", data=[str(i) for i in range(50)], dtype=__import__("h5py").string_dtype())


def _wrong_kind(f):
    f.attrs["pymeta_dataset"] = "omniglot"


H5_CASES = {
    # 10**6 images (21 GB) declared, never written: only the fill value exists
    "fill_value_chunked": (_replace("train/X", shape=(10 ** 6, 84, 84, 3), dtype=np.uint8, chunks=(64, 84, 84, 3)),
                           r"'/train/X' declares 21,168,000,000 bytes but only 0 are stored"),
    "fill_value_contiguous": (_replace("val/X", shape=(10 ** 5, 84, 84, 3), dtype=np.uint8),
                              r"'/val/X' declares .* but only 0 are stored"),
    "partly_written_gzip": (_partly_written_gzip, r"unwritten chunks"),
    "train_is_a_dataset": (_train_is_a_dataset, r"'/train' is a dataset, expected a group"),
    "missing_val": (lambda f: f.__delitem__("val"), r"missing group '/val'"),
    "missing_y": (lambda f: f.__delitem__("test/y"), r"missing dataset '/test/y'"),
    "float_images": (_replace("train/X", data=np.zeros((4, 6, 6, 3), np.float32)), r"'/train/X' has dtype float32"),
    "flat_images": (_replace("train/X", data=np.zeros((4, 108), np.uint8)), r"2 dimensions"),
    "float_labels": (_replace("val/y", data=np.zeros(4)), r"'/val/y' has dtype float64"),
    "names_not_strings": (_replace("val/class_names", data=np.zeros(2)), r"1-D dataset of strings"),
    "too_many_names": (_too_many_names, r"50 names for at most 4 labels"),
    "linked_twice": (_hard_link, r"linked twice"),
    "soft_link": (_soft_link, r"SoftLink"),
    "external_link": (_external_link, r"ExternalLink"),
    "label_1e9": (_label_1e9, r"contains label 1000000000"),
    "wrong_dataset_kind": (_wrong_kind, r"'omniglot' dataset, expected 'miniimagenet'"),
}


def _gzip_zeros(n_chunks):
    """train/X: n_chunks chunks of 64 zero images 84x84x3 (1.35 MB each), gzip -9: about 1.3 KB each."""
    def edit(f):
        import zlib
        chunk = (64, 84, 84, 3)
        packed = zlib.compress(bytes(int(np.prod(chunk))), 9)
        del f["train/X"], f["train/y"]
        X = f.create_dataset("train/X", shape=(64 * n_chunks, 84, 84, 3), dtype=np.uint8, chunks=chunk,
                             compression="gzip")
        for i in range(n_chunks):
            X.id.write_direct_chunk((64 * i, 0, 0, 0), packed)
        f.create_dataset("train/y", data=np.zeros(64 * n_chunks, np.int64))
        for split in ("val", "test"):
            del f[split + "/X"]
            f.create_dataset(split + "/X", data=np.zeros((4, 84, 84, 3), np.uint8))
    return edit


def test_h5_gzip_of_zeros_is_refused_before_decompressing(tmp_path):
    """Issue #38: a 2 MB HDF5 file of gzip'd zeros declaring 2 GB made the loader allocate 2 GB. Here
    200 chunks (270 MB declared, 0.6 MB file): refused from the declared sizes, within 100 MB."""
    path = _mini_h5(tmp_path / "zeros.h5", _gzip_zeros(200))
    assert path.stat().st_size < 600_000
    assert_refused(path, r"'/train/X' declares 270,950,400 bytes, more than 128 times the [\d,]+ compressed bytes "
                         r"it stores .* write it uncompressed", loader="miniimagenet")


def _count_reads(monkeypatch):
    import h5py
    reads = []
    getitem = h5py.Dataset.__getitem__

    def spy(self, key, *a, **k):
        reads.append((self.name, self.shape))
        return getitem(self, key, *a, **k)
    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return reads


@pytest.mark.parametrize("edit, pattern", [
    (_replace("val/y", data=np.zeros(5, np.int64)), r"'/val/y' has 5 labels for 4 images"),
    (_label_1e9, r"contains label 1000000000"),
    (_too_many_names, r"50 names for at most 4 labels"),
    (_replace("test/X", data=np.zeros((4, 5, 6, 3), np.uint8)), r"'/test/X' has image shape \(5, 6\), others have"),
    (_replace("test/X", data=np.zeros((4, 6, 6, 1), np.uint8)), r"'/test/X' has shape \(4, 6, 6, 1\)"),
    (_replace("train/X", data=np.random.RandomState(0).randint(0, 256, (40, 6, 6, 3)).astype(np.uint8),
              chunks=(8, 6, 6, 3), compression="gzip"), r"'/train/y' has 4 labels for 40 images"),
])
def test_h5_is_checked_whole_before_any_image_is_read(tmp_path, monkeypatch, edit, pattern):
    """Every check that does not need the pixels runs before any images dataset is read (issue #38)."""
    from pymeta.data import load_miniimagenet
    path = _mini_h5(tmp_path / "bad.h5", edit)
    reads = _count_reads(monkeypatch)
    with pytest.raises(DatasetFileError, match=pattern) as e:
        load_miniimagenet(path)
    assert "bad.h5" in str(e.value) and "\n" not in str(e.value)
    assert not [name for name, _ in reads if name.endswith("/X")], reads


def test_h5_images_are_read_last_and_once(tmp_path, monkeypatch):
    from pymeta.data import load_miniimagenet
    path = _mini_h5(tmp_path / "ok.h5")
    reads = _count_reads(monkeypatch)
    d = load_miniimagenet(path)
    assert d["train"][0].shape == (4, 6, 6, 3)
    images = [i for i, (name, _) in enumerate(reads) if name.endswith("/X")]
    assert len(images) == 3 and images == list(range(len(reads) - 3, len(reads))), reads


@pytest.mark.parametrize("case", sorted(H5_CASES))
def test_hostile_h5(tmp_path, case):
    edit, pattern = H5_CASES[case]
    path = _mini_h5(tmp_path / f"{case}.h5", edit)
    assert path.stat().st_size < 20_000
    assert_refused(path, pattern, loader="miniimagenet")


def test_h5_reference_file_loads(tmp_path):
    from pymeta.data import load_miniimagenet
    d = load_miniimagenet(_mini_h5(tmp_path / "ok.h5"))
    assert d["train"][0].shape == (4, 6, 6, 3) and d["class_names"]["val"] == ["a", "b"]

    def gzip(f):
        del f["train/X"], f["train/y"]
        f.create_dataset("train/X", data=np.ones((40, 6, 6, 3), np.uint8), chunks=(8, 6, 6, 3), compression="gzip")
        f.create_dataset("train/y", data=np.arange(40) % 2)
    d = load_miniimagenet(_mini_h5(tmp_path / "gz.h5", gzip))
    assert d["train"][0].shape == (40, 6, 6, 3) and d["train"][0].min() == 1


def test_omniglot_h5_wrong_structure(tmp_path):
    import h5py
    path = tmp_path / "omni.h5"
    with h5py.File(path, "w") as f:
        f.create_group("train").create_dataset("000", data=np.zeros(3))
        f.create_group("test")
    assert_refused(path, r"'/train/000' is a dataset, expected a group", loader="omniglot")


# ------------------------------------------------------------------------- in process

def test_memory_error_is_one_line(tmp_path, monkeypatch):
    def boom(u, *args):
        raise MemoryError()
    monkeypatch.setitem(safe_pickle._CALLS, id(safe_pickle._reconstruct), (safe_pickle._reconstruct, boom))
    path = write(tmp_path, "mem.pkl", np.zeros(3))
    with pytest.raises(DatasetFileError, match=r"^'.*mem\.pkl': out of memory while loading the pickle$") as e:
        safe_load(path)
    assert not isinstance(e.value, UnsafePickleError)


def test_cap(tmp_path):
    path = write(tmp_path, "big.pkl", np.zeros(5000, np.uint8))
    assert safe_load(path, max_bytes=5000).shape == (5000,)
    with pytest.raises(UnsafePickleError, match="more than the cap of 4,999 bytes"):
        safe_load(path, max_bytes=4999)


def test_file_objects_and_streams_are_bounded():
    data = pickle.dumps({"a": np.arange(5)}, protocol=5)
    f = io.BytesIO(b"junk" + data + b"trailing")
    f.seek(4)
    assert np.array_equal(safe_load(f)["a"], np.arange(5)) and f.read() == b"trailing"
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    with os.fdopen(r, "rb", buffering=0) as pipe:
        assert np.array_equal(safe_load(pipe)["a"], np.arange(5))
    with pytest.raises(DatasetFileError, match="declared"):
        safe_loads(RAW_CASES["binbytes8_1TB"])


def test_legit_pickles_of_every_protocol_still_load():
    obj = {"a": np.arange(12, dtype=np.int32).reshape(3, 4), "s": np.float32(2.5), "v": np.zeros(2, "V3")[0],
           "st": np.zeros(2, [("x", "u1"), ("y", "<i4", (2,))]), "dt": np.dtype("M8[s]"), "c": 1 + 2j,
           "b": b"", "ba": bytearray(b"ab"), "e": bytearray(), "t": (1, (2.5, None)), ("k", 1): "tuple key"}
    for protocol in range(6):
        out = safe_loads(pickle.dumps(obj, protocol=protocol))
        assert out.keys() == obj.keys() and np.array_equal(out["a"], obj["a"]) and out["dt"] == obj["dt"]
        assert out["st"].dtype == obj["st"].dtype and out["v"].dtype == obj["v"].dtype


def test_deep_nesting_loads_without_recursion():
    n = 10_000  # a list nested 10,000 deep (20 KB; ten times the recursion limit): no recursion in loading or
    obj = safe_loads(b"\x80\x04" + b"]" * n + b"a" * (n - 1) + b".")  # checking it
    depth = 0
    while obj:
        obj = obj[0]
        depth += 1
    assert depth == n - 1
    # 100,000 deep (200 KB): 100,000 lists are more objects than a file of that size may build (issue #38)
    with pytest.raises(UnsafePickleError, match=r"^<bytes>: refusing pickle: its Python objects would take more "
                                                r"than [\d,]+ bytes of memory beyond their data") as e:
        safe_loads(b"\x80\x04" + b"]" * (10 * n) + b"a" * (10 * n - 1) + b".")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("field", [dict(ink=np.array(["dark", "light"])), dict(ink=3),
                                   dict(trainCharacters=np.array([1, 2])), dict(trainCharacters=5),
                                   dict(trainY=[[[0]] * 10]), dict(trainY=[list(range(9)) + [2 ** 70]]),
                                   dict(trainY=[np.arange(10.0)]), dict(trainAlphabets=[1])])
def test_wrong_types_in_the_layout_are_one_line_errors(tmp_path, field):
    path = write(tmp_path, "layout.pkl", _omniglot(**field))
    with pytest.raises(DatasetFileError) as e:
        load_omniglot(path)
    assert "layout.pkl" in str(e.value) and "\n" not in str(e.value)


def test_error_types():
    assert issubclass(UnsafePickleError, DatasetFileError) and issubclass(DatasetFileError, ValueError)
