"""Saving and loading models: Keras' HDF5 (`.h5`, written through h5py) or native `.keras` files.

Writes are atomic (`pymeta.atomic`), so a crash never leaves a half-written model behind. When a
meta-learner keeps its inner optimizer's state across tasks (`persistent_inner_state`), an `.h5` file
also holds that state (group `pymeta_inner_optimizer_state`), so that a meta-test adapts as training
did; `load_inner_state` reads it back.
"""

import logging
import os
from typing import List, Optional

import h5py
import keras
import numpy as np

import pymeta.layers  # noqa: F401  (registers pymeta's layers for deserialisation)
from pymeta.atomic import atomic_write

_INNER_STATE = "pymeta_inner_optimizer_state"


def kept_inner_state(metalearner):
    """The `optim.InnerStateVariables` `metalearner` keeps across tasks, or None (the one place that
    knows where a meta-learner holds it)."""
    from pymeta.inner_loop import kept_inner_state as of_model
    return of_model(metalearner.model)


def save_model(model, path, inner_state=None) -> str:
    """Write `model` (architecture + weights) to `path` (.h5 or .keras) atomically; returns path.

    inner_state: an `optim.InnerStateVariables` to store with it (.h5 only).
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    if suffix not in (".h5", ".keras"):
        raise ValueError(f"model file must end in .h5 or .keras, got {path!r}")
    if inner_state is not None and suffix != ".h5":
        raise ValueError(f"{path!r}: the inner optimizer state kept across tasks is saved in .h5 model files only")
    with atomic_write(path) as tmp:
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)  # Keras warns that .h5 is a legacy format
        try:
            model.save(tmp, overwrite=True)
        finally:
            absl_logger.setLevel(level)
        if inner_state is not None:
            with h5py.File(tmp, "a") as f:
                g = f.create_group(_INNER_STATE)
                for i, v in enumerate(inner_state.variables):
                    g.create_dataset(str(i), data=np.asarray(v.numpy()))
    return path


def load_inner_state(path) -> Optional[List[np.ndarray]]:
    """The kept inner optimizer state saved in the .h5 model file `path` (list of arrays), or None."""
    path = os.fspath(path)
    if os.path.splitext(path)[1] != ".h5":
        return None
    with h5py.File(path, "r") as f:
        if _INNER_STATE not in f:
            return None
        g = f[_INNER_STATE]
        return [g[str(i)][()] for i in range(len(g))]


def load_model(path):
    """The Keras model saved at `path` (not compiled)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # h5py / Keras errors are obscure; name the file
        raise ValueError(f"cannot read a Keras model from {path!r}: {e}") from e


def load_weights_into(model, path):
    """Copy the weights saved at `path` into `model`, checking that the architectures match."""
    saved = load_model(path)
    mine = [tuple(v.shape) for v in model.weights]
    theirs = [tuple(v.shape) for v in saved.weights]
    if mine != theirs:
        raise ValueError(f"{path!r} holds a model of another architecture: weight shapes {theirs} "
                         f"do not match this model's {mine}")
    model.set_weights(saved.get_weights())
    return model
