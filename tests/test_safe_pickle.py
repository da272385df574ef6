"""pymeta.data.safe_pickle: only numpy arrays and builtin containers/scalars may be unpickled."""

import io
import os
import pickle
import subprocess

import numpy as np
import pytest

from pymeta.data import UnsafePickleError, safe_load, safe_loads


class TouchFile:
    """Unpickling this with the stock pickle runs `touch <path>` through os.system."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch '{self.path}'",))


class PopenTouch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (subprocess.Popen, (["touch", self.path],))


class EvalTouch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w')",))


def test_error_type():
    assert issubclass(UnsafePickleError, pickle.UnpicklingError)
    assert issubclass(UnsafePickleError, ValueError)


@pytest.mark.parametrize("payload", [TouchFile, PopenTouch, EvalTouch])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_malicious_reduce_is_refused_without_side_effect(tmp_path, payload, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    obj = {"trainX": [np.zeros((2, 3, 3, 1), np.uint8)], "evil": payload(str(marker))}
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    with pytest.raises(UnsafePickleError) as e:
        safe_load(path)
    msg = str(e.value)
    assert "refusing to unpickle global" in msg and "evil.pkl" in msg
    assert any(name in msg for name in ("system", "Popen", "eval")), msg
    assert not marker.exists()


def test_stock_pickle_would_run_the_payload(tmp_path):
    """Sanity check of the test payload itself."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(TouchFile(str(marker))))
    assert marker.exists()


def test_object_arrays_and_other_globals_refused():
    for obj in (np.array([1, "a", None], dtype=object), {1, 2}, np.ma.masked_array([1, 2]), print,
                np.dtype([("a", object)])):
        with pytest.raises(UnsafePickleError):
            safe_loads(pickle.dumps(obj, protocol=4))


def _sample():
    rng = np.random.RandomState(0)
    return {
        "trainX": [rng.randint(0, 256, (5, 4, 4, 1)).astype(np.uint8) for _ in range(3)],
        "trainY": [np.arange(5, dtype=np.int64), np.arange(5, dtype=np.int32), np.arange(5)],
        "floats": rng.rand(3, 2).astype(np.float32),
        "fortran": np.asfortranarray(rng.rand(3, 4)),
        "strided": np.arange(20, dtype=np.int16)[::3],
        "empty": np.zeros((0, 3), np.uint8),
        "bools": np.array([True, False]),
        "scalars": [np.int64(7), np.float32(1.5), np.uint8(3), 1, 2.5, 1 + 2j, True, None],
        "text": ("abc", b"\x00\x01", bytearray(b"xy")),
        "nested": {"a": [1, (2, 3)], 4: "four"},
        "names": ["Alphabet_of_the_Magi", "character01"],
    }


def _equal(a, b):
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_numpy_dicts_load(tmp_path, protocol):
    obj = _sample()
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    assert _equal(safe_load(path), obj)
    assert _equal(safe_load(str(path)), obj)
    with open(path, "rb") as f:
        assert _equal(safe_load(f), obj)
    assert _equal(safe_load(io.BytesIO(path.read_bytes())), obj)


def test_numpy1_style_module_names():
    """Pickles written by numpy 1.x name numpy.core.multiarray (protocol 2 stores names as text)."""
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    data = pickle.dumps({"a": arr, "s": np.int64(4)}, protocol=2)
    old = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    out = safe_loads(old)
    assert np.array_equal(out["a"], arr) and out["s"] == 4


@pytest.mark.parametrize("cut", [1, 10, 0.5, -1])
def test_truncated_is_value_error(tmp_path, cut):
    data = pickle.dumps(_sample(), protocol=5)
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[:n])
    with pytest.raises(ValueError, match="cut.pkl") as e:
        safe_load(path)
    assert not isinstance(e.value, UnsafePickleError)


def test_garbage_is_value_error():
    for data in (b"", b"not a pickle at all", b"\x80\x05garbage", os.urandom(64)):
        with pytest.raises(ValueError):
            safe_loads(data)
