"""Meta-training, the run behind `pymeta-train` / `example_metatrain.py`: `metatrain` chooses the
experiment by dataset (supervised: `pymeta.run.supervised`; RL: `pymeta.rl.training`) and runs it
through the one run loop (`pymeta.run.loop`: validation, saving, checkpoints and resume, TensorBoard
summaries, signals, MPI). Progress is logged to the `pymeta.training` logger."""

from typing import List, Optional

from pymeta import mpi
from pymeta.config import RunConfig, check_config
from pymeta.registry import RL_DATASETS
from pymeta.run.divergence import Diverged
from pymeta.run.lock import run_lock
from pymeta.run.signals import Interrupted, SignalFlag
from pymeta.run.supervised import setup_run

__all__ = ["Diverged", "Interrupted", "SignalFlag", "metatrain", "run_lock", "setup_run"]


def metatrain(c: RunConfig, distributed: Optional[bool] = None) -> List[dict]:
    """Run (or resume) meta-training for config `c`; returns the history (also written to
    <model>_history.json as {"settings": ..., "history": [...]}).

    Validation every `test_every_k_iterations` (and at iteration 0); the model (`.h5`) saved every
    `save_every_k_iterations` and at the end; a checkpoint at the same points and on SIGINT/SIGTERM
    (then `Interrupted` is raised); learning-curve PNG (and for sinusoid a plot of one adapted task,
    for 2D navigation trajectories) next to the model; TensorBoard scalars in <run_dir>/tensorboard.
    An RL dataset's flags that are not given take the dataset's defaults on the command line
    (`config.resolve_rl_defaults`); call it first from Python.
    distributed: an MPI run (default: when started under mpiexec with several ranks).
    """
    from pymeta.run.loop import run
    if distributed is None:
        distributed = mpi.is_mpi_run()
    check_config(c)
    if c.dataset in RL_DATASETS:
        from pymeta.rl.training import RLExperiment
        return run(c, RLExperiment(c, distributed))
    from pymeta.run.supervised import SupervisedExperiment
    return run(c, SupervisedExperiment(c, distributed))
