"""pymeta-metatest: meta-test a saved model, the mean accuracy (or MSE) after adaptation over many
meta-test tasks with the 95% confidence interval papers report.

    pymeta-metatest --model saved/model.h5 --num_tasks 1000 --num_inner_iterations 10

The task and inner-loop flags (dataset, way, shot, query count, metamodel, inner optimizer and learning
rate, inner steps and batch size, iMAML's lambda, precision, Omniglot protocol, transductive) default
to the settings the model file records about its training; flags given on the command line win. Papers
usually adapt with more steps at test time than during training (`--num_inner_iterations`). A model
trained with `--persistent_inner_state` carries its inner optimizer state: every test task starts from
it, as the original Reptile evaluation did (`--fresh_inner_state` starts from zero instead).

An RL model (navigation2d, halfcheetah_vel / dir, ant_dir) is evaluated with the MAML paper's protocol
(`pymeta.rl.evaluation`): plain policy-gradient steps, lr then lr / 2, 40 (2D navigation) or 20
(locomotion) episodes per step; the JSON has "returns_by_step" and "ci95_by_step"; `--init random`
evaluates a fresh random initialisation, `--plot FILE.png` draws the return against the steps.

    pymeta-metatest --model runs/nav2d/model.h5 --num_tasks 40 --num_inner_iterations 3 --output r.json
"""

import dataclasses
import logging
import shlex
from typing import List, Sequence

from absl import app, flags

from pymeta.cli._common import run_program, start
from pymeta.config import (CliOptions, MetaTestConfig, apply_model_settings, check_output_folders,
                           config_from_flags, define_flags, flags_given)
from pymeta.config.sections import IMAMLInnerSection, SupervisedTaskSection
from pymeta.registry import RL_DATASETS

logger = logging.getLogger("pymeta.cli")
# what a model file records about the supervised tasks and iMAML's inner loop does not matter for RL
SUPERVISED_ONLY = {f.name for section in (SupervisedTaskSection, IMAMLInnerSection)
                   for f in dataclasses.fields(section)}


def parse_args(argv: Sequence[str]) -> MetaTestConfig:
    """The meta-test settings from command-line arguments (without the program name): the flags given,
    then the settings recorded in the --model file, then the flag defaults."""
    fv = flags.FlagValues()
    define_flags(MetaTestConfig, fv)
    fv(["pymeta-metatest", *map(str, argv)])
    return config_with_model_settings(fv)


def config_with_model_settings(flag_values) -> MetaTestConfig:
    """The MetaTestConfig of parsed `flag_values`, with the --model file's settings for flags not given;
    logs which ones it took (or warns that the file records none)."""
    from pymeta.model_io import load_settings
    c = config_from_flags(MetaTestConfig, flag_values)
    if not c.model:
        raise ValueError("--model is required: the model file written by meta-training")
    if c.output:
        check_output_folders(c.output)  # before anything is read or evaluated
    settings = load_settings(c.model)
    if settings is None:
        logger.warning(f"{c.model} does not record how it was trained (written by an older pymeta?): "
                       "the flag defaults apply to every flag not given")
        return c
    c, taken = apply_model_settings(c, settings, flags_given(MetaTestConfig, flag_values))
    if c.dataset in RL_DATASETS:  # the supervised task settings a model file records do not matter for RL
        taken = {k: v for k, v in taken.items() if k not in SUPERVISED_ONLY and (v or k != "env_kwargs")}
    if taken:
        logger.info(f"settings from {c.model}: " + " ".join(_as_flag(k, v) for k, v in taken.items()))
    return c


def _as_flag(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={shlex.quote(str(value))}"


def main(argv: List[str]) -> int:
    """Meta-test with the parsed flags; returns the exit code (2 for a bad setting)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    start()
    from pymeta.metatest import meta_test
    try:
        meta_test(config_with_model_settings(flags.FLAGS))
    except (ValueError, FileNotFoundError, ImportError) as e:
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
