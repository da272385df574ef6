"""A run that stops being finite: `Diverged`, raised before anything non-finite is saved."""

from typing import Any, List, Mapping, NoReturn

import numpy as np

from pymeta import checkpoint as ckpt


class Diverged(ValueError):
    """The training loss or the meta-parameters stopped being finite; nothing non-finite was saved."""


def check_finite(identity: Mapping[str, Any], it: int, losses: List[float], metalearner: Any, run_dir: str) -> None:
    """Stop the run (Diverged) if a training loss or a meta-parameter is not finite."""
    if not np.all(np.isfinite(np.asarray(losses, dtype=np.float64))):
        diverged(identity, it, "the training loss", run_dir)
    if not all(np.all(np.isfinite(v.numpy())) for v in metalearner.meta_variables):
        diverged(identity, it, "the meta-parameters", run_dir)


def diverged(identity: Mapping[str, Any], it: int, what: str, run_dir: str) -> NoReturn:
    """Raise `Diverged`; `identity`: the run's `run_identity` (its learning rates name the likely cause)."""
    last = ckpt.latest_checkpoint(run_dir)
    kept = f"the last finite checkpoint, {last}, is kept" if last else "no checkpoint was written"
    raise Diverged(f"training diverged at iteration {it}: {what} is not finite (inf or nan); the likely "
                   f"cause is a learning rate too high (--meta_lr={identity['meta_lr']}, --inner_lr="
                   f"{identity['inner_lr']}): nothing non-finite was saved, {kept}")
