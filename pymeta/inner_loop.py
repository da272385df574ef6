"""The one inner loop of pymeta, and the pure functions of a Keras model it runs on.

Everything here is a pure function of tensors, traceable by `tf.function` (and XLA), and
differentiable by a surrounding `tf.GradientTape` (MAML differentiates through `adapt`):

    params: list of tensors, one per `model.trainable_variables`
    state:  list of tensors, one per `model.non_trainable_variables` (batch-norm statistics)
    batch:  any structure of tensors (a tuple (x [B, ...], y [B, ...]) for supervised tasks,
            episodes for reinforcement learning)
    batches: the same structure with a leading step axis [T, ...]: the batch of each inner step
    objective(params, state, batch) -> scalar: what an inner step descends (a supervised loss plus
            the model's regularisation losses, a policy-gradient surrogate, ...)
    optimizer: a `pymeta.optim.GradientTransformation` (init / update, updates to updates),
            possibly a chain of transforms (iMAML's proximal pull towards theta is one)

`adapt(params, state, batches, objective, optimizer, opt_state)` runs T steps
params <- params + optimizer.update(d objective(params, state, batches[t]) / d params, ...) and returns
(adapted params, the objective's value at the last step (before it), final optimizer state).
Every meta-learner, `Task.fit_n_iterations`, evaluation and MAML's meta-gradient run this function.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from pymeta.optim import GradientTransformation, apply_updates

Objective = Callable[[Sequence[tf.Tensor], Sequence[tf.Tensor], Any], tf.Tensor]


def adapt(params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], batches: Any, objective: Objective,
          optimizer: GradientTransformation, opt_state: Any = None, *,
          unroll: bool = False, isolate_steps: bool = False) -> Tuple[List[tf.Tensor], tf.Tensor, Any]:
    """T inner steps of `optimizer` on `objective`, one per leading entry of `batches`.

    params: list of tensors; state: list of tensors (passed unchanged to the objective);
    batches: structure of tensors [T, ...]; opt_state: the optimizer state to start from (None:
    `optimizer.init(params)`, fresh). unroll: Python loop when T is static (straight-line code, best
    under XLA and for differentiating through few steps), else a `tf.while_loop`. isolate_steps: in
    the `tf.while_loop`, each step's gradient in a graph of its own (`value_and_gradient`).
    Returns (params after T steps, objective value at the last step before its update, scalar
    (0 for T = 0), final optimizer state).
    """
    params = list(params)
    batches = tf.nest.map_structure(tf.convert_to_tensor, batches)
    if opt_state is None:
        opt_state = optimizer.init(params)
    loss_dtype = tf.float64 if params and params[0].dtype == tf.float64 else tf.float32
    first = tf.nest.flatten(batches)[0]
    static_steps = first.shape[0]

    unrolled = unroll and static_steps is not None

    def step(t, params, opt_state):
        batch = tf.nest.map_structure(lambda b: b[t], batches)
        loss, grads = value_and_gradient(objective, params, state, batch, isolate=isolate_steps and not unrolled)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return apply_updates(params, updates), opt_state, tf.cast(loss, loss_dtype)

    loss = tf.zeros([], loss_dtype)
    if unrolled:
        for t in range(static_steps):
            params, opt_state, loss = step(t, params, opt_state)
        return list(params), loss, opt_state

    def body(t, params, opt_state, _):
        params, opt_state, loss = step(t, params, opt_state)
        return t + 1, params, opt_state, loss

    _, params, opt_state, loss = tf.while_loop(lambda t, *_: t < tf.shape(first)[0], body,
                                               (tf.constant(0), params, opt_state, loss))
    return list(params), loss, opt_state


def value_and_gradient(objective: Objective, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor],
                       batch: Any, isolate: bool = False) -> Tuple[tf.Tensor, List[tf.Tensor]]:
    """(objective(params, state, batch) scalar, its gradient: one tensor per parameter, zeros where
    unconnected).

    isolate: compute it in a function of its own that TensorFlow does not inline into the caller's
    graph (for code inside a `tf.while_loop`, not under XLA; see `needs_isolated_gradients`). Only
    while tracing: called eagerly there is no graph to keep it apart from, and a new function would be
    traced at every call.
    """
    def compute(params, batch):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = objective(params, state, batch)
        return loss, tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    if isolate and tf.inside_function():
        compute = tf.function(compute, autograph=False, experimental_attributes={"_noinline": True})
    return compute(list(params), batch)


def needs_isolated_gradients(model: keras.Model) -> bool:
    """True if `model` has a max-pooling layer: then gradients inside loops are best computed in
    graphs of their own (`value_and_gradient(..., isolate=True)`).

    Why: oneDNN runs MaxPoolGrad with its fast kernel only when the pass that rewrites the graph for it
    finds the forward MaxPool along a direct edge, and in a graph with a loop it finds it in some
    runs and not in others. The fallback, TensorFlow's own MaxPoolGrad, took 6 ms instead of 0.1 ms
    on five 84x84x32 maps (Mini-ImageNet's first pooling): half of an inner step. A graph of one
    gradient has no loop, so the pairing always holds. For other models the extra function call
    per step only costs time. See docs/performance.md.
    """
    return any(isinstance(layer, (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D))
               for layer in model._flatten_layers(include_self=False))


def resolve_loss(loss: Any) -> Callable[..., Any]:
    """A loss callable (y_true, y_pred) -> per-example losses [batch], from a name or a callable."""
    if loss is None:
        raise ValueError("no loss: compile the model with a loss (e.g. "
                         "model.compile(optimizer=keras.optimizers.SGD(0.01), "
                         "loss='sparse_categorical_crossentropy')) or pass loss= to the meta-learner")
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not callable(loss):
        raise ValueError(f"loss must be a name or a callable, got {loss!r}")
    return loss


def _is_classification_loss(loss):
    name = getattr(loss, "name", None) or getattr(loss, "__name__", "") or type(loss).__name__
    return "categorical" in name.lower() or "crossentropy" in name.lower()


class FunctionalModel:
    """A Keras model as pure functions of (params, state): forward pass, supervised loss, metrics.

    Nothing here reads or writes the model's variables except `read_params` / `read_state` /
    `assign`. A meta-learner builds its own; nothing is attached to the Keras model.
    """

    def __init__(self, model: keras.Model, loss: Any = None):
        self.model = model
        self.loss_fn = resolve_loss(loss)
        self.is_classification = _is_classification_loss(self.loss_fn)

    # --- reading and writing the model -------------------------------------------------------------
    def read_params(self) -> List[tf.Tensor]:
        return [tf.convert_to_tensor(v) for v in self.model.trainable_variables]

    def read_state(self) -> List[tf.Tensor]:
        return [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

    def assign(self, params: Sequence[Any], state: Optional[Sequence[Any]] = None) -> None:
        for v, p in zip(self.model.trainable_variables, params):
            v.assign(p)
        if state is not None:
            for v, s in zip(self.model.non_trainable_variables, state):
                v.assign(s)

    # --- pure functions ------------------------------------------------------------------------------
    def forward_with_losses(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], x: Any,
                            training: bool = True) -> Tuple[tf.Tensor, List[tf.Tensor], tf.Tensor]:
        """x [batch, ...] -> (outputs [batch, ...] float32, new state, regularisation loss scalar)."""
        y, new_state, losses = self.model.stateless_call(params, state, x, training=training,
                                                         return_losses=True)
        if y.dtype in (tf.float16, tf.bfloat16):  # mixed precision: float32 out, logits cache kept
            logits = getattr(y, "_keras_logits", None)
            y = tf.cast(y, tf.float32)
            if logits is not None:
                y._keras_logits = tf.cast(logits, tf.float32)
        dtype = tf.float64 if y.dtype == tf.float64 else tf.float32
        reg = tf.add_n([tf.cast(l, dtype) for l in losses]) if losses else tf.zeros([], dtype)
        return y, new_state, reg

    def forward(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], x: Any,
                training: bool = True) -> Tuple[tf.Tensor, List[tf.Tensor]]:
        """x [batch, ...] -> (outputs [batch, ...] float32, new state)."""
        y, new_state, _ = self.forward_with_losses(params, state, x, training)
        return y, new_state

    def mean_loss(self, y_true: Any, y_pred: tf.Tensor) -> tf.Tensor:
        """Mean over the batch of the per-example losses: scalar."""
        return tf.reduce_mean(self.loss_fn(y_true, y_pred))

    def loss(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], x: Any, y: Any,
             training: bool = True) -> tf.Tensor:
        """Mean loss on one batch plus the model's regularisation losses (`model.losses`): scalar."""
        pred, _, reg = self.forward_with_losses(params, state, x, training)
        return self.mean_loss(y, pred) + reg

    def objective(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], batch: Any) -> tf.Tensor:
        """The supervised inner objective: `loss` on batch = (x [B, ...], y [B, ...])."""
        x, y = batch
        return self.loss(params, state, x, y)

    def loss_and_grad(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], x: Any,
                      y: Any) -> Tuple[tf.Tensor, List[tf.Tensor]]:
        """(loss, d loss / d params) on one batch, batch norm in training mode."""
        return value_and_gradient(self.objective, params, state, (x, y))

    def metrics(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], query_x: Any, query_y: Any,
                support_x: Any = None) -> Tuple[tf.Tensor, tf.Tensor]:
        """(mean loss, accuracy) on the query set; accuracy is 0 for regression.

        Transductive (support_x None): batch norm uses the query batch's own statistics, as the
        original pyMeta did. Non-transductive: the statistics of the support set, so each query
        prediction depends on that example alone.
        """
        if support_x is None:
            pred, _ = self.forward(params, state, query_x, training=True)
        else:
            _, support_state = self.forward(params, state, support_x, training=True)
            pred, _ = self.forward(params, support_state, query_x, training=False)
        loss = self.mean_loss(query_y, pred)
        if self.is_classification:
            hits = tf.equal(tf.argmax(pred, -1, output_type=tf.int64), tf.cast(query_y, tf.int64))
            accuracy = tf.reduce_mean(tf.cast(hits, tf.float32))
        else:
            accuracy = tf.constant(0.0)
        return loss, accuracy

