"""A run that stops being finite: `Diverged`, raised before anything non-finite is saved."""

import numpy as np

from pymeta import checkpoint as ckpt


class Diverged(ValueError):
    """The training loss or the meta-parameters stopped being finite; nothing non-finite was saved."""


def check_finite(c, it, losses, metalearner, run_dir):
    """Stop the run (Diverged) if a training loss or a meta-parameter is not finite."""
    if not np.all(np.isfinite(np.asarray(losses, dtype=np.float64))):
        diverged(c, it, "the training loss", run_dir)
    if not all(np.all(np.isfinite(v.numpy())) for v in metalearner.meta_variables):
        diverged(c, it, "the meta-parameters", run_dir)


def diverged(c, it, what, run_dir):
    last = ckpt.latest_checkpoint(run_dir)
    kept = f"the last finite checkpoint, {last}, is kept" if last else "no checkpoint was written"
    raise Diverged(f"training diverged at iteration {it}: {what} is not finite (inf or nan); the likely "
                   f"cause is a learning rate too high (--meta_lr={c.meta_lr}, --inner_lr={c.inner_lr}): "
                   f"nothing non-finite was saved, {kept}")
