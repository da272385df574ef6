"""The settings a model file (or a training checkpoint) records, read WITHOUT TensorFlow and checked
like the flags they were: a model file is input from whoever wrote it.

    settings = read_stored_settings("runs/omniglot/model.h5")   # None: the file records none

Where they are: HDF5 attribute `pymeta_settings` (`.h5`, read with h5py), member `pymeta_settings.json`
(`.keras`, a zip archive), or the run config of a checkpoint (`ckpt-*.h5`, attribute `config`; see
`pymeta.model_io`, `pymeta.checkpoint`). The JSON text is bounded (MAX_SETTINGS_BYTES, and its nesting
depth before it is parsed: `pymeta.config.bounded_json`); it must be an object. Each setting pymeta
records (`MODEL_SETTINGS`, and the meta-test protocol `METATEST_PROTOCOL`) is then checked with the check of its
flag (`pymeta.config.checks.check_field`: the type, then the field's own bounds), and `env_kwargs` with
the keywords a model file may set (`pymeta.config.gym_kwargs`). Settings pymeta does not know are
dropped. Any failure is a `StoredSettingsError`: one line naming the file, the setting and the fix."""

import dataclasses
import os
import zipfile
from typing import Any, Collection, Dict, Optional, Union

from pymeta.config.bounded_json import loads_bounded
from pymeta.config.checks import check_field, check_type, env_kwargs
from pymeta.config.records import METATEST_PROTOCOL, MODEL_SETTINGS
from pymeta.config.sections import MetaTestConfig, RunConfig
from pymeta.paths import special_kind

MAX_SETTINGS_BYTES = 1 << 20  # pymeta writes about 2 KB
SETTINGS_ATTRIBUTE = "pymeta_settings"  # pymeta.model_io writes it; .keras: SETTINGS_ATTRIBUTE + ".json"
# recorded for the reader only: pymeta's version and the validation figures of scripts/choose_test_steps.py
INFORMATIVE = ("pymeta_version", "metatest_steps_on_validation")
REWRITE_HINT = "use a model file written by pymeta-train (this one was altered or written by other software)"
# every setting that is checked: its flag (None: recorded for the reader, checked like the RunConfig field)
FLAG_OF: Dict[str, Optional[str]] = {**MODEL_SETTINGS, **METATEST_PROTOCOL}


class StoredSettingsError(ValueError):
    """The settings a model file records cannot be used (one line: the file, the setting, the fix)."""


def read_stored_settings(path: Union[str, os.PathLike], given: Collection[str] = ()) -> Optional[Dict[str, Any]]:
    """The checked settings the model file or checkpoint `path` records, or None if it records none
    (plain Keras, an older pymeta). given: the meta-test flags set on the command line; the settings
    that would be their defaults are dropped unchecked (the flag wins, so a bad stored value can be
    overridden). FileNotFoundError for a missing file, StoredSettingsError for anything else."""
    stored = read_unchecked_settings(path)
    return None if stored is None else check_stored_settings(os.fspath(path), stored, given)


def read_unchecked_settings(path: Union[str, os.PathLike]) -> Optional[Dict[str, Any]]:
    """The settings dict the model file or checkpoint `path` records (bounded JSON, values not checked),
    or None; FileNotFoundError for a missing file, StoredSettingsError for an unreadable record."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        kind = special_kind(path)
        if kind is not None:
            raise StoredSettingsError(f"{path!r} is {kind}, not a model file: give the .h5 or .keras file "
                                      "pymeta-train wrote (or a checkpoint)")
        raise FileNotFoundError(f"no model file at {path!r}")
    raw = _read_raw(path)
    if raw is None:
        return None
    stored = _parse(raw, f"{path}: its stored settings") if isinstance(raw, str) else raw
    if not isinstance(stored, dict):
        raise StoredSettingsError(f"{path}: its stored settings must be a JSON object, got "
                                  f"{type(stored).__name__}: {REWRITE_HINT}")
    return stored


def check_stored_settings(path: str, stored: Dict[str, Any], given: Collection[str] = ()) -> Dict[str, Any]:
    """`stored` (the JSON object a model file `path` records) with each known setting checked like its
    flag and converted to its field's type, unknown ones dropped; see `read_stored_settings`."""
    known = {k: v for k, v in stored.items() if k in FLAG_OF and FLAG_OF[k] not in given}
    settings: Dict[str, Any] = {}
    base = RunConfig()
    if "dataset" in known:  # first: the other settings' rules depend on it
        base = _checked(path, base, "dataset", known.pop("dataset"))
        settings["dataset"] = base.dataset
    for key, value in known.items():
        if key in METATEST_PROTOCOL:
            field_name = METATEST_PROTOCOL[key]
            probe = _checked(path, MetaTestConfig(dataset=base.dataset), field_name, value, key)
            settings[key] = getattr(probe, field_name)
        else:
            settings[key] = getattr(_checked(path, base, key, value), key)
    if settings.get("env_kwargs"):
        try:
            env_kwargs(dataclasses.replace(base, env_kwargs=settings["env_kwargs"]), from_file=True)
        except ValueError as e:
            raise _refused(path, "env_kwargs", e) from None
    for key in INFORMATIVE:
        if key in stored:
            settings[key] = stored[key]
    return settings


def _checked(path: str, base: Any, name: str, value: Any, key: Optional[str] = None) -> Any:
    """`base` with field `name` set to `value` (converted to the field's type), checked like the flag
    (`check_field`); StoredSettingsError naming setting `key` (default: `name`) otherwise."""
    try:
        probe = dataclasses.replace(base, **{name: check_type(type(base), name, value)})
        check_field(probe, name)
    except ValueError as e:
        raise _refused(path, key or name, e) from None
    return probe


def _refused(path: str, key: str, error: ValueError) -> StoredSettingsError:
    flag = FLAG_OF.get(key)
    fix = f"pass --{flag} yourself to override it, or {REWRITE_HINT}" if flag else REWRITE_HINT
    return StoredSettingsError(f"{path}: its stored setting {key} is refused ({error}): {fix}")


def _parse(text: str, what: str) -> Any:
    try:
        return loads_bounded(text, what)
    except ValueError as e:
        raise StoredSettingsError(f"{e}: {REWRITE_HINT}") from None


def _read_raw(path: str) -> Union[None, str, Dict[str, Any]]:
    """The settings JSON text of a model file, the settings dict of a checkpoint, or None."""
    try:
        if zipfile.is_zipfile(path):
            return _read_keras(path)
        return _read_h5(path)
    except StoredSettingsError:
        raise
    except (OSError, zipfile.BadZipFile, ValueError, KeyError, RuntimeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StoredSettingsError(f"{path}: not a model file pymeta can read ({reason[:200]}): {REWRITE_HINT}") \
            from None


def _read_keras(path: str) -> Optional[str]:
    with zipfile.ZipFile(path) as z:
        try:
            info = z.getinfo(f"{SETTINGS_ATTRIBUTE}.json")
        except KeyError:
            return None
        if info.file_size > MAX_SETTINGS_BYTES:
            raise StoredSettingsError(f"{path}: its stored settings declare {info.file_size:,} bytes, more than "
                                      f"{MAX_SETTINGS_BYTES:,}: {REWRITE_HINT}")
        with z.open(info) as member:
            data = member.read(MAX_SETTINGS_BYTES + 1)
    return _text(path, data)


def _read_h5(path: str) -> Union[None, str, Dict[str, Any]]:
    import h5py
    with h5py.File(path, "r") as f:
        checkpoint = "theta" in f and "config" in f.attrs
        name = "config" if checkpoint else SETTINGS_ATTRIBUTE
        if name not in f.attrs:
            return None
        attribute = f.attrs.get_id(name)
        space, kind = attribute.shape, attribute.get_type()
        if space != () or not isinstance(kind, h5py.h5t.TypeStringID):
            raise StoredSettingsError(f"{path}: its stored settings are not one string (attribute {name!r} of "
                                      f"shape {space}): {REWRITE_HINT}")
        if not kind.is_variable_str() and kind.get_size() > MAX_SETTINGS_BYTES:
            raise StoredSettingsError(f"{path}: its stored settings declare {kind.get_size():,} bytes, more than "
                                      f"{MAX_SETTINGS_BYTES:,}: {REWRITE_HINT}")
        value = f.attrs[name]
    text = _text(path, value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value))
    if not checkpoint:
        return text
    config = _parse(text, f"{path}: its stored run config")
    if not isinstance(config, dict):
        raise StoredSettingsError(f"{path}: its stored run config must be a JSON object: {REWRITE_HINT}")
    return {k: config[k] for k in MODEL_SETTINGS if k in config}


def _text(path: str, data: bytes) -> str:
    if len(data) > MAX_SETTINGS_BYTES:
        raise StoredSettingsError(f"{path}: its stored settings are more than {MAX_SETTINGS_BYTES:,} bytes: "
                                  f"{REWRITE_HINT}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise StoredSettingsError(f"{path}: its stored settings are not UTF-8 text: {REWRITE_HINT}") from None
