"""The gradient-based meta-learner protocol and the machinery every meta-learner shares.

A meta-learner keeps the meta-parameters (the initialisation theta) in variables of its own and
offers two ways to train them, on the same compiled code:

Step by step (the original pyMeta API)::

    metalearner.initialize()
    for task in meta_batch:
        metalearner.task_begin(task)                 # model <- theta
        task.fit_n_iterations(model, T, B)           # compiled inner loop, in place
        results.append(metalearner.task_end(task))   # per-task result (tensors)
    metalearner.update(results)                      # outer optimizer step, model <- new theta

Fast path: `metalearner.metatrain_step(meta_batch, T, B)` runs the whole meta-batch (inner loops,
per-task results and the outer step) as one `tf.function` call.

A meta-learner subclass defines two pure functions:
    task_result(theta, phi, state, query_x, query_y) -> list of tensors (one per parameter)
    meta_gradient(theta, mean_result) -> list of tensors, given to the outer Keras optimizer
where phi are the adapted parameters of one task.
"""

import numpy as np
import tensorflow as tf

from pymeta import optim
from pymeta.core.task import SupervisedTask, TaskAsSequenceOfTasks
from pymeta.inner_loop import functional_model_for


class GradBasedMetaLearner:
    """Base class of the meta-learners.

    Args:
        model: the Keras model whose initial weights are meta-learnt.
        optimizer: the outer (meta) Keras optimizer.
        inner_optimizer: Keras SGD/Adam or `pymeta.optim` optimizer for the inner loop; default: the
            optimizer the model was compiled with (as in the original pyMeta).
        loss: loss name or callable; default: the model's compiled loss.
        jit_compile: compile the meta-step with XLA (pays for small MLPs on CPU, not for conv nets).
        persistent_inner_state: keep the inner optimizer's state (Adam's moments and step count) from
            one task to the next, as the original Reptile implementation did, instead of starting each
            task fresh. Tasks then run one after the other in both APIs; evaluation (`evaluate_tasks`)
            starts every task from the kept state without changing it. Only for algorithms that adapt
            with the shared inner loop (FOMAML, Reptile).
    """

    def __init__(self, model, optimizer, inner_optimizer=None, loss=None, jit_compile=False, name=None,
                 persistent_inner_state=False):
        self.model = model
        self.optimizer = optimizer
        self.name = name or type(self).__name__
        self.fmodel = functional_model_for(model, loss=loss, inner_optimizer=inner_optimizer)
        self.fmodel.jit_compile = jit_compile
        self.fmodel.unroll = jit_compile
        self.jit_compile = jit_compile
        self.meta_variables = None
        self._compiled = {}
        self.persistent_inner_state = bool(persistent_inner_state)
        if self.persistent_inner_state and type(self).task_step is not GradBasedMetaLearner.task_step:
            raise ValueError(f"{self.name} adapts with its own inner loop: persistent_inner_state is only "
                             "for meta-learners using the shared one (FOMAML, Reptile)")

    # --- the two pure functions of an algorithm ---------------------------------------------------
    def task_result(self, theta, phi, state, query_x, query_y):
        raise NotImplementedError

    def meta_gradient(self, theta, mean_result):
        raise NotImplementedError

    def task_step(self, theta, state, support_x, support_y, batch_indices, query_x, query_y):
        """The fast path's work for one task: (task result, last inner minibatch loss).

        Default: adapt theta with the shared inner loop, then `task_result`. Algorithms that
        differentiate through the adaptation (MAML) or change the inner objective (iMAML) override it.
        Shapes: support [NK, ...], batch_indices int32 [T, B], query [NQ, ...].
        """
        phi, loss = self.fmodel.adapt(theta, state, support_x, support_y, batch_indices)
        return self.task_result(theta, phi, state, query_x, query_y), loss

    # --- state --------------------------------------------------------------------------------------
    def initialize(self, *args, **kwargs):
        """Take the model's current weights as the initial meta-parameters (args kept for the old API)."""
        if self.meta_variables is None:
            self.meta_variables = [tf.Variable(v, trainable=True, name=f"meta_{i}")
                                   for i, v in enumerate(self.model.trainable_variables)]
            self.optimizer.build(self.meta_variables)
            if self.persistent_inner_state:
                self.fmodel.inner_state = optim.InnerStateVariables(self.fmodel.inner_optimizer,
                                                                    self.meta_variables)
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

    # --- the step-by-step API -----------------------------------------------------------------------
    def task_begin(self, task=None, **kwargs):
        """Reset the model to the current meta-parameters before training on `task`."""
        self._require_initialized()
        self._load_theta_into_model()

    def task_end(self, task=None, **kwargs):
        """The per-task result of the model's current (adapted) weights on `task`'s test set."""
        if task is None:
            raise ValueError(f"{self.name}.task_end needs the task")
        if isinstance(task, TaskAsSequenceOfTasks):
            task = task.get_task_by_index(-1)
        qx, qy = task.get_test_set()
        return self._function("task_end", self._task_end_fn)(qx, qy)

    def update(self, list_of_results, **kwargs):
        """Outer step from the per-task results of one meta-batch; the model is left at the new theta."""
        if not list_of_results:
            raise ValueError("update needs the results of at least one task")
        self._function("update", self._update_fn)(list(list_of_results))

    # --- the fast path ------------------------------------------------------------------------------
    def metatrain_step(self, tasks, num_inner_iterations, inner_batch_size=-1):
        """One meta-iteration over `tasks` in one compiled call.

        Returns {'last_minibatch_loss': mean over tasks of the last inner minibatch loss}.
        """
        return self.metatrain_steps([tasks], num_inner_iterations, inner_batch_size)[0]

    def metatrain_steps(self, meta_batches, num_inner_iterations, inner_batch_size=-1):
        """Several meta-iterations, one per meta-batch of `meta_batches`, in one compiled call.

        Equivalent to calling `metatrain_step` on each meta-batch in turn, but the fixed cost of a
        call (a few hundred microseconds here) is paid once: it matters for small models.
        Returns one {'last_minibatch_loss': ...} per meta-batch.
        """
        self._require_initialized()
        stacked = [stack_tasks(tasks, num_inner_iterations, inner_batch_size) for tasks in meta_batches]
        if not stacked:
            return []
        batch = tuple(np.stack(parts) for parts in zip(*stacked))
        losses = self._function("metatrain_steps", self._metatrain_steps_fn, batch)(*batch)
        return [{"last_minibatch_loss": float(l)} for l in losses.numpy()]

    def evaluate_tasks(self, tasks, num_inner_iterations, inner_batch_size=-1, transductive=True):
        """Adapt theta to each task and evaluate on its test set, all in one compiled call.

        Returns (losses [M], accuracies [M]) numpy arrays (accuracies are 0 for regression).
        The meta-parameters are not changed.
        """
        self._require_initialized()
        batch = stack_tasks(tasks, num_inner_iterations, inner_batch_size)
        losses, accs = self._function("evaluate_tasks", self._evaluate_tasks_fn)(
            *batch, tf.constant(bool(transductive)))
        return losses.numpy(), accs.numpy()

    # --- compiled functions -------------------------------------------------------------------------
    def _function(self, key, fn, example_args=None, free_dims=2):
        """`fn` compiled once per key; with `example_args` (numpy arrays), compiled for their shapes
        with the `free_dims` leading dimensions (number of meta-batches, tasks) left free, so it
        never retraces for another meta-batch size."""
        if example_args is not None:
            key = (key,) + tuple((a.shape[free_dims:], a.dtype.str) for a in example_args)
        if key not in self._compiled:
            signature = None
            if example_args is not None:
                signature = [tf.TensorSpec((None,) * free_dims + a.shape[free_dims:], tf.as_dtype(a.dtype))
                             for a in example_args]
            self._compiled[key] = tf.function(fn, input_signature=signature,
                                              reduce_retracing=signature is None,
                                              jit_compile=self.jit_compile)
        return self._compiled[key]

    def _task_end_fn(self, qx, qy):
        fm = self.fmodel
        theta = [tf.convert_to_tensor(v) for v in self.meta_variables]
        return self.task_result(theta, fm.read_params(), fm.read_state(), qx, qy)

    def _apply(self, theta, mean_result):
        grads = self.meta_gradient(theta, mean_result)
        self.optimizer.apply_gradients(zip(grads, self.meta_variables))
        self.fmodel.assign([tf.convert_to_tensor(v) for v in self.meta_variables])

    def _update_fn(self, results):
        theta = [tf.convert_to_tensor(v) for v in self.meta_variables]
        n = float(len(results))
        mean = [tf.add_n(list(r)) / n for r in zip(*results)]
        self._apply(theta, mean)

    def _metatrain_steps_fn(self, sx, sy, qx, qy, idx):
        """S meta-iterations; inputs are stacked meta-batches [S, M, ...]. Returns losses [S]."""
        num = tf.shape(sx)[0]

        def body(s, losses):
            return s + 1, losses.write(s, self._meta_iteration(sx[s], sy[s], qx[s], qy[s], idx[s]))

        _, losses = tf.while_loop(lambda s, _: s < num, body,
                                  (tf.constant(0), tf.TensorArray(tf.float32, size=num)))
        return losses.stack()

    def _meta_iteration(self, sx, sy, qx, qy, idx):
        """One meta-batch [M, ...]: adapt to each task, average the task results, outer step."""
        total, loss_sum = self._sum_task_results(sx, sy, qx, qy, idx)
        m = tf.cast(tf.shape(sx)[0], tf.float32)
        self._apply([tf.convert_to_tensor(v) for v in self.meta_variables], [t / m for t in total])
        return loss_sum / m

    def _sum_task_results(self, sx, sy, qx, qy, idx):
        """(sum over the M tasks of their results, sum of their last inner losses); theta unchanged.
        A kept inner optimizer state goes from task to task and is stored at the end."""
        fm = self.fmodel
        theta = [tf.convert_to_tensor(v) for v in self.meta_variables]
        state = fm.read_state()
        kept = fm.inner_state
        m = tf.shape(sx)[0]

        def body(i, acc, loss_sum, opt_state):
            if kept is None:
                r, loss = self.task_step(theta, state, sx[i], sy[i], idx[i], qx[i], qy[i])
            else:
                phi, loss, opt_state = fm.adapt_with_state(theta, state, sx[i], sy[i], idx[i], opt_state)
                r = self.task_result(theta, phi, state, qx[i], qy[i])
            return i + 1, [a + x for a, x in zip(acc, r)], loss_sum + loss, opt_state

        _, acc, loss_sum, opt_state = tf.while_loop(
            lambda i, *_: i < m, body,
            (tf.constant(0), [tf.zeros_like(t) for t in theta], tf.constant(0.0),
             () if kept is None else kept.read()))
        if kept is not None:
            kept.write(opt_state)
        return acc, loss_sum

    # --- building blocks for an outer loop split across processes (pymeta.metalearners.distributed) --
    def sum_task_results(self, tasks, num_inner_iterations, inner_batch_size=-1):
        """(list of numpy arrays: sum of the task results, float: sum of last inner losses) for `tasks`,
        in one compiled call, without changing theta. Combine sums across processes, divide by the
        total number of tasks and pass the mean to `apply_mean_result`."""
        self._require_initialized()
        batch = stack_tasks(tasks, num_inner_iterations, inner_batch_size)
        total, loss_sum = self._function("sum_task_results", self._sum_task_results, batch, free_dims=1)(*batch)
        return [t.numpy() for t in total], float(loss_sum)

    def apply_mean_result(self, mean_result):
        """The outer step from the mean task result (list of arrays shaped like the parameters)."""
        self._require_initialized()
        self._function("apply_mean_result", self._apply_mean_result_fn)(
            [tf.convert_to_tensor(r) for r in mean_result])

    def _apply_mean_result_fn(self, mean_result):
        self._apply([tf.convert_to_tensor(v) for v in self.meta_variables], mean_result)

    def _evaluate_tasks_fn(self, sx, sy, qx, qy, idx, transductive):
        fm = self.fmodel
        theta = [tf.convert_to_tensor(v) for v in self.meta_variables]
        state = fm.read_state()
        m = tf.shape(sx)[0]

        def body(i, losses, accs):
            phi, _ = fm.adapt(theta, state, sx[i], sy[i], idx[i])
            loss, acc = tf.cond(transductive,
                                lambda: fm.metrics(phi, state, qx[i], qy[i]),
                                lambda: fm.metrics(phi, state, qx[i], qy[i], support_x=sx[i]))
            return i + 1, losses.write(i, loss), accs.write(i, acc)

        _, losses, accs = tf.while_loop(
            lambda i, *_: i < m, body,
            (tf.constant(0), tf.TensorArray(tf.float32, size=m), tf.TensorArray(tf.float32, size=m)))
        return losses.stack(), accs.stack()


def stack_tasks(tasks, num_inner_iterations, inner_batch_size):
    """The tensors of a meta-batch for the compiled fast path.

    Returns (support_x [M, NK, ...], support_y [M, NK, ...], query_x [M, NQ, ...],
    query_y [M, NQ, ...], batch_indices int32 [M, T, B]). Draws the inner minibatches exactly as
    `Task.fit_n_iterations` does, task after task, so both paths see the same data for one seed.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("a meta-batch needs at least one task")
    sx, sy, qx, qy, idx = [], [], [], [], []
    for t in tasks:
        if not isinstance(t, SupervisedTask):
            raise TypeError(f"the fast path needs supervised tasks (train/test sets), got {type(t).__name__}")
        x, y = t.get_train_set()
        sx.append(x)
        sy.append(y)
        idx.append(t.inner_batch_indices(num_inner_iterations, inner_batch_size))
        x, y = t.get_test_set()
        qx.append(x)
        qy.append(y)
    try:
        return tuple(np.stack(a) for a in (sx, sy, qx, qy, idx))
    except ValueError as e:
        raise ValueError("the tasks of a meta-batch must have train and test sets of equal shapes "
                         f"to run as one compiled step ({e})") from None
