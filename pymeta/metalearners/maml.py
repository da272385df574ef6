"""MAML (Finn, Abbeel & Levine 2017) with the full second-order meta-gradient.

The meta-gradient of a task is d L_query(adapt(theta)) / d theta, differentiating through every inner
step (the inner optimizer's update included), batch norm in training mode. Memory grows linearly with
the number of inner steps (the activations of every step are kept for the backward pass).
`first_order=True` drops the second-order terms: that is FOMAML.

TensorFlow bug workaround: Grappler's arithmetic optimizer rewrites sums of large tensors in the
second-order backward graph into `AccumulateNV2` ops whose temporary variables collide inside the
fast path's while loops ("AlreadyExistsError: Resource ... AddOpsRewrite_add_N/tmp_var",
tensorflow/tensorflow#23780; seen with the 64-filter Omniglot CNN and 5 inner steps). MAML's compiled
calls therefore run with that optimizer off (`grappler_options`); other functions are unaffected.
"""

import contextlib

import tensorflow as tf

from pymeta.core.task import SupervisedTask, TaskAsSequenceOfTasks
from pymeta.metalearners.fomaml import FOMAMLMetaLearner


@contextlib.contextmanager
def grappler_options(options):
    """Grappler optimizer options (e.g. {'arithmetic_optimization': False}) for the `tf.function` calls
    made inside the block; the previous values are restored after it (a function is optimised once
    per set of options, so switching back and forth costs nothing after the first calls)."""
    previous = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options(options)
    try:
        yield
    finally:  # the optimizers named here are all on by default
        tf.config.optimizer.set_experimental_options({k: previous.get(k, True) for k in options})


class MAMLMetaLearner(FOMAMLMetaLearner):
    """MAML: outer step = optimizer(mean over tasks of d L_query(adapt(theta)) / d theta).

    Args:
        model, optimizer: the Keras model whose initialisation is meta-learnt, the outer optimizer.
        first_order: True gives FOMAML (the gradient at phi used as the gradient at theta).
        **kwargs: inner_optimizer, loss, jit_compile, name: see `GradBasedMetaLearner`.

    Fast path: `metatrain_step(s)` adapts and differentiates each task in one compiled call.
    Step-by-step API: `task.fit_n_iterations` adapts the model as usual; `task_end(task)` then replays
    that adaptation from theta on the same minibatches (`task.last_inner_batch_indices`) under a
    gradient tape, so both ways give the same update. For a `TaskAsSequenceOfTasks`, the adaptation
    to every task of the sequence is replayed in order (inner optimizer state reset between tasks, as
    `fit_n_iterations` does) and the query set is the last task's.
    """

    # Grappler options of the second-order compiled calls (see the module doc)
    second_order_grappler_options = {"arithmetic_optimization": False}

    def __init__(self, model, optimizer, first_order=False, **kwargs):
        super().__init__(model, optimizer, **kwargs)
        self.first_order = bool(first_order)

    def _second_order_calls(self):
        if self.first_order:
            return contextlib.nullcontext()
        return grappler_options(self.second_order_grappler_options)

    # --- the differentiable inner loop -------------------------------------------------------------------
    def _adapt(self, params, state, x, y, batch_indices):
        """`FunctionalModel.adapt` written so that a surrounding tape differentiates through it:
        unrolled in Python when the number of steps is static, a `tf.while_loop` otherwise."""
        fm = self.fmodel
        opt, reg = fm.inner_optimizer, fm.inner_regularizer
        params = list(params)
        opt_state = opt.init(params)
        loss = tf.constant(0.0)
        steps = batch_indices.shape[0]
        if steps is not None:
            for t in range(steps):
                idx = batch_indices[t]
                loss, grads = fm.loss_and_grad(params, state, tf.gather(x, idx), tf.gather(y, idx), reg)
                params, opt_state = opt.update(grads, opt_state, params)
            return list(params), loss

        def body(t, params, opt_state, _):
            idx = batch_indices[t]
            loss, grads = fm.loss_and_grad(params, state, tf.gather(x, idx), tf.gather(y, idx), reg)
            params, opt_state = opt.update(grads, opt_state, params)
            return t + 1, list(params), opt_state, loss

        _, params, _, loss = tf.while_loop(lambda t, *_: t < tf.shape(batch_indices)[0], body,
                                           (tf.constant(0), params, opt_state, loss))
        return list(params), loss

    def maml_gradient(self, theta, state, segments, query_x, query_y):
        """(d L_query(phi) / d theta, last inner minibatch loss), phi = theta adapted to each
        (support_x, support_y, batch_indices) of `segments` in turn (one segment for a single task)."""
        theta = list(theta)
        with tf.GradientTape() as tape:
            tape.watch(theta)
            phi, loss = theta, tf.constant(0.0)
            for x, y, idx in segments:
                phi, loss = self._adapt(phi, state, x, y, idx)
            query_loss = self.fmodel.loss(phi, state, query_x, query_y)
        grads = tape.gradient(query_loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, loss

    # --- the fast path ----------------------------------------------------------------------------------
    def task_step(self, theta, state, support_x, support_y, batch_indices, query_x, query_y):
        if self.first_order:
            return super().task_step(theta, state, support_x, support_y, batch_indices, query_x, query_y)
        return self.maml_gradient(theta, state, [(support_x, support_y, batch_indices)], query_x, query_y)

    def metatrain_steps(self, meta_batches, num_inner_iterations, inner_batch_size=-1):
        with self._second_order_calls():
            return super().metatrain_steps(meta_batches, num_inner_iterations, inner_batch_size)

    def sum_task_results(self, tasks, num_inner_iterations, inner_batch_size=-1):
        with self._second_order_calls():
            return super().sum_task_results(tasks, num_inner_iterations, inner_batch_size)

    # --- the step-by-step API ---------------------------------------------------------------------------
    def task_end(self, task=None, **kwargs):
        """The MAML meta-gradient of `task`, replaying its adaptation from theta (see the class doc)."""
        if self.first_order:
            return super().task_end(task, **kwargs)
        if task is None:
            raise ValueError(f"{self.name}.task_end needs the task")
        subtasks = list(task.current_task_sequence) if isinstance(task, TaskAsSequenceOfTasks) else [task]
        segments = []
        for t in subtasks:
            if not isinstance(t, SupervisedTask):
                raise TypeError(f"MAML needs supervised tasks, got {type(t).__name__}")
            idx = getattr(t, "last_inner_batch_indices", None)
            if idx is None:
                raise ValueError("MAML's task_end replays the task's adaptation: train the task with "
                                 "task.fit_n_iterations(model, ...) between task_begin and task_end")
            x, y = t.get_train_set()
            segments.append((x, y, tf.constant(idx, tf.int32)))
        qx, qy = subtasks[-1].get_test_set()
        with self._second_order_calls():
            grads, _ = self._function("maml_task_end", self._maml_task_end_fn)(segments, qx, qy)
        return grads

    def _maml_task_end_fn(self, segments, qx, qy):
        theta = [tf.convert_to_tensor(v) for v in self.meta_variables]
        return self.maml_gradient(theta, self.fmodel.read_state(), segments, qx, qy)
