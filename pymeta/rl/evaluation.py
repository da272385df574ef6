"""The meta-test of an RL model (`scripts/meta_test.py --dataset=navigation2d ...`) with the MAML
paper's evaluation protocol: from the saved initialisation (or, `--init random`, a fresh random one of
the same policy), `num_inner_iterations` plain policy-gradient steps with the linear baseline on
`episodes_per_task` fresh episodes each (default 40 for 2D navigation, 20 for locomotion), step size
inner_lr for the first step and inner_lr / 2 for the later ones (or `step_sizes`, one per step), on
`num_tasks` test tasks drawn with `seed` (or given by a `test_tasks` JSON file, e.g. the MAML paper's 40
test goals). Reports the mean undiscounted return per episode after 0, 1, ..., T steps and its 95% CI
over the tasks, the mean episode length after each step, and each task's returns and parameters.
`repeats`: every task adapted to that many times with fresh episodes, the figures their mean.
`--restart_episodes`: the paper's code's batches of episodes x horizon steps instead, an episode that
ends early followed by another (rllab's samplers; the protocol behind its numbers)."""

import dataclasses
import logging
import sys
import time
from typing import Any, Dict, List

import numpy as np

from pymeta.progress import Progress
from pymeta.registry import RL_DEFAULTS

logger = logging.getLogger("pymeta.evaluation")
PROTOCOL_EPISODES = {"navigation2d": 40, "halfcheetah_vel": 20, "halfcheetah_dir": 20, "ant_dir": 20}


def step_sizes(inner_lr: float, num_steps: int):
    """The MAML evaluation's step sizes: lr, then lr / 2 for every later step."""
    return [inner_lr] + [inner_lr / 2] * (num_steps - 1) if num_steps > 0 else []


def meta_test_rl(c) -> Dict[str, Any]:
    """Meta-test config `c` (a checked `MetaTestConfig` of an RL dataset); returns the result dict
    (written to c.output as JSON, drawn to c.plot). Progress is shown as `pymeta.progress` does
    (`c.progress`); a return, reward or observation that is not finite raises ValueError (one line)."""
    from pymeta.atomic import write_json_atomic
    from pymeta.config import env_kwargs, parse_step_sizes
    from pymeta.config.checks import read_test_tasks
    from pymeta.core.learner import Learner
    from pymeta.confidence import mean_confidence_interval
    from pymeta.model_io import load_weights_into
    from pymeta.rl.problems import build_problem
    episodes = c.episodes_per_task or PROTOCOL_EPISODES[c.dataset]
    horizon = c.horizon or RL_DEFAULTS[c.dataset]["horizon"]
    problem = build_problem(c.dataset, "fomaml", "adam", c.inner_lr, meta_batch_size=min(c.batch, c.num_tasks),
                            episodes_per_task=episodes, horizon=horizon, gamma=c.gamma, gae_lambda=c.gae_lambda,
                            seed=c.seed, restart_episodes=c.restart_episodes, env_kwargs=env_kwargs(c))
    model = problem.model
    if c.init == "trained":
        load_weights_into(model, c.model)
        if not all(np.all(np.isfinite(w)) for w in model.get_weights()):
            raise ValueError(f"{c.model} holds non-finite weights (inf or nan; its training diverged?): "
                             "nothing to meta-test")
    learner = Learner(model, inner_optimizer=problem.metalearner.inner_optimizer, objective=problem.agent.objective)
    lrs = parse_step_sizes(c.step_sizes, c.num_inner_iterations) or step_sizes(c.inner_lr, c.num_inner_iterations)
    given = read_test_tasks(c.test_tasks)[:c.num_tasks] if c.test_tasks else None
    num_tasks = c.num_tasks if given is None else len(given)
    start, passes = time.time(), []
    with Progress(num_tasks * c.repeats, "meta-test", enabled=c.progress,
                  mean_text=f"mean return after {c.num_inner_iterations} steps {{:.2f}}".format) as progress:
        for repeat in range(c.repeats):  # each repeat adapts to the same tasks, with its own episodes
            np.random.seed(c.seed + repeat)
            passes.append(_adapt_to_tasks(problem, learner, c, given, num_tasks, episodes, lrs, progress))
            given = passes[0][2] if given is None else given
    per_task = np.mean([p[0] for p in passes], axis=0)  # [T + 1, num_tasks]
    lengths, params = np.mean([p[1] for p in passes], axis=0), passes[0][2]
    stats = [mean_confidence_interval(r) for r in per_task]
    result = {"returns_by_step": [m for m, _ in stats], "ci95_by_step": [ci for _, ci in stats],
              "mean_episode_length_by_step": lengths.mean(-1).tolist(),
              "returns_by_task": per_task.T.tolist(), "task_params": params,
              "num_tasks": int(per_task.shape[1]), "seed": c.seed, "num_inner_iterations": c.num_inner_iterations,
              "episodes_per_task": episodes, "horizon": horizon, "step_sizes": lrs, "init": c.init,
              "restart_episodes": c.restart_episodes, "repeats": c.repeats,
              "returns_by_step_by_repeat": [p[0].mean(-1).tolist() for p in passes],
              "model": c.model, "dataset": c.dataset, "seconds": round(time.time() - start, 1),
              "settings": dataclasses.asdict(c), "command": " ".join(sys.argv)}
    label = f"{c.metamodel} init" if c.init == "trained" else "random init"
    times = f" x {c.repeats} adaptations each" if c.repeats > 1 else ""
    logger.info(f"{c.dataset} ({label}), {result['num_tasks']} tasks x {episodes} episodes{times}, return after "
                "0.." + f"{c.num_inner_iterations} steps: "
                + " | ".join(f"{k}: {m:.2f} ± {ci:.2f}" for k, (m, ci) in enumerate(stats)))
    if c.output:
        write_json_atomic(c.output, result)
    if c.plot:
        from pymeta.plots import plot_adaptation_returns
        curves = {_curve_label(result): (result["returns_by_step"], result["ci95_by_step"])}
        for path in filter(None, c.plot_with.split(",")):
            other = _read_result(path)
            curves.setdefault(_curve_label(other), (other["returns_by_step"], other["ci95_by_step"]))
        plot_adaptation_returns(curves, c.plot)
    return result


def _adapt_to_tasks(problem, learner, c, given, num_tasks, episodes, lrs, progress):
    """One pass of the protocol over the test tasks (drawn, or `given` parameters), c.batch at a time:
    (returns [T + 1, num_tasks], mean episode lengths alike, the tasks' parameters as JSON values).
    A return, reward or observation that is not finite is an error (one line: the tasks, the step)."""
    from pymeta.rl.task import adaptation_returns
    per_task, lengths, params = [], [], []
    while len(params) < num_tasks:
        done = len(params)
        tasks = problem.distribution.sample_batch(min(c.batch, num_tasks - done))
        if given is not None:
            for task, p in zip(tasks, given[done:done + len(tasks)]):
                task.params = _task_params_like(task.params, p, c.test_tasks)
        params += [_jsonable(t.params) for t in tasks]
        where = f"meta-test task{'s' if len(tasks) > 1 else ''} {done + 1}" \
                + (f"-{done + len(tasks)}" if len(tasks) > 1 else "") + f" of {num_tasks}"
        with np.errstate(over="ignore", invalid="ignore"):  # what is not finite is reported below, in one line
            try:
                returns, length = adaptation_returns(learner, tasks, c.num_inner_iterations, episodes,
                                                     step_lrs=lrs or None, per_task=True, with_lengths=True)
            except ValueError as e:  # the sampler's: the environment returned non-finite rewards / observations
                if "non-finite" not in str(e):
                    raise
                step = _first_failing_step(learner, tasks, c.num_inner_iterations, episodes, lrs)
                raise ValueError(_non_finite_message(f"{where}: {e}", step, lrs)) from None
        if not np.all(np.isfinite(returns)):
            step = int(np.flatnonzero(~np.all(np.isfinite(returns), axis=1))[0])
            i = int(np.flatnonzero(~np.isfinite(returns[step]))[0])
            what = f"meta-test task {done + i + 1} of {num_tasks}: the mean return is {returns[step, i]}"
            raise ValueError(_non_finite_message(what, step, lrs))
        per_task.append(returns)
        lengths.append(length)
        progress.update(len(tasks), float(np.concatenate(per_task, axis=1)[-1].mean()))
    return np.concatenate(per_task, axis=1), np.concatenate(lengths, axis=1), params


def _first_failing_step(learner, tasks, num_steps, episodes, lrs):
    """The first adaptation step (0: none, from the initialisation) after which collecting the episodes of
    `tasks` fails again (None: it does not fail again)."""
    from pymeta.rl.task import adaptation_returns
    for step in range(num_steps + 1):
        try:
            adaptation_returns(learner, tasks, step, episodes, step_lrs=lrs[:step] or None, per_task=True)
        except ValueError:
            return step
    return None


def _non_finite_message(what: str, step, lrs) -> str:
    """One line: `what` was not finite after adaptation step `step` (0: before adaptation, None: unknown),
    and the likely cause."""
    if step == 0:
        return (f"{what}, before adaptation: the initialisation's actions or the environment are not finite; "
                "nothing written")
    steps = ",".join(f"{lr:g}" for lr in lrs)
    when = "" if step is None else f", after adaptation step {step} (finite before it)"
    return (f"{what}{when}: the policy-gradient steps diverged (try smaller --step_sizes than {steps}); "
            "nothing written")


def _task_params_like(sampled, value, path):
    """`value` (from JSON) in the form of a sampled task's parameters: an array of the same shape, or
    the value itself (dicts of numbers, e.g. {"velocity": 1.2})."""
    if isinstance(sampled, np.ndarray):
        try:
            array = np.asarray(value, dtype=sampled.dtype)
        except (TypeError, ValueError):  # not numbers, or ragged
            array = None
        if array is None or array.shape != sampled.shape:
            raise ValueError(f"--test_tasks: {path}: {value!r} is not a task parameter of shape "
                             f"{list(sampled.shape)}")
        return array
    if isinstance(sampled, dict) and (not isinstance(value, dict) or set(value) != set(sampled)):
        raise ValueError(f"--test_tasks: {path}: {value!r} is not a task parameter dict with the keys of "
                         f"{_jsonable(sampled)}")
    return value


def _jsonable(x):
    """A task's parameters (arrays, numbers, dicts of them) as JSON values."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, np.ndarray)):
        return np.asarray(x).tolist()
    return x.item() if isinstance(x, np.generic) else x


def _curve_label(result) -> str:
    if result.get("init") == "random":
        return "random initialisation"
    return f"{result.get('settings', {}).get('metamodel', 'meta-learnt')} ({result.get('model', '')})"


def _read_result(path) -> Dict[str, Any]:
    """An earlier meta-test's JSON (must have returns_by_step and ci95_by_step)."""
    import json
    try:
        with open(path) as f:
            result = json.load(f)
        result["returns_by_step"], result["ci95_by_step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"--plot_with={path}: not a meta-test JSON with returns_by_step and ci95_by_step "
                         f"({type(e).__name__})") from None
    return result
