"""Checkpoints of a meta-training run: everything needed to continue it exactly.

A checkpoint (`ckpt-<iteration>.h5`, written with h5py, atomically) holds the meta-parameters, the
model's non-trainable state, the outer optimizer's variables, the inner optimizer's state when it is
kept across tasks, the iteration, the validation history, the run's configuration and the state of
every random generator (numpy's global one, Python's `random`, TensorFlow's global generator). The
last `keep` checkpoints are kept.
"""

import glob
import json
import os
import random
import re

import h5py
import numpy as np
import tensorflow as tf

from pymeta.atomic import atomic_write
from pymeta.model_io import kept_inner_state

_NAME = re.compile(r"ckpt-(\d+)\.h5$")


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


def save_checkpoint(directory, iteration, metalearner, history, config, keep=3):
    """Write `ckpt-<iteration>.h5` in `directory` atomically; keep the newest `keep`. Returns its path."""
    path = os.path.join(directory, f"ckpt-{iteration:08d}.h5")
    for group, variables in _groups(metalearner):
        if not all_finite(v.numpy() for v in variables):
            raise ValueError(f"not writing checkpoint {path}: its {group} values are not finite")
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["iteration"] = iteration
        f.attrs["config"] = json.dumps(config, sort_keys=True)
        f.attrs["history"] = json.dumps(history)
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
    for old in checkpoint_files(directory)[:-max(1, keep)]:  # never the newest, whatever `keep` says
        if old != path:
            os.remove(old)
    return path


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
