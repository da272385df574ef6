"""Restricted unpickler for dataset files.

``safe_load(path_or_file)`` reads pickles made only of numpy arrays / numpy
scalars / dtypes plus builtin containers (list, tuple, dict) and scalars
(None, bool, int, float, complex, str, bytes, bytearray). Any other global
(e.g. ``os.system`` in a malicious ``__reduce__``) is refused *before* it is
called, raising :class:`UnsafePickleError`. Object dtypes are refused too, and
so are sets (checked on the result, since protocol 4+ builds them without a global).
Corrupt or truncated input raises a plain ``ValueError``.
"""

import io
import os
import pickle

import numpy as np

__all__ = ["UnsafePickleError", "SafeUnpickler", "safe_load", "safe_loads"]


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle referenced a global that is not on the allow-list."""


def _np_attr(submodule, name):
    """numpy 2.x keeps internals in ``numpy._core``; numpy 1.x in ``numpy.core``."""
    for mod in ("_core", "core"):
        try:
            pkg = getattr(np, mod)
            return getattr(getattr(pkg, submodule), name)
        except AttributeError:
            continue
    raise AttributeError(f"numpy has no {submodule}.{name}")


def _checked_dtype(*args, **kwargs):
    dt = np.dtype(*args, **kwargs)
    if dt.hasobject:
        raise UnsafePickleError("refusing numpy object dtype in pickle (could hold arbitrary objects)")
    return dt


def _check_no_object(dtype):
    if np.dtype(dtype).hasobject:
        raise UnsafePickleError("refusing numpy object dtype in pickle (could hold arbitrary objects)")


def _checked_reconstruct(subtype, shape, dtype_code):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"refusing ndarray subclass {subtype!r} in pickle")
    return _np_attr("multiarray", "_reconstruct")(subtype, shape, dtype_code)


def _checked_frombuffer(buf, dtype, shape, order):
    _check_no_object(dtype)
    return _np_attr("numeric", "_frombuffer")(buf, dtype, shape, order)


def _checked_scalar(dtype, *args):
    _check_no_object(dtype)
    return _np_attr("multiarray", "scalar")(dtype, *args)


def _checked_codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("refusing _codecs.encode call with unexpected arguments")
    import codecs
    return codecs.encode(obj, encoding, errors)


_BUILTINS = {
    "list": list, "tuple": tuple, "dict": dict, "bytes": bytes, "bytearray": bytearray,
    "str": str, "int": int, "float": float, "complex": complex, "bool": bool,
}

_NUMPY = {}
for _mod in ("numpy.core", "numpy._core"):
    _NUMPY[(f"{_mod}.multiarray", "_reconstruct")] = _checked_reconstruct
    _NUMPY[(f"{_mod}.multiarray", "scalar")] = _checked_scalar
    _NUMPY[(f"{_mod}.numeric", "_frombuffer")] = _checked_frombuffer
_NUMPY[("numpy", "ndarray")] = np.ndarray
_NUMPY[("numpy", "dtype")] = _checked_dtype
_NUMPY[("_codecs", "encode")] = _checked_codecs_encode

ALLOWED_GLOBALS = dict(_NUMPY)
ALLOWED_GLOBALS.update({("builtins", k): v for k, v in _BUILTINS.items()})
ALLOWED_GLOBALS.update({("__builtin__", k): v for k, v in _BUILTINS.items()})


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only resolves allow-listed globals."""

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle global '{module}.{name}': only numpy arrays and builtin "
                "containers/scalars are allowed in dataset files") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing pickle with persistent ids")


_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.generic, np.dtype)


def _check_types(obj):
    """Refuse anything but allowed containers / leaves (e.g. sets, which need no global at protocol 4+)."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise UnsafePickleError("refusing numpy object array in pickle")
        elif type(o) in (list, tuple):
            stack.extend(o)
        elif type(o) is dict:
            stack.extend(o.keys())
            stack.extend(o.values())
        elif not isinstance(o, _LEAF_TYPES):
            raise UnsafePickleError(f"refusing object of type {type(o).__name__} in pickle: only numpy "
                                    "arrays and builtin lists/tuples/dicts/scalars are allowed")


def _load(f, name):
    try:
        obj = SafeUnpickler(f).load()
        _check_types(obj)
        return obj
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{name}: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # EOFError, UnpicklingError, struct errors, numpy errors...
        raise ValueError(f"{name}: corrupt or truncated pickle ({type(e).__name__}: {e})") from None


def safe_load(path_or_file):
    """Load a pickle from a path or binary file object using :class:`SafeUnpickler`."""
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        path = os.fspath(path_or_file)
        with open(path, "rb") as f:
            return _load(f, repr(path))
    return _load(path_or_file, repr(getattr(path_or_file, "name", "<file object>")))


def safe_loads(data):
    """Load a pickle from ``bytes``."""
    return _load(io.BytesIO(data), "<bytes>")
