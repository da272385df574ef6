"""Property-based tests: any arguments give either a valid task / batch or a clear ValueError,
never an IndexError, another exception or a hang."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pymeta.core.task import ClassificationTask
from pymeta.core.task_distribution import TaskDistribution

SETTINGS = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datasets(draw):
    sizes = draw(st.lists(st.integers(1, 12), min_size=1, max_size=8))
    y = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    perm = np.random.RandomState(draw(st.integers(0, 1000))).permutation(len(y))
    y = y[perm]
    X = np.arange(len(y), dtype=np.float32)[:, None]  # X[i] = i tells which row a sample is
    return X, y, sizes


@SETTINGS
@given(data=datasets(), K=st.integers(-2, 14), Q=st.integers(-2, 14), N=st.integers(-2, 10),
       split=st.one_of(st.floats(-1.0, 1.5, allow_nan=False), st.just(-1.0)), seed=st.integers(0, 100))
def test_classification_task_valid_or_value_error(data, K, Q, N, split, seed):
    X, y, sizes = data
    np.random.seed(seed)
    try:
        task = ClassificationTask(X, y, K, Q, N, split_train_test=split)
    except ValueError as e:
        assert str(e)
        return
    for _ in range(3):
        task.reset()
        tx, ty = task.get_train_set()
        qx, qy = task.get_test_set()
        n_classes = N if N > 0 else len(sizes)
        assert len(task.classes_ids) == n_classes
        assert set(ty.tolist()) <= set(range(n_classes)) and set(qy.tolist()) <= set(range(n_classes))
        train_rows, test_rows = set(tx[:, 0].astype(int)), set(qx[:, 0].astype(int))
        assert not train_rows & test_rows
        if K > 0:
            assert np.bincount(ty, minlength=n_classes).tolist() == [K] * n_classes
        if Q > 0:
            assert np.bincount(qy, minlength=n_classes).tolist() == [Q] * n_classes
        np.testing.assert_array_equal(y[tx[:, 0].astype(int)], np.asarray(task.classes_ids)[ty])


@SETTINGS
@given(data=datasets(), probs=st.lists(st.floats(-1.0, 5.0, allow_nan=False), min_size=0, max_size=4),
       batch=st.integers(-1, 6), replace=st.booleans(), once=st.booleans(), seed=st.integers(0, 100))
def test_task_distribution_valid_or_value_error(data, probs, batch, replace, once, seed):
    X, y, sizes = data
    np.random.seed(seed)
    try:
        task = ClassificationTask(X, y, 1, 1, 1, split_train_test=0.5)
    except ValueError:
        return  # some class has a single example: covered above
    tasks = [task] * max(1, len(probs))
    try:
        dist = TaskDistribution(tasks, probs or [1.0], batch_size=max(batch, 1),
                                sample_with_replacement=replace, use_classes_only_once=once)
        out = dist.sample_batch(batch if batch != 0 else None)
    except ValueError as e:
        assert str(e)
        return
    assert len(out) == (batch if batch > 0 else max(batch, 1))
    if replace and once:
        classes = [c for t in out for c in t.classes_ids]
        assert len(classes) == len(set(classes))


# ------------------------------------------------------------------------- the safe pickle loader

import pickle  # noqa: E402
import pickletools  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

from pymeta.data import DatasetFileError, safe_loads  # noqa: E402

# opcodes (with small arguments) that a hostile file is made of: containers, marks, memo, calls...
_OPCODE_BYTES = sorted({op.code.encode("latin-1") for op in pickletools.opcodes})
_FRAGMENTS = _OPCODE_BYTES + [b"K\x01", b"h\x00", b"q\x00", b"\x8c\x01a", b"C\x01x", b"J\xff\xff\xff\x7f",
                              b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x1f", b"G\x43\xe0\x00\x00\x00\x00\x00\x00",
                              b"\x8c\x08builtins\x8c\x04list\x93", b"\x8c\x05numpy\x8c\x05dtype\x93",
                              b"\x8c\x16numpy._core.multiarray\x8c\x0c_reconstruct\x93"]
LOADER_SECONDS = 20.0  # a hang, not a speed test: at most ~150,000 opcodes run, 0.3 s on an idle core, but
                       # tracemalloc slows them ~3x and CI machines may be loaded
LOADER_PEAK_BYTES = 24 * 2 ** 20  # (its size + 4 MiB) of objects, twice its size + 1 MiB of data, and slack


@st.composite
def pickle_like_bytes(draw):
    """Random bytes, or a protocol header followed by random opcodes (more of them reach the checks)."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=4096))
    body = b"".join(draw(st.lists(st.sampled_from(_FRAGMENTS), max_size=400)))
    repeat = draw(st.sampled_from([b"", b"]", b"}", b"(", b"\x85", b"\x94", b"N", b"h\x00"]))
    return b"\x80" + bytes([draw(st.integers(0, 5))]) + body + repeat * draw(st.integers(0, 400_000)) + b"."


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=pickle_like_bytes())
def test_safe_loader_on_random_bytes_is_a_value_or_one_line_error(data):
    """Any byte string: a value or a one-line DatasetFileError (a ValueError), within LOADER_SECONDS and
    LOADER_PEAK_BYTES of Python allocations (tracemalloc)."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        safe_loads(data)
    except DatasetFileError as e:
        msg = str(e)
        assert msg.startswith("<bytes>: ") and "\n" not in msg and len(msg) < 700, msg
    finally:
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert seconds < LOADER_SECONDS, (seconds, len(data))
    assert peak < LOADER_PEAK_BYTES, (peak, len(data))


def test_the_stock_unpickler_would_exceed_the_budget():
    """The budget above means something: a 400,000-opcode flood of the kind drawn there makes the stock
    unpickler allocate more than the safe loader may (so a regression in the charges would be caught)."""
    data = b"\x80\x04(" + b"]" * 400_000 + b"l."
    tracemalloc.start()
    try:
        pickle.loads(data)
        stock = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stock > LOADER_PEAK_BYTES
    with pytest.raises(DatasetFileError, match="objects would take"):
        safe_loads(data)
