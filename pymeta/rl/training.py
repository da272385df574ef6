"""The RL experiment (`--dataset=navigation2d|halfcheetah_vel|halfcheetah_dir|ant_dir`) for the run loop
(`pymeta.run.loop`, which owns the run lock, signals, checkpoints and resume, the model file, history
and TensorBoard files); `pymeta.training.metatrain` chooses it by dataset.

One meta-iteration: a meta-batch of `meta_batch_size` tasks, `num_inner_training_iterations` inner
policy-gradient steps of `episodes_per_task` episodes each, then the outer step (TRPO or Adam), through
`metalearner.metatrain_step`. Validation (rank 0): the mean return after 0..T inner steps on
`num_validation_batches * meta_batch_size` validation tasks drawn once with seed + 1, collected with
seeded generators and without touching the run's (so a run's parameters do not depend on it).
"""

import copy
import logging
import shlex
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pymeta import runtime
from pymeta.config import RunSections, artifact_path, env_kwargs, model_settings
from pymeta.model_io import save_model, warm_start
from pymeta.plots import plot_navigation_trajectories, plot_rl_learning_curve
from pymeta.run.experiment import Step, Validation
from pymeta.run.monitoring import monitoring_leaves_the_run_alone
from pymeta.run.signals import SignalFlag, compiling
from pymeta.rl.trpo import TRPOStep

logger = logging.getLogger("pymeta.training")
TRPO_SCALARS = ("kl", "backtracks", "surrogate_before", "surrogate_after", "accepted")
SETTINGS_LINE = ("dataset", "metamodel", "outer_optimizer", "meta_batch_size", "episodes_per_task", "horizon",
                 "num_inner_training_iterations", "inner_lr", "meta_lr", "max_kl", "gamma", "gae_lambda",
                 "restart_episodes", "env_kwargs", "num_outer_metatraining_iterations", "num_validation_batches",
                 "test_every_k_iterations", "save_every_k_iterations", "seed", "model_save_filename")


def build_run_problem(s: RunSections) -> Any:
    """The `pymeta.rl.problems.RLProblem` of run `s` (seeded); --horizon=0 and --outer_optimizer=auto
    leave the choice to `build_problem` (its settings say what it chose)."""
    from pymeta.rl.problems import build_problem
    task, algorithm, rl = s.task, s.algorithm, s.rl
    return build_problem(task.dataset, task.metamodel, None if rl.outer_optimizer == "auto" else rl.outer_optimizer,
                         task.inner_lr, algorithm.meta_lr, algorithm.meta_batch_size, rl.episodes_per_task,
                         task.horizon or None, task.gamma, task.gae_lambda, rl.max_kl, seed=task.seed,
                         restart_episodes=task.restart_episodes, env_kwargs=env_kwargs(task))


def settings_line(s: RunSections, resolved: Dict[str, Any]) -> str:
    """The run's settings as flags (`resolved`: the values the problem chose for horizon and the outer
    optimizer)."""
    flat = s.values()
    values = {k: resolved.get(k, flat[k]) for k in SETTINGS_LINE if k != "env_kwargs" or s.task.env_kwargs}
    return "settings: " + " ".join(f"--{k}={shlex.quote(str(v))}" for k, v in values.items())


def validation_tasks(distribution: Any, count: int, seed: int) -> List[Any]:
    """`count` tasks drawn with `seed`, leaving the global generators alone."""
    with monitoring_leaves_the_run_alone():
        np.random.seed(seed)
        return distribution.sample_batch(count)


def seeded_adaptation_returns(metalearner: Any, tasks: Sequence[Any], num_steps: int, episodes_per_task: int,
                              seed: int, per_task: bool = False) -> Any:
    """`adaptation_returns` with the generators seeded by `seed`, restored afterwards."""
    from pymeta.rl.task import adaptation_returns
    with monitoring_leaves_the_run_alone():
        np.random.seed(seed)
        return adaptation_returns(metalearner, copy.deepcopy(tasks), num_steps, episodes_per_task,
                                  per_task=per_task)


def navigation_paths(metalearner: Any, tasks: Sequence[Any], num_steps: int, episodes: int = 2) -> List[Any]:
    """The 2D positions visited by `episodes` episodes of each task before adaptation and after
    `num_steps` inner steps: [task][0 before / 1 after][episode] -> array [steps, 2] (generators used
    as they are)."""
    from pymeta.rl.task import adapt_and_collect
    collected, _ = adapt_and_collect(list(tasks), metalearner, num_steps, episodes)
    return [[[eps.obs[i, e][eps.first_episode_mask()[i, e] > 0] for e in range(episodes)]
             for eps in (collected[0], collected[-1])] for i in range(len(tasks))]


class RLExperiment:
    """`pymeta.run.experiment.Experiment` of an RL dataset. distributed: an MPI run (see `MPIShare`):
    each rank collects and adapts to its share of the meta-batch; rank 0 validates."""

    def __init__(self, s: RunSections, distributed: bool = False):
        self.s = s
        self.share = MPIShare() if distributed else None
        self.is_root = self.share is None or self.share.is_root
        self.settings = model_settings(s, "sgd")
        self.first_calls = {"validation", "training"}  # not compiled yet

    def _log(self, text: str) -> None:
        if self.is_root:
            logger.info(text)

    def _compiling(self, what: str, key: str) -> Any:
        first = key in self.first_calls
        self.first_calls.discard(key)
        return compiling(self.stop, self._log, what, first)

    def setup(self, stop: SignalFlag) -> None:
        s, run, self.stop = self.s, self.s.run, stop
        # as the conv nets: one thread per op and the tasks side by side (bench_rl.py, 2 cores: a 2D-navigation
        # MAML-TRPO meta-iteration 1.02 s against 1.42 s with TensorFlow's default)
        runtime.apply_thread_layout(*runtime.thread_layout(run, s.task, s.algorithm, self.share is not None),
                                    explicit=run.num_threads > 0 or run.inter_op_threads > 0)
        problem = build_run_problem(s)
        resolved = {k: problem.settings[k] for k in ("horizon", "outer_optimizer")}
        self._log(settings_line(s, resolved))
        self.settings = model_settings(s, "sgd", **resolved)
        self.metalearner, self.model, self.distribution = problem.metalearner, problem.model, problem.distribution
        if run.init_model:
            warm_start(self.metalearner, run.init_model)
            self._log(f"initial theta from --init_model={run.init_model}")
        self.stepper = self.metalearner if self.share is None else self.share.stepper(self.metalearner)
        self.val_tasks = validation_tasks(self.distribution,
                                          run.num_validation_batches * s.algorithm.meta_batch_size, s.task.seed + 1)

    def synchronize(self) -> None:
        if self.share is not None:
            self.share.start()  # rank 0's theta (and outer optimizer state) everywhere

    def step(self, iteration: int, max_steps: int) -> Step:
        share, meta_batch_size = self.share, self.s.algorithm.meta_batch_size
        T, E = self.s.algorithm.num_inner_training_iterations, self.s.rl.episodes_per_task
        if share is not None:
            share.seed_iteration(self.s.task.seed, iteration)
        tasks = self.distribution.sample_batch(meta_batch_size if share is None
                                               else share.local_count(meta_batch_size))
        begin = time.time()
        with self._compiling("the meta-training step", "training"):
            self.stepper.metatrain_step(tasks, T, E)
        sums = [sum(t.last_stats[k] for t in tasks) for k in ("mean_return_before", "mean_return")]
        count: float = len(tasks)
        if share is not None:
            sums, count = share.sum(sums, count)
        before, after = (float(v / count) for v in sums)
        step = self.metalearner.outer_step
        last_trpo = step.last_trpo if isinstance(step, TRPOStep) else {}
        trpo = {k: float(last_trpo[k]) for k in TRPO_SCALARS if k in last_trpo}
        entry = {"iteration": iteration + 1, "return_before": before, "return_after": after, "seconds": None,
                 **trpo}
        extra = f"  kl {trpo['kl']:.4f}  line-search steps {trpo['backtracks']:.0f}" if trpo else ""
        scalars = {"train/return_before_adaptation": before, "train/return_after_adaptation": after,
                   **{f"trpo/{'line_search_steps' if k == 'backtracks' else k}": v for k, v in trpo.items()}}
        return Step(1, entries=[entry], scalars=scalars, postfix={"after": f"{after:.1f}"},
                    log=f"iter {iteration + 1:6d}  return before adaptation {before:.2f}  after {after:.2f}{extra}  "
                        f"({time.time() - begin:.1f} s)")

    def validate(self, iteration: int, seconds: float) -> Optional[Validation]:
        if not self.is_root:  # the other ranks go on to the next step's collectives and wait there
            return None
        s = self.s
        T = s.algorithm.num_inner_training_iterations
        with self._compiling("the validation step", "validation"):
            returns = seeded_adaptation_returns(self.metalearner, self.val_tasks, T, s.rl.episodes_per_task,
                                                s.task.seed + 2)
        entry: Dict[str, Any] = {"iteration": iteration, "validation_returns_by_step": [float(r) for r in returns],
                                 "seconds": seconds}
        return Validation(entry, entry["validation_returns_by_step"][-1], "the validation return",
                          f"iter {iteration:6d}  validation: return after 0..{T} inner steps "
                          + " ".join(f"{r:.2f}" for r in returns) + f"  ({seconds:.0f} s)",
                          {f"validation/return_after_step_{k}": float(r) for k, r in enumerate(returns)})

    def save(self) -> None:
        save_model(self.model, self.s.run.model_save_filename, settings=self.settings)

    def agree_stop(self, signum: Optional[int]) -> Optional[int]:
        if self.share is not None:  # every rank stops at the same iteration, or the others would wait forever
            return int(self.share.collectives.allreduce_max(signum or 0)) or None
        return signum

    def finish(self, history: List[dict]) -> None:
        model_file, seed = self.s.run.model_save_filename, self.s.task.seed
        T = self.s.algorithm.num_inner_training_iterations
        curve = plot_rl_learning_curve(history, artifact_path(model_file, "learning_curve.png"))
        self._log(f"learning curve: {curve}")
        if self.s.task.dataset == "navigation2d":
            goals = validation_tasks(self.distribution, 4, seed + 3)
            with monitoring_leaves_the_run_alone():
                np.random.seed(seed + 4)
                paths = navigation_paths(self.metalearner, goals, T)
            path = plot_navigation_trajectories([t.goal for t in goals], paths, T,
                                                artifact_path(model_file, "trajectories.png"))
            self._log(f"trajectories before and after adaptation: {path}")


class MPIShare:
    """An RL run's part in an MPI launch. Rank r draws its own `local_count` tasks of each meta-batch
    from its own stream (numpy's global generator: task parameters, environment seeds and action noise)
    and collects their episodes; the outer step combines the ranks: TRPO through the Allreduces of
    `MAMLTRPOMetaLearner.collectives`, Adam through `DistributedMetaLearner` (per-rank task sampling).
    The stream is seeded again at every meta-iteration, from (seed, iteration, rank), so a run is
    reproducible for a given number of ranks and a resumed run continues it exactly although only rank
    0's generators are in the checkpoint."""

    def __init__(self, comm: Any = None):
        from pymeta.mpi import Collectives, default_comm
        self.collectives = Collectives(default_comm() if comm is None else comm)
        self.rank, self.size = self.collectives.rank, self.collectives.size
        self.is_root = self.rank == 0

    def stepper(self, metalearner: Any) -> Any:
        """What runs a meta-iteration on this rank's tasks: the TRPO meta-learner itself (its means
        combined across ranks) or a `DistributedMetaLearner` around an Adam meta-learner."""
        from pymeta.metalearners.distributed import DistributedMetaLearner
        self._distributed = DistributedMetaLearner(metalearner, self.collectives.comm, task_sampling="per_rank")
        if isinstance(metalearner.outer_step, TRPOStep):
            metalearner.outer_step.collectives = self.collectives
            return metalearner
        return self._distributed

    def start(self) -> None:
        """Rank 0's theta (and outer optimizer state) on every rank."""
        self._distributed.broadcast_state()

    def seed_iteration(self, seed: int, iteration: int) -> None:
        """Seed this rank's stream for meta-iteration `iteration` (0-based): its tasks, environment
        seeds and action noise depend on (seed, iteration, rank) alone."""
        sequence = np.random.SeedSequence([int(seed), int(iteration), self.rank])
        np.random.seed(int(sequence.generate_state(1, np.uint32)[0]))

    def local_count(self, meta_batch_size: int) -> int:
        from pymeta.metalearners.distributed import share_bounds
        start, stop = share_bounds(meta_batch_size, self.rank, self.size)
        if stop == start:
            raise ValueError(f"--meta_batch_size={meta_batch_size} gives rank {self.rank} of {self.size} no task: "
                             "use at least as many tasks as ranks")
        return stop - start

    def sum(self, values: Sequence[float], count: float) -> Tuple[List[float], float]:
        """(values summed over the ranks, count summed over the ranks): one small Allreduce."""
        *sums, total = self.collectives.allreduce_sum_arrays(list(values) + [count], np.float64)
        return [float(s) for s in sums], float(total)
