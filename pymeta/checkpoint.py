"""Checkpoints of a meta-training run: everything needed to continue it exactly.

A checkpoint (`ckpt-<iteration>.h5`, written with h5py, atomically) holds the meta-parameters, the
model's non-trainable state, the outer optimizer's variables, the inner optimizer's state when it is
kept across tasks, the iteration, the validation history, the run's configuration and the state of
every random generator (numpy's global one, Python's `random`, TensorFlow's global generator), and
the sha256 of all that (attribute `sha256`). The last `keep` checkpoints are kept (never fewer than
one). `checkpoint_problem` says why a checkpoint cannot be trusted (unreadable or truncated, checksum
mismatch, non-finite values): a resuming run then falls back to an older one.
"""

import glob
import hashlib
import json
import os
import random
import re
from typing import Any, Dict, List, Optional, Tuple

import h5py
import numpy as np
import tensorflow as tf

from pymeta.atomic import atomic_write
from pymeta.data.h5_storage import first_storage_problem

_NAME = re.compile(r"ckpt-(\d+)\.h5$")


def kept_inner_state(metalearner):
    """The `optim.InnerStateVariables` `metalearner` keeps across tasks, or None (the one place that
    knows where a meta-learner holds it; checkpoints and model files store it)."""
    return metalearner.inner_state


def all_finite(arrays):
    """True if every floating-point array of `arrays` holds finite values only."""
    for a in arrays:
        a = np.asarray(a)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            return False
    return True


def checkpoint_files(directory):
    """Checkpoint paths in `directory`, oldest first."""
    found = [(int(_NAME.search(p).group(1)), p) for p in glob.glob(os.path.join(directory, "ckpt-*.h5"))
             if _NAME.search(p)]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory):
    files = checkpoint_files(directory)
    return files[-1] if files else None


def _rng_state():
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"numpy_keys": np.asarray(keys, np.uint32),
            "numpy_meta": np.asarray([pos, has_gauss], np.int64), "numpy_gauss": np.float64(gauss),
            "python_internal": np.asarray(internal, np.int64),
            "python_meta": json.dumps([version, gauss_next]),
            "tf_global": tf.random.get_global_generator().state.numpy()}


def _set_rng_state(g):
    pos, has_gauss = (int(v) for v in g["numpy_meta"][()])
    np.random.set_state(("MT19937", g["numpy_keys"][()], pos, has_gauss, float(g["numpy_gauss"][()])))
    version, gauss_next = json.loads(g.attrs["python_meta"])
    random.setstate((version, tuple(int(v) for v in g["python_internal"][()]), gauss_next))
    tf.random.get_global_generator().reset(g["tf_global"][()])


def _groups(metalearner):
    """(name, variables) of everything a checkpoint stores besides the random generators."""
    groups = [("theta", metalearner.meta_variables),
              ("model_state", metalearner.model.non_trainable_variables),
              ("optimizer", metalearner.optimizer.variables)]
    kept = kept_inner_state(metalearner)
    if kept is not None:
        groups.append(("inner_optimizer_state", kept.variables))
    return groups


def save_checkpoint(directory, iteration, metalearner, history, config, keep=3, seconds=None):
    """Write `ckpt-<iteration>.h5` in `directory` atomically; keep the newest `keep`. Returns its path.
    `seconds`: the run's training time so far, which a resumed run continues (`elapsed_seconds`)."""
    path = os.path.join(directory, f"ckpt-{iteration:08d}.h5")
    for group, variables in _groups(metalearner):
        if not all_finite(v.numpy() for v in variables):
            raise ValueError(f"not writing checkpoint {path}: its {group} values are not finite")
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["iteration"] = iteration
        f.attrs["config"] = json.dumps(config, sort_keys=True)
        f.attrs["history"] = json.dumps(history)
        if seconds is not None:
            f.attrs["seconds"] = float(seconds)
        for group, variables in _groups(metalearner):
            g = f.create_group(group)
            for i, v in enumerate(variables):
                g.create_dataset(str(i), data=np.asarray(v.numpy()))
        rng = f.create_group("rng")
        for k, v in _rng_state().items():
            if isinstance(v, str):
                rng.attrs[k] = v
            else:
                rng.create_dataset(k, data=v)
        f.attrs["sha256"] = _digest(f)
    for old in checkpoint_files(directory)[:-max(1, keep)]:  # never the newest, whatever `keep` says
        if old != path:
            os.remove(old)
    return path


def _digest(f):
    """sha256 of everything in the open checkpoint `f` but the checksum itself (as read back)."""
    h = hashlib.sha256()
    for key in ("iteration", "config", "history", "seconds"):
        if key in f.attrs or key != "seconds":  # "seconds": not in checkpoints of older versions
            h.update(f"{key}={f.attrs[key]}\n".encode())
    h.update(f"rng.python_meta={f['rng'].attrs['python_meta']}\n".encode())
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    for name in sorted(names):
        a = np.ascontiguousarray(f[name][()])
        h.update(f"{name} {a.dtype.str} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def checkpoint_problem(path):
    """Why the checkpoint `path` cannot be resumed (a one-line reason), or None if it can: unreadable
    or truncated, checksum mismatch, non-finite values. A checkpoint without a checksum (written by
    an older pymeta) is only checked for finite values."""
    try:
        with h5py.File(path, "r") as f:
            problem = first_storage_problem(f)  # before the checksum reads every dataset
            if problem is not None:
                return f"its {problem}"
            stored = f.attrs.get("sha256")
            if stored is not None and _digest(f) != (stored.decode() if isinstance(stored, bytes) else stored):
                return "its checksum does not match its contents"
            for group in ("theta", "model_state", "optimizer", "inner_optimizer_state"):
                if group in f and not all_finite(f[group][k][()] for k in f[group]):
                    return f"its {group} values are not finite"
            int(f.attrs["iteration"]), json.loads(f.attrs["config"]), json.loads(f.attrs["history"])
    except Exception as e:  # h5py reports truncation and corruption as OSError, KeyError, ValueError...
        return f"it cannot be read: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


_TEMPORARY = re.compile(r"^\..*\.tmp(\d+)_[0-9a-f]{8}")


def remove_stale_temporaries(directory, prefix="."):
    """Delete the temporary files `pymeta.atomic.atomic_write` left in `directory` (names starting with
    `prefix`) when a process that no longer runs was killed during a write; returns their paths."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMPORARY.match(name)
        if not m or not name.startswith(prefix) or _process_alive(int(m.group(1))):
            continue
        try:
            os.remove(os.path.join(directory, name))
            removed.append(os.path.join(directory, name))
        except OSError:
            pass
    return removed


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, not ours
        return True
    return True


def elapsed_seconds(path, history):
    """The training time (s) the checkpoint `path` recorded, which a resumed run continues; for a
    checkpoint of an older version, the time of the last `history` entry (0 without one)."""
    with h5py.File(path, "r") as f:
        if "seconds" in f.attrs:
            return float(f.attrs["seconds"])
    return float(history[-1]["seconds"]) if history else 0.0


Weights = Tuple[List[np.ndarray], List[np.ndarray], Dict[str, Any]]


def read_checkpoint_weights(path) -> Optional[Weights]:
    """(theta, model state, run config) of the checkpoint `path`, to meta-test it like a model file
    (`pymeta.model_io`); None for a file that is not a checkpoint (no theta group or config). Raises a
    one-line ValueError for a checkpoint that `checkpoint_problem` finds untrustworthy."""
    path = os.fspath(path)
    if os.path.splitext(path)[1] != ".h5":
        return None
    try:
        with h5py.File(path, "r") as f:
            if "theta" not in f or "config" not in f.attrs:
                return None
    except OSError:
        return None
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ValueError(f"checkpoint {path!r} cannot be used: {problem}")
    with h5py.File(path, "r") as f:
        arrays = {g: [f[g][str(i)][()] for i in range(len(f[g]))] if g in f else []
                  for g in ("theta", "model_state")}
        return arrays["theta"], arrays["model_state"], json.loads(f.attrs["config"])


def read_checkpoint_config(path):
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["config"])


def load_checkpoint(path, metalearner):
    """Restore a checkpoint into `metalearner` (theta, model state, optimizer) and the random
    generators; returns (iteration, history). The model is left at theta."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"cannot read checkpoint {path!r}: {e}") from e
    with f:
        for group, variables in _groups(metalearner):
            if group not in f:
                raise ValueError(f"checkpoint {path!r} does not fit this run: it has no {group}")
            g = f[group]
            if len(g) != len(variables):
                raise ValueError(f"checkpoint {path!r} does not fit this run: {len(g)} {group} arrays, "
                                 f"expected {len(variables)}")
            for i, v in enumerate(variables):
                value = g[str(i)][()]
                if tuple(value.shape) != tuple(v.shape):
                    raise ValueError(f"checkpoint {path!r} does not fit this model: {group} array {i} has "
                                     f"shape {value.shape}, expected {tuple(v.shape)}")
                v.assign(value)
        _set_rng_state(f["rng"])
        iteration = int(f.attrs["iteration"])
        history = json.loads(f.attrs["history"])
    metalearner.task_begin(None)
    return iteration, history
