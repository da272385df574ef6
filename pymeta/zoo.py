"""The model zoo: the headline pretrained models, by name, from `pretrained/index.json`.

Each index entry names a model file (`path`, relative to the repository root), its benchmark,
dataset and algorithm, the training settings its file records, and its measured figures (`results`),
each with the meta-test protocol that re-measures it (`pymeta-metatest` flag values), the command,
and what it was measured on (`measured_on`: the precision, and the kind of CPU where known).
A row is reproduced exactly on the same kind of CPU; elsewhere the float round-off of other kernels
(and bfloat16 emulated instead of native) may move a few predictions (see `CPU_KINDS`).

    >>> from pymeta import zoo
    >>> zoo.list_models()[:2]
    ['omniglot_fomaml_5w1s', 'omniglot_reptile_bf16']
    >>> zoo.metatest_flags("omniglot_imaml_5w1s")["num_test_samples_per_class"]
    15

Nothing here imports TensorFlow except `load_pretrained`. The index is input (it may be edited by
hand), so it is validated when read: a malformed entry or an unknown name is a one-line ValueError.
`docs/model_zoo.md` is rendered from the index by `scripts/render_zoo.py`.
"""

import dataclasses
import json
import os
import shlex
from typing import Any, Dict, List, Optional

from pymeta.paths import ZOO_DIR
from pymeta.runtime import PRECISIONS  # no TensorFlow

SCHEMA_VERSION = 2  # 2: every result records `measured_on`
REPO_ROOT = os.path.dirname(ZOO_DIR)
DEFAULT_INDEX = os.path.join(ZOO_DIR, "index.json")

BENCHMARKS = ("omniglot", "miniimagenet", "navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_dir")
METRICS = ("accuracy_percent", "return_by_step")
# the kinds of CPU a figure can be measured on; each row's `measured_on.cpu` is one of them, or null
# where the session that measured it did not record the host
CPU_KINDS = {
    "avx512_bf16": "x86-64 with AVX-512 and native bfloat16 (avx512_bf16 or amx_bf16 in /proc/cpuinfo)",
    "avx512": "x86-64 with AVX-512, bfloat16 emulated",
    "avx2": "x86-64 with AVX2 only, bfloat16 emulated",
    "other": "another CPU (e.g. ARM)",
}
# the protocol items every result states explicitly (the issue's: shots, queries per class, test-time
# steps, number of tasks, seed; the dataset)
REQUIRED_PROTOCOL = {
    "accuracy_percent": ("dataset", "num_train_samples_per_class", "num_test_samples_per_class",
                         "num_inner_iterations", "num_tasks", "seed"),
    "return_by_step": ("dataset", "num_inner_iterations", "num_tasks", "seed", "episodes_per_task",
                       "step_sizes", "test_tasks", "repeats"),
}
# flags a protocol may not set: where the output goes, how the machine is used, and the model itself
_NOT_PROTOCOL = ("model", "output", "plot", "plot_with", "num_threads", "tf_log_level", "data_path")
# protocol flags the command always spells out, even at the meta-test's default
_ALWAYS_IN_COMMAND = ("dataset", "num_train_samples_per_class", "num_test_samples_per_class",
                      "num_inner_iterations", "num_tasks", "seed")


def _metatest_fields() -> Dict[str, dataclasses.Field]:
    from pymeta.config import MetaTestConfig  # no TensorFlow
    return {f.name: f for f in dataclasses.fields(MetaTestConfig)}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check(cond: bool, where: str, message: str):
    if not cond:
        raise ValueError(f"{where}: {message}")


def _check_fields(obj, where: str, fields: Dict[str, Any]):
    """Every key of `fields` is in the dict `obj` with a value of the given type(s) (None allowed where
    the types include type(None)); no other keys."""
    _check(isinstance(obj, dict), where, f"must be a JSON object, got {type(obj).__name__}")
    missing = [k for k in fields if k not in obj]
    _check(not missing, where, f"missing field(s) {', '.join(missing)}")
    unknown = sorted(set(obj) - set(fields))
    _check(not unknown, where, f"unknown field(s) {', '.join(unknown)} (known: {', '.join(fields)})")
    for k, types in fields.items():
        v = obj[k]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in _as_tuple(types))
        names = "/".join("null" if t is type(None) else t.__name__ for t in _as_tuple(types))
        _check(ok, where, f"field {k!r} must be {names}, got {type(v).__name__} {v!r}"[:300])


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _check_figures(value, where: str, metric: str, name: str, allow_none_items: bool = False):
    if metric == "accuracy_percent":
        _check(_is_number(value), where, f"{name} must be a number for metric {metric}, got {value!r}")
    else:
        _check(isinstance(value, list) and len(value) > 0 and all(
            _is_number(x) or (allow_none_items and x is None) for x in value), where,
            f"{name} must be a non-empty list of numbers (one per adaptation step) for metric {metric}, "
            f"got {value!r}")


def _validate_measured_on(r, where: str, precision: str):
    """`measured_on`: {"precision": the one the figure was computed in (the protocol's, else the model
    file's), "cpu": a CPU_KINDS key or null (not recorded)}."""
    m = r["measured_on"]
    _check_fields(m, where + ".measured_on", {"precision": str, "cpu": (str, type(None))})
    _check(m["precision"] in PRECISIONS, where + ".measured_on",
           f"precision {m['precision']!r} is not one of {', '.join(PRECISIONS)}")
    _check(m["precision"] == precision, where + ".measured_on",
           f"precision {m['precision']!r} is not the one the row's meta-test uses ({precision!r}: the protocol's, "
           "else the model file's)")
    _check(m["cpu"] is None or m["cpu"] in CPU_KINDS, where + ".measured_on",
           f"cpu {m['cpu']!r} is not one of {', '.join(CPU_KINDS)} (or null: not recorded)")


def _validate_result(r, where: str, fields: Dict[str, dataclasses.Field]):
    _check_fields(r, where, {"key": str, "label": str, "metric": str, "mean": (int, float, list),
                             "ci95": (int, float, list), "published": (dict, type(None)), "json": (str, type(None)),
                             "protocol": dict, "command": str, "measured_on": dict})
    _check(r["metric"] in METRICS, where, f"metric {r['metric']!r} is not one of {', '.join(METRICS)}")
    _check_figures(r["mean"], where, r["metric"], "mean")
    _check_figures(r["ci95"], where, r["metric"], "ci95")
    if r["metric"] == "return_by_step":
        _check(len(r["ci95"]) == len(r["mean"]), where, "mean and ci95 must have one value per step each")
    if r["published"] is not None:
        p = r["published"]
        _check_fields(p, where + ".published", {"value": (int, float, list), "ci95": (int, float, list, type(None)),
                                                 "source": str})
        _check_figures(p["value"], where + ".published", r["metric"], "value", allow_none_items=True)
        if p["ci95"] is not None:
            _check_figures(p["ci95"], where + ".published", r["metric"], "ci95", allow_none_items=True)
    proto = r["protocol"]
    for k in REQUIRED_PROTOCOL[r["metric"]]:
        _check(k in proto, where + ".protocol", f"missing {k!r}")
    for k, v in proto.items():
        _check(k in fields and k not in _NOT_PROTOCOL, where + ".protocol",
               f"{k!r} is not a meta-test protocol flag")
        want = fields[k].type
        ok = isinstance(v, want) and (want is bool or not isinstance(v, bool)) or (want is float and _is_number(v))
        _check(ok, where + ".protocol", f"{k!r} must be {want.__name__}, got {type(v).__name__} {v!r}")
    _check(proto["num_tasks"] > 0 and proto["num_inner_iterations"] >= 0, where + ".protocol",
           "num_tasks must be positive and num_inner_iterations non-negative")
    if r["metric"] == "return_by_step":
        _check(len(r["mean"]) == proto["num_inner_iterations"] + 1, where,
               f"mean has {len(r['mean'])} values, the protocol's {proto['num_inner_iterations']} steps give "
               f"{proto['num_inner_iterations'] + 1}")


def _validate(index, where: str) -> Dict[str, Any]:
    _check_fields(index, where, {"schema_version": int, "description": str, "models": list})
    _check(index["schema_version"] == SCHEMA_VERSION, where,
           f"schema_version {index['schema_version']} is not the one this pymeta reads ({SCHEMA_VERSION})")
    fields = _metatest_fields()
    names = set()
    for i, m in enumerate(index["models"]):
        at = f"{where}: models[{i}]"
        _check(isinstance(m, dict), at, "must be a JSON object")
        at += f" ({m.get('name', '?')})"
        _check_fields(m, at, {"name": str, "benchmark": str, "dataset": str, "algorithm": str, "path": str,
                              "settings": dict, "training": dict, "results": list, "notes": str})
        _check(m["name"] and m["name"] not in names, at, "name must be non-empty and unique")
        names.add(m["name"])
        _check(m["benchmark"] in BENCHMARKS, at, f"benchmark {m['benchmark']!r} is not one of {', '.join(BENCHMARKS)}")
        path = m["path"]
        _check(path.startswith("pretrained/") and ".." not in path.split("/") and path.endswith((".h5", ".keras")),
               at, f"path {path!r} must be a .h5/.keras file under pretrained/ (relative to the repository)")
        _check(m["settings"].get("metamodel") is not None, at, "settings must record the metamodel")
        _check_fields(m["training"], at + ".training", {"meta_iterations": int, "time": str,
                                                         "history": (str, type(None)), "options": str})
        _check(len(m["results"]) > 0, at, "results must not be empty")
        keys = set()
        for j, r in enumerate(m["results"]):
            rat = f"{at}.results[{j}]"
            _validate_result(r, rat, fields)
            _validate_measured_on(r, rat, r["protocol"].get("precision", m["settings"].get("precision", "float32")))
            _check(r["key"] not in keys, rat, f"result key {r['key']!r} repeated")
            keys.add(r["key"])
            _check(r["protocol"]["dataset"] == m["dataset"], rat, "protocol dataset differs from the entry's")
    return index


def load_index(index: Optional[str] = None) -> Dict[str, Any]:
    """The zoo index (default `pretrained/index.json` of this checkout), validated."""
    path = os.fspath(index) if index is not None else DEFAULT_INDEX
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model-zoo index at {path!r} (pretrained/ ships with the repository, "
                                "not with a wheel)")
    try:
        with open(path) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    return _validate(data, path)


def _root(index: Optional[str]) -> str:
    """The folder the index's paths are relative to: the repository root (<root>/pretrained/index.json)."""
    path = os.path.abspath(os.fspath(index)) if index is not None else DEFAULT_INDEX
    return os.path.dirname(os.path.dirname(path))


def list_models(index: Optional[str] = None) -> List[str]:
    """The names of the zoo's models, in the index's order."""
    return [m["name"] for m in load_index(index)["models"]]


def model_entry(name: str, index: Optional[str] = None) -> Dict[str, Any]:
    """The index entry of the model `name` (a copy): benchmark, dataset, algorithm, path, settings,
    training, results (each with `protocol` and `command`), notes."""
    models = load_index(index)["models"]
    for m in models:
        if m["name"] == name:
            return json.loads(json.dumps(m))
    raise ValueError(f"unknown pretrained model {name!r}: known are {', '.join(m['name'] for m in models)}")


def _result(entry: Dict[str, Any], result: Optional[str]) -> Dict[str, Any]:
    if result is None:
        return entry["results"][0]
    for r in entry["results"]:
        if r["key"] == result:
            return r
    raise ValueError(f"{entry['name']} has no result {result!r}: known are "
                     f"{', '.join(r['key'] for r in entry['results'])}")


def pretrained_path(name: str, index: Optional[str] = None) -> str:
    """The absolute path of the model file of `name`."""
    return os.path.join(_root(index), *model_entry(name, index)["path"].split("/"))


def metatest_flags(name: str, result: Optional[str] = None, index: Optional[str] = None) -> Dict[str, Any]:
    """The `pymeta-metatest` flag values (MetaTestConfig field -> value) that re-measure the figure
    `result` of model `name` (a result key, e.g. '1shot'; default: the entry's first, its headline):
    `model` (absolute path) and the row's whole protocol; file flags (`test_tasks`) as absolute paths."""
    entry = model_entry(name, index)
    flags = {"model": pretrained_path(name, index)}
    for k, v in _result(entry, result)["protocol"].items():
        if k == "test_tasks" and v:
            v = os.path.join(_root(index), *v.split("/"))
        flags[k] = v
    return flags


def command_for(path: str, protocol: Dict[str, Any]) -> str:
    """The meta-test command line of `protocol` for the model file `path` (as the index writes paths):
    every protocol flag, except those at the meta-test's default that the model file cannot change
    (the shots, queries, steps, tasks, seed and dataset are always spelt out)."""
    from pymeta.config import MODEL_SETTINGS
    fields = _metatest_fields()
    from_file = {v for v in MODEL_SETTINGS.values() if v}
    parts = ["python", "scripts/meta_test.py", "--model", path]
    for k, v in protocol.items():
        if k not in _ALWAYS_IN_COMMAND and k not in from_file and v == fields[k].default:
            continue
        if isinstance(v, bool):
            parts.append(f"--{k}" if v else f"--no{k}")
        else:
            parts += [f"--{k}", str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def measured_on(name: str, result: Optional[str] = None, index: Optional[str] = None) -> Dict[str, Any]:
    """What the figure `result` of `name` was measured on: {"precision": ..., "cpu": a CPU_KINDS key, or
    None where not recorded}."""
    return dict(_result(model_entry(name, index), result)["measured_on"])


def metatest_command(name: str, result: Optional[str] = None, index: Optional[str] = None) -> str:
    """The command (from the repository root) that re-measures `result` of `name`, as the index records it."""
    return _result(model_entry(name, index), result)["command"]


def load_pretrained(name: str, index: Optional[str] = None):
    """The Keras model of `name` (architecture and weights; not compiled). Imports TensorFlow."""
    path = pretrained_path(name, index)
    import pymeta.rl.policies  # noqa: F401  (registers the RL policies' layers for deserialisation)
    from pymeta.model_io import load_model
    return load_model(path)
