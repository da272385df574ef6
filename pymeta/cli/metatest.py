r"""pymeta-metatest: meta-test a saved model, the mean accuracy (or MSE) after adaptation over many
meta-test tasks with the 95% confidence interval papers report.

    pymeta-metatest --model saved/model.h5 --dataset omniglot --num_output_classes 5 \
        --num_train_samples_per_class 1 --num_test_samples_per_class 15 --metamodel fomaml \
        --inner_lr 0.1 --num_inner_iterations 10 --num_tasks 1000

The inner loop at test time is the one of meta-training (same inner optimizer and learning rate); papers
usually adapt with more steps at test time than during training (`--num_inner_iterations`). A model
trained with `--persistent_inner_state` carries its inner optimizer state: every test task starts from
it, as the original Reptile evaluation did (`--fresh_inner_state` starts from zero instead).
"""

import logging
from typing import List, Sequence

from absl import app, flags

from pymeta.cli._common import run_program, start
from pymeta.config import CliOptions, MetaTestConfig, config_from_flags, define_flags

logger = logging.getLogger("pymeta.cli")


def parse_args(argv: Sequence[str]) -> MetaTestConfig:
    """The meta-test settings from command-line arguments (without the program name)."""
    fv = flags.FlagValues()
    define_flags(MetaTestConfig, fv)
    fv(["pymeta-metatest", *map(str, argv)])
    return config_from_flags(MetaTestConfig, fv)


def main(argv: List[str]) -> int:
    """Meta-test with the parsed flags; returns the exit code (2 for a bad setting)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    start()
    from pymeta.evaluation import meta_test
    try:
        meta_test(config_from_flags(MetaTestConfig))
    except (ValueError, FileNotFoundError) as e:
        logger.error(str(e))
        return 2
    return 0


def run() -> None:
    """The `pymeta-metatest` console script."""
    define_flags(MetaTestConfig)
    define_flags(CliOptions)
    run_program(main, __doc__)


if __name__ == "__main__":
    run()
