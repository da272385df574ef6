"""The meta-learner base class: the protocol of the original pyMeta and the compiled fast path.

An algorithm is what it does with one task; the base class owns everything else (meta-parameters,
the outer optimizer, the step-by-step API, the compiled meta-batch, the kept inner state).

The contract (theta, phi: lists of tensors shaped like the parameters; state: the model's
non-trainable tensors; data: a `TaskData` of one task, see `pymeta.core.task_data`):

    task_step(theta, state, data, opt_state) -> (result, aux, opt_state)
        The fast path's work for one task. `result` is a list of tensors shaped like the parameters
        (summed over the tasks of a meta-batch, then averaged); `aux` a dict of float32 scalars
        named in `aux_names` (averaged the same way; e.g. the last inner loss, iMAML's CG residual);
        `opt_state` the inner optimizer state the task starts from (None: fresh) and ends with.
        Default: phi = self.adapt(theta, state, data.inner) (the one inner loop,
        `pymeta.inner_loop.adapt`), then `task_result`.
    task_result(theta, phi, state, data) -> (result, aux)
        The result of a task adapted to phi (FOMAML: the query gradient at phi; Reptile: phi).
    meta_gradient(theta, mean_result) -> list of tensors, given to the outer Keras optimizer.

Algorithms that differentiate through the adaptation (MAML) set `replays_adaptation`: in the
step-by-step API their `task_end` recomputes the task from theta on the batches the task recorded
(`task.last_fit`), through `replay(theta, state, datas)`, instead of using the adapted weights.
A new task type only has to produce `TaskData` (and the objective that reads its batches); a new
algorithm only has to write `task_result` (or `task_step`) and `meta_gradient`.
"""

from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

from pymeta import optim
from pymeta.core.learner import Learner
from pymeta.core.task import TaskAsSequenceOfTasks
from pymeta.core.task_data import TaskData, stack_task_data, task_slice


class TaskResult(list):
    """A task's result (a list of tensors shaped like the parameters) as returned by `task_end`,
    with the task's auxiliary values in `aux` (e.g. iMAML's CG residual)."""

    def __init__(self, tensors, aux=None):
        super().__init__(tensors)
        self.aux = dict(aux or {})


class GradBasedMetaLearner(Learner):
    """Base class of the meta-learners.

    Args:
        model: the Keras model whose initial weights are meta-learnt.
        optimizer: the outer (meta) Keras optimizer.
        inner_optimizer, loss, objective, jit_compile: see `pymeta.core.learner.Learner`.
        persistent_inner_state: keep the inner optimizer's state (Adam's moments and step count) from
            one task to the next, as the original Reptile implementation did, instead of starting each
            task fresh. Tasks then run one after the other in both APIs; evaluation (`evaluate_tasks`)
            starts every task from the kept state without changing it.
    """

    aux_names = ("last_minibatch_loss",)
    replays_adaptation = False
    supports_persistent_inner_state = True

    def __init__(self, model, optimizer, inner_optimizer=None, loss=None, jit_compile=False, name=None,
                 persistent_inner_state=False, objective=None):
        super().__init__(model, inner_optimizer=inner_optimizer, loss=loss, objective=objective,
                         jit_compile=jit_compile)
        self.optimizer = optimizer
        self.name = name or type(self).__name__
        self.meta_variables = None
        self.persistent_inner_state = bool(persistent_inner_state)
        if self.persistent_inner_state and not self.supports_persistent_inner_state:
            raise ValueError(f"{self.name} does not support persistent_inner_state (only meta-learners "
                             "whose tasks adapt with a plain inner loop: FOMAML, Reptile)")

    # --- what an algorithm defines ----------------------------------------------------------------
    def task_result(self, theta, phi, state, data: TaskData):
        raise NotImplementedError

    def meta_gradient(self, theta, mean_result):
        raise NotImplementedError

    def task_step(self, theta, state, data: TaskData, opt_state=None):
        """(result, aux, final inner optimizer state) of one task; see the module doc."""
        phi, loss, opt_state = self.adapt(theta, state, data.inner, opt_state=opt_state)
        result, aux = self.task_result(theta, phi, state, data)
        return result, {"last_minibatch_loss": tf.cast(loss, tf.float32), **aux}, opt_state

    def replay(self, theta, state, datas: Sequence[TaskData]):
        """(result, aux) of a task recomputed from theta on its recorded data (`replays_adaptation`);
        `datas` holds one `TaskData` per task of a sequence (one for a single task)."""
        if len(datas) != 1:
            raise TypeError(f"{self.name} cannot replay a sequence of tasks")
        result, aux, _ = self.task_step(theta, state, datas[0])
        return result, aux

    # --- state --------------------------------------------------------------------------------------
    def anchor(self):
        return None if self.meta_variables is None else [tf.convert_to_tensor(v) for v in self.meta_variables]

    def initialize(self, *args, **kwargs):
        """Take the model's current weights as the initial meta-parameters (args kept for the old API)."""
        if self.meta_variables is None:
            self.meta_variables = [tf.Variable(v, trainable=True, name=f"meta_{i}")
                                   for i, v in enumerate(self.model.trainable_variables)]
            self.optimizer.build(self.meta_variables)
            if self.persistent_inner_state:
                self.inner_state = optim.InnerStateVariables(self.inner_optimizer, self.meta_variables)
        else:
            for mv, v in zip(self.meta_variables, self.model.trainable_variables):
                mv.assign(v)

    def _require_initialized(self):
        if self.meta_variables is None:
            self.initialize()

    @property
    def current_initial_parameters(self):
        """The meta-parameters theta as numpy arrays."""
        self._require_initialized()
        return [v.numpy() for v in self.meta_variables]

    def set_initial_parameters(self, values):
        self._require_initialized()
        for v, x in zip(self.meta_variables, values):
            v.assign(x)
        self._load_theta_into_model()

    def _load_theta_into_model(self):
        for v, mv in zip(self.model.trainable_variables, self.meta_variables):
            v.assign(mv)

    def _theta(self):
        return [tf.convert_to_tensor(v) for v in self.meta_variables]

    def _state(self):
        return [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

    # --- the step-by-step API -----------------------------------------------------------------------
    def task_begin(self, task=None, **kwargs):
        """Reset the model to the current meta-parameters and bind `task` to this meta-learner, so
        that `task.fit_n_iterations(model, ...)` runs this meta-learner's inner loop."""
        self._require_initialized()
        self._load_theta_into_model()
        if task is not None:
            task.learner = self

    def task_end(self, task=None, **kwargs) -> TaskResult:
        """The per-task result of `task` (the model holding its adapted weights), computed from the
        data the task recorded in `fit_n_iterations` (`task.last_fit`); for a `TaskAsSequenceOfTasks`,
        its last task's query set."""
        if task is None:
            raise ValueError(f"{self.name}.task_end needs the task")
        subtasks = list(task.current_task_sequence) if isinstance(task, TaskAsSequenceOfTasks) else [task]
        records = [getattr(t, "last_fit", None) for t in subtasks]
        if self.replays_adaptation:
            if any(r is None for r in records):
                raise ValueError(f"{self.name}.task_end replays the task's adaptation: train the task with "
                                 "task.fit_n_iterations(model, ...) between task_begin and task_end")
            key, fn, args = "replay", self._replay_fn, (records,)
        else:
            last = records[-1] if records[-1] is not None else subtasks[-1].task_data(0, -1)
            key, fn, args = "task_end", self._task_end_fn, (last,)
        with self._compiled_call_options():
            result, aux = self._function(key, fn, args, free_dims=0)(*args)
        return TaskResult(result, {k: float(v) for k, v in aux.items()})

    def update(self, list_of_results, **kwargs) -> Dict[str, float]:
        """Outer step from the per-task results of one meta-batch; the model is left at the new theta.
        Returns the mean over the tasks of their auxiliary values (`TaskResult.aux`), if any."""
        if not list_of_results:
            raise ValueError("update needs the results of at least one task")
        stacked = [tf.stack(list(r)) for r in zip(*[list(r) for r in list_of_results])]  # [M, *shape]
        self._function("update", self._update_fn, (stacked,), free_dims=1)(stacked)
        auxes = [getattr(r, "aux", {}) for r in list_of_results]
        return {k: float(np.mean([a[k] for a in auxes])) for k in auxes[0] if all(k in a for a in auxes)}

    def _task_end_fn(self, data):
        phi = [tf.convert_to_tensor(v) for v in self.model.trainable_variables]
        return self.task_result(self._theta(), phi, self._state(), data)

    def _replay_fn(self, datas):
        return self.replay(self._theta(), self._state(), datas)

    def _update_fn(self, stacked):
        """stacked: per meta-parameter, the results of the M tasks [M, *shape] (M free: one trace)."""
        self._apply([tf.reduce_mean(r, axis=0) for r in stacked])

    def _apply(self, mean_result):
        grads = self.meta_gradient(self._theta(), mean_result)
        self.optimizer.apply_gradients(zip(grads, self.meta_variables))
        self._load_theta_into_model()

    def _compiled_call_options(self):
        """A context for this meta-learner's compiled calls (MAML turns a Grappler pass off)."""
        import contextlib
        return contextlib.nullcontext()

    # --- the fast path ------------------------------------------------------------------------------
    def stack_tasks(self, tasks, num_inner_iterations, inner_batch_size=-1) -> TaskData:
        """The `TaskData` of a meta-batch, leaves [M, ...], drawn task after task exactly as
        `Task.fit_n_iterations` draws them, so both paths see the same data for one seed. A task type
        whose data are collected by the policy being adapted (reinforcement learning) defines the
        classmethod `meta_batch_task_data(tasks, learner, T, B)`, which produces them itself."""
        tasks = list(tasks)
        produce = getattr(type(tasks[0]), "meta_batch_task_data", None) if tasks else None
        if produce is not None:
            return produce(tasks, self, num_inner_iterations, inner_batch_size)
        return stack_tasks(tasks, num_inner_iterations, inner_batch_size)

    def metatrain_step(self, tasks, num_inner_iterations, inner_batch_size=-1):
        """One meta-iteration over `tasks` in one compiled call; returns the mean over the tasks of
        their auxiliary values ({'last_minibatch_loss': ..., and e.g. 'cg_residual': ...})."""
        return self.metatrain_steps([tasks], num_inner_iterations, inner_batch_size)[0]

    def metatrain_steps(self, meta_batches, num_inner_iterations, inner_batch_size=-1) -> List[Dict[str, float]]:
        """Several meta-iterations, one per meta-batch, in one compiled call (the fixed cost of a call,
        a few hundred microseconds, is paid once: it matters for small models). One dict per meta-batch."""
        self._require_initialized()
        stacked = [self.stack_tasks(tasks, num_inner_iterations, inner_batch_size) for tasks in meta_batches]
        if not stacked:
            return []
        for data in stacked:
            self.check_data(data)
        data = stack_task_data(stacked)
        with self._compiled_call_options():
            aux = self._function("metatrain_steps", self._metatrain_steps_fn, (data,))(data)
        aux = {k: v.numpy() for k, v in aux.items()}
        return [{k: float(v[s]) for k, v in aux.items()} for s in range(len(stacked))]

    def evaluate_tasks(self, tasks, num_inner_iterations, inner_batch_size=-1, transductive=True):
        """Adapt theta to each task and evaluate on its test set, all in one compiled call.

        Returns (losses [M], accuracies [M]) numpy arrays (accuracies are 0 for regression).
        The meta-parameters (and a kept inner optimizer state) are not changed.
        """
        self._require_initialized()
        data = stack_tasks(tasks, num_inner_iterations, inner_batch_size)  # single tasks
        self.check_data(data)
        losses, accs = self._function("evaluate_tasks", self._evaluate_tasks_fn)(
            data, tf.constant(bool(transductive)))
        return losses.numpy(), accs.numpy()

    # --- building blocks for an outer loop split across processes (pymeta.metalearners.distributed) --
    def sum_task_results(self, tasks, num_inner_iterations, inner_batch_size=-1):
        """(list of numpy arrays: sum of the task results, {name: sum over the tasks of each auxiliary
        value}) for `tasks`, in one compiled call, without changing theta. Combine the sums across
        processes, divide by the total number of tasks and pass the mean to `apply_mean_result`."""
        self._require_initialized()
        data = self.stack_tasks(tasks, num_inner_iterations, inner_batch_size)
        self.check_data(data)
        with self._compiled_call_options():
            total, aux = self._function("sum_task_results", self._sum_task_results, (data,), free_dims=1)(data)
        return [t.numpy() for t in total], {k: float(v) for k, v in aux.items()}

    def apply_mean_result(self, mean_result):
        """The outer step from the mean task result (list of arrays shaped like the parameters)."""
        self._require_initialized()
        self._function("apply_mean_result", self._apply)([tf.convert_to_tensor(r) for r in mean_result])

    # --- compiled bodies ------------------------------------------------------------------------------
    def _metatrain_steps_fn(self, data):
        """S meta-iterations on stacked meta-batches (leaves [S, M, ...]); returns {aux name: [S]}."""
        num = tf.shape(tf.nest.flatten(data)[0])[0]

        def body(s, arrays):
            aux = self._meta_iteration(task_slice(data, s))
            return s + 1, {k: arrays[k].write(s, aux[k]) for k in self.aux_names}

        _, arrays = tf.while_loop(
            lambda s, _: s < num, body,
            (tf.constant(0), {k: tf.TensorArray(tf.float32, size=num) for k in self.aux_names}))
        return {k: a.stack() for k, a in arrays.items()}

    def _meta_iteration(self, data):
        """One meta-batch (leaves [M, ...]): the tasks' mean result, outer step; returns the mean aux."""
        total, aux = self._sum_task_results(data)
        m = tf.cast(tf.shape(tf.nest.flatten(data)[0])[0], tf.float32)
        self._apply([t / tf.cast(m, t.dtype) for t in total])
        return {k: v / m for k, v in aux.items()}

    def _sum_task_results(self, data):
        """(sum over the M tasks of their results, {aux name: sum}); theta unchanged. The one loop over
        the tasks of a meta-batch: a kept inner optimizer state goes from task to task and is stored."""
        theta, state, kept = self._theta(), self._state(), self.inner_state

        def step(i, carry):
            acc, aux_sum, opt_state = carry
            result, aux, opt_state = self.task_step(theta, state, task_slice(data, i),
                                                    opt_state if kept is not None else None)
            acc = [a + r for a, r in zip(acc, result)]
            aux_sum = {k: aux_sum[k] + tf.cast(aux[k], tf.float32) for k in self.aux_names}
            return acc, aux_sum, (opt_state if kept is not None else ())

        init = ([tf.zeros_like(t) for t in theta], {k: tf.constant(0.0) for k in self.aux_names},
                kept.read() if kept is not None else ())
        acc, aux_sum, opt_state = for_each_task(data, step, init)
        if kept is not None:
            kept.write(opt_state)
        return acc, aux_sum

    def _evaluate_tasks_fn(self, data, transductive):
        theta, state, kept = self._theta(), self._state(), self.inner_state
        m = tf.shape(tf.nest.flatten(data)[0])[0]

        def step(i, carry):
            losses, accs = carry
            task = task_slice(data, i)
            phi, _, _ = self.adapt(theta, state, task.inner, opt_state=None if kept is None else kept.read())
            qx, qy = task.query
            loss, acc = tf.cond(transductive,
                                lambda: self.fmodel.metrics(phi, state, qx, qy),
                                lambda: self.fmodel.metrics(phi, state, qx, qy, support_x=task.support[0]))
            return losses.write(i, tf.cast(loss, tf.float32)), accs.write(i, tf.cast(acc, tf.float32))

        losses, accs = for_each_task(data, step, (tf.TensorArray(tf.float32, size=m),
                                                  tf.TensorArray(tf.float32, size=m)))
        return losses.stack(), accs.stack()


def for_each_task(data, step, init):
    """carry <- step(i, carry) for each task i of stacked task data (leaves [M, ...]), as one
    `tf.while_loop` (the tasks run one after the other, or side by side with inter-op threads)."""
    m = tf.shape(tf.nest.flatten(data)[0])[0]
    _, carry = tf.while_loop(lambda i, _: i < m, lambda i, c: (i + 1, step(i, c)), (tf.constant(0), init))
    return carry


def stack_tasks(tasks, num_inner_iterations, inner_batch_size) -> TaskData:
    """The `TaskData` of a meta-batch of tasks (leaves [M, ...]), each from `task.task_data(T, B)`."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("a meta-batch needs at least one task")
    for t in tasks:
        if not hasattr(t, "task_data"):
            raise TypeError(f"the fast path needs tasks that produce TaskData, got {type(t).__name__}")
    return stack_task_data([t.task_data(num_inner_iterations, inner_batch_size) for t in tasks])
