"""Meta-training, the run behind `pymeta-train` / `example_metatrain.py`: `metatrain` chooses the
experiment by dataset (supervised: `pymeta.run.supervised`; RL: `pymeta.rl.training`) and runs it
through the one run loop (`pymeta.run.loop`: validation, saving, checkpoints and resume, TensorBoard
summaries, signals, MPI). Progress is logged to the `pymeta.training` logger."""

from typing import Any, List, Optional, Tuple

from pymeta import mpi
from pymeta.config import RunConfig, check_config, run_identity
from pymeta.registry import RL_DATASETS
from pymeta.run.divergence import Diverged
from pymeta.run.lock import run_lock
from pymeta.run.signals import Interrupted, SignalFlag

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
    The flat `c` is checked, then split into its sections (`RunConfig.sections()`), which are all the
    run code reads.
    """
    from pymeta.run.loop import run
    if distributed is None:
        distributed = mpi.is_mpi_run()
    check_config(c)
    s = c.sections()
    if s.task.dataset in RL_DATASETS:
        from pymeta.rl.training import RLExperiment
        return run(s.run, run_identity(s), RLExperiment(s, distributed))
    from pymeta.run.supervised import SupervisedExperiment
    return run(s.run, run_identity(s), SupervisedExperiment(s, distributed))


def setup_run(c: RunConfig, distributed: bool = False) -> Tuple[Any, Any, Any]:
    """Check `c`, seed everything, then build (problem, model, metalearner) of a supervised run
    (`pymeta.run.supervised.seeded_setup`); distributed: wrapped for an MPI run."""
    from pymeta.run.supervised import seeded_setup
    check_config(c)
    return seeded_setup(c.sections(), distributed)
