"""The pictures a run leaves next to its model: the learning curve and, for sinusoid, one task before
and after adaptation; for RL the returns' learning curve, 2D-navigation trajectories and the meta-test's
return against the adaptation steps (PNG, matplotlib's Agg backend)."""

from typing import List

import numpy as np

from pymeta.atomic import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path):
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def plot_learning_curve(history: List[dict], path: str, is_classification: bool) -> str:
    """PNG of the validation metric against the meta-iteration."""
    plt = _pyplot()
    its = [h["iteration"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    if is_classification:
        ax.plot(its, [100 * h["val_accuracy"] for h in history], "o-")
        ax.set_ylabel("validation accuracy after adaptation (%)")
    else:
        ax.plot(its, [h["val_loss"] for h in history], "o-")
        ax.set_ylabel("validation MSE after adaptation")
        ax.set_yscale("log")
    ax.set_xlabel("meta-iteration")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_sinusoid(metalearner, task, num_inner_iterations: int, inner_batch_size: int, path: str) -> str:
    """PNG: a sinusoid task's ground truth, training points, and the prediction before and after
    adaptation (step-by-step API). The model is left at theta."""
    plt = _pyplot()
    model = metalearner.model
    metalearner.task_begin(task)
    test_x, test_y = task.get_test_set()
    before = np.asarray(model(test_x, training=False))  # eager: no predict function to compile
    task.fit_n_iterations(model, num_inner_iterations, inner_batch_size)
    after = np.asarray(model(test_x, training=False))
    metalearner.task_begin(task)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(test_x[:, 0], test_y[:, 0], "k", label="ground truth")
    ax.plot(task.X[:, 0], task.y[:, 0], "ok", label=f"{len(task.X)} training points")
    ax.plot(test_x[:, 0], before[:, 0], "--r", label="before adaptation (meta-learnt init)")
    ax.plot(test_x[:, 0], after[:, 0], "r", label=f"after {num_inner_iterations} inner steps")
    ax.legend(fontsize=8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return _save(plt, fig, path)


def plot_rl_learning_curve(history: List[dict], path: str) -> str:
    """PNG: mean return per episode before and after adaptation (and on the validation tasks) against
    the meta-iteration (left) and the wall-clock time (right), from an RL run's history."""
    plt = _pyplot()
    train = [h for h in history if "return_before" in h]
    val = [h for h in history if "validation_returns_by_step" in h]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, label in ((axes[0], "iteration", "meta-iteration"), (axes[1], "seconds", "seconds")):
        ax.plot([h[key] for h in train], [h["return_before"] for h in train], "-", label="before adaptation")
        ax.plot([h[key] for h in train], [h["return_after"] for h in train], "-", label="after adaptation")
        if val:
            ax.plot([h[key] for h in val], [h["validation_returns_by_step"][-1] for h in val], "o--",
                    label="validation tasks, after adaptation")
        ax.set_xlabel(label)
        ax.set_ylabel("mean return per episode")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _save(plt, fig, path)


def plot_navigation_trajectories(goals, paths, num_steps: int, path: str) -> str:
    """PNG: 2D-navigation trajectories of a few tasks (goals: stars) before adaptation (dashed) and
    after `num_steps` inner steps (solid). paths[task][0 before / 1 after][episode]: array [steps, 2]
    of positions (`pymeta.rl.training.navigation_paths`)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (goal, (before, after)) in enumerate(zip(goals, paths)):
        color = colors[i % len(colors)]
        for style, episodes in (("--", before), ("-", after)):
            for xy in episodes:
                xy = np.asarray(xy)
                ax.plot(xy[:, 0], xy[:, 1], style, color=color, alpha=0.8)
        ax.plot(*goal, "*", color=color, markersize=15)
    ax.plot([], [], "k--", label="before adaptation")
    ax.plot([], [], "k-", label=f"after {num_steps} inner step{'s' if num_steps != 1 else ''}")
    ax.plot(0, 0, "ko", label="start")
    ax.legend(fontsize=8)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)


def plot_adaptation_returns(curves, path: str) -> str:
    """PNG: mean return against the adaptation steps with 95% CI bars; curves: {label: (returns_by_step,
    ci95_by_step)}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (returns, ci) in curves.items():
        ax.errorbar(range(len(returns)), returns, yerr=ci, fmt="o-", capsize=3, label=label)
    ax.set_xticks(range(max(len(r) for r, _ in curves.values())))
    ax.set_xlabel("adaptation (policy-gradient) steps")
    ax.set_ylabel("mean return per episode")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(plt, fig, path)
