"""SeqFOMAML (Spigler 2019, "Meta-learnt priors slow down catastrophic forgetting in neural networks",
https://arxiv.org/abs/1909.04170): FOMAML on sequences of tasks learnt one after the other.

A meta-training "task" is a `TaskAsSequenceOfTasks` of n tasks T_0 .. T_{n-1}; the inner loop trains
on each of them in turn (`task.fit_n_iterations`), giving the weights phi^0 .. phi^{n-1} after each
task (phi^{n-1} = the final weights phi^n of the paper's notation). With L_j the test (query) loss of
task j, the task result is the first-order gradient

    plain:                        (1/n) sum_j grad L_j(phi^{n-1})
                                  (every task of the sequence at the final weights)
and, added to it, the mean of the auxiliary gradients of the variant:
    loss_after_each_task:         grad L_i(phi^i),                    i = 0..n-1
    sampled_loss_after_each_task: grad L_{j_i}(phi^i), j_i ~ U{0..i}, i = 0..n-1
    all_losses_after_each_task:   grad L_j(phi^i) / (n + 1 - j),      0 <= j <= i <= n-2

(the original pyMeta's definitions; its 'all_losses' weights use the 0-based j). Gradients at phi^i
are taken as gradients at theta, as in FOMAML.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pymeta.core.learner import Tensors
from pymeta.core.meta_learner import Aux, TaskResult
from pymeta.core.task import SupervisedTask, Task, TaskAsSequenceOfTasks
from pymeta.core.task_data import TaskData, stack_task_data, task_slice
from pymeta.metalearners.fomaml import FOMAMLMetaLearner, query_gradient

SEQ_FOMAML_VARIANTS = ("plain", "loss_after_each_task", "sampled_loss_after_each_task",
                       "all_losses_after_each_task")


def auxiliary_terms(variant: str, n: int, rng: Any = np.random) -> List[Tuple[int, int, float]]:
    """[(i, j, weight)]: the auxiliary gradients of `variant` for a sequence of n tasks, each the
    gradient of task j's query loss at the weights after task i, to be averaged."""
    if variant == "plain":
        return []
    if variant == "loss_after_each_task":
        return [(i, i, 1.0) for i in range(n)]
    if variant == "sampled_loss_after_each_task":
        return [(i, int(rng.randint(0, i + 1)), 1.0) for i in range(n)]
    if variant == "all_losses_after_each_task":
        return [(i, j, 1.0 / (n + 1 - j)) for i in range(n - 1) for j in range(i + 1)]
    raise ValueError(f"unknown SeqFOMAML variant {variant!r}; use one of {SEQ_FOMAML_VARIANTS}")


def _subtasks(task):
    subtasks = list(task.current_task_sequence) if isinstance(task, TaskAsSequenceOfTasks) else [task]
    for t in subtasks:
        if not isinstance(t, SupervisedTask):
            raise TypeError(f"SeqFOMAML needs supervised tasks, got {type(t).__name__}")
    return subtasks


class SeqFOMAMLMetaLearner(FOMAMLMetaLearner):
    """SeqFOMAML: FOMAML on sequences of tasks, with the auxiliary losses of the original pyMeta.

    Args:
        model, optimizer: the Keras model whose initialisation is meta-learnt, the outer optimizer.
        variant: one of 'plain', 'loss_after_each_task' (the best in the paper),
            'sampled_loss_after_each_task', 'all_losses_after_each_task' (see the module doc).
        **kwargs: inner_optimizer, loss, objective, jit_compile, name: see `GradBasedMetaLearner`.

    Step-by-step use (the original API)::

        metalearner.task_begin(sequence)
        sequence.fit_n_iterations(model, T, B)        # each task of the sequence in turn
        results.append(metalearner.task_end(sequence))
        ...
        metalearner.update(results)

    `task_end(task, seq_fomaml_loss=...)` overrides the variant for one call (the original's keyword).
    The weights after each task of the sequence, phi^i, are obtained by replaying the adaptation from
    theta on the batches `fit_n_iterations` recorded (`last_fit` of each task), or taken from
    `results={'weights_<i>': [arrays]}` if given (the original's `return_weights_after_each_task`
    output). A single (non-sequence) task counts as a sequence of length 1.

    Fast path: the `TaskData` of a sequence of L tasks with A auxiliary terms has support [L, ...],
    inner [L, T, ...] and query [L + A, ...] (the L tasks' query sets, then the query set of each
    auxiliary term). `metatrain_step(sequences, T, B)` / `metatrain_steps` run a meta-batch of
    sequences (all of the same length, with equally shaped tasks) in one compiled call, drawing the
    inner minibatches and the sampled tasks in the same order as the step-by-step API, so both give
    the same update for one seed. `evaluate_tasks` takes single tasks.
    """

    supports_persistent_inner_state = False

    def __init__(self, model: Any, optimizer: Any, variant: str = "loss_after_each_task", **kwargs: Any) -> None:
        if variant not in SEQ_FOMAML_VARIANTS:
            raise ValueError(f"unknown SeqFOMAML variant {variant!r}; use one of {SEQ_FOMAML_VARIANTS}")
        super().__init__(model, optimizer, **kwargs)
        self.variant = variant

    # --- the step-by-step API ---------------------------------------------------------------------
    def task_end(self, task: Optional[Task] = None, results: Optional[Dict[str, Any]] = None,
                 seq_fomaml_loss: Optional[str] = None, **kwargs: Any) -> TaskResult:
        """The SeqFOMAML gradient of the sequence `task`, the model holding its final weights."""
        if task is None:
            raise ValueError(f"{self.name}.task_end needs the task")
        variant = seq_fomaml_loss or self.variant
        subtasks = _subtasks(task)
        n = len(subtasks)
        queries = [t.get_test_set() for t in subtasks]
        aux = auxiliary_terms(variant, n)
        # the aux terms as (i, query, weight): i is static, the data of a sampled j is not
        aux_terms = [(i, queries[j], w) for i, j, w in aux]
        phis, inner = None, None
        needed = 1 + max((i for i, _, _ in aux), default=-1)  # phi^0 .. phi^(needed-1)
        if needed and results is not None and all(f"weights_{i}" in results for i in range(needed)):
            phis = [[tf.convert_to_tensor(w) for w in results[f"weights_{i}"]] for i in range(needed)]
        elif needed:
            records = [t.last_fit for t in subtasks[:needed]]
            if any(r is None for r in records):
                raise ValueError("SeqFOMAML replays the adaptation to each task of the sequence: train "
                                 "it with sequence.fit_n_iterations(model, ...) before task_end, or "
                                 "pass results={'weights_<i>': ...}")
            inner = [r.inner for r in records]
        result = self.compiled("seq_fomaml_task_end", self._seq_task_end_fn)(queries, aux_terms, phis, inner)
        return TaskResult(result)

    def _seq_task_end_fn(self, queries, aux_terms, phis, inner):
        state, theta = self.state_tensors(), self.theta_tensors()
        if aux_terms and phis is None:  # replay the adaptation from theta, task after task
            phi, phis = theta, []
            for batches in inner:
                phi, _, _ = self.adapt(phi, state, batches, theta=theta)
                phis.append(phi)
        final = [tf.convert_to_tensor(v) for v in self.model.trainable_variables]
        return self.sequence_result(final, phis, state, queries, aux_terms)

    def sequence_result(self, final: Tensors, phis: Optional[Sequence[Tensors]], state: Tensors,
                        queries: Sequence[Any], aux_terms: Sequence[Tuple[int, Any, float]]) -> Tensors:
        """The task result of one sequence (list of tensors shaped like the parameters).

        final: the parameters after the whole sequence; phis[i]: after task i (those the auxiliary terms
        use); queries: the query batch of every task; aux_terms: [(i, query batch, weight)].
        """
        total: Optional[List[tf.Tensor]] = None
        for query in queries:
            g = query_gradient(self, final, state, query)
            total = g if total is None else [a + b for a, b in zip(total, g)]
        assert total is not None, "a sequence has at least one task"
        result = [t / float(len(queries)) for t in total]
        if not aux_terms:
            return result
        aux: Optional[List[tf.Tensor]] = None
        assert phis is not None, "the auxiliary terms need the weights after each task"
        for i, query, w in aux_terms:
            g = [w * t for t in query_gradient(self, phis[i], state, query)]
            aux = g if aux is None else [a + b for a, b in zip(aux, g)]
        assert aux is not None
        return [r + a / float(len(aux_terms)) for r, a in zip(result, aux)]

    # --- the fast path ------------------------------------------------------------------------------
    def _static_aux(self, n):
        """[(i, weight)] of the variant's auxiliary terms for length n (the same for every draw)."""
        return [(i, w) for i, _, w in auxiliary_terms(self.variant, n, np.random.RandomState(0))]

    def task_step(self, theta: Tensors, state: Tensors, data: TaskData,
                  opt_state: Any = None) -> Tuple[Tensors, Aux, Any]:
        """One sequence (see the class doc for the shapes of its `TaskData`)."""
        n = tf.nest.flatten(data.inner)[0].shape[0]
        phi, phis, loss = list(theta), [], tf.constant(0.0)
        for i in range(n):
            phi, loss, _ = self.adapt(phi, state, task_slice(data.inner, i), theta=theta)
            phis.append(phi)
        queries = [task_slice(data.query, j) for j in range(n)]
        aux_terms = [(i, task_slice(data.query, n + a), w) for a, (i, w) in enumerate(self._static_aux(n))]
        result = self.sequence_result(phis[-1], phis, state, queries, aux_terms)
        return result, {"last_minibatch_loss": tf.cast(loss, tf.float32)}, opt_state

    def _sequence_data(self, task, num_inner_iterations, inner_batch_size):
        """The `TaskData` of one sequence; the auxiliary query sets are drawn after the fits, in
        `task_end`'s order."""
        data = stack_task_data([t.task_data(num_inner_iterations, inner_batch_size) for t in _subtasks(task)])
        extra = [j for _, j, _ in auxiliary_terms(self.variant, len(tf.nest.flatten(data.inner)[0]))]
        query = tf.nest.map_structure(lambda q: np.concatenate([q, q[extra]]), data.query)
        return TaskData(data.support, data.inner, query)

    def stack_tasks(self, tasks: Sequence[Task], num_inner_iterations: int, inner_batch_size: int = -1) -> TaskData:
        """The `TaskData` of a meta-batch of sequences (single tasks count as sequences of length 1)."""
        per_task = [self._sequence_data(t, num_inner_iterations, inner_batch_size) for t in tasks]
        try:
            return stack_task_data(per_task)
        except ValueError as e:
            raise ValueError("the sequences of a meta-batch must have the same length and equally "
                             f"shaped tasks to run as one compiled step ({e})") from None
