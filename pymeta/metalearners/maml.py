"""MAML (Finn, Abbeel & Levine 2017) with the full second-order meta-gradient.

The meta-gradient of a task is d objective(adapt(theta), query) / d theta, differentiating through
every inner step of the one inner loop (`pymeta.inner_loop.adapt`, the inner optimizer's update
included), batch norm in training mode. Memory grows linearly with the number of inner steps (the
activations of every step are kept for the backward pass). `first_order=True` drops the
second-order terms: that is FOMAML.

TensorFlow bug workaround: Grappler's arithmetic optimizer rewrites sums of large tensors in the
second-order backward graph into `AccumulateNV2` ops whose temporary variables collide inside the
fast path's while loops ("AlreadyExistsError: Resource ... AddOpsRewrite_add_N/tmp_var",
tensorflow/tensorflow#23780; seen with the 64-filter Omniglot CNN and 5 inner steps). MAML's compiled
calls therefore run with that optimizer off (`grappler_options`); other functions are unaffected.
"""

import contextlib
from typing import Any, ContextManager, Dict, Iterator, List, Sequence, Tuple

import tensorflow as tf

from pymeta.core.learner import Tensors
from pymeta.core.meta_learner import Aux
from pymeta.core.task_data import TaskData
from pymeta.metalearners.fomaml import FOMAMLMetaLearner


@contextlib.contextmanager
def grappler_options(options: Dict[str, bool]) -> Iterator[None]:
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
        **kwargs: inner_optimizer, loss, objective, jit_compile, name, outer_step (instead of
            `optimizer`, e.g. `pymeta.rl.trpo.TRPOStep`): see `GradBasedMetaLearner`.

    Step-by-step API: `task.fit_n_iterations` adapts the model as usual; `task_end(task)` then replays
    that adaptation from theta on the batches the task recorded (`task.last_fit`) under a gradient
    tape, so both ways give the same update. For a `TaskAsSequenceOfTasks` the adaptation to every
    task of the sequence is replayed in order (inner optimizer state fresh for each task, as
    `fit_n_iterations` does) and the query set is the last task's.
    """

    supports_persistent_inner_state = False
    # Grappler options of the second-order compiled calls (see the module doc)
    second_order_grappler_options = {"arithmetic_optimization": False}

    def __init__(self, model: Any, optimizer: Any = None, first_order: bool = False, **kwargs: Any):
        super().__init__(model, optimizer, **kwargs)
        self.first_order = bool(first_order)

    @property
    def replays_adaptation(self) -> bool:  # type: ignore[override]
        return not self.first_order

    def compiled_call_options(self) -> ContextManager[Any]:
        if self.first_order:
            return contextlib.nullcontext()
        return grappler_options(self.second_order_grappler_options)

    def maml_gradient(self, theta: Sequence[tf.Tensor], state: Sequence[tf.Tensor],
                      datas: Sequence[TaskData]) -> Tuple[List[tf.Tensor], tf.Tensor]:
        """(d objective(phi, query) / d theta, last inner loss), phi = theta adapted to the inner
        batches of each `TaskData` of `datas` in turn (one for a single task), query the last one's."""
        theta = list(theta)
        with tf.GradientTape() as tape:
            tape.watch(theta)
            phi, loss = theta, tf.constant(0.0)
            for data in datas:
                phi, loss, _ = self.adapt(phi, state, data.inner, theta=theta, unroll=True)
            query_loss = self.objective(phi, state, datas[-1].query)
        grads = tape.gradient(query_loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads, tf.cast(loss, tf.float32)

    def task_step(self, theta: Tensors, state: Tensors, data: TaskData,
                  opt_state: Any = None) -> Tuple[Tensors, Aux, Any]:
        if self.first_order:
            return super().task_step(theta, state, data, opt_state)
        grads, loss = self.maml_gradient(theta, state, [data])
        return grads, {"last_minibatch_loss": loss}, opt_state

    def replay(self, theta: Tensors, state: Tensors, datas: Sequence[TaskData]) -> Tuple[Tensors, Aux]:
        grads, _ = self.maml_gradient(theta, state, datas)
        return grads, {}
