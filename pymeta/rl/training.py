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

import logging
import os
import time

import numpy as np

from pymeta import checkpoint as ckpt
from pymeta.atomic import write_json_atomic
from pymeta.config import artifact_path, model_settings, resolve_rl_defaults, run_identity
from pymeta.model_io import save_model

logger = logging.getLogger("pymeta.training")
TRPO_SCALARS = ("kl", "backtracks", "surrogate_before", "surrogate_after", "accepted")


def build_run_problem(c):
    """The `pymeta.rl.problems.RLProblem` of run config `c` (seeded)."""
    from pymeta.rl.problems import build_problem
    return build_problem(c.dataset, c.metamodel, c.outer_optimizer, c.inner_lr, c.meta_lr, c.meta_batch_size,
                         c.episodes_per_task, c.horizon, c.gamma, c.gae_lambda, c.max_kl, seed=c.seed)


def settings_line(c) -> str:
    keys = ("dataset", "metamodel", "outer_optimizer", "meta_batch_size", "episodes_per_task", "horizon",
            "num_inner_training_iterations", "inner_lr", "meta_lr", "max_kl", "gamma", "gae_lambda",
            "num_outer_metatraining_iterations", "num_validation_batches", "test_every_k_iterations",
            "save_every_k_iterations", "seed", "model_save_filename")
    return "settings: " + " ".join(f"--{k}={getattr(c, k)}" for k in keys)


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


def run(c, stop):
    """Run (or resume) RL meta-training for config `c` (see the module doc); returns the history
    (one entry per meta-iteration and one per validation, with key 'validation_returns_by_step')."""
    from pymeta.run_support import (Interrupted, Summaries, check_finite, check_outputs, compiling,
                                    find_resume_point)
    from pymeta.plots import plot_navigation_trajectories, plot_rl_learning_curve
    c = resolve_rl_defaults(c, given=set(vars(c)))  # horizon 0 and outer_optimizer auto made explicit
    log = logger.info
    log(settings_line(c))
    problem = build_run_problem(c)
    ml, model, dist = problem.metalearner, problem.model, problem.distribution
    run_dir = c.resolved_run_dir()
    ckpt.remove_stale_temporaries(run_dir)
    ckpt.remove_stale_temporaries(os.path.dirname(os.path.abspath(c.model_save_filename)),
                                  "." + os.path.splitext(os.path.basename(c.model_save_filename))[0])
    resume_from = find_resume_point(c, run_dir)
    check_outputs(c, run_dir, resume_from is not None)
    T, E, n_iter = c.num_inner_training_iterations, c.episodes_per_task, c.num_outer_metatraining_iterations
    settings = model_settings(c, "sgd")
    history, it = [], 0
    if resume_from:
        it, history = ckpt.load_checkpoint(resume_from, ml)
        log(f"resumed from {resume_from} at iteration {it}")
    val_tasks = validation_tasks(dist, c.num_validation_batches * c.meta_batch_size, c.seed + 1)
    summaries = Summaries(os.path.join(run_dir, "tensorboard"), c.tensorboard)
    # training time continues from the checkpoint's (not from the last validation's)
    start = time.time() - (ckpt.elapsed_seconds(resume_from, history) if resume_from else 0.0)
    first_calls = {"validation", "training"}

    def save():
        save_model(model, c.model_save_filename, settings=settings)
        write_json_atomic(artifact_path(c.model_save_filename, "history.json"),
                          {"settings": settings, "history": history})

    def checkpoint():
        return ckpt.save_checkpoint(run_dir, it, ml, history, run_identity(c), c.keep_checkpoints,
                                    seconds=time.time() - start)

    def validation():
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
    while it < n_iter:
        tasks = dist.sample_batch()
        begin = time.time()
        with compiling(stop, log, "the meta-training step", "training" in first_calls):
            ml.metatrain_step(tasks, T, E)
        first_calls.discard("training")
        it += 1
        check_finite(c, it, [], ml, run_dir)
        before = float(np.mean([t.last_stats["mean_return_before"] for t in tasks]))
        after = float(np.mean([t.last_stats["mean_return"] for t in tasks]))
        trpo = {k: float(getattr(ml, "last_trpo", {})[k]) for k in TRPO_SCALARS if k in getattr(ml, "last_trpo", {})}
        entry = {"iteration": it, "return_before": before, "return_after": after,
                 "seconds": round(time.time() - start, 2), **trpo}
        history.append(entry)
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
        if stop.signum is not None:
            path = checkpoint()
            save()
            raise Interrupted(stop.signum, path)
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
