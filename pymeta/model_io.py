"""Saving and loading models: Keras' HDF5 (`.h5`, written through h5py) or native `.keras` files.

Writes are atomic (`pymeta.atomic`), so a crash never leaves a half-written model behind. A model file
can also record:
- the settings of the run that trained it (`settings`, a JSON dict: dataset, way, shot, inner loop...;
  HDF5 attribute `pymeta_settings` in `.h5`, member `pymeta_settings.json` in `.keras`), which
  `scripts/meta_test.py` uses as its defaults (`load_settings`);
- the inner optimizer's state when a meta-learner keeps it across tasks (`persistent_inner_state`; `.h5`
  only, group `pymeta_inner_optimizer_state`), so that a meta-test adapts as training did
  (`load_inner_state`).

`load_settings` and `load_weights_into` also read a training checkpoint (`<run_dir>/ckpt-*.h5`, see
`pymeta.checkpoint`): its theta and model state, and the settings of its run's config, so that any
checkpointed meta-iteration can be meta-tested like a model file, or trained further (`warm_start`).
"""

import json
import logging
import os
import shutil
import zipfile
from typing import Any, Dict, List, Optional

import h5py
import keras
import numpy as np

import pymeta.layers  # noqa: F401  (registers pymeta's layers for deserialisation)
from pymeta.atomic import atomic_write
from pymeta.checkpoint import read_checkpoint_weights
from pymeta.data.h5_storage import MAX_COMPRESSION_RATIO, first_storage_problem, storage_problem
from pymeta.paths import special_kind

_INNER_STATE = "pymeta_inner_optimizer_state"
_SETTINGS = "pymeta_settings"


def save_model(model, path, inner_state=None, settings: Optional[Dict[str, Any]] = None) -> str:
    """Write `model` (architecture + weights) to `path` (.h5 or .keras) atomically; returns path.

    inner_state: an `optim.InnerStateVariables` to store with it (.h5 only); settings: a JSON-able dict
    recording how the model was trained.
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
        if suffix == ".keras":
            if settings is not None:
                with zipfile.ZipFile(tmp, "a") as z:
                    z.writestr(f"{_SETTINGS}.json", json.dumps(settings, sort_keys=True))
        elif inner_state is not None or settings is not None:
            with h5py.File(tmp, "a") as f:
                if settings is not None:
                    f.attrs[_SETTINGS] = json.dumps(settings, sort_keys=True)
                if inner_state is not None:
                    g = f.create_group(_INNER_STATE)
                    for i, v in enumerate(inner_state.variables):
                        g.create_dataset(str(i), data=np.asarray(v.numpy()))
    return path


def record_settings(path, updates: Dict[str, Any]) -> Dict[str, Any]:
    """Add `updates` to the settings the model file `path` records (atomically: a copy is changed, then
    renamed over it); returns the new settings. E.g. the test-time step count chosen on the validation
    tasks (`scripts/choose_test_steps.py`)."""
    path = os.fspath(path)
    settings = load_settings(path)
    if settings is None or read_checkpoint_weights(path) is not None:
        raise ValueError(f"{path!r} is not a model file that records its settings (a checkpoint, or a file "
                         "written by plain Keras or an older pymeta)")
    settings = {**settings, **updates}
    with atomic_write(path) as tmp:
        shutil.copyfile(path, tmp)
        if zipfile.is_zipfile(tmp):
            rewritten = tmp + ".zip"
            with zipfile.ZipFile(tmp) as src, zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as dst:
                for item in src.infolist():
                    if item.filename != f"{_SETTINGS}.json":
                        dst.writestr(item, src.read(item.filename))
                dst.writestr(f"{_SETTINGS}.json", json.dumps(settings, sort_keys=True))
            os.replace(rewritten, tmp)
        else:
            with h5py.File(tmp, "a") as f:
                f.attrs[_SETTINGS] = json.dumps(settings, sort_keys=True)
    return settings


def load_settings(path) -> Optional[Dict[str, Any]]:
    """The training settings recorded in the model file `path`, or None (a file written before pymeta
    recorded them, or by plain Keras); for a checkpoint, those of its run's config. The one reader of
    the record (`pymeta.config.stored.read_unchecked_settings`: bounded, no TensorFlow); values not
    checked (`read_stored_settings` checks them like flags)."""
    from pymeta.config.stored import read_unchecked_settings
    return read_unchecked_settings(path)


def load_inner_state(path) -> Optional[List[np.ndarray]]:
    """The kept inner optimizer state saved in the .h5 model file `path` (list of arrays), or None."""
    path = os.fspath(path)
    if os.path.splitext(path)[1] != ".h5":
        return None
    with h5py.File(path, "r") as f:
        if _INNER_STATE not in f:
            return None
        g = f[_INNER_STATE]
        datasets = [g[str(i)] for i in range(len(g))]
        for i, ds in enumerate(datasets):
            problem = storage_problem(ds)
            if problem is not None:
                raise ValueError(f"{path!r}: its inner optimizer state '{_INNER_STATE}/{i}' {problem}: "
                                 "pass --fresh_inner_state to start each task fresh")
        return [ds[()] for ds in datasets]


def load_model(path):
    """The Keras model saved at `path` (not compiled): its architecture is built from the file, so use it on
    files you trust (the zoo's); `load_weights_into` reads a stranger's weights into a model of your own."""
    path = _model_file(path)
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # h5py / Keras errors are obscure; name the file
        raise ValueError(f"cannot read a Keras model from {path!r}: {e}") from e


def _model_file(path) -> str:
    """`path` as a str, if it is a regular file: FileNotFoundError if nothing is there, ValueError for a
    folder, fifo or device (opening a fifo would block)."""
    path = os.fspath(path)
    kind = special_kind(path)
    if kind is not None:
        raise ValueError(f"{path!r} is {kind}, not a model file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    return path


def load_weights_into(model, path):
    """Copy the weights saved at `path` (a model file or a checkpoint) into `model`, checking that the
    architectures match. The file's own architecture is never built: its stored weights are compared with
    `model`'s by their shapes (metadata), and read only then (a small file that declares a network of many
    gigabytes, or weights it does not store, is a one-line error, not an out-of-memory kill)."""
    path = _model_file(path)
    checkpoint = read_checkpoint_weights(path)
    if checkpoint is not None:
        for name, arrays, variables in (("theta", checkpoint[0], model.trainable_variables),
                                        ("model state", checkpoint[1], model.non_trainable_variables)):
            shapes = [tuple(a.shape) for a in arrays]
            if shapes != [tuple(v.shape) for v in variables]:
                raise ValueError(f"checkpoint {path!r} holds a model of another architecture: "
                                 f"{name} shapes {shapes} do not match this model's "
                                 f"{[tuple(v.shape) for v in variables]}")
            for v, a in zip(variables, arrays):
                v.assign(a)
        return model
    try:
        if zipfile.is_zipfile(path):  # .keras: Keras checks each layer's shapes, but ignores layers it lacks
            theirs = sorted(_archive_weight_shapes(path))
            mine = sorted(tuple(v.shape) for v in model.weights)
        else:
            theirs = _stored_weight_shapes(path)
            mine = [tuple(v.shape) for v in _saved_order(model)]
        if theirs != mine:
            raise _Refused(f"{path!r} holds a model of another architecture: weight shapes {theirs} "
                           f"do not match this model's {mine}")
        model.load_weights(path)
    except _Refused as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # h5py / Keras errors are obscure; name the file
        reason = " ".join(str(e).split()) or type(e).__name__  # Keras' are paragraphs: one line
        raise ValueError(f"cannot read the weights of a Keras model from {path!r} into this model: "
                         f"{reason[:400]}") from None
    return model


class _Refused(ValueError):
    """A file refused with a message of pymeta's own (other errors are Keras' or h5py's, reworded)."""


_REWRITE = "use a model file written by pymeta-train or keras.Model.save"


def _saved_order(model) -> List[Any]:
    """`model`'s variables in the order Keras' HDF5 files store them: layer by layer, each layer's trainable
    then non-trainable ones, then the model's own."""
    in_layers = [v for layer in model.layers for v in layer.trainable_weights + layer.non_trainable_weights]
    own = [v for v in model.weights if not any(v is w for w in in_layers)]
    return in_layers + [v for v in own if v.trainable] + [v for v in own if not v.trainable]


def _names(group, attribute: str) -> List[str]:
    """A list of names Keras stores in the attribute `attribute` of `group` (in pieces when long)."""
    pieces = [attribute] if attribute in group.attrs else []
    while f"{attribute}{len(pieces)}" in group.attrs:
        pieces.append(f"{attribute}{len(pieces)}")
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for p in pieces for n in group.attrs[p]]


def _stored_weight_shapes(path: str) -> List[tuple]:
    """The shapes of the weights a Keras HDF5 model file stores, in their order; each checked to be
    stored in the file (`pymeta.data.h5_storage`), none read."""
    shapes = []
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "layer_names" not in f.attrs and "model_weights" in f else f
        layers = _names(group, "layer_names")
        if not layers:
            raise _Refused(f"{path!r} holds no Keras model weights (no layer_names): {_REWRITE}")
        if "top_level_model_weights" in group:
            layers.append("top_level_model_weights")
        for layer in layers:
            for name in _names(group[layer], "weight_names"):
                ds = group[layer][name]
                if not isinstance(ds, h5py.Dataset):
                    raise _Refused(f"{path!r}: its weight '{layer}/{name}' is not a dataset")
                problem = storage_problem(ds)
                if problem is not None:
                    raise _Refused(f"{path!r}: its weight '{layer}/{name}' {problem}: {_REWRITE}")
                shapes.append(tuple(ds.shape))
    return shapes


def _archive_weight_shapes(path: str) -> List[tuple]:
    """The shapes of the model weights a `.keras` file stores (not its optimizer's); checked to be stored
    in it: the weights member expands at most MAX_COMPRESSION_RATIO times, every dataset in it is stored
    (`pymeta.data.h5_storage`); none read."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("model.weights.h5")
        if info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise _Refused(f"{path!r}: its weights declare {info.file_size:,} bytes, more than "
                           f"{MAX_COMPRESSION_RATIO} times the {info.compress_size:,} compressed bytes it stores: "
                           f"{_REWRITE}")
        with z.open(info) as member, h5py.File(member, "r") as f:
            problem = first_storage_problem(f)
            shapes: List[tuple] = []
            f.visititems(lambda name, obj: shapes.append(tuple(obj.shape)) if isinstance(obj, h5py.Dataset)
                         and not name.startswith("optimizer/") else None)
    if problem is not None:
        raise _Refused(f"{path!r}: its weight {problem}: {_REWRITE}")
    return shapes


def warm_start(metalearner, path):
    """Take theta (and the model state) of `metalearner` from the model file or checkpoint `path`
    (`--init_model`); the optimizer state stays fresh."""
    load_weights_into(metalearner.model, path)
    metalearner.initialize()
