"""Choose the test-time inner step count of a model on the VALIDATION tasks, never on the test tasks, and
record it in the model file, so that `pymeta-metatest --model FILE` then uses it without another flag.

    python scripts/choose_test_steps.py --model runs/mi/model.h5 --candidates 5,10,20 --num_tasks 600

Each candidate is meta-tested on the validation split (the other flags as `pymeta-metatest`'s: the
settings the model file records, flags given win); the best mean (highest accuracy, lowest MSE) is
written into the file's settings as `metatest_num_inner_iterations`, with the shots and inner batch it was
chosen with (`metatest_num_train_samples_per_class`, `metatest_inner_batch_size`: a Reptile model trained with
15 shots per class and chosen with `--num_train_samples_per_class 1` is then meta-tested 1-shot) and every
candidate's figure (`metatest_steps_on_validation`). `--norecord` only prints them.
"""

import dataclasses
import logging
from typing import List

from absl import app, flags

from pymeta.cli._common import checked_then_run, run_program
from pymeta.cli.metatest import checked_config
from pymeta.config import CliOptions, MetaTestConfig, define_flags
from pymeta.config.checks import check_not_in_zoo
from pymeta.config.records import METATEST_PROTOCOL

logger = logging.getLogger("pymeta.cli")


def choose(c: MetaTestConfig, candidates: List[int], record: bool = True):
    """(best step count, {steps: validation result}) of model `c.model`; records the choice if `record`."""
    from pymeta.metatest import meta_test
    from pymeta.model_io import record_settings
    results = {k: meta_test(dataclasses.replace(c, split="val", num_inner_iterations=k, output=""))
               for k in candidates}
    higher_is_better = next(iter(results.values()))["metric"] == "accuracy_percent"
    best = (max if higher_is_better else min)(results, key=lambda k: results[k]["mean"])
    logger.info(f"chosen on {c.num_tasks} validation tasks: {best} inner steps ("
                + ", ".join(f"{k}: {r['mean']:.2f} ± {r['ci95']:.2f}" for k, r in results.items()) + ")")
    if record:
        chosen = dataclasses.replace(c, num_inner_iterations=best)
        record_settings(c.model, {
            **{key: getattr(chosen, field_name) for key, field_name in METATEST_PROTOCOL.items()},
            "metatest_steps_on_validation": {str(k): {"mean": r["mean"], "ci95": r["ci95"], "num_tasks": r["num_tasks"]}
                                             for k, r in results.items()}})
        logger.info(f"recorded in {c.model}: pymeta-metatest --model {c.model} now adapts with {best} steps "
                    f"({c.num_train_samples_per_class} shots per class, inner batch {c.inner_batch_size})")
    return best, results


def main(argv: List[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")

    def check():
        given = [s.strip() for s in flags.FLAGS.candidates.split(",") if s.strip()]
        if not given or not all(s.isdigit() for s in given):
            raise ValueError(f"--candidates must be step counts >= 0, e.g. 5,10,20; got {flags.FLAGS.candidates!r}")
        candidates = [int(s) for s in given]
        if flags.FLAGS["split"].present and flags.FLAGS.split != "val":
            raise ValueError("the step count is chosen on the validation tasks only: drop --split")
        flags.FLAGS.split = "val"  # so that the protocol line printed first says what is evaluated
        c = checked_config(flags.FLAGS)
        if flags.FLAGS.record:
            check_not_in_zoo(c.model)  # the choice is written into the model file
        return c, candidates

    return checked_then_run(check, lambda checked: choose(*checked, flags.FLAGS.record))


if __name__ == "__main__":
    define_flags(MetaTestConfig)
    define_flags(CliOptions)
    flags.DEFINE_string("candidates", "5,10,20", "test-time inner step counts to compare on the validation tasks")
    flags.DEFINE_boolean("record", True, "write the chosen count into the model file's settings")
    run_program(main, __doc__)
