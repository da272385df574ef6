"""The pictures a run leaves next to its model: the learning curve and, for sinusoid, one task before
and after adaptation (PNG, matplotlib's Agg backend)."""

from typing import List

from pymeta.atomic import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def plot_sinusoid(metalearner, task, num_inner_iterations: int, inner_batch_size: int, path: str) -> str:
    """PNG: a sinusoid task's ground truth, training points, and the prediction before and after
    adaptation (step-by-step API). The model is left at theta."""
    plt = _pyplot()
    model = metalearner.model
    metalearner.task_begin(task)
    test_x, test_y = task.get_test_set()
    before = model.predict(test_x, verbose=0)
    task.fit_n_iterations(model, num_inner_iterations, inner_batch_size)
    after = model.predict(test_x, verbose=0)
    metalearner.task_begin(task)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(test_x[:, 0], test_y[:, 0], "k", label="ground truth")
    ax.plot(task.X[:, 0], task.y[:, 0], "ok", label=f"{len(task.X)} training points")
    ax.plot(test_x[:, 0], before[:, 0], "--r", label="before adaptation (meta-learnt init)")
    ax.plot(test_x[:, 0], after[:, 0], "r", label=f"after {num_inner_iterations} inner steps")
    ax.legend(fontsize=8)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
