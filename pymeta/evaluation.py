"""How well a meta-learnt initialisation adapts, on the supervised datasets: validation during a run
(`validate`) and the meta-test of a saved model with its 95% confidence interval (`meta_test`; RL
models: `pymeta.rl.evaluation`, both chosen by dataset in `pymeta.metatest`)."""

import dataclasses
import logging
import sys
import time
from typing import Any, Dict, Tuple

import numpy as np

from pymeta.checkpoint import kept_inner_state
from pymeta.config import MetaTestConfig, RunConfig, check_metatest_config, check_output_folders
from pymeta.confidence import mean_confidence_interval
from pymeta.partial_results import PartialResults, file_digest
from pymeta.progress import Progress
from pymeta.registry import RL_DATASETS

logger = logging.getLogger(__name__)


def validate(metalearner, distribution, num_batches: int, num_inner_iterations: int, inner_batch_size: int,
             transductive: bool = True, fast: bool = True) -> Tuple[float, float]:
    """Mean (loss, accuracy) after adaptation over `num_batches` meta-batches of `distribution`.

    fast=True: one compiled call per meta-batch; False: the step-by-step API, task by task.
    """
    losses, accs = [], []
    evaluate = metalearner.evaluate_tasks_distributed  # spread over the ranks under MPI
    kept = None if fast else kept_inner_state(metalearner)
    saved_state = None if kept is None else kept.read()
    for _ in range(num_batches):
        tasks = distribution.sample_batch()
        if fast:
            l, a = evaluate(tasks, num_inner_iterations, inner_batch_size, transductive)
            losses.extend(l)
            accs.extend(a)
            continue
        for task in tasks:
            metalearner.task_begin(task)
            task.fit_n_iterations(metalearner.model, num_inner_iterations, inner_batch_size)
            out = task.evaluate(metalearner.model, transductive=transductive)
            losses.append(out["loss"])
            accs.append(out.get("sparse_categorical_accuracy", 0.0))
    if not fast:
        metalearner.task_begin(None)  # leave the model at theta
        if kept is not None:  # validation does not change the kept inner optimizer state
            kept.write(saved_state)
    return float(np.mean(losses)), float(np.mean(accs))


def meta_test(c: MetaTestConfig) -> Dict[str, Any]:
    """Adapt the initialisation saved in `c.model` to `c.num_tasks` meta-test tasks; returns {'mean':
    ..., 'ci95': ..., 'values_by_task': [num_tasks], 'loss_by_task': [num_tasks], ...}: accuracy (%) for
    classification, MSE for sinusoid, with the protocol (seed, queries per class, steps, settings). The
    result line is logged; progress too (`c.progress`: a bar on a terminal, else log lines). An adapted
    loss that is not finite raises ValueError (one line: the task, the loss before adaptation, the cause).

    The inner loop is the one of meta-training (same inner optimizer and learning rate); a model trained
    with a kept inner optimizer state adapts from it (unless c.fresh_inner_state).

    With `c.output`, the tasks evaluated so far are kept in `<output>.partial` after every batch: the same
    meta-test, run again after an interruption, continues from them to the same result
    (`pymeta.partial_results`).
    """
    import keras

    from pymeta.atomic import write_json_atomic
    from pymeta.model_io import load_inner_state, load_weights_into
    from pymeta.metalearner_factory import build_metalearner
    from pymeta.problems import seeded_problem_and_model
    from pymeta.runtime import apply_thread_layout, thread_layout
    check_metatest_config(c)
    if c.output:
        check_output_folders(c.output)  # before evaluating
    if c.plot:
        check_output_folders(c.plot)
    if c.dataset in RL_DATASETS:
        raise ValueError(f"--dataset={c.dataset} is meta-tested by pymeta.rl.evaluation (pymeta.metatest.meta_test "
                         "chooses by dataset)")
    # the tasks of a compiled batch run side by side, as in training (default layout of a training run),
    # unless --num_threads says otherwise
    layout = RunConfig(dataset=c.dataset, meta_batch_size=c.batch, num_threads=c.num_threads).sections()
    apply_thread_layout(*thread_layout(layout.run, layout.task, layout.algorithm), explicit=c.num_threads > 0)
    problem, model = seeded_problem_and_model(
        c.seed, c.precision, c.dataset, c.metamodel, c.inner_lr, c.num_output_classes,
        c.num_train_samples_per_class, c.num_test_samples_per_class, c.batch, c.data_path or None,
        c.omniglot_protocol, inner_optimizer=c.inner_optimizer)
    load_weights_into(model, c.model)
    if not all(np.all(np.isfinite(w)) for w in model.get_weights()):
        raise ValueError(f"{c.model} holds non-finite weights (inf or nan; its training diverged?): "
                         "nothing to meta-test")
    # evaluation only: the meta-learner just supplies the inner objective (iMAML's is proximal)
    # iMAML's proximal mode adapts on the proximal objective at test time too; pullback mode, plain steps
    imaml = c.metamodel == "imaml" and c.imaml_inner == "proximal" and c.imaml_lambda_reg > 0
    kept = None if c.fresh_inner_state else load_inner_state(c.model)
    proximal = {"lambda_reg": c.imaml_lambda_reg, "inner_mode": "proximal"} if imaml else {}
    metalearner = build_metalearner("imaml" if imaml else "fomaml", model, keras.optimizers.SGD(0.0),
                                    persistent_inner_state=kept is not None, **proximal)
    metalearner.initialize()
    if kept is not None:
        store = kept_inner_state(metalearner)
        if not store.fits(kept):
            raise ValueError(f"the inner optimizer state in {c.model!r} does not fit --inner_optimizer="
                             f"{c.inner_optimizer} (train with the same inner optimizer, or --fresh_inner_state)")
        if not all(np.all(np.isfinite(a)) for a in kept if np.issubdtype(np.asarray(a).dtype, np.floating)):
            raise ValueError(f"the inner optimizer state in {c.model!r} is not finite (inf or nan): "
                             "pass --fresh_inner_state to start each task fresh")
        store.write(kept)  # flat arrays, in the order of store.variables
    dist = problem.metatest if c.split == "test" else problem.metaval
    partial = PartialResults(c.output, _identity(c), c.batch, c.num_tasks) if c.output else None
    losses, accs, earlier_seconds = partial.load() if partial is not None else ([], [], 0.0)
    done_before = len(losses)
    if partial is not None and done_before:
        logger.info(f"continuing the meta-test of {partial.path}: {len(losses)} of {c.num_tasks} tasks were "
                    "evaluated before")
    start = time.time()
    unit = "%" if problem.is_classification else ""

    def running_mean():
        return 100 * np.mean(accs) if unit else np.mean(losses)

    with Progress(c.num_tasks, "meta-test", enabled=c.progress,
                  mean_text=lambda m: f"mean {'accuracy' if unit else 'MSE'} {m:.2f}{unit}") as progress:
        if losses:
            progress.update(len(losses), running_mean())
        for first in range(0, c.num_tasks, c.batch):
            n = min(c.batch, c.num_tasks - first)
            tasks = dist.sample_batch(n)
            if first < done_before:  # evaluated before an interruption: draw its inner minibatches as
                for task in tasks:  # evaluate_tasks does, so the random stream goes on as uninterrupted
                    task.task_data(c.num_inner_iterations, c.inner_batch_size)
                continue
            l, a = metalearner.evaluate_tasks(tasks, c.num_inner_iterations, c.inner_batch_size, c.transductive)
            if not (np.all(np.isfinite(l)) and np.all(np.isfinite(a))):
                if partial is not None:
                    partial.remove()
                raise ValueError(_non_finite_message(metalearner, tasks, l, len(losses), c))
            losses.extend(l)
            accs.extend(a)
            if partial is not None and len(losses) < c.num_tasks:
                partial.save(losses, accs, earlier_seconds + time.time() - start)
            progress.update(n, running_mean())
    values = np.asarray(accs) * 100 if problem.is_classification else np.asarray(losses)
    mean, ci = mean_confidence_interval(values)
    result = {"metric": "accuracy_percent" if problem.is_classification else "mse", "mean": mean, "ci95": ci,
              "num_tasks": len(values), "num_inner_iterations": c.num_inner_iterations,
              "transductive": c.transductive, "seconds": round(earlier_seconds + time.time() - start, 1),
              "model": c.model, "dataset": c.dataset, "split": c.split,
              "way": c.num_output_classes, "shot": c.num_train_samples_per_class,
              "queries_per_class": c.num_test_samples_per_class, "seed": c.seed,
              "inner_objective": f"proximal (lambda {c.imaml_lambda_reg})" if imaml else "task loss",
              "inner_optimizer_state": "saved with the model" if kept is not None else "fresh per task",
              "values_by_task": values.tolist(), "loss_by_task": np.asarray(losses, np.float64).tolist(),
              "settings": dataclasses.asdict(c), "command": " ".join(sys.argv)}
    batch_norm = "" if c.dataset == "sinusoid" else ", transductive" if c.transductive else ", non-transductive"
    logger.info(f"{c.dataset} {c.split}: {mean:.2f}{unit} ± {ci:.2f}{unit} (95% CI) over {len(values)} tasks, "
                f"{c.num_inner_iterations} inner steps{batch_norm}")
    if partial is not None:
        write_json_atomic(c.output, result)
        partial.remove()
    return result


def _identity(c: MetaTestConfig) -> Dict[str, Any]:
    """What makes two meta-tests the same (their partial results interchangeable): every setting but
    where the result goes and how progress shows, and the bytes of the model file."""
    settings = {k: v for k, v in dataclasses.asdict(c).items() if k not in ("output", "plot", "progress")}
    return {"settings": settings, "model_sha256": file_digest(c.model)}


def _non_finite_message(metalearner, tasks, losses, done: int, c: MetaTestConfig) -> str:
    """One line on the first task of a meta-test batch whose adapted loss is not finite, and the likely
    cause: the loss before adaptation (the same task, 0 inner steps) tells the model from the inner loop."""
    i = int(np.flatnonzero(~np.isfinite(losses))[0])
    what = f"meta-test task {done + i + 1} of {c.num_tasks}: the test loss is {losses[i]} after " \
           f"{c.num_inner_iterations} inner steps"
    try:
        before = float(metalearner.evaluate_tasks(tasks[i:i + 1], 0, c.inner_batch_size, c.transductive)[0][0])
    except (ValueError, TypeError):
        before = None
    diverged = f"(try a smaller --inner_lr than {c.inner_lr:g} or fewer --num_inner_iterations); nothing written"
    if before is None:
        return f"{what}: the model's outputs are not finite, or the adaptation diverged {diverged}"
    if not np.isfinite(before):
        return (f"{what} and {before} before adaptation: the model's outputs are not finite (weights too large, "
                f"or --precision={c.precision} overflows?); nothing written")
    return f"{what} ({before:.4g} before adaptation): the adaptation diverged {diverged}"
