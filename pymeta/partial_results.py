"""The per-task results of a meta-test so far, kept beside its `--output` JSON as `<output>.partial`
after every compiled batch of tasks, so that the same command continues an interrupted meta-test
(Ctrl-C, a killed job, the end of a session) where it stopped instead of from its first task.

A partial file belongs to one meta-test: the same settings and the same model file (its SHA-256). Any
other is ignored with a warning and overwritten. The caller replays the random draws of the tasks
already done (`pymeta.evaluation`), so the continued meta-test evaluates the tasks an uninterrupted one
would and reports the same figures.
"""

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Tuple

from pymeta.atomic import write_json_atomic

logger = logging.getLogger(__name__)

SUFFIX = ".partial"


def file_digest(path: str) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PartialResults:
    """(losses [n], accuracies [n], seconds spent) of the first n of `total` tasks of the meta-test
    `identity` (JSON-able: its settings and the model file's digest), evaluated in batches of `batch`
    tasks and stored at `output + SUFFIX` after each batch but the last."""

    def __init__(self, output: str, identity: Dict[str, Any], batch: int, total: int):
        self.path = output + SUFFIX
        self.identity = json.loads(json.dumps(identity))  # as it reads back from the file
        self.batch, self.total = batch, total

    def load(self) -> Tuple[List[float], List[float], float]:
        """The tasks this meta-test evaluated before, or ([], [], 0.0) without a partial file of it."""
        if not os.path.exists(self.path):
            return [], [], 0.0
        try:
            with open(self.path) as f:
                saved = json.load(f)
            losses = [float(x) for x in saved["losses"]]
            accs = [float(x) for x in saved["accuracies"]]
            seconds, identity = float(saved["seconds"]), saved["identity"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            logger.warning(f"ignoring {self.path}: not readable as a partial meta-test ({e}); starting from the "
                           "first task")
            return [], [], 0.0
        n = len(losses)
        if identity != self.identity or len(accs) != n or n % self.batch or not 0 < n < self.total:
            logger.warning(f"ignoring {self.path}: it is not a partial result of this meta-test (other settings, "
                           "another model file, or edited); starting from the first task")
            return [], [], 0.0
        return losses, accs, seconds

    def save(self, losses: List[float], accs: List[float], seconds: float) -> None:
        write_json_atomic(self.path, {"identity": self.identity, "losses": [float(x) for x in losses],
                                      "accuracies": [float(x) for x in accs], "seconds": float(seconds)})

    def remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass
