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

How theta then moves is the meta-learner's `outer_step` (`pymeta.core.protocols.OuterStep`): by
default `OptimizerStep(optimizer)`, a Keras optimizer on the meta-gradient; MAML-RL's TRPO step
(`pymeta.rl.trpo.TRPOStep`) is the other one. Both take the same `update(results, tasks=...)`.

Algorithms that differentiate through the adaptation (MAML) set `replays_adaptation`: in the
step-by-step API their `task_end` recomputes the task from theta on the batches the task recorded
(`task.last_fit`), through `replay(theta, state, datas)`, instead of using the adapted weights.
A new task type only has to produce `TaskData` (and the objective that reads its batches); a new
algorithm only has to write `task_result` (or `task_step`) and `meta_gradient`.
"""

import contextlib
from typing import Any, Callable, ContextManager, Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from pymeta import optim
from pymeta.core.learner import Learner, Tensors
from pymeta.core.outer_step import OptimizerStep
from pymeta.core.protocols import CollectsTaskData, OuterStep, ProducesTaskData
from pymeta.core.task import Task, TaskAsSequenceOfTasks
from pymeta.core.task_data import TaskData, TaskResult, stack_task_data, task_slice

Aux = Dict[str, tf.Tensor]  # named float32 scalars (`aux_names`)

__all__ = ["GradBasedMetaLearner", "TaskResult", "for_each_task", "stack_tasks"]


class GradBasedMetaLearner(Learner):
    """Base class of the meta-learners.

    Args:
        model: the Keras model whose initial weights are meta-learnt.
        optimizer: the outer (meta) Keras optimizer (the outer step `OptimizerStep(optimizer)`).
        inner_optimizer: the inner-loop optimizer (see `pymeta.core.learner.Learner`).
        loss: the task loss (see `pymeta.core.learner.Learner`).
        jit_compile: compile the hot path with XLA (see `pymeta.core.learner.Learner`).
        name: a display name (default: the class name).
        persistent_inner_state: keep the inner optimizer's state (Adam's moments and step count) from
            one task to the next, as the original Reptile implementation did, instead of starting each
            task fresh. Tasks then run one after the other in both APIs; evaluation (`evaluate_tasks`)
            starts every task from the kept state without changing it.
        objective: what a task minimises, instead of `loss` (see `pymeta.core.learner.Learner`).
        outer_step: how theta moves after a meta-batch, instead of `optimizer` (a
            `pymeta.core.protocols.OuterStep`, e.g. `pymeta.rl.trpo.TRPOStep`).

    The members a run loop uses (`pymeta.core.protocols.MetaLearnerLike`) exist here and on
    `DistributedMetaLearner`: `is_root`, `local_tasks`, `allreduce_max`, `broadcast_state` and
    `evaluate_tasks_distributed` are their single-process versions.
    """

    aux_names: Tuple[str, ...] = ("last_minibatch_loss",)
    replays_adaptation = False
    supports_persistent_inner_state = True

    def __init__(self, model: keras.Model, optimizer: Optional[keras.optimizers.Optimizer] = None,
                 inner_optimizer: Any = None, loss: Any = None, jit_compile: bool = False,
                 name: Optional[str] = None, persistent_inner_state: bool = False, objective: Any = None,
                 outer_step: Optional[OuterStep] = None):
        super().__init__(model, inner_optimizer=inner_optimizer, loss=loss, objective=objective,
                         jit_compile=jit_compile)
        if (optimizer is None) == (outer_step is None):
            raise ValueError("give the meta-learner an outer optimizer (optimizer=keras.optimizers.Adam(...)) "
                             "or an outer_step, not both")
        self.outer_step: OuterStep = OptimizerStep(optimizer) if outer_step is None else outer_step
        self.name = name or type(self).__name__
        self.meta_variables: Optional[List[tf.Variable]] = None
        self.persistent_inner_state = bool(persistent_inner_state)
        if self.persistent_inner_state and not self.supports_persistent_inner_state:
            raise ValueError(f"{self.name} does not support persistent_inner_state (only meta-learners "
                             "whose tasks adapt with a plain inner loop: FOMAML, Reptile)")

    @property
    def optimizer(self) -> Any:
        """The outer Keras optimizer (of an `OptimizerStep`); for another outer step, the step itself
        (its `variables` are what a checkpoint stores)."""
        step = self.outer_step
        return step.optimizer if isinstance(step, OptimizerStep) else step

    # --- the single-process versions of the distributed members (`MetaLearnerLike`) ---------------
    @property
    def is_root(self) -> bool:
        """True: a single process logs, validates and saves."""
        return True

    def broadcast_state(self, root: Optional[int] = None) -> None:
        """Nothing to copy in a single process."""

    def allreduce_max(self, value: float) -> float:
        return value

    def local_tasks(self, tasks: Sequence[Task], num_inner_iterations: Optional[int] = None,
                    inner_batch_size: int = -1) -> List[Task]:
        """The tasks this process adapts to: all of them."""
        return list(tasks)

    def evaluate_tasks_distributed(self, tasks: Sequence[Task], num_inner_iterations: int,
                                   inner_batch_size: int = -1,
                                   transductive: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """`evaluate_tasks` (in one process nothing is spread)."""
        return self.evaluate_tasks(tasks, num_inner_iterations, inner_batch_size, transductive)

    # --- what an algorithm defines ----------------------------------------------------------------
    def task_result(self, theta: Tensors, phi: Tensors, state: Tensors, data: TaskData) -> Tuple[Tensors, Aux]:
        raise NotImplementedError

    def meta_gradient(self, theta: Tensors, mean_result: Tensors) -> Tensors:
        raise NotImplementedError

    def task_step(self, theta: Tensors, state: Tensors, data: TaskData,
                  opt_state: Any = None) -> Tuple[Tensors, Aux, Any]:
        """(result, aux, final inner optimizer state) of one task; see the module doc."""
        phi, loss, opt_state = self.adapt(theta, state, data.inner, opt_state=opt_state)
        result, aux = self.task_result(theta, phi, state, data)
        return result, {"last_minibatch_loss": tf.cast(loss, tf.float32), **aux}, opt_state

    def replay(self, theta: Tensors, state: Tensors, datas: Sequence[TaskData]) -> Tuple[Tensors, Aux]:
        """(result, aux) of a task recomputed from theta on its recorded data (`replays_adaptation`);
        `datas` holds one `TaskData` per task of a sequence (one for a single task)."""
        if len(datas) != 1:
            raise TypeError(f"{self.name} cannot replay a sequence of tasks")
        result, aux, _ = self.task_step(theta, state, datas[0])
        return result, aux

    # --- state --------------------------------------------------------------------------------------
    def anchor(self) -> Optional[Tensors]:
        return None if self.meta_variables is None else [tf.convert_to_tensor(v) for v in self.meta_variables]

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        """Take the model's current weights as the initial meta-parameters (args kept for the old API)."""
        if self.meta_variables is None:
            self.meta_variables = [tf.Variable(v, trainable=True, name=f"meta_{i}")
                                   for i, v in enumerate(self.model.trainable_variables)]
            self.outer_step.build(self)
            if self.persistent_inner_state:
                self.inner_state = optim.InnerStateVariables(self.inner_optimizer, self.meta_variables)
        else:
            for mv, v in zip(self.meta_variables, self.model.trainable_variables):
                mv.assign(v)

    def ensure_initialized(self) -> List[tf.Variable]:
        """The meta-variables, taken from the model's weights if not yet (`initialize`)."""
        if self.meta_variables is None:
            self.initialize()
        assert self.meta_variables is not None
        return self.meta_variables

    @property
    def current_initial_parameters(self) -> List[np.ndarray]:
        """The meta-parameters theta as numpy arrays."""
        return [v.numpy() for v in self.ensure_initialized()]

    def set_initial_parameters(self, values: Sequence[Any]) -> None:
        """Set theta (one array per trainable variable) and load it into the model."""
        for v, x in zip(self.ensure_initialized(), values):
            v.assign(x)
        self.load_theta_into_model()

    def load_theta_into_model(self) -> None:
        """Copy theta into the model's trainable variables (traceable)."""
        for v, mv in zip(self.model.trainable_variables, self.ensure_initialized()):
            v.assign(mv)

    def theta_tensors(self) -> Tensors:
        """theta as tensors (one per trainable variable; traceable)."""
        return [tf.convert_to_tensor(v) for v in self.ensure_initialized()]

    def state_tensors(self) -> Tensors:
        """The model's non-trainable state (batch-norm statistics) as tensors (traceable)."""
        return [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

    # --- the step-by-step API -----------------------------------------------------------------------
    def task_begin(self, task: Optional[Task] = None, **kwargs: Any) -> None:
        """Reset the model to the current meta-parameters and bind `task` to this meta-learner, so
        that `task.fit_n_iterations(model, ...)` runs this meta-learner's inner loop."""
        self.load_theta_into_model()
        if task is not None:
            task.learner = self

    def task_end(self, task: Optional[Task] = None, **kwargs: Any) -> TaskResult:
        """The per-task result of `task` (the model holding its adapted weights), computed from the
        data the task recorded in `fit_n_iterations` (`task.last_fit`); for a `TaskAsSequenceOfTasks`,
        its last task's query set."""
        if task is None:
            raise ValueError(f"{self.name}.task_end needs the task")
        self.ensure_initialized()  # theta is created here, never inside the compiled call below
        subtasks = list(task.current_task_sequence) if isinstance(task, TaskAsSequenceOfTasks) else [task]
        records = [t.last_fit for t in subtasks]
        if self.replays_adaptation:
            if any(r is None for r in records):
                raise ValueError(f"{self.name}.task_end replays the task's adaptation: train the task with "
                                 "task.fit_n_iterations(model, ...) between task_begin and task_end")
            key: str = "replay"
            fn: Callable[..., Any] = self._replay_fn
            args: tuple = (records,)
        else:
            last = records[-1] if records[-1] is not None else _task_data(subtasks[-1], 0, -1)
            key, fn, args = "task_end", self._task_end_fn, (last,)
        with self.compiled_call_options():
            result, aux = self.compiled(key, fn, args, free_dims=0)(*args)
        return TaskResult(result, {k: float(v) for k, v in aux.items()})

    def update(self, list_of_results: Sequence[Sequence[Any]], tasks: Optional[Sequence[Task]] = None,
               **kwargs: Any) -> Dict[str, float]:
        """Outer step (`outer_step`) from the per-task results of one meta-batch (`task_end`'s); the
        model is left at the new theta. `tasks`: the meta-batch's tasks, for an outer step that needs
        the data they recorded (TRPO). Returns the mean over the tasks of their auxiliary values
        (`TaskResult.aux`), if any (TRPO: its step's statistics)."""
        self.ensure_initialized()
        return self.outer_step.update(self, list_of_results, tasks)

    def _task_end_fn(self, data):
        phi = [tf.convert_to_tensor(v) for v in self.model.trainable_variables]
        return self.task_result(self.theta_tensors(), phi, self.state_tensors(), data)

    def _replay_fn(self, datas):
        return self.replay(self.theta_tensors(), self.state_tensors(), datas)

    def mean_result_step(self, stacked: Sequence[tf.Tensor]) -> None:
        """The outer step from stacked task results: per meta-parameter, the results of the M tasks
        [M, *shape] (M free: one trace). Traceable."""
        self._apply([tf.reduce_mean(r, axis=0) for r in stacked])

    def _apply(self, mean_result: Sequence[tf.Tensor]) -> None:
        step = self.outer_step
        if not isinstance(step, OptimizerStep):
            raise TypeError(f"{self.name}'s outer step ({type(step).__name__}) does not step from a mean "
                            "task result")
        step.apply(self, mean_result)

    def compiled_call_options(self) -> ContextManager[Any]:
        """A context for this meta-learner's compiled calls (MAML turns a Grappler pass off)."""
        return contextlib.nullcontext()

    # --- the fast path ------------------------------------------------------------------------------
    def stack_tasks(self, tasks: Sequence[Task], num_inner_iterations: int, inner_batch_size: int = -1) -> TaskData:
        """The `TaskData` of a meta-batch, leaves [M, ...], drawn task after task exactly as
        `Task.fit_n_iterations` draws them, so both paths see the same data for one seed. A task type
        whose data are collected by the policy being adapted (reinforcement learning) is a
        `CollectsTaskData` and produces them itself (`meta_batch_task_data(tasks, learner, T, B)`)."""
        tasks = list(tasks)
        if tasks and isinstance(tasks[0], CollectsTaskData):
            return type(tasks[0]).meta_batch_task_data(tasks, self, num_inner_iterations, inner_batch_size)
        return stack_tasks(tasks, num_inner_iterations, inner_batch_size)

    def metatrain_step(self, tasks: Sequence[Task], num_inner_iterations: int,
                       inner_batch_size: int = -1) -> Dict[str, float]:
        """One meta-iteration over `tasks` in one compiled call; returns the mean over the tasks of
        their auxiliary values ({'last_minibatch_loss': ..., and e.g. 'cg_residual': ...})."""
        return self.metatrain_steps([tasks], num_inner_iterations, inner_batch_size)[0]

    def metatrain_steps(self, meta_batches: Sequence[Sequence[Task]], num_inner_iterations: int,
                        inner_batch_size: int = -1) -> List[Dict[str, float]]:
        """Several meta-iterations, one per meta-batch (with the optimizer step: all in one compiled
        call; the fixed cost of a call, a few hundred microseconds, is paid once: it matters for small
        models). One dict per meta-batch."""
        self.ensure_initialized()
        return self.outer_step.metatrain(self, meta_batches, num_inner_iterations, inner_batch_size)

    def run_meta_iterations(self, stacked: Sequence[TaskData]) -> List[Dict[str, float]]:
        """The optimizer step's meta-iterations on stacked meta-batches (each leaves [M, ...]), all in
        one compiled call; one dict of mean auxiliary values per meta-batch."""
        if not stacked:
            return []
        for data in stacked:
            self.check_data(data)
        data = stack_task_data(stacked)
        with self.compiled_call_options():
            aux = self.compiled("metatrain_steps", self._metatrain_steps_fn, (data,))(data)
        aux = {k: v.numpy() for k, v in aux.items()}
        return [{k: float(v[s]) for k, v in aux.items()} for s in range(len(stacked))]

    def evaluate_tasks(self, tasks: Sequence[Task], num_inner_iterations: int, inner_batch_size: int = -1,
                       transductive: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """Adapt theta to each task and evaluate on its test set, all in one compiled call.

        Returns (losses [M], accuracies [M]) numpy arrays (accuracies are 0 for regression).
        The meta-parameters (and a kept inner optimizer state) are not changed.
        """
        self.ensure_initialized()
        if self.fmodel is None:
            raise ValueError("evaluate_tasks needs a supervised loss: this meta-learner has only a custom objective")
        data = stack_tasks(tasks, num_inner_iterations, inner_batch_size)  # single tasks
        self.check_data(data)
        losses, accs = self.compiled("evaluate_tasks", self._evaluate_tasks_fn)(
            data, tf.constant(bool(transductive)))
        return losses.numpy(), accs.numpy()

    # --- building blocks for an outer loop split across processes (pymeta.metalearners.distributed) --
    def sum_task_results(self, tasks: Sequence[Task], num_inner_iterations: int,
                         inner_batch_size: int = -1) -> Tuple[List[np.ndarray], Dict[str, float]]:
        """(list of numpy arrays: sum of the task results, {name: sum over the tasks of each auxiliary
        value}) for `tasks`, in one compiled call, without changing theta. Combine the sums across
        processes, divide by the total number of tasks and pass the mean to `apply_mean_result`."""
        self.ensure_initialized()
        data = self.stack_tasks(tasks, num_inner_iterations, inner_batch_size)
        self.check_data(data)
        with self.compiled_call_options():
            total, aux = self.compiled("sum_task_results", self._sum_task_results, (data,), free_dims=1)(data)
        return [t.numpy() for t in total], {k: float(v) for k, v in aux.items()}

    def apply_mean_result(self, mean_result: Sequence[Any]) -> None:
        """The outer step from the mean task result (list of arrays shaped like the parameters)."""
        self.ensure_initialized()
        self.compiled("apply_mean_result", self._apply)([tf.convert_to_tensor(r) for r in mean_result])

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
        theta, state, kept = self.theta_tensors(), self.state_tensors(), self.inner_state

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
        theta, state, kept = self.theta_tensors(), self.state_tensors(), self.inner_state
        fmodel = self.fmodel
        assert fmodel is not None  # checked by evaluate_tasks
        m = tf.shape(tf.nest.flatten(data)[0])[0]

        def step(i, carry):
            losses, accs = carry
            task = task_slice(data, i)
            phi, _, _ = self.adapt(theta, state, task.inner, opt_state=None if kept is None else kept.read())
            qx, qy = task.query
            loss, acc = tf.cond(transductive,
                                lambda: fmodel.metrics(phi, state, qx, qy),
                                lambda: fmodel.metrics(phi, state, qx, qy, support_x=task.support[0]))
            return losses.write(i, tf.cast(loss, tf.float32)), accs.write(i, tf.cast(acc, tf.float32))

        losses, accs = for_each_task(data, step, (tf.TensorArray(tf.float32, size=m),
                                                  tf.TensorArray(tf.float32, size=m)))
        return losses.stack(), accs.stack()


def for_each_task(data: Any, step: Callable[[tf.Tensor, Any], Any], init: Any) -> Any:
    """carry <- step(i, carry) for each task i of stacked task data (leaves [M, ...]), as one
    `tf.while_loop` (the tasks run one after the other, or side by side with inter-op threads)."""
    m = tf.shape(tf.nest.flatten(data)[0])[0]
    _, carry = tf.while_loop(lambda i, _: i < m, lambda i, c: (i + 1, step(i, c)), (tf.constant(0), init))
    return carry


def stack_tasks(tasks: Sequence[Any], num_inner_iterations: int, inner_batch_size: int) -> TaskData:
    """The `TaskData` of a meta-batch of tasks (leaves [M, ...]), each from `task.task_data(T, B)`."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("a meta-batch needs at least one task")
    return stack_task_data([_task_data(t, num_inner_iterations, inner_batch_size) for t in tasks])


def _task_data(task: Any, num_inner_iterations: int, inner_batch_size: int) -> TaskData:
    if not isinstance(task, ProducesTaskData):
        raise TypeError(f"the fast path needs tasks that produce TaskData, got {type(task).__name__}")
    return task.task_data(num_inner_iterations, inner_batch_size)
