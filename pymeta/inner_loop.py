"""The compiled inner loop shared by every meta-learner and by the step-by-step Task API.

`FunctionalModel` turns a Keras model into pure functions of its parameters (Keras 3
`Model.stateless_call`), so that adaptation can run inside `tf.function` without touching the model's
variables:

    params: list of tensors, one per `model.trainable_variables`
    state:  list of tensors, one per `model.non_trainable_variables` (batch-norm statistics)

Shapes below: NK = support-set size, NQ = query-set size, T = inner steps, B = inner batch size.
"""

import keras
import tensorflow as tf

from pymeta import optim


def resolve_loss(loss):
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
    """A Keras model as pure functions: forward, loss, gradient, inner-loop adaptation, evaluation.

    Every method is traceable by `tf.function`; none reads or writes the model's variables, except
    `read_params` / `read_state` / `assign`.
    """

    def __init__(self, model, loss, inner_optimizer):
        self.model = model
        self.loss_fn = resolve_loss(loss)
        self.inner_optimizer = optim.from_keras(inner_optimizer)
        self.is_classification = _is_classification_loss(self.loss_fn)
        self.unroll = False  # unroll inner steps in Python (set by meta-learners compiled with XLA)
        # optional extra inner objective, params -> scalar (iMAML's proximal term), used by `adapt`
        self.inner_regularizer = None
        # optional `optim.InnerStateVariables`: the inner optimizer state kept across tasks
        self.inner_state = None

    # --- reading and writing the model -------------------------------------------------------------
    def read_params(self):
        return [tf.convert_to_tensor(v) for v in self.model.trainable_variables]

    def read_state(self):
        return [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

    def assign(self, params, state=None):
        for v, p in zip(self.model.trainable_variables, params):
            v.assign(p)
        if state is not None:
            for v, s in zip(self.model.non_trainable_variables, state):
                v.assign(s)

    # --- pure functions ------------------------------------------------------------------------------
    def forward(self, params, state, x, training=True):
        """x [batch, ...] -> (outputs [batch, ...] float32, new state)."""
        y, new_state = self.model.stateless_call(params, state, x, training=training)
        if y.dtype in (tf.float16, tf.bfloat16):  # mixed precision: float32 out, logits cache kept
            logits = getattr(y, "_keras_logits", None)
            y = tf.cast(y, tf.float32)
            if logits is not None:
                y._keras_logits = tf.cast(logits, tf.float32)
        return y, new_state

    def mean_loss(self, y_true, y_pred):
        return tf.reduce_mean(self.loss_fn(y_true, y_pred))

    def loss(self, params, state, x, y, training=True):
        """Mean loss on one batch (scalar)."""
        pred, _ = self.forward(params, state, x, training)
        return self.mean_loss(y, pred)

    def loss_and_grad(self, params, state, x, y, regularizer=None):
        """(mean loss, d (loss + regularizer(params)) / d params) on one batch, batch norm in
        training mode. The returned loss excludes the regularizer."""
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = self.loss(params, state, x, y)
            total = loss if regularizer is None else loss + regularizer(params)
        return loss, tape.gradient(total, params)

    def adapt(self, params, state, x, y, batch_indices, inner_optimizer=None):
        """Run T inner steps from `params` on the support set.

        x [NK, ...], y [NK, ...], batch_indices int [T, B] (rows of x used at each step).
        Returns (adapted params, loss of the last minibatch before its step). The inner optimizer's
        state starts from `self.inner_state` when the meta-learner keeps one across tasks, else fresh.
        The objective is the loss plus `self.inner_regularizer(params)` when one is set.
        """
        opt = inner_optimizer or self.inner_optimizer
        phi, loss, _ = self.adapt_with_state(params, state, x, y, batch_indices,
                                             self.initial_opt_state(params, opt), opt)
        return phi, loss

    def initial_opt_state(self, params, inner_optimizer=None):
        """The inner optimizer state a task starts from: the kept one (`inner_state`) or a fresh one."""
        opt = inner_optimizer or self.inner_optimizer
        if self.inner_state is not None and opt is self.inner_optimizer:
            return self.inner_state.read()
        return opt.init(params)

    def adapt_with_state(self, params, state, x, y, batch_indices, opt_state, inner_optimizer=None):
        """`adapt` from the inner optimizer state `opt_state`; returns (params, loss, final opt state)."""
        opt = inner_optimizer or self.inner_optimizer
        reg = self.inner_regularizer
        static_steps = batch_indices.shape[0]
        if self.unroll and static_steps is not None:  # straight-line code: best under XLA
            loss = tf.zeros([], self._loss_dtype(params))
            for t in range(static_steps):
                idx = batch_indices[t]
                loss, grads = self.loss_and_grad(params, state, tf.gather(x, idx), tf.gather(y, idx), reg)
                params, opt_state = opt.update(grads, opt_state, params)
            return list(params), loss, opt_state
        num_steps = tf.shape(batch_indices)[0]

        def body(t, params, opt_state, _):
            idx = batch_indices[t]
            loss, grads = self.loss_and_grad(params, state, tf.gather(x, idx), tf.gather(y, idx), reg)
            params, opt_state = opt.update(grads, opt_state, params)
            return t + 1, params, opt_state, loss

        _, params, opt_state, loss = tf.while_loop(
            lambda t, *_: t < num_steps, body,
            (tf.constant(0), list(params), opt_state, tf.zeros([], self._loss_dtype(params))))
        return params, loss, opt_state

    @staticmethod
    def _loss_dtype(params):
        """float64 for a float64 model, else float32 (also under mixed precision)."""
        return tf.float64 if params and params[0].dtype == tf.float64 else tf.float32

    def metrics(self, params, state, query_x, query_y, support_x=None):
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


def functional_model_for(model, loss=None, inner_optimizer=None):
    """The `FunctionalModel` attached to `model` (created from `model.compile` settings if absent).

    The meta-learners attach theirs, so that `Task.fit_n_iterations` and the meta-learner's fast path
    share the same loss, inner optimizer and compiled functions.
    """
    fm = getattr(model, "_pymeta_functional", None)
    if fm is None or loss is not None or inner_optimizer is not None:
        loss = loss if loss is not None else getattr(model, "loss", None)
        inner_optimizer = inner_optimizer if inner_optimizer is not None else getattr(model, "optimizer", None)
        if inner_optimizer is None:
            raise ValueError("no inner optimizer: compile the model with one "
                             "(model.compile(optimizer=keras.optimizers.SGD(0.01), loss=...)) "
                             "or pass inner_optimizer= to the meta-learner")
        fm = FunctionalModel(model, loss, inner_optimizer)
        model._pymeta_functional = fm
    return fm


class CompiledSteps:
    """The `tf.function`s of the step-by-step API for one `FunctionalModel`, traced once each.

    `adapt_in_place` runs the inner loop on the model's current weights and writes the result back;
    `metrics_of_model` evaluates the model's current weights.
    """

    def __init__(self, fmodel, jit_compile=False):
        self.fmodel = fmodel
        self.adapt_in_place = tf.function(self._adapt_in_place, reduce_retracing=True,
                                          jit_compile=jit_compile)
        self.metrics_of_model = tf.function(self._metrics_of_model, reduce_retracing=True)

    def _adapt_in_place(self, x, y, batch_indices):
        fm = self.fmodel
        params = fm.read_params()
        params, loss, opt_state = fm.adapt_with_state(params, fm.read_state(), x, y, batch_indices,
                                                      fm.initial_opt_state(params))
        fm.assign(params)
        if fm.inner_state is not None:
            fm.inner_state.write(opt_state)
        return loss

    def _metrics_of_model(self, query_x, query_y, support_x=None):
        fm = self.fmodel
        return fm.metrics(fm.read_params(), fm.read_state(), query_x, query_y, support_x)


def kept_inner_state(model):
    """The `optim.InnerStateVariables` a meta-learner keeps across tasks for `model`, or None."""
    return getattr(getattr(model, "_pymeta_functional", None), "inner_state", None)


def compiled_steps_for(model):
    """The `CompiledSteps` of `model`'s attached `FunctionalModel` (built on first use)."""
    fm = functional_model_for(model)
    steps = getattr(fm, "_compiled_steps", None)
    if steps is None:
        steps = fm._compiled_steps = CompiledSteps(fm, jit_compile=getattr(fm, "jit_compile", False))
    return steps
