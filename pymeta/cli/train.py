r"""pymeta-train: meta-train a network with FOMAML, Reptile, iMAML, MAML or SeqFOMAML (the command line
of the original pyMeta's example_metatrain.py; `--helpfull` lists every flag).

    pymeta-train --dataset=sinusoid --metamodel=fomaml --num_train_samples_per_class=10 \
        --num_test_samples_per_class=100 --num_inner_training_iterations=5 --inner_batch_size=10 \
        --meta_lr=0.001 --inner_lr=0.01 --meta_batch_size=5 --num_validation_batches=10 \
        --model_save_filename=saved/model.h5 --num_outer_metatraining_iterations=10000
    pymeta-train --dataset=navigation2d --metamodel=maml --num_outer_metatraining_iterations=100 \
        --model_save_filename=runs/nav2d/model.h5
"""

import logging
from typing import List

from absl import app

from pymeta.cli._common import run_program, setup_logging, start
from pymeta.config import (CliOptions, RunConfig, check_config, check_ranks, config_from_flags, define_flags,
                           flags_given, resolve_rl_defaults)
from pymeta.mpi import is_mpi_run, launch_size_and_rank, mpi_abort_on_exception
from pymeta.registry import check_data_file

logger = logging.getLogger("pymeta.cli")


def main(argv: List[str]) -> int:
    """Meta-train with the parsed flags; returns the exit code (2 for a bad setting, 128 + signal)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    setup_logging()
    ranks, rank = launch_size_and_rank()
    try:
        # RL datasets: their own defaults for the flags not given (--help: 'RL, when not given')
        c = resolve_rl_defaults(config_from_flags(RunConfig), flags_given(RunConfig))
        check_config(c)  # before TensorFlow is imported: a bad setting is refused at once
        check_data_file(c.dataset, c.data_path)
        check_ranks(c, ranks)
    except (ValueError, FileNotFoundError) as e:
        if rank == 0:  # every rank of an MPI launch finds the same: one line, not one per rank
            logger.error(str(e))
        return 2
    start()
    if is_mpi_run():
        mpi_abort_on_exception()  # a failing rank ends the whole job instead of hanging the others
    from pymeta.training import Interrupted, metatrain
    try:
        metatrain(c)
    except (ValueError, FileNotFoundError, ImportError) as e:
        logger.error(str(e))
        if is_mpi_run():
            raise  # -> MPI abort of every rank
        return 2
    except Interrupted as e:
        logger.warning(str(e))
        return 128 + e.signum
    return 0


def run() -> None:
    """The `pymeta-train` console script."""
    define_flags(RunConfig)
    define_flags(CliOptions)
    run_program(main, __doc__)


if __name__ == "__main__":
    run()
