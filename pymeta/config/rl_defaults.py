"""The RL datasets' defaults for the flags whose supervised default does not fit RL, used when such a
flag is not given (`resolve_rl_defaults`, called once, by the command line, with the flags given)."""

import dataclasses
from typing import Collection, Optional

from pymeta.config.sections import RunConfig
from pymeta.registry import RL_DATASETS, RL_DEFAULTS

# RL runs: the defaults of the flags whose supervised default does not fit RL, used when the flag is not
# given; meta_batch_size, inner_lr and horizon come from RL_DEFAULTS (`pymeta.rl.problems.DEFAULTS`)
RL_RUN_DEFAULTS = {"num_inner_training_iterations": 1, "meta_lr": 0.01, "num_validation_batches": 1,
                   "test_every_k_iterations": 10, "save_every_k_iterations": 10}


def resolve_rl_defaults(c: RunConfig, given: Optional[Collection[str]] = None) -> RunConfig:
    """For an RL dataset: `c` with the dataset's defaults (RL_DEFAULTS: meta-batch, inner lr, horizon;
    RL_RUN_DEFAULTS) for the flags not in `given` (the flags set on the command line; None: the fields
    that still have their dataclass default count as not given), --horizon=0 replaced by the
    environment's and --outer_optimizer=auto by trpo (maml) or adam. Other datasets: `c` unchanged."""
    if c.dataset not in RL_DATASETS:
        return c
    if given is None:
        defaults = RunConfig()
        given = {f.name for f in dataclasses.fields(RunConfig) if getattr(c, f.name) != getattr(defaults, f.name)}
    values = {**RL_RUN_DEFAULTS, **{k: v for k, v in RL_DEFAULTS[c.dataset].items() if k != "horizon"}}
    changes = {k: v for k, v in values.items() if k not in given}
    if c.horizon == 0:
        changes["horizon"] = RL_DEFAULTS[c.dataset]["horizon"]
    if c.outer_optimizer == "auto":
        changes["outer_optimizer"] = "trpo" if c.metamodel == "maml" else "adam"
    return dataclasses.replace(c, **changes)
