"""What the run loop (`pymeta.run.loop`) drives: an `Experiment`, the supervised one
(`pymeta.run.supervised`) or the RL one (`pymeta.rl.training`). The loop owns the files, the cadence,
signals and resume; an experiment owns its problem, its meta-learner and what one step means."""

import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Protocol

from pymeta.run.signals import SignalFlag


@dataclasses.dataclass
class Step:
    """What `Experiment.step` did: `count` meta-iterations (<= the `max_steps` asked for)."""
    count: int
    losses: List[float] = dataclasses.field(default_factory=list)  # must be finite (else `Diverged`)
    entries: List[dict] = dataclasses.field(default_factory=list)  # history entries (the loop sets "seconds")
    scalars: Mapping[str, Optional[float]] = dataclasses.field(default_factory=dict)  # TensorBoard (None: skipped)
    postfix: Dict[str, str] = dataclasses.field(default_factory=dict)  # the progress bar's
    log: Optional[str] = None  # a line for the log, if the experiment has one per step


@dataclasses.dataclass
class Validation:
    """One validation: its history entry, its headline `value` (must be finite), a log line, scalars."""
    entry: dict
    value: float
    what: str  # the headline's name in a divergence message, e.g. "the validation loss"
    log: str
    scalars: Mapping[str, Optional[float]] = dataclasses.field(default_factory=dict)  # TensorBoard (None: skipped)


class Experiment(Protocol):
    """A meta-training experiment. The loop calls, in order: `setup` once (seeded set-up; the
    meta-learner exists afterwards; `stop` is the run's `SignalFlag`, for `compiling` notices),
    `synchronize` once after a checkpoint was (or was not) loaded into `metalearner` (MPI: rank 0's
    state everywhere), then `step` (at most `max_steps` meta-iterations from `iteration`), `validate`
    and `save` at the run's cadence, `agree_stop` after every step and `finish` once at the end.

    MPI: every rank calls `setup`, `synchronize`, `step`, `validate` (it may be a collective; it
    returns the result on rank 0 and may return None on the others) and `agree_stop` (the largest
    signal number of all ranks, so that every rank stops at the same iteration). Only rank 0 writes
    files: the loop calls `save` (the model file) and `finish` (plots) on rank 0 alone."""

    is_root: bool
    metalearner: Any  # what a checkpoint holds (`pymeta.checkpoint`): meta_variables, model, optimizer

    @property
    def settings(self) -> Mapping[str, Any]:
        """What the model file and the history record about the run."""

    def setup(self, stop: SignalFlag) -> None: ...

    def synchronize(self) -> None: ...

    def step(self, iteration: int, max_steps: int) -> Step: ...

    def validate(self, iteration: int, seconds: float) -> Optional[Validation]: ...

    def save(self) -> None: ...

    def agree_stop(self, signum: Optional[int]) -> Optional[int]: ...

    def finish(self, history: List[dict]) -> None: ...
