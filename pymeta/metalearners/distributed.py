"""The outer loop of any meta-learner split across MPI processes (mpi4py).

Each process (rank) adapts to its share of the tasks of a meta-batch; the per-task results are summed
locally, the sums of all ranks are combined with ONE `Allreduce` of a flat float32 buffer (the results,
the sum of the last inner losses and the task count), and every rank then applies the same outer step
to the same mean result, so the meta-parameters stay identical on all ranks without sending them.

    from pymeta.metalearners.distributed import DistributedMetaLearner
    from pymeta.mpi import mpi_abort_on_exception, seed_everything
    mpi_abort_on_exception()        # a rank that raises ends the whole job (MPI_Abort), never a hang
    seed_everything(seed)           # the same task stream on every rank (task_sampling="replicated")
    dml = DistributedMetaLearner(FOMAMLMetaLearner(model, keras.optimizers.Adam(1e-3)))
    dml.initialize()                # theta (and the outer optimizer's state) broadcast from rank 0
    for it in range(num_iterations):
        tasks = train_dist.sample_batch(meta_batch_size)     # the whole meta-batch, same on all ranks
        dml.metatrain_step(tasks, num_inner_steps, inner_batch_size)  # each rank adapts to its slice

Run with `mpiexec -n 4 python train.py`; without mpiexec (or without mpi4py) the wrapper runs as a
single process and gives the result of the wrapped meta-learner.

Task assignment (`task_sampling`):
    "replicated" (default): every rank draws the *whole* meta-batch from the same random stream
        (`np.random` seeded identically, see `seed_everything`) and adapts to its contiguous slice
        (sizes differ by at most one: 3 tasks on 2 ranks -> 2 + 1; the mean is weighted by the task
        count, nothing is dropped). The inner minibatches of all tasks are drawn on every rank in
        the order a single process draws them, so a run on P ranks processes exactly the tasks of the
        single-process run and gives its result up to float rounding (only the order of the sums
        differs). Drawing tasks is cheap (labels and indices); only the slice's data is loaded.
        Every rank must then make the same `np.random` calls: draw validation tasks on all ranks too
        (`evaluate_tasks_distributed` spreads their evaluation), `check_sync()` detects a divergence.
    "per_rank": each rank draws only its own tasks, from its own stream
        (`seed_everything(seed, per_rank=True)`: seed derived from (seed, rank)); pass this rank's
        tasks (`local_batch_size(meta_batch_size)` of them) to `metatrain_step` / `update`.
        Reproducible for a given number of ranks, independent of what other ranks draw.

The step-by-step API works the same way; `update` combines the ranks' results:

    results = []
    for task in dml.local_tasks(tasks, num_inner_steps, inner_batch_size):   # this rank's slice
        dml.task_begin(task)
        task.fit_n_iterations(dml.model, num_inner_steps, inner_batch_size)
        results.append(dml.task_end(task))
    dml.update(results)                                                      # one Allreduce

Parameters stay bit-identical across ranks without being sent: every rank receives the same sum from
the Allreduce (MPI does not formally promise it for floats, but MPICH's and Open MPI's algorithms
either reduce each element once and distribute it, or combine pairs symmetrically, a+b == b+a), and
the outer step is a deterministic function of (theta, optimizer state, mean result) run by the same
program. tests/test_distributed.py checks the parameter digests after every update; `check_sync()`
checks them at run time. On a heterogeneous cluster (ranks on different CPU types, where the same
float expression may round differently) pass `resync_every=N` to broadcast the state from rank 0
every N updates (one Bcast of theta and the optimizer state).
"""

import hashlib
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from pymeta.core.meta_learner import GradBasedMetaLearner
from pymeta.core.protocols import OuterStep
from pymeta.core.task import SupervisedTask, Task
from pymeta.core.task_data import TaskResult, aux_of
from pymeta.mpi import Collectives, default_comm
from pymeta.optim import InnerStateVariables


# --- task assignment ---------------------------------------------------------------------------------------
def share_bounds(num_tasks: int, rank: int, size: int) -> Tuple[int, int]:
    """(start, stop): the contiguous slice of `num_tasks` tasks processed by `rank` of `size`.
    Shares differ by at most one task; the first `num_tasks % size` ranks get one more."""
    base, extra = divmod(int(num_tasks), int(size))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _runs_own_fit(task: SupervisedTask) -> bool:
    """True when `task.fit_n_iterations` is SupervisedTask's (so a presampled proxy can replace it)."""
    return type(task).fit_n_iterations is SupervisedTask.fit_n_iterations


class _PresampledTask(SupervisedTask):
    """A view of a supervised task whose inner minibatches were drawn in advance.

    Lets each rank adapt to its slice of a meta-batch with the minibatches a single process would
    have drawn for those tasks, while every rank consumes `np.random` as the single process does.
    Everything else is the wrapped task's.
    """

    def __init__(self, task, indices, num_iterations, batch_size):
        self.task = task
        self._presampled = indices
        self._presampled_key = (int(num_iterations), -1 if batch_size is None else int(batch_size))

    def __getattr__(self, name):
        task = self.__dict__.get("task")
        if task is None:
            raise AttributeError(name)
        return getattr(task, name)

    def inner_batch_indices(self, num_iterations, batch_size):
        key = (int(num_iterations), -1 if batch_size is None else int(batch_size))
        if key == self._presampled_key:
            return self._presampled
        return self.task.inner_batch_indices(num_iterations, batch_size)

    def reset(self):
        self.task.reset()

    def num_train_samples(self):
        return self.task.num_train_samples()

    def get_train_set(self):
        return self.task.get_train_set()

    def get_test_set(self):
        return self.task.get_test_set()

    def sample_batch(self, batch_size):
        return self.task.sample_batch(batch_size)


# --- the wrapper -------------------------------------------------------------------------------------------
class DistributedMetaLearner:
    """Runs `metalearner`'s outer loop on all ranks of `comm`, each rank adapting to part of the tasks.

    Works with any `GradBasedMetaLearner` with an optimizer outer step (FOMAML, Reptile, iMAML, MAML,
    ...): it only uses the building blocks `sum_task_results` / `apply_mean_result` (fast path) and
    `task_begin` / `task_end` (step-by-step API).

    Its interface is declared, not forwarded: the members a run loop uses
    (`pymeta.core.protocols.MetaLearnerLike`: model, meta_variables, outer_step, optimizer,
    inner_state, aux_names, name, is_root, initialize, current_initial_parameters,
    set_initial_parameters, broadcast_state, allreduce_max, local_tasks, task_begin, task_end, update,
    metatrain_step(s), evaluate_tasks, evaluate_tasks_distributed), plus the MPI-specific ones below;
    anything else is the wrapped `metalearner`'s, reached through that attribute.

    Args:
        metalearner: the meta-learner to distribute (built identically on every rank).
        comm: an mpi4py communicator; default MPI.COMM_WORLD in an MPI run, else a single process.
        task_sampling: "replicated" (each call gets the whole meta-batch, identical on all ranks) or
            "per_rank" (each call gets this rank's own tasks); see the module docstring.
        resync_every: broadcast theta and the outer optimizer's state from rank 0 every that many
            updates (0: never; not needed when all ranks run on the same kind of CPU).
        root: the rank whose parameters are broadcast.

    Every method that updates or evaluates is collective: all ranks must call it, in the same order.
    """

    TASK_SAMPLING = ("replicated", "per_rank")

    def __init__(self, metalearner: GradBasedMetaLearner, comm: Any = None, task_sampling: str = "replicated",
                 resync_every: int = 0, root: int = 0):
        if task_sampling not in self.TASK_SAMPLING:
            raise ValueError(f"task_sampling must be one of {self.TASK_SAMPLING}, got {task_sampling!r}")
        if isinstance(metalearner, DistributedMetaLearner):
            raise TypeError("the meta-learner is already distributed")
        self.metalearner: GradBasedMetaLearner = metalearner
        self.comm = default_comm() if comm is None else comm
        self._coll = Collectives(self.comm)
        self.rank, self.size = self._coll.rank, self._coll.size
        self.task_sampling = task_sampling
        self.resync_every = int(resync_every)
        self.root = int(root)
        self.num_updates = 0
        self.stats: Dict[str, float] = {"updates": 0, "local_tasks": 0, "compute_seconds": 0.0, "allreduce_seconds": 0.0,
                      "allreduce_bytes": 0, "broadcasts": 0}

    def __repr__(self) -> str:
        return (f"DistributedMetaLearner({self.metalearner.name}, rank {self.rank}/{self.size}, "
                f"task_sampling={self.task_sampling!r})")

    @property
    def is_root(self) -> bool:
        """True on the rank that should log, validate-report and save (rank `root`)."""
        return self.rank == self.root

    # --- the wrapped meta-learner's state, declared (read-only views) ---------------------------------
    @property
    def name(self) -> str:
        return self.metalearner.name

    @property
    def model(self) -> keras.Model:
        return self.metalearner.model

    @property
    def meta_variables(self) -> Optional[List[tf.Variable]]:
        return self.metalearner.meta_variables

    @property
    def outer_step(self) -> OuterStep:
        return self.metalearner.outer_step

    @property
    def optimizer(self) -> Any:
        return self.metalearner.optimizer

    @property
    def inner_state(self) -> Optional[InnerStateVariables]:
        return self.metalearner.inner_state

    @property
    def aux_names(self) -> Tuple[str, ...]:
        return tuple(self.metalearner.aux_names)

    @property
    def current_initial_parameters(self) -> List[np.ndarray]:
        return self.metalearner.current_initial_parameters

    # --- state ------------------------------------------------------------------------------------------
    def initialize(self, *args: Any, **kwargs: Any) -> None:
        """The wrapped `initialize()`, then theta and the outer optimizer's state broadcast from `root`
        (collective): every rank starts from rank 0's model weights."""
        self.metalearner.initialize(*args, **kwargs)
        self.broadcast_state()

    def broadcast_state(self, root: Optional[int] = None) -> None:
        """Copy theta and the outer step's variables (an optimizer's state) of rank `root` to every rank
        (collective), e.g. after rank 0 alone loaded a checkpoint. One Bcast of a flat buffer."""
        root = self.root if root is None else root
        theta_vars = list(self.metalearner.ensure_initialized())
        opt_vars = list(self.metalearner.outer_step.variables)
        arrays = [np.asarray(v.numpy()) for v in theta_vars + opt_vars]
        exact_in_f32 = all(a.dtype == np.float32 for a in arrays)
        values = self._coll.bcast_arrays(arrays, root, np.float32 if exact_in_f32 else np.float64)  # f64: int64 steps
        self.metalearner.set_initial_parameters(values[:len(theta_vars)])  # also loads the model
        for v, x in zip(opt_vars, values[len(theta_vars):]):
            v.assign(x)
        self.stats["broadcasts"] += 1

    def set_initial_parameters(self, values: Sequence[Any]) -> None:
        """Set theta on this rank (not collective: give every rank the same values, or call
        `broadcast_state()` afterwards)."""
        self.metalearner.set_initial_parameters(values)

    def parameters_digest(self) -> str:
        """SHA-256 hex digest of theta's bytes on this rank (equal on all ranks when in sync)."""
        h = hashlib.sha256()
        for v in self.metalearner.current_initial_parameters:
            h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()

    def check_sync(self) -> str:
        """Check (collective) that all ranks hold the same theta and, with replicated task sampling,
        the same `np.random` state. Returns the parameter digest; raises RuntimeError otherwise."""
        digest = self.parameters_digest()
        rng = None
        if self.task_sampling == "replicated":
            name, keys, pos, has_gauss, gauss = np.random.get_state()
            rng = hashlib.sha256(np.asarray(keys).tobytes() + repr((name, pos, has_gauss, gauss)).encode()
                                 ).hexdigest()
        everyone = self._coll.allgather((digest, rng))
        problems = []
        if len({d for d, _ in everyone}) > 1:
            problems.append("meta-parameters differ across ranks: " +
                            ", ".join(f"rank {r}: {d[:12]}" for r, (d, _) in enumerate(everyone)))
        if len({g for _, g in everyone}) > 1:
            problems.append("np.random states differ across ranks (with task_sampling='replicated' every "
                            "rank must make the same np.random calls, e.g. draw validation tasks on all "
                            "ranks): " + ", ".join(f"rank {r}: {g[:12]}" for r, (_, g) in enumerate(everyone)))
        if problems:
            raise RuntimeError("; ".join(problems))
        return digest

    # --- task assignment ------------------------------------------------------------------------------
    def local_batch_size(self, meta_batch_size: int) -> int:
        """How many of the `meta_batch_size` tasks of a meta-batch this rank processes."""
        start, stop = share_bounds(meta_batch_size, self.rank, self.size)
        return stop - start

    def local_tasks(self, tasks: Sequence[Task], num_inner_iterations: Optional[int] = None,
                    inner_batch_size: int = -1) -> List[Task]:
        """This rank's tasks of the meta-batch `tasks`, for the step-by-step API.

        Replicated sampling: `tasks` is the whole meta-batch; returns this rank's slice. Given the
        inner loop's `num_inner_iterations` and `inner_batch_size`, the inner minibatches of all the
        tasks are drawn here, in order, on every rank (as one process would draw them), and the
        returned tasks replay theirs in `fit_n_iterations`. Per-rank sampling: returns `tasks`.
        """
        tasks = list(tasks)
        if self.task_sampling == "per_rank":
            return tasks
        start, stop = share_bounds(len(tasks), self.rank, self.size)
        if num_inner_iterations is None:
            return tasks[start:stop]
        return self._presample(tasks, num_inner_iterations, inner_batch_size, start, stop,
                               need_fit=True)

    def _presample(self, tasks, num_inner_iterations, inner_batch_size, start, stop, need_fit=False):
        out = []
        for i, task in enumerate(tasks):
            if not isinstance(task, SupervisedTask) or (need_fit and not _runs_own_fit(task)):
                # no presampling possible: its minibatches come from this rank's stream (see docs)
                if start <= i < stop:
                    out.append(task)
                continue
            indices = task.inner_batch_indices(num_inner_iterations, inner_batch_size)
            if start <= i < stop:
                out.append(_PresampledTask(task, indices, num_inner_iterations, inner_batch_size))
        return out

    def _local_share(self, tasks, num_inner_iterations, inner_batch_size):
        tasks = list(tasks)
        if self.task_sampling == "per_rank":
            return tasks
        start, stop = share_bounds(len(tasks), self.rank, self.size)
        return self._presample(tasks, num_inner_iterations, inner_batch_size, start, stop)

    # --- combining the ranks ------------------------------------------------------------------------
    def _zeros_like_theta(self) -> List[np.ndarray]:
        return [np.zeros(v.shape, np.float32) for v in self.metalearner.ensure_initialized()]

    def allreduce_results(self, sums: Sequence[np.ndarray], aux: Dict[str, float],
                          count: int) -> Tuple[List[np.ndarray], Dict[str, float], int]:
        """(total of `sums` over the ranks, {name: total of each auxiliary sum}, total count) with ONE
        in-place Allreduce of a flat float32 buffer [sums..., aux values (sorted names)..., count]
        (collective; every rank must pass the same aux names)."""
        names = sorted(aux)
        arrays = list(sums) + [np.asarray([aux[k] for k in names], np.float32), np.float32(count)]
        t0 = time.perf_counter()
        *totals, aux_values, total_count = self._coll.allreduce_sum_arrays(arrays, np.float32)
        self.stats["allreduce_seconds"] += time.perf_counter() - t0
        self.stats["allreduce_bytes"] += 4 * sum(int(np.prod(np.shape(a))) for a in arrays)
        aux_totals = {k: float(aux_values[i]) for i, k in enumerate(names)}
        return totals, aux_totals, int(round(float(total_count)))

    def _outer_step(self, sums: Sequence[np.ndarray], aux: Dict[str, float], count: int) -> Dict[str, float]:
        """The outer step from this rank's sums; returns the mean auxiliary values over all tasks."""
        totals, aux_totals, total_count = self.allreduce_results(sums, aux, count)
        if total_count == 0:
            raise ValueError("no task in this meta-batch on any rank")
        self.metalearner.apply_mean_result([t / np.float32(total_count) for t in totals])
        self.num_updates += 1
        self.stats["updates"] += 1
        self.stats["local_tasks"] += count
        if self.resync_every and self.num_updates % self.resync_every == 0:
            self.broadcast_state()
        return {k: v / total_count for k, v in aux_totals.items()}

    # --- the fast path ----------------------------------------------------------------------------------
    def metatrain_step(self, tasks: Sequence[Task], num_inner_iterations: int,
                       inner_batch_size: int = -1) -> Dict[str, float]:
        """One meta-iteration (collective). `tasks`: the whole meta-batch (replicated sampling) or this
        rank's tasks (per-rank sampling, possibly none). Returns {'last_minibatch_loss': mean over all
        the tasks of all ranks}."""
        self.metalearner.ensure_initialized()
        local = self._local_share(tasks, num_inner_iterations, inner_batch_size)
        t0 = time.perf_counter()
        if local:
            sums, aux = self.metalearner.sum_task_results(local, num_inner_iterations, inner_batch_size)
        else:
            sums, aux = self._zeros_like_theta(), {k: 0.0 for k in self.metalearner.aux_names}
        self.stats["compute_seconds"] += time.perf_counter() - t0
        return self._outer_step(sums, aux, len(local))

    def metatrain_steps(self, meta_batches: Sequence[Sequence[Task]], num_inner_iterations: int,
                        inner_batch_size: int = -1) -> List[Dict[str, float]]:
        """`metatrain_step` on each meta-batch in turn (one Allreduce each)."""
        return [self.metatrain_step(t, num_inner_iterations, inner_batch_size) for t in meta_batches]

    def allreduce_max(self, value: float) -> float:
        """The largest `value` (a small number) over the ranks (collective), e.g. to stop all ranks at
        the same iteration when one of them received a signal."""
        return self._coll.allreduce_max(value)

    # --- the step-by-step API -----------------------------------------------------------------------
    def task_begin(self, task: Optional[Task] = None, **kwargs: Any) -> None:
        """The wrapped meta-learner's `task_begin` (this rank's task)."""
        self.metalearner.task_begin(task, **kwargs)

    def task_end(self, task: Optional[Task] = None, **kwargs: Any) -> TaskResult:
        """The wrapped meta-learner's `task_end` (this rank's task)."""
        return self.metalearner.task_end(task, **kwargs)

    def update(self, list_of_results: Sequence[Sequence[Any]], tasks: Optional[Sequence[Task]] = None,
               **kwargs: Any) -> Dict[str, float]:
        """Outer step from this rank's per-task results (`task_end` outputs; may be empty), combined
        with the other ranks' by one Allreduce (collective). `tasks` is not needed (an optimizer step)."""
        self.metalearner.ensure_initialized()
        results = [[np.asarray(x, np.float32) for x in r] for r in list_of_results]
        if results:
            sums = [np.array(x, copy=True) for x in results[0]]
            for r in results[1:]:
                for acc, x in zip(sums, r):
                    acc += x
        else:
            sums = self._zeros_like_theta()
        # the auxiliary values every result carries (the same names on every rank)
        names = [k for k in self.metalearner.aux_names if k != "last_minibatch_loss"]
        aux = {k: float(sum(aux_of(r).get(k, 0.0) for r in list_of_results)) for k in names}
        return self._outer_step(sums, aux, len(results))

    # --- evaluation -----------------------------------------------------------------------------------
    def evaluate_tasks(self, tasks: Sequence[Task], num_inner_iterations: int, inner_batch_size: int = -1,
                       transductive: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """The wrapped meta-learner's `evaluate_tasks` on this rank alone (not collective)."""
        return self.metalearner.evaluate_tasks(tasks, num_inner_iterations, inner_batch_size, transductive)

    def evaluate_tasks_distributed(self, tasks: Sequence[Task], num_inner_iterations: int,
                                   inner_batch_size: int = -1,
                                   transductive: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """`evaluate_tasks` with the tasks spread over the ranks (collective).

        Replicated sampling: `tasks` is the same list on every rank; returns (losses [M],
        accuracies [M]) of all of them on every rank (one Allreduce). Per-rank sampling: `tasks` are
        this rank's; returns the concatenation over the ranks, in rank order.
        """
        tasks = list(tasks)
        ml = self.metalearner
        if self.task_sampling == "per_rank":
            if tasks:
                losses, accs = ml.evaluate_tasks(tasks, num_inner_iterations, inner_batch_size, transductive)
            else:
                losses = accs = np.zeros(0, np.float32)
            parts = self._coll.allgather((np.asarray(losses), np.asarray(accs)))
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        m = len(tasks)
        start, stop = share_bounds(m, self.rank, self.size)
        local = self._presample(tasks, num_inner_iterations, inner_batch_size, start, stop)
        buf = np.zeros(2 * m, np.float32)
        if local:
            losses, accs = ml.evaluate_tasks(local, num_inner_iterations, inner_batch_size, transductive)
            buf[start:stop] = losses
            buf[m + start:m + stop] = accs
        self._coll.allreduce_sum_(buf)  # each entry is non-zero on one rank only: exact
        return buf[:m].copy(), buf[m:].copy()


__all__ = ["DistributedMetaLearner", "share_bounds"]
