"""The history file of a run, `<model>_history.json`: one format for every run,
{"settings": <the model file's settings>, "history": [<one dict per entry>]}. Supervised entries are
validations ("iteration", "val_loss", "val_accuracy", "train_loss", "seconds"); RL entries are
meta-iterations ("return_before", "return_after", ...) and validations ("validation_returns_by_step").
Files of older versions (a bare list of entries) still read."""

import json
from typing import Any, Dict, List, Mapping, Optional

from pymeta.atomic import write_json_atomic


def write_history(path: str, history: List[dict], settings: Optional[Mapping[str, Any]] = None) -> None:
    """Write the history file atomically."""
    write_json_atomic(path, {"settings": dict(settings or {}), "history": history})


def history_entries(data: Any) -> List[dict]:
    """The entries of a loaded history file: the "history" of a dict, or an old bare list itself."""
    if isinstance(data, dict):
        data = data.get("history")
    if not isinstance(data, list):
        raise ValueError("not a pymeta history: expected {\"history\": [...]} or a list of entries")
    return data


def read_history(path: str) -> Dict[str, Any]:
    """{"settings": ..., "history": [...]} of the history file at `path`, whatever its format ({} for
    the settings of an old bare-list file)."""
    with open(path) as f:
        data = json.load(f)
    settings = data.get("settings", {}) if isinstance(data, dict) else {}
    return {"settings": settings, "history": history_entries(data)}
