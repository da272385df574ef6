"""Restricted, bounded unpickler for dataset files.

``safe_load(path_or_file)`` reads pickles made only of numpy arrays / numpy scalars / dtypes plus
builtin containers (list, tuple, dict) and scalars (None, bool, int, float, complex, str, bytes,
bytearray). Any other global (e.g. ``os.system`` in a malicious ``__reduce__``) is refused *before*
it is called, and so are object dtypes and sets.

Loading is bounded by the file, so a small hostile file can neither hang the loader nor fill the
memory: time and memory grow at most linearly with the file, with small constants.

* every length declared in the stream (strings, bytes, frames) must fit in the bytes left in the
  file, and is checked before anything is allocated for it;
* a numpy array (or scalar) may not declare more data than its file holds, and its payload must be
  exactly shape x itemsize bytes; no array may exceed ``max_bytes`` (default :data:`MAX_BYTES`);
* everything built from the file's data by the allowed constructors (arrays, scalars, bytes, copies)
  adds up to at most twice the file's size plus 1 MiB, so data referenced many times through the
  pickle memo cannot be multiplied;
* the objects themselves are counted too: every opcode is charged, before it runs where it can be,
  the memory it makes the unpickler hold (a stack slot, a memo entry, a list, dict or tuple with what
  checking it later costs, an int, a string's overhead, an array's header...), and all of that adds up
  to at most the file's size plus :data:`OBJECT_SLACK_BYTES` (4 MiB); each opcode is charged at least
  32 bytes, so at most (file size + 4 MiB) / 32 opcodes run. A dataset is a few large arrays
  and names; a file of millions of tiny objects (a flood of empty lists, dicts, nested 1-tuples,
  memo entries, marks or empty arrays, each one or a few bytes in the file but 50-200 bytes in
  memory) is refused within a few MiB, in about a second; each call (an array, scalar, dtype) is
  charged at least 512 bytes, for numpy's work in making it;
* only the calls numpy and pickle themselves write are accepted (``bytes(10**9)``, ``numpy.ndarray``
  called directly, ``numpy.dtype`` built from a list spec, ``__setstate__`` on anything but a numpy
  array or dtype... are refused); a dtype rebuilt by ``__setstate__`` must be consistent (fields and
  sub-arrays inside its item size), so an array never reads outside its memory;
* dict keys are strings (whose hashes are randomised per process, so a file cannot make them
  collide) or small scalars (int of at most 64 bits, float, complex, bool, None, bytes of at most
  256 bytes, numeric numpy scalars) or flat tuples of at most 16 of these; two such keys of one dict
  with the same hash but different values are refused as soon as the second arrives (a file of keys
  that all hash alike, e.g. ``i * (2**61 - 1)``, made building the dict quadratic); a reference cycle
  (a list or dict containing itself) is refused; shared sub-objects are checked once, so checking is
  linear in the file even for a DAG that would be exponential if expanded.

Refused content raises :class:`UnsafePickleError`; corrupt or truncated input, and running out of
memory, raise :class:`DatasetFileError`. Both are ``ValueError`` subclasses whose one-line message
names the file.
"""

import codecs
import io
import itertools
import math
import os
import pickle
import pickletools
import stat
import sys

import numpy as np

__all__ = ["DatasetFileError", "UnsafePickleError", "SafeUnpickler", "safe_load", "safe_loads", "MAX_BYTES"]

MAX_BYTES = 64 * 2 ** 30
"""Cap on any single array and on all the data loaded from one dataset file (64 GiB)."""

SLACK_BYTES = 2 ** 20
"""What the objects built while unpickling may add up to beyond twice the file's size (1 MiB)."""

OBJECT_SLACK_BYTES = 4 * 2 ** 20
"""What the objects built while unpickling (their overhead, beyond the data) may take beyond the file's
size (4 MiB)."""

MAX_DTYPE_DEPTH = 32
MAX_KEY_ITEMS = 16
MAX_KEY_BYTES = 256


class DatasetFileError(ValueError):
    """A dataset file is corrupt, truncated, too large or not laid out as expected (one-line message)."""


class UnsafePickleError(DatasetFileError, pickle.UnpicklingError):
    """A pickle holds something the safe loader refuses (a global not on the allow-list, an object
    dtype, a set, a reference cycle, more data than its file can hold...)."""


def one_line(text, limit=300):
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _np_attr(submodule, name):
    """numpy 2.x keeps internals in ``numpy._core``; numpy 1.x in ``numpy.core``."""
    for mod in ("_core", "core"):
        try:
            pkg = getattr(np, mod)
            return getattr(getattr(pkg, submodule), name)
        except AttributeError:
            continue
    raise AttributeError(f"numpy has no {submodule}.{name}")


_reconstruct = _np_attr("multiarray", "_reconstruct")
_scalar = _np_attr("multiarray", "scalar")
_frombuffer = _np_attr("numeric", "_frombuffer")

ALLOWED_GLOBALS = {}
for _mod in ("numpy.core", "numpy._core"):
    ALLOWED_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _reconstruct
    ALLOWED_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _scalar
    ALLOWED_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _frombuffer
ALLOWED_GLOBALS[("numpy", "ndarray")] = np.ndarray
ALLOWED_GLOBALS[("numpy", "dtype")] = np.dtype
ALLOWED_GLOBALS[("_codecs", "encode")] = codecs.encode
for _name in ("list", "tuple", "dict", "bytes", "bytearray", "str", "int", "float", "complex", "bool"):
    ALLOWED_GLOBALS[("builtins", _name)] = ALLOWED_GLOBALS[("__builtin__", _name)] = getattr(
        __import__("builtins"), _name)

_LEAF_TYPES = (str, bytes, bytearray, int, float, complex, bool, type(None), np.generic, np.dtype)
_KEY_LEAVES = (str, bytes, int, float, complex, bool, type(None), np.generic)
_SCALAR_TYPES = frozenset((str, bytes, bytearray, int, float, complex, bool, type(None)))


# ----------------------------------------------------------------------------- checks

def _check_dtype(dt):
    """Refuse object dtypes and dtypes whose fields / sub-array do not fit in their item size (a
    hostile ``__setstate__`` can build those; numpy would then read outside the array's memory)."""
    if not isinstance(dt, np.dtype):
        raise UnsafePickleError(f"expected a numpy dtype, got {type(dt).__name__}")
    stack = [(dt, 0)]
    while stack:
        d, depth = stack.pop()
        if depth > MAX_DTYPE_DEPTH:
            raise UnsafePickleError(f"refusing numpy dtype nested more than {MAX_DTYPE_DEPTH} levels deep")
        if d.hasobject or d.kind == "O":
            raise UnsafePickleError("refusing numpy object dtype in pickle (could hold arbitrary objects)")
        if d.fields is not None:
            names = d.names or ()
            if any(n not in d.fields for n in names):
                raise UnsafePickleError("refusing inconsistent numpy structured dtype (names without fields)")
            for value in d.fields.values():
                sub, offset = value[0], value[1]
                if not isinstance(sub, np.dtype) or not isinstance(offset, int) or offset < 0 \
                        or offset + sub.itemsize > d.itemsize:
                    raise UnsafePickleError("refusing numpy structured dtype with a field outside its item size")
                stack.append((sub, depth + 1))
        elif d.subdtype is not None:
            base, shape = d.subdtype
            if base.itemsize * math.prod(shape) != d.itemsize:
                raise UnsafePickleError("refusing numpy sub-array dtype whose shape does not match its item size")
            stack.append((base, depth + 1))
        elif np.dtype(d.str).itemsize != d.itemsize:
            raise UnsafePickleError(f"refusing numpy dtype {d.str} with item size {d.itemsize}")


def _check_shape(shape):
    if not isinstance(shape, (tuple, list)) or len(shape) > 64:
        raise UnsafePickleError("numpy array shape must be a tuple of at most 64 integers")
    dims = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < 2 ** 62:
            raise UnsafePickleError("numpy array shape must be a tuple of non-negative integers")
        dims.append(int(s))
    return tuple(dims)


def _size(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def _check_key_leaf(k):
    t = type(k)
    if t is str or t is bool or t is float or t is complex or k is None:
        return
    if t is int:
        if not -2 ** 63 <= k < 2 ** 64:
            raise UnsafePickleError("refusing a dict key that is an int of more than 64 bits")
        return
    if t is bytes:
        if len(k) > MAX_KEY_BYTES:
            raise UnsafePickleError(f"refusing a dict key of {len(k):,} bytes (at most {MAX_KEY_BYTES} unless "
                                    "it is a str)")
        return
    if isinstance(k, np.generic) and k.dtype.kind in "biufc":
        return
    raise UnsafePickleError(f"refusing dict key of type {t.__name__}: keys must be strings, small scalars or "
                            f"flat tuples of at most {MAX_KEY_ITEMS} of them")


def _check_key(key):
    """Dict keys: str; or a small scalar, or a flat tuple of at most MAX_KEY_ITEMS of them (their
    hashes are not cached, so a big or nested key would be hashed again at every insertion)."""
    if type(key) is tuple:
        if len(key) > MAX_KEY_ITEMS:
            raise UnsafePickleError(f"refusing a dict key of more than {MAX_KEY_ITEMS} items")
        for k in key:
            if type(k) is tuple:
                raise UnsafePickleError("refusing a dict key that is a nested tuple")
            _check_key_leaf(k)
    else:
        _check_key_leaf(key)


def _check_types(obj):
    """Refuse anything but allowed containers / leaves (e.g. sets, which need no global at protocol 4+),
    and reference cycles. Each container is visited once (a visited set keyed by id), so a DAG of shared
    sub-objects is checked in time linear in its number of distinct objects; no recursion, so any depth."""
    containers = (list, tuple, dict)
    done, on_path, path = set(), set(), []
    iterators = [iter((obj,))]
    while iterators:
        for o in iterators[-1]:
            t = type(o)
            if t in containers:
                i = id(o)
                if i in done:
                    continue
                if i in on_path:
                    raise UnsafePickleError(f"refusing pickle with a reference cycle (a {t.__name__} that "
                                            "contains itself)")
                on_path.add(i)
                path.append(o)
                iterators.append(iter(o) if t is not dict else itertools.chain(o.keys(), o.values()))
                break
            if t in _SCALAR_TYPES:
                continue
            if isinstance(o, (np.ndarray, np.generic)):
                _check_dtype(o.dtype)
            elif not isinstance(o, _LEAF_TYPES):
                raise UnsafePickleError(f"refusing object of type {t.__name__} in pickle: only numpy "
                                        "arrays and builtin lists/tuples/dicts/scalars are allowed")
        else:
            iterators.pop()
            if path:
                i = id(path.pop())
                on_path.discard(i)
                done.add(i)


# ----------------------------------------------------------------------------- bounded input

class _BoundedReader:
    """File reader that refuses to read past ``limit`` bytes *before* asking for them."""

    def __init__(self, f, limit):
        self._f = f
        self.remaining = limit

    def _take(self, n):
        if n > self.remaining:
            raise DatasetFileError(f"truncated or corrupt pickle: {n:,} bytes declared, only "
                                   f"{self.remaining:,} left in the file")
        self.remaining -= n

    def read(self, n):
        self._take(n)
        data = self._f.read(n)
        if len(data) != n:
            raise DatasetFileError("truncated pickle: the file ended early")
        return data

    def readinto(self, buf):
        """Fill ``buf`` (already checked with ``_take``) from the file."""
        view, done = memoryview(buf).cast("B"), 0
        readinto = getattr(self._f, "readinto", None)
        while done < len(view):
            if readinto is not None:
                got = readinto(view[done:])
            else:
                chunk = self._f.read(len(view) - done)
                got = len(chunk)
                view[done:done + got] = chunk
            if not got:
                raise DatasetFileError("truncated pickle: the file ended early")
            done += got

    def readline(self):
        line = self._f.readline(self.remaining)
        self.remaining -= len(line)
        return line


class _Budget:
    """Memory the objects built while unpickling may take.

    Data (arrays, scalars, bytes, copies): each array at most the file's size (and ``max_bytes``), all of
    them at most twice the file's size + SLACK_BYTES. Objects (their overhead beyond the data: stack and
    memo entries, containers, ints, strings' headers, arrays' headers...): at most the file's size +
    OBJECT_SLACK_BYTES."""

    def __init__(self, file_bytes, max_bytes):
        self.file_bytes = file_bytes
        self.max_bytes = max_bytes
        self.total = min(2 * file_bytes + SLACK_BYTES, max_bytes)
        self.used = 0
        self.objects_total = file_bytes + OBJECT_SLACK_BYTES
        self.objects_used = 0

    def array(self, nbytes, what):
        if nbytes > self.file_bytes:
            raise UnsafePickleError(f"refusing {what} declaring {nbytes:,} bytes of data: the file holds "
                                    f"only {self.file_bytes:,} bytes")
        if nbytes > self.max_bytes:
            raise UnsafePickleError(f"refusing {what} of {nbytes:,} bytes: more than the cap of "
                                    f"{self.max_bytes:,} bytes")
        self.charge(nbytes, what)

    def charge(self, nbytes, what):
        if self.used + nbytes > self.total:
            raise UnsafePickleError(
                f"refusing {what}: the data built from this pickle would exceed {self.total:,} bytes "
                f"(twice its {self.file_bytes:,} bytes + 1 MiB, or the cap; data referenced many times?)")
        self.used += nbytes

    def objects(self, nbytes, what):
        self.objects_used += nbytes
        if self.objects_used > self.objects_total:
            raise UnsafePickleError(
                f"refusing pickle: its Python objects would take more than {self.objects_total:,} bytes of "
                f"memory beyond their data (its {self.file_bytes:,} bytes + 4 MiB) at {what}; a dataset file "
                "holds numpy arrays and names, not millions of small objects (empty lists, dicts, tuples, "
                "memo entries, marks, tiny arrays)")


# what the unpickler holds for each object (CPython, 64 bits; sys.getsizeof includes the GC header)
SLOT = 8                                    # a stack, list or tuple slot
OPCODE_COST = 32                            # the least any opcode is charged: its slot and the work of running
                                            # it, so at most (file + 4 MiB) / 32 opcodes run
LIST_COST = sys.getsizeof([])
DICT_COST = sys.getsizeof({})
CHECK_COST = 80                             # checking a container: its id in a set, an iterator...
MEMO_COST = 72                              # a memo entry: its int key and dict entry
ARRAY_COST = sys.getsizeof(np.empty(0)) + 8
DTYPE_COST = 2 * sys.getsizeof(np.dtype("u1"))
UNBUILT_COST = MEMO_COST                    # an entry of SafeUnpickler._unbuilt
CALL_COST = 512                             # the least a call (an array, scalar, dtype...) is charged: numpy's
                                            # work in making it costs what hundreds of opcodes do
KEY_COST = MEMO_COST                        # an entry of a dict's table of non-str key hashes


def _excess(obj):
    """What a str / bytes / int object built from the file takes beyond the bytes it was read from
    (at least its header; a str of astral characters 4 bytes per character)."""
    if type(obj) in (str, bytes, bytearray):
        return sys.getsizeof(obj) - len(obj)
    return sys.getsizeof(obj)


_U = pickle._Unpickler  # the pure-Python unpickler: every opcode below can be checked before it acts


class SafeUnpickler(_U):
    """Unpickler that only resolves allow-listed globals, only makes the calls numpy writes, and keeps
    every size within what its file can hold (module docstring). ``load()`` returns the checked object.

    ``file``: binary file object; ``limit``: bytes the pickle may span from the current position
    (default: up to the end of a seekable file); ``max_bytes``: cap on the data (default MAX_BYTES).
    """

    dispatch = dict(_U.dispatch)

    def __init__(self, file, limit=None, max_bytes=None):
        cap = MAX_BYTES if max_bytes is None else int(max_bytes)
        if limit is None:
            limit = _bytes_left(file)
        if limit is None:  # a pipe or socket: read it whole (up to the cap) to know its size
            data = _read_stream(file, cap)
            file, limit = io.BytesIO(data), len(data)
        self._reader = _BoundedReader(file, limit)
        self._budget = _Budget(limit, cap)
        # arrays made by _reconstruct and dtypes made by numpy.dtype() that BUILD may still set, once
        # (id -> object, which keeps the id valid); a dtype leaves this as soon as anything uses it,
        # so BUILD can never change the dtype of an existing array
        self._unbuilt = {}
        self._key_hashes = {}  # id(dict) -> (dict, {hash: key}) for the non-str keys of dicts being built
        super().__init__(self._reader)

    def _fresh(self, obj):
        self._budget.objects(UNBUILT_COST, "a numpy array or dtype")
        self._unbuilt[id(obj)] = obj
        return obj

    def _seal(self, obj):
        if self._unbuilt.get(id(obj)) is obj:
            del self._unbuilt[id(obj)]

    def load(self):
        obj = super().load()
        _check_types(obj)
        return obj

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise UnsafePickleError(
                f"refusing to unpickle global '{one_line(module, 80)}.{one_line(name, 80)}': only numpy arrays "
                "and builtin containers/scalars are allowed in dataset files") from None

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing pickle with persistent ids")

    # --- opcodes that allocate a declared size before reading it
    def load_bytearray8(self):
        # protocol 5's array payloads: read straight into the bytearray once its size is checked
        n = int.from_bytes(self.read(8), "little")
        frame = self._unframer.current_frame
        if frame is not None:
            data = frame.read(n)
            if data or n == 0:
                if len(data) < n:
                    raise DatasetFileError("corrupt pickle: data runs past the end of its frame")
                self.append(bytearray(data))
                return
            self._unframer.current_frame = None
        self._reader._take(n)  # refuses n beyond the bytes left in the file, before allocating
        buf = bytearray(n)
        self._reader.readinto(buf)
        self.append(buf)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_next_buffer(self):
        raise UnsafePickleError("refusing pickle with out-of-band buffers")
    dispatch[pickle.NEXT_BUFFER[0]] = load_next_buffer

    # --- sets: refused (they need no global at protocol 4+ and hash their items)
    def load_set(self):
        raise UnsafePickleError("refusing object of type set in pickle: only numpy arrays and builtin "
                                "lists/tuples/dicts/scalars are allowed")
    dispatch[pickle.EMPTY_SET[0]] = load_set
    dispatch[pickle.FROZENSET[0]] = load_set
    dispatch[pickle.ADDITEMS[0]] = load_set

    # --- containers: only lists are appended to, only dicts get items, keys are small and do not collide
    def _add_keys(self, d, keys):
        """Check keys about to go into dict d: small, and no two non-str ones with one hash but unequal
        values (colliding keys make inserting quadratic); str hashes are randomised per process."""
        table = None
        for k in keys:
            _check_key(k)
            if type(k) is str:
                continue
            if table is None:
                entry = self._key_hashes.get(id(d))
                if entry is None or entry[0] is not d:
                    entry = self._key_hashes[id(d)] = (d, {})
                table = entry[1]
            h = hash(k)
            prior = table.get(h, _MISSING)
            if prior is _MISSING:
                table[h] = k
                self._budget.objects(KEY_COST, "a dict key")
            elif prior is not k and not prior == k:
                raise UnsafePickleError(f"refusing dict keys {one_line(repr(prior), 40)} and {one_line(repr(k), 40)}"
                                        " of one dict, which have the same hash (colliding keys make loading "
                                        "take quadratic time)")

    def _grow(self, d, update):
        before = sys.getsizeof(d)
        update()
        self._budget.objects(max(sys.getsizeof(d) - before, 0), "dict items")

    def load_dict(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise DatasetFileError("corrupt pickle: odd number of items for a dict")
        d = {}
        self._add_keys(d, items[0::2])
        self._grow(d, lambda: d.update(zip(items[0::2], items[1::2])))
        self.append(d)
    dispatch[pickle.DICT[0]] = load_dict

    def _target(self, kind):
        if not self.stack:
            raise DatasetFileError("corrupt pickle: empty stack")
        target = self.stack[-1]
        if type(target) is not kind:
            raise UnsafePickleError(f"refusing to add items to a {type(target).__name__} (only to a "
                                    f"{kind.__name__})")
        return target

    def load_append(self):
        value = self.stack.pop()
        self._target(list).append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        target = self._target(list)
        self._budget.objects(SLOT * len(items), "list items")
        target.extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        d = self._target(dict)
        self._add_keys(d, (key,))
        self._grow(d, lambda: d.__setitem__(key, value))
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        if len(items) % 2:
            raise DatasetFileError("corrupt pickle: odd number of items for a dict")
        d = self._target(dict)
        self._add_keys(d, items[0::2])
        self._grow(d, lambda: d.update(zip(items[0::2], items[1::2])))
    dispatch[pickle.SETITEMS[0]] = load_setitems

    # --- calls: every call opcode goes through _call
    def load_reduce(self):
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._call(cls, args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if kwargs:
            raise UnsafePickleError("refusing constructor call with keyword arguments")
        self.append(self._call(cls, args))
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass, args):
        self.append(self._call(klass, tuple(args)))

    def _call(self, func, args):
        if type(args) is not tuple:
            raise DatasetFileError("corrupt pickle: call arguments are not a tuple")
        handler = _CALLS.get(id(func))
        if handler is None or handler[0] is not func:
            raise UnsafePickleError(f"refusing to call an object of type {type(func).__name__} in pickle")
        out = handler[1](self, *args)
        t = type(out)
        cost = ARRAY_COST if t is np.ndarray else DTYPE_COST if isinstance(out, np.dtype) \
            else LIST_COST + CHECK_COST if t is list else DICT_COST + CHECK_COST if t is dict \
            else CHECK_COST if t is tuple else _excess(out)
        self._budget.objects(max(cost, CALL_COST), f"a {t.__name__} built by a call")
        return out

    # --- BUILD: only once on an array fresh from _reconstruct or a dtype fresh from numpy.dtype()
    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if self._unbuilt.get(id(inst)) is not inst:
            raise UnsafePickleError(f"refusing to set the state of a {type(inst).__name__} in pickle (only "
                                    "of a numpy array or dtype just made, once)")
        del self._unbuilt[id(inst)]
        if isinstance(inst, np.ndarray):
            _check_array_state(self, state)
            inst.__setstate__(state)
        else:
            if type(state) is not tuple or not 8 <= len(state) <= 9:
                raise UnsafePickleError("refusing numpy dtype state of unexpected form")
            for part in (state[2], *(state[4].values() if isinstance(state[4], dict) else ())):
                if isinstance(part, tuple) and part:
                    self._seal(part[0])
            inst.__setstate__(state)
            _check_dtype(inst)
    dispatch[pickle.BUILD[0]] = load_build

    def load_readonly_buffer(self):
        raise UnsafePickleError("refusing pickle with out-of-band buffers")
    dispatch[pickle.READONLY_BUFFER[0]] = load_readonly_buffer


_MISSING = object()


def _charged(fn, name, before, after):
    """Opcode handler fn, charging the objects budget `before` bytes before it runs (what it is about to
    allocate) and after(self) bytes after (what only the result tells)."""
    what = f"opcode {name}"

    def run(self):
        self._budget.objects(before, what)
        fn(self)
        if after is not None:
            self._budget.objects(after(self), what)
    run.__name__ = getattr(fn, "__name__", name)
    return run


def _charge_opcodes(dispatch):
    """Wrap every opcode handler of ``dispatch`` with what it costs (each at least OPCODE_COST, which
    also bounds the work: a file of one-byte opcodes that allocate nothing, POP or NONE, is refused after
    (its size + 4 MiB) / 32 of them)."""
    top = lambda self: _excess(self.stack[-1])  # noqa: E731
    tuple_ = lambda n: sys.getsizeof((None,) * n) + CHECK_COST  # noqa: E731
    before = {
        "MARK": LIST_COST + SLOT, "EMPTY_LIST": LIST_COST + CHECK_COST + SLOT,
        "EMPTY_DICT": DICT_COST + CHECK_COST + SLOT, "LIST": CHECK_COST,
        "TUPLE1": tuple_(1), "TUPLE2": tuple_(2), "TUPLE3": tuple_(3),
        "MEMOIZE": MEMO_COST, "PUT": MEMO_COST, "BINPUT": MEMO_COST, "LONG_BINPUT": MEMO_COST,
        "BININT": SLOT + sys.getsizeof(2 ** 31), "BININT2": SLOT + sys.getsizeof(2 ** 15),
        "BINFLOAT": SLOT + sys.getsizeof(1.0), "FLOAT": SLOT + sys.getsizeof(1.0),
    }
    after = {name: top for name in ("INT", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING", "SHORT_BINSTRING",
                                    "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
                                    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8")}
    after["TUPLE"] = lambda self: tuple_(len(self.stack[-1]))
    names = {op.code.encode("latin-1")[0]: op.name for op in pickletools.opcodes}
    for code, fn in list(dispatch.items()):
        name = names.get(code, f"0x{code:02x}")
        dispatch[code] = _charged(fn, name, max(before.get(name, 0), OPCODE_COST), after.get(name))


_charge_opcodes(SafeUnpickler.dispatch)


def _check_array_state(u, state):
    if type(state) is not tuple or len(state) not in (4, 5):
        raise UnsafePickleError("refusing numpy array state of unexpected form")
    shape, dtype, _, data = state[-4:]
    shape = _check_shape(shape)
    _check_dtype(dtype)
    u._seal(dtype)
    nbytes = _size(shape) * dtype.itemsize
    if not isinstance(data, (bytes, str)):
        raise UnsafePickleError(f"refusing numpy array whose data is a {type(data).__name__}, not bytes")
    if len(data) != nbytes:
        raise DatasetFileError(f"corrupt pickle: a numpy array of shape {shape} and dtype {dtype.str} needs "
                               f"{nbytes:,} bytes, its data has {len(data):,}")
    u._budget.array(max(nbytes, _size(shape)), f"numpy array of shape {shape}")


# ----------------------------------------------------------------------------- the allowed calls

def _call_reconstruct(u, subtype=None, shape=None, dtype_code=None, *rest):
    if subtype is not np.ndarray or rest:
        raise UnsafePickleError(f"refusing ndarray subclass {type(subtype).__name__} / arguments in pickle")
    shape = _check_shape(shape)
    if not isinstance(dtype_code, (bytes, str, np.dtype)):
        raise UnsafePickleError("refusing numpy _reconstruct with an unexpected dtype")
    dt = np.dtype(dtype_code)
    _check_dtype(dt)
    u._seal(dt)
    u._budget.array(max(_size(shape) * dt.itemsize, _size(shape)), f"numpy array of shape {shape}")
    return u._fresh(_reconstruct(np.ndarray, shape, dt))


def _call_frombuffer(u, buf=None, dtype=None, shape=None, order="C", *rest):
    if not isinstance(buf, (bytes, bytearray)) or rest or order not in ("C", "F"):
        raise UnsafePickleError("refusing numpy _frombuffer with unexpected arguments")
    _check_dtype(dtype)
    u._seal(dtype)
    shape = _check_shape(shape)
    nbytes = _size(shape) * dtype.itemsize
    if dtype.itemsize == 0 or len(buf) != nbytes:
        raise DatasetFileError(f"corrupt pickle: a numpy array of shape {shape} and dtype {dtype.str} needs "
                               f"{nbytes:,} bytes, its buffer has {len(buf):,}")
    u._budget.array(nbytes, f"numpy array of shape {shape}")
    return _frombuffer(buf, dtype, shape, order)


def _call_scalar(u, dtype=None, obj=None, *rest):
    _check_dtype(dtype)
    u._seal(dtype)
    if rest or not isinstance(obj, (bytes, str)) or len(obj) < dtype.itemsize:
        raise UnsafePickleError("refusing numpy scalar without its data")
    u._budget.array(dtype.itemsize, f"numpy scalar of dtype {dtype.str}")
    return _scalar(dtype, obj)


def _call_dtype(u, obj=None, align=False, copy=True, *rest):
    if not isinstance(obj, (str, bytes)) or rest or not isinstance(align, (bool, int)):
        raise UnsafePickleError(f"refusing numpy dtype built from a {type(obj).__name__} (expected a type string)")
    dt = np.dtype(obj, bool(align), True)  # always a copy: BUILD must never change numpy's shared dtypes
    _check_dtype(dt)
    return u._fresh(dt)


def _call_codecs_encode(u, obj=None, encoding="utf-8", errors="strict", *rest):
    # Protocol 0-2 pickles store bytes as _codecs.encode(str, 'latin1').
    if rest or not isinstance(obj, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8") \
            or errors != "strict":
        raise UnsafePickleError("refusing _codecs.encode call with unexpected arguments")
    u._budget.charge(len(obj) * (1 if encoding.startswith("latin") else 4), "encoded string")
    return codecs.encode(obj, encoding, errors)


def _bytes_like(cls):
    def call(u, *args):
        if not args:
            return cls()
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            u._budget.charge(len(args[0]), cls.__name__)
            return cls(args[0])
        if 2 <= len(args) <= 3 and all(isinstance(a, str) for a in args):
            u._budget.charge(4 * len(args[0]), cls.__name__)
            return cls(*args)
        raise UnsafePickleError(f"refusing {cls.__name__}() call with unexpected arguments (e.g. a size)")
    return call


def _empty_only(cls):
    def call(u, *args):
        if args:
            raise UnsafePickleError(f"refusing {cls.__name__}() call with arguments")
        return cls()
    return call


def _scalar_type(cls):
    def call(u, *args):
        if not args:
            return cls()
        if len(args) == 1 and isinstance(args[0], (str, bytes, int, float, bool)):
            if isinstance(args[0], (str, bytes)):
                u._budget.charge(4 * len(args[0]) + 3, cls.__name__)
            return cls(args[0])
        raise UnsafePickleError(f"refusing {cls.__name__}() call with unexpected arguments")
    return call


def _call_complex(u, *args):
    if len(args) > 2 or not all(isinstance(a, (int, float)) for a in args):
        raise UnsafePickleError("refusing complex() call with unexpected arguments")
    return complex(*args)


def _call_ndarray(u, *args):
    raise UnsafePickleError("refusing to call numpy.ndarray directly: arrays must come in numpy's own "
                            "pickle format")


_CALLS = {}
for _f, _h in ((_reconstruct, _call_reconstruct), (_frombuffer, _call_frombuffer), (_scalar, _call_scalar),
               (np.dtype, _call_dtype), (codecs.encode, _call_codecs_encode), (np.ndarray, _call_ndarray),
               (bytes, _bytes_like(bytes)), (bytearray, _bytes_like(bytearray)), (list, _empty_only(list)),
               (tuple, _empty_only(tuple)), (dict, _empty_only(dict)), (str, _scalar_type(str)),
               (int, _scalar_type(int)), (float, _scalar_type(float)), (bool, _scalar_type(bool)),
               (complex, _call_complex)):
    _CALLS[id(_f)] = (_f, _h)


# ----------------------------------------------------------------------------- entry points

def _bytes_left(f):
    """Bytes from the current position to the end of a seekable binary file (None if not seekable)."""
    try:
        if isinstance(f, io.BytesIO):
            return max(len(f.getbuffer()) - f.tell(), 0)
        if isinstance(f, (io.BufferedReader, io.FileIO)):
            st = os.fstat(f.fileno())
            return max(st.st_size - f.tell(), 0) if stat.S_ISREG(st.st_mode) else None
        if not f.seekable():
            return None
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return max(end - pos, 0)
    except (AttributeError, OSError, ValueError):
        return None


def _read_stream(f, cap):
    chunks, n = [], 0
    while True:
        chunk = f.read(2 ** 20)
        if not chunk:
            return b"".join(chunks)
        n += len(chunk)
        if n > cap:
            raise UnsafePickleError(f"refusing a stream of more than the cap of {cap:,} bytes")
        chunks.append(chunk)


def _load(f, name, max_bytes):
    try:
        return SafeUnpickler(f, max_bytes=max_bytes).load()
    except DatasetFileError as e:
        raise type(e)(f"{name}: {one_line(e)}") from None
    except MemoryError:
        raise DatasetFileError(f"{name}: out of memory while loading the pickle") from None
    except RecursionError:
        raise UnsafePickleError(f"{name}: refusing pickle nested too deeply") from None
    except Exception as e:  # EOFError, UnpicklingError, struct errors, numpy errors...
        raise DatasetFileError(f"{name}: corrupt or truncated pickle ({type(e).__name__}: {one_line(e, 200)})") \
            from None


def safe_load(path_or_file, max_bytes=None):
    """Load a pickle from a path or binary file object with :class:`SafeUnpickler` (module docstring).

    ``max_bytes``: cap on any array and on all loaded data (default :data:`MAX_BYTES`).
    """
    if isinstance(path_or_file, (str, bytes, os.PathLike)):
        path = os.fspath(path_or_file)
        name = repr(path if isinstance(path, str) else os.fsdecode(path))
        try:
            f = open(path, "rb")
        except IsADirectoryError:
            raise DatasetFileError(f"{name}: is a directory, not a pickle file") from None
        with f:
            return _load(f, name, max_bytes)
    return _load(path_or_file, repr(getattr(path_or_file, "name", "<file object>")), max_bytes)


def safe_loads(data, max_bytes=None):
    """Load a pickle from ``bytes``."""
    return _load(io.BytesIO(data), "<bytes>", max_bytes)


del _f, _h, _mod, _name
