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

from pymeta.cli._common import checked_then_run, run_program
from pymeta.config import (CliOptions, MetaTestConfig, apply_model_settings, check_metatest_config,
                           check_output_folders, config_from_flags, define_flags, flags_given)
from pymeta.config.sections import IMAMLInnerSection, RLTaskSection, SupervisedTaskSection
from pymeta.config.stored import read_stored_settings
from pymeta.registry import RL_DATASETS, check_data_file

logger = logging.getLogger("pymeta.cli")
# what a model file records about the supervised tasks and iMAML's inner loop does not matter for RL,
# RL's episodes not for supervised tasks, iMAML's inner loop not for the other meta-learners
IMAML_ONLY = {f.name for f in dataclasses.fields(IMAMLInnerSection)}
SUPERVISED_ONLY = {f.name for f in dataclasses.fields(SupervisedTaskSection)} | IMAML_ONLY
RL_ONLY = {f.name for f in dataclasses.fields(RLTaskSection)}


def setting_matters(c: MetaTestConfig, name: str) -> bool:
    """Whether the recorded setting `name` changes a meta-test of `c`'s dataset and meta-learner (the
    others are applied all the same, and not shown)."""
    if c.dataset in RL_DATASETS:
        return name not in SUPERVISED_ONLY
    if name in RL_ONLY:
        return False
    if name in IMAML_ONLY:
        return c.metamodel in IMAMLInnerSection.metamodels
    if name == "omniglot_protocol":
        return c.dataset == "omniglot"
    # the sinusoid network: one output, no batch norm
    return not (c.dataset == "sinusoid" and name in ("num_output_classes", "transductive"))


def parse_args(argv: Sequence[str]) -> MetaTestConfig:
    """The meta-test settings from command-line arguments (without the program name): the flags given,
    then the settings recorded in the --model file, then the flag defaults."""
    fv = flags.FlagValues()
    define_flags(MetaTestConfig, fv)
    fv(["pymeta-metatest", *map(str, argv)])
    return config_with_model_settings(fv)


def config_with_model_settings(flag_values) -> MetaTestConfig:
    """The MetaTestConfig of parsed `flag_values`: the flags given, then (with --pretrained) the zoo
    index's protocol of that row, then the --model file's settings, then the flag defaults. Logs the
    protocol first, then which settings came from the file (or warns that the file records none)."""
    c = config_from_flags(MetaTestConfig, flag_values)
    given = set(flags_given(MetaTestConfig, flag_values))
    if c.pretrained:
        c, given = _with_zoo_protocol(c, given)
    if not c.model:
        raise ValueError("--model is required: the model file written by meta-training (or --pretrained NAME, "
                         "a model of the zoo: see pretrained/index.json)")
    if c.output:
        check_output_folders(c.output)  # before anything is read or evaluated
    settings = read_stored_settings(c.model, given)  # checked like the flags, without TensorFlow
    taken = {}
    if settings is None:
        logger.warning(f"{c.model} does not record how it was trained (written by an older pymeta?): "
                       "the flag defaults apply to every flag not given")
    else:
        c, taken = apply_model_settings(c, settings, given)
    taken = {k: v for k, v in taken.items() if setting_matters(c, k) and (v or k != "env_kwargs")}
    check_data_file(c.dataset, c.data_path)  # before the problem is built
    logger.info(protocol_line(c, taken))
    if taken:
        logger.info(f"settings from {c.model}: " + " ".join(_as_flag(k, v) for k, v in taken.items()))
    if (c.dataset not in RL_DATASETS and c.dataset != "sinusoid" and "num_test_samples_per_class" in taken
            and c.num_test_samples_per_class != PAPER_QUERIES):
        logger.warning(f"{c.num_test_samples_per_class} queries per class, as the model was trained; few-shot "
                       f"papers report {PAPER_QUERIES} (--num_test_samples_per_class {PAPER_QUERIES})")
    return c


def checked_config(flag_values) -> MetaTestConfig:
    """`config_with_model_settings(flag_values)`, checked (`check_metatest_config`): all a meta-test
    finds wrong without TensorFlow (settings, the model file and its stored settings, the data file)."""
    c = config_with_model_settings(flag_values)
    check_metatest_config(c)
    return c


PAPER_QUERIES = 15  # query samples per class of the few-shot papers' meta-test tables


def _with_zoo_protocol(c: MetaTestConfig, given):
    """`c` with the model file and protocol of zoo row --pretrained=NAME[:RESULT] for every flag not
    given; (config, the flags now fixed: given or from the index)."""
    from pymeta import zoo
    if "model" in given:
        raise ValueError("--pretrained names the model file already: pass --pretrained or --model, not both")
    name, _, result = c.pretrained.partition(":")
    row = zoo.metatest_flags(name, result or None)
    taken = {k: v for k, v in row.items() if k not in given}
    return dataclasses.replace(c, **taken), given | set(taken)


def protocol_line(c: MetaTestConfig, from_file=()) -> str:
    """One line stating the meta-test protocol of `c`; '*' marks the settings taken from the model file."""
    def v(name, text):
        return f"{text}*" if name in from_file else text
    if c.dataset in RL_DATASETS:
        parts = [c.dataset, v("num_inner_iterations", f"{c.num_inner_iterations} adaptation steps"),
                 f"{c.num_tasks} tasks" + (f" from {c.test_tasks}" if c.test_tasks else f", seed {c.seed}")]
    elif c.dataset == "sinusoid":  # regression: K support and Q query points, no classes
        parts = [f"{c.dataset} {c.split} split",
                 v("num_train_samples_per_class", f"{c.num_train_samples_per_class} support points"),
                 v("num_test_samples_per_class", f"{c.num_test_samples_per_class} query points"),
                 v("num_inner_iterations", f"{c.num_inner_iterations} inner steps"),
                 f"{c.num_tasks} tasks, seed {c.seed}"]
    else:
        parts = [f"{c.dataset} {c.split} split",
                 v("num_output_classes", f"{c.num_output_classes}-way") + " "
                 + v("num_train_samples_per_class", f"{c.num_train_samples_per_class}-shot"),
                 v("num_test_samples_per_class", f"{c.num_test_samples_per_class} queries per class"),
                 v("num_inner_iterations", f"{c.num_inner_iterations} inner steps"),
                 f"{c.num_tasks} tasks, seed {c.seed}",
                 v("transductive", "transductive" if c.transductive else "non-transductive")]
    source = f"zoo row {c.pretrained}" if c.pretrained else "flags"
    marked = " (* from the model file)" if from_file else ""
    return f"meta-test protocol ({source}): " + ", ".join(parts) + marked


def _as_flag(name, value):
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no{name}"
    return f"--{name}={shlex.quote(str(value))}"


def main(argv: List[str]) -> int:
    """Meta-test with the parsed flags; returns the exit code (2 for a bad setting)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    return checked_then_run(lambda: checked_config(flags.FLAGS), _meta_test)


def _meta_test(c) -> None:
    from pymeta.metatest import meta_test
    meta_test(c)


def run() -> None:
    """The `pymeta-metatest` console script."""
    define_flags(MetaTestConfig)
    define_flags(CliOptions)
    run_program(main, __doc__)


if __name__ == "__main__":
    run()
