"""The meta-training run of an RL dataset (`--dataset=navigation2d|halfcheetah_vel|halfcheetah_dir|ant_dir`),
dispatched from `pymeta.training.metatrain`, with the supervised run's machinery: run lock, signals,
checkpoints and resume (`pymeta.checkpoint`: theta, the outer optimizer, the random generators every
task draw, environment seed and action sample come from), the model file with its settings, TensorBoard
scalars, history JSON and plots next to the model.

One meta-iteration: a meta-batch of `meta_batch_size` tasks, `num_inner_training_iterations` inner
policy-gradient steps of `episodes_per_task` episodes each, then the outer step (TRPO or Adam), through
`metalearner.metatrain_step`. Validation: the mean return after 0..T inner steps on
`num_validation_batches * meta_batch_size` validation tasks drawn once with seed + 1, collected with
seeded generators and without touching the run's (so a run's parameters do not depend on it).
"""

import contextlib
import logging
import os
import shlex
import time

import numpy as np

from pymeta import checkpoint as ckpt
from pymeta.atomic import write_json_atomic
from pymeta.config import artifact_path, env_kwargs, model_settings, resolve_rl_defaults, run_identity
from pymeta.model_io import save_model, warm_start

logger = logging.getLogger("pymeta.training")
TRPO_SCALARS = ("kl", "backtracks", "surrogate_before", "surrogate_after", "accepted")


def build_run_problem(c):
    """The `pymeta.rl.problems.RLProblem` of run config `c` (seeded)."""
    from pymeta.rl.problems import build_problem
    return build_problem(c.dataset, c.metamodel, c.outer_optimizer, c.inner_lr, c.meta_lr, c.meta_batch_size,
                         c.episodes_per_task, c.horizon, c.gamma, c.gae_lambda, c.max_kl, seed=c.seed,
                         restart_episodes=c.restart_episodes, env_kwargs=env_kwargs(c))


def settings_line(c) -> str:
    keys = ("dataset", "metamodel", "outer_optimizer", "meta_batch_size", "episodes_per_task", "horizon",
            "num_inner_training_iterations", "inner_lr", "meta_lr", "max_kl", "gamma", "gae_lambda",
            "restart_episodes", "env_kwargs", "num_outer_metatraining_iterations", "num_validation_batches",
            "test_every_k_iterations", "save_every_k_iterations", "seed", "model_save_filename")
    return "settings: " + " ".join(f"--{k}={shlex.quote(str(getattr(c, k)))}" for k in keys
                                   if k != "env_kwargs" or c.env_kwargs)


def validation_tasks(distribution, count, seed):
    """`count` tasks drawn with `seed`, leaving the global generators alone."""
    from pymeta.run_support import monitoring_leaves_the_run_alone
    with monitoring_leaves_the_run_alone():
        np.random.seed(seed)
        return distribution.sample_batch(count)


def seeded_adaptation_returns(metalearner, tasks, num_steps, episodes_per_task, seed, per_task=False):
    """`adaptation_returns` with the generators seeded by `seed`, restored afterwards."""
    import copy

    from pymeta.rl.task import adaptation_returns
    from pymeta.run_support import monitoring_leaves_the_run_alone
    with monitoring_leaves_the_run_alone():
        np.random.seed(seed)
        return adaptation_returns(metalearner, copy.deepcopy(tasks), num_steps, episodes_per_task,
                                  per_task=per_task)


def run(c, stop, distributed: bool = False):
    """Run (or resume) RL meta-training for config `c` (see the module doc); returns the history
    (one entry per meta-iteration and one per validation, with key 'validation_returns_by_step').
    distributed: an MPI run (see `MPIShare`): each rank collects and adapts to its share of the
    meta-batch; rank 0 logs, validates, saves and writes checkpoints."""
    from pymeta import runtime
    from pymeta.run_support import (Interrupted, Summaries, check_finite, check_outputs, compiling,
                                    find_resume_point)
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from pymeta.plots import plot_navigation_trajectories, plot_rl_learning_curve
    c = resolve_rl_defaults(c, given=set(vars(c)))  # horizon 0 and outer_optimizer auto made explicit
    # as the conv nets: one thread per op and the tasks side by side (bench_rl.py, 2 cores: a 2D-navigation
    # MAML-TRPO meta-iteration 1.02 s against 1.42 s with TensorFlow's default)
    runtime.apply_thread_layout(*runtime.thread_layout(c, distributed),
                                explicit=c.num_threads > 0 or c.inter_op_threads > 0)
    share = MPIShare() if distributed else None
    is_root = share is None or share.is_root
    log = logger.info if is_root else (lambda *a, **k: None)
    log(settings_line(c))
    problem = build_run_problem(c)
    ml, model, dist = problem.metalearner, problem.model, problem.distribution
    if c.init_model:
        warm_start(ml, c.init_model)
        log(f"initial theta from --init_model={c.init_model}")
    stepper = ml if share is None else share.stepper(ml)
    run_dir = c.resolved_run_dir()
    if is_root:
        ckpt.remove_stale_temporaries(run_dir)
        ckpt.remove_stale_temporaries(os.path.dirname(os.path.abspath(c.model_save_filename)),
                                      "." + os.path.splitext(os.path.basename(c.model_save_filename))[0])
    resume_from = find_resume_point(c, run_dir, is_root)
    check_outputs(c, run_dir, resume_from is not None)
    T, E, n_iter = c.num_inner_training_iterations, c.episodes_per_task, c.num_outer_metatraining_iterations
    settings = model_settings(c, "sgd")
    history, it = [], 0
    if resume_from:
        it, history = ckpt.load_checkpoint(resume_from, ml)
        log(f"resumed from {resume_from} at iteration {it}")
    val_tasks = validation_tasks(dist, c.num_validation_batches * c.meta_batch_size, c.seed + 1)
    if share is not None:
        share.start()  # rank 0's theta (and outer optimizer state) everywhere
    summaries = Summaries(os.path.join(run_dir, "tensorboard"), c.tensorboard and is_root)
    # training time continues from the checkpoint's (not from the last validation's)
    start = time.time() - (ckpt.elapsed_seconds(resume_from, history) if resume_from else 0.0)
    first_calls = {"validation", "training"}

    def save():
        if not is_root:
            return
        save_model(model, c.model_save_filename, settings=settings)
        write_json_atomic(artifact_path(c.model_save_filename, "history.json"),
                          {"settings": settings, "history": history})

    def checkpoint():
        if not is_root:
            return None
        return ckpt.save_checkpoint(run_dir, it, ml, history, run_identity(c), c.keep_checkpoints,
                                    seconds=time.time() - start)

    def validation():
        if not is_root:  # the other ranks go on to the next step's collectives and wait there
            return
        with compiling(stop, log, "the validation step", "validation" in first_calls):
            returns = seeded_adaptation_returns(ml, val_tasks, T, E, c.seed + 2)
        first_calls.discard("validation")
        history.append({"iteration": it, "validation_returns_by_step": [float(r) for r in returns],
                        "seconds": round(time.time() - start, 2)})
        log(f"iter {it:6d}  validation: return after 0..{T} inner steps "
            + " ".join(f"{r:.2f}" for r in returns) + f"  ({history[-1]['seconds']:.0f} s)")
        summaries.scalars(it, {f"validation/return_after_step_{k}": float(r) for k, r in enumerate(returns)})

    if not history:
        validation()
    bar = tqdm(total=n_iter, initial=it, disable=not (c.progress and is_root), unit="it", dynamic_ncols=True,
               mininterval=1.0)
    with logging_redirect_tqdm() if not bar.disable else contextlib.nullcontext(), bar:  # log lines above the bar
        while it < n_iter:
            if share is not None:
                share.seed_iteration(c.seed, it)
            tasks = dist.sample_batch(c.meta_batch_size if share is None else share.local_count(c.meta_batch_size))
            begin = time.time()
            with compiling(stop, log, "the meta-training step", "training" in first_calls):
                stepper.metatrain_step(tasks, T, E)
            first_calls.discard("training")
            it += 1
            check_finite(c, it, [], ml, run_dir)
            sums = [sum(t.last_stats[k] for t in tasks) for k in ("mean_return_before", "mean_return")]
            if share is not None:
                sums, count = share.sum(sums, len(tasks))
            else:
                count = len(tasks)
            before, after = (float(v / count) for v in sums)
            last_trpo = getattr(ml, "last_trpo", {})
            trpo = {k: float(last_trpo[k]) for k in TRPO_SCALARS if k in last_trpo}
            entry = {"iteration": it, "return_before": before, "return_after": after,
                     "seconds": round(time.time() - start, 2), **trpo}
            history.append(entry)
            bar.update(1)
            bar.set_postfix(after=f"{after:.1f}", refresh=False)
            extra = f"  kl {trpo['kl']:.4f}  line-search steps {trpo['backtracks']:.0f}" if trpo else ""
            log(f"iter {it:6d}  return before adaptation {before:.2f}  after {after:.2f}{extra}  "
                f"({time.time() - begin:.1f} s)")
            summaries.scalars(it, {"train/return_before_adaptation": before, "train/return_after_adaptation": after,
                                   **{f"trpo/{'line_search_steps' if k == 'backtracks' else k}": v
                                      for k, v in trpo.items()}})
            if it % c.test_every_k_iterations == 0 or it == n_iter:
                validation()
            if it % c.save_every_k_iterations == 0 or it == n_iter:
                save()
                checkpoint()
            signum = stop.signum
            if share is not None:  # every rank stops at the same iteration, or the others would wait forever
                signum = share.collectives.allreduce_max(signum or 0) or None
            if signum is not None:
                path = checkpoint()
                save()
                raise Interrupted(signum, path)
    if not is_root:
        return history
    if not os.path.exists(c.model_save_filename):
        save()
    curve = plot_rl_learning_curve(history, artifact_path(c.model_save_filename, "learning_curve.png"))
    log(f"learning curve: {curve}")
    if c.dataset == "navigation2d":
        goals = validation_tasks(dist, 4, c.seed + 3)
        from pymeta.run_support import monitoring_leaves_the_run_alone
        with monitoring_leaves_the_run_alone():
            np.random.seed(c.seed + 4)
            path = plot_navigation_trajectories(ml, goals, T, artifact_path(c.model_save_filename,
                                                                            "trajectories.png"))
        log(f"trajectories before and after adaptation: {path}")
    log(f"model saved to {c.model_save_filename} ({time.time() - start:.0f} s)")
    return history


class MPIShare:
    """An RL run's part in an MPI launch. Rank r draws its own `local_count` tasks of each meta-batch
    from its own stream (numpy's global generator: task parameters, environment seeds and action noise)
    and collects their episodes; the outer step combines the ranks: TRPO through the Allreduces of
    `MAMLTRPOMetaLearner.collectives`, Adam through `DistributedMetaLearner` (per-rank task sampling).
    The stream is seeded again at every meta-iteration, from (seed, iteration, rank), so a run is
    reproducible for a given number of ranks and a resumed run continues it exactly although only rank
    0's generators are in the checkpoint."""

    def __init__(self, comm=None):
        from pymeta.mpi import Collectives, default_comm
        self.collectives = Collectives(default_comm() if comm is None else comm)
        self.rank, self.size = self.collectives.rank, self.collectives.size
        self.is_root = self.rank == 0

    def stepper(self, metalearner):
        """What runs a meta-iteration on this rank's tasks: the TRPO meta-learner itself (its means
        combined across ranks) or a `DistributedMetaLearner` around an Adam meta-learner."""
        from pymeta.metalearners.distributed import DistributedMetaLearner
        from pymeta.rl.trpo import MAMLTRPOMetaLearner
        self._distributed = DistributedMetaLearner(metalearner, self.collectives.comm, task_sampling="per_rank")
        if isinstance(metalearner, MAMLTRPOMetaLearner):
            metalearner.collectives = self.collectives
            return metalearner
        return self._distributed

    def start(self):
        """Rank 0's theta (and outer optimizer state) on every rank."""
        self._distributed.broadcast_state()

    def seed_iteration(self, seed, iteration):
        """Seed this rank's stream for meta-iteration `iteration` (0-based): its tasks, environment
        seeds and action noise depend on (seed, iteration, rank) alone."""
        sequence = np.random.SeedSequence([int(seed), int(iteration), self.rank])
        np.random.seed(int(sequence.generate_state(1, np.uint32)[0]))

    def local_count(self, meta_batch_size):
        from pymeta.metalearners.distributed import share_bounds
        start, stop = share_bounds(meta_batch_size, self.rank, self.size)
        if stop == start:
            raise ValueError(f"--meta_batch_size={meta_batch_size} gives rank {self.rank} of {self.size} no task: "
                             "use at least as many tasks as ranks")
        return stop - start

    def sum(self, values, count):
        """(values summed over the ranks, count summed over the ranks): one small Allreduce."""
        buf = np.array(list(values) + [count], np.float64)
        self.collectives.allreduce_sum_(buf)
        return buf[:-1], buf[-1]
