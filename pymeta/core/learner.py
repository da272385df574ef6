"""`Learner`: a model, an inner objective and an inner optimizer, with the compiled functions that
adapt the model in place (`Task.fit_n_iterations`) and evaluate it (`Task.evaluate`).

Every meta-learner is a `Learner` and owns its `FunctionalModel`, objective, inner optimizer, kept
inner optimizer state and compiled functions: nothing is attached to the Keras model, so two
meta-learners on one model never see each other's settings. `metalearner.task_begin(task)` binds the
task to the meta-learner (`task.learner`), so that the task's `fit_n_iterations(model, T, B)` runs
that meta-learner's inner loop (iMAML's proximal term, a kept Adam state). A task used without a
meta-learner trains with `default_learner(model)`, built from `model.compile(optimizer, loss)`.
"""

import weakref
from typing import Any, Callable, Hashable, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from pymeta import optim
from pymeta.core.compiled import CompiledFunctions
from pymeta.core.finite import all_finite
from pymeta.core.task_data import TaskData
from pymeta.inner_loop import FunctionalModel, Objective, adapt, needs_isolated_gradients

Tensors = List[tf.Tensor]  # one tensor per trainable (or non-trainable) variable of the model


def check_model(model: Any) -> None:
    """One-line errors for a model no learner can adapt: not a Keras model, not built (no weights yet),
    or without trainable weights."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"the model must be a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ValueError("the model is not built (it has no weights yet): start it with keras.Input(shape), "
                         "or call model.build(input_shape), before giving it to a meta-learner")
    if not model.trainable_variables:
        raise ValueError("the model has no trainable weights (model.trainable = False?): nothing to "
                         "meta-learn")


class Learner:
    """Inner-loop training of one Keras model.

    Args:
        model: the Keras model.
        inner_optimizer: Keras SGD/Adam or a `pymeta.optim` optimizer; default: the optimizer the model
            was compiled with (as in the original pyMeta).
        loss: loss name or callable; default: the model's compiled loss.
        objective: `objective(params, state, batch) -> scalar`, what inner steps descend; default: the
            supervised loss (plus the model's regularisation losses) on batch = (x, y).
        jit_compile: compile with XLA (inner steps then unrolled; pays for small MLPs on CPU).
    """

    def __init__(self, model: keras.Model,
                 inner_optimizer: Union[None, str, keras.optimizers.Optimizer, optim.GradientTransformation] = None,
                 loss: Any = None, objective: Optional[Objective] = None, jit_compile: bool = False):
        check_model(model)
        self.model = model
        inner_optimizer = inner_optimizer if inner_optimizer is not None else getattr(model, "optimizer", None)
        if inner_optimizer is None:
            raise ValueError("no inner optimizer: compile the model with one "
                             "(model.compile(optimizer=keras.optimizers.SGD(0.01), loss=...)) "
                             "or pass inner_optimizer= to the meta-learner")
        self.inner_optimizer = optim.from_keras(inner_optimizer)
        loss = loss if loss is not None else getattr(model, "loss", None)
        # None: a user-defined objective without a supervised loss
        fmodel = FunctionalModel(model, loss) if objective is None or loss is not None else None
        self.fmodel: Optional[FunctionalModel] = fmodel
        if objective is None:
            assert fmodel is not None
            objective = fmodel.objective
        self.objective: Objective = objective
        self.jit_compile = bool(jit_compile)
        self.unroll = self.jit_compile
        # gradients inside the compiled loops in graphs of their own (not under XLA, which has no oneDNN pass)
        self.isolate_gradients = not self.jit_compile and needs_isolated_gradients(model)
        self.inner_state: Optional[optim.InnerStateVariables] = None  # the kept inner optimizer state
        self.compiled_functions = CompiledFunctions(self.jit_compile)

    @property
    def is_classification(self) -> bool:
        return self.fmodel is not None and self.fmodel.is_classification

    # --- the inner loop ---------------------------------------------------------------------------
    def inner_optimizer_for(self, theta: Optional[Sequence[tf.Tensor]]) -> optim.GradientTransformation:
        """The inner update rule of a task adapted from the meta-parameters `theta` (iMAML's
        proximal mode chains a pull towards theta before the optimizer)."""
        return self.inner_optimizer

    def adapt(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], batches: Any,
              theta: Optional[Sequence[tf.Tensor]] = None, opt_state: Any = None,
              unroll: Optional[bool] = None) -> Tuple[Tensors, tf.Tensor, Any]:
        """`pymeta.inner_loop.adapt` with this learner's objective and inner optimizer:
        (params after the T steps of `batches` [T, ...], last step's objective value, final optimizer
        state). theta: the meta-parameters the task started from (default: params)."""
        optimizer = self.inner_optimizer_for(params if theta is None else theta)
        return adapt(params, state, batches, self.objective, optimizer, opt_state,
                     unroll=self.unroll if unroll is None else unroll, isolate_steps=self.isolate_gradients)

    def adapt_tasks(self, theta: Sequence[Any], params_per_task: Optional[Sequence[Any]],
                    batches_per_task: Any) -> Tensors:
        """The compiled adaptation of a meta-batch: each task's parameters (leaves [M, ...]; None: theta
        for every task) adapted on its batches (structure of leaves [M, T, ...]) by this learner's
        inner loop from the anchor `theta` (list of tensors), in one compiled call (one trace for any
        M). Returns the adapted parameters (leaves [M, ...]). Reinforcement learning adapts every
        task of a meta-batch between two collections of episodes with it."""
        theta = [tf.convert_to_tensor(t) for t in theta]
        batches_per_task = tf.nest.map_structure(tf.convert_to_tensor, batches_per_task)
        m = tf.nest.flatten(batches_per_task)[0].shape[0]
        if params_per_task is None:
            params_per_task = [tf.tile(t[None], [m] + [1] * len(t.shape)) for t in theta]
        return self.compiled("adapt_tasks", self._adapt_tasks_fn)(theta, list(params_per_task), batches_per_task)

    @tf.autograph.experimental.do_not_convert  # straight-line code
    def _adapt_tasks_fn(self, theta, params_per_task, batches_per_task):
        state = [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

        @tf.autograph.experimental.do_not_convert
        def one(args):
            params, batches = args
            new, _, _ = self.adapt(list(params), state, batches, theta=theta)
            return new

        return tf.map_fn(one, (params_per_task, batches_per_task),
                         fn_output_signature=[tf.TensorSpec(p.shape[1:], p.dtype) for p in params_per_task])

    def anchor(self) -> Optional[Tensors]:
        """The meta-parameters tasks start from (None for a plain learner)."""
        return None

    def check_data(self, data: Any) -> None:
        """`check_batch` of the support and query sets of supervised `TaskData` (leaves [..., n, ...]),
        before any compiled call; other task data passes unchecked."""
        if self.fmodel is None or not isinstance(data, TaskData):
            return
        for name, batch in (("support", data.support), ("query", data.query)):
            if not (isinstance(batch, tuple) and len(batch) == 2):
                return
            self.check_batch(name, batch[0], batch[1])

    def check_batch(self, name: str, x: Any, y: Any = None) -> None:
        """One-line errors for a supervised batch (inputs x [..., n, ...], targets y [..., n, ...] or None)
        this learner cannot train on or evaluate: non-finite inputs or targets, integer class labels
        with a regression loss, labels outside the model's outputs. Host side (numpy), once per batch:
        the task API and the fast path call it before their compiled calls."""
        if not all_finite(x):
            raise ValueError(f"a task's {name} inputs contain NaN or infinite values")
        self._check_input_shape(name, np.shape(x))
        if y is None or self.fmodel is None:
            return
        y = np.asarray(y)
        if not all_finite(y):
            raise ValueError(f"a task's {name} targets contain NaN or infinite values")
        if not np.issubdtype(y.dtype, np.integer) or y.size == 0:
            return
        if not self.fmodel.is_classification:
            raise ValueError("the tasks have integer class labels but the loss is a regression loss "
                             f"({getattr(self.fmodel.loss_fn, '__name__', self.fmodel.loss_fn)}): use "
                             "sparse_categorical_crossentropy")
        try:
            outputs = int(self.model.output_shape[-1])
        except (AttributeError, TypeError, ValueError, IndexError):
            return  # a model without a single known output width
        if y.min() < 0 or y.max() >= outputs:
            raise ValueError(f"the tasks have class labels {int(y.min())}..{int(y.max())} but the model "
                             f"has {outputs} outputs: build it with one output per class")

    def _check_input_shape(self, name: str, shape: Tuple[int, ...]) -> None:
        """One-line error if inputs of `shape` [..., n, *example] do not end in the model's example
        shape (its `input_shape` without the batch axis; free axes match anything)."""
        try:
            expected = tuple(self.model.input_shape[1:])
        except (AttributeError, TypeError, ValueError, IndexError):
            return  # not built, or several inputs
        if not all(d is None or isinstance(d, int) for d in expected):
            return  # several inputs: a list of shapes
        got = tuple(shape[len(shape) - len(expected):]) if len(shape) > len(expected) else tuple(shape)
        if len(got) != len(expected) or any(e is not None and e != g for e, g in zip(expected, got)):
            raise ValueError(f"a task's {name} inputs have shape {tuple(shape)}, which does not end in the "
                             f"shape of the model's examples, {expected}")

    # --- the in-place functions of the step-by-step API -------------------------------------------
    def fit_in_place(self, model: keras.Model, batches: Any) -> tf.Tensor:
        """Run the inner steps of `batches` (structure of numpy arrays [T, ...]) on `model`'s current
        weights and write the result back; returns the last step's objective value."""
        self._check_model(model)
        # the number of steps T is left free (one trace for any T) unless the loop is unrolled
        free_dims = 0 if self.unroll else 1
        return self.compiled("fit_in_place", self._fit_in_place_fn, (batches,), free_dims=free_dims)(batches)

    def metrics_of_model(self, model: keras.Model, query_x: Any, query_y: Any,
                         support_x: Any = None) -> Tuple[tf.Tensor, tf.Tensor]:
        """(loss, accuracy) of `model`'s current weights on a query set (see `FunctionalModel.metrics`)."""
        self._check_model(model)
        if self.fmodel is None:
            raise ValueError("evaluate needs a supervised loss: this learner has only a custom objective")
        return self.compiled("metrics_of_model", self._metrics_of_model_fn)(query_x, query_y, support_x)

    def _check_model(self, model):
        if model is not self.model:
            raise ValueError("this task was begun by a meta-learner of another model: call "
                             "metalearner.task_begin(task) with the meta-learner of this model")

    def _fit_in_place_fn(self, batches):
        fm = self.model
        params = [tf.convert_to_tensor(v) for v in fm.trainable_variables]
        state = [tf.convert_to_tensor(v) for v in fm.non_trainable_variables]
        kept = self.inner_state
        opt_state = kept.read() if kept is not None else None
        params, loss, opt_state = self.adapt(params, state, batches, theta=self.anchor(), opt_state=opt_state)
        for v, p in zip(fm.trainable_variables, params):
            v.assign(p)
        if kept is not None:
            kept.write(opt_state)
        return loss

    def _metrics_of_model_fn(self, query_x, query_y, support_x=None):
        fm = self.fmodel
        assert fm is not None  # checked by metrics_of_model
        return fm.metrics(fm.read_params(), fm.read_state(), query_x, query_y, support_x)

    # --- compiled functions -------------------------------------------------------------------------
    def compiled(self, key: Hashable, fn: Callable[..., Any], example_args: Optional[tuple] = None,
                 free_dims: int = 2) -> Callable[..., Any]:
        """`fn` compiled once per key in this learner's cache (`pymeta.core.compiled`); with
        `example_args`, for their shapes with the `free_dims` leading dimensions (number of
        meta-batches, tasks) left free, so that it never retraces for another meta-batch size."""
        self.compiled_functions.jit_compile = self.jit_compile
        return self.compiled_functions.get(key, fn, example_args, free_dims)


_default_learners: "weakref.WeakKeyDictionary[Any, Tuple[Any, Learner]]" = weakref.WeakKeyDictionary()


def default_learner(model: keras.Model) -> Learner:
    """The plain `Learner` of a model used without a meta-learner: its compiled loss and optimizer
    (rebuilt when the model is compiled again). Meta-learners never use or change it."""
    key = (id(getattr(model, "loss", None)), id(getattr(model, "optimizer", None)))
    entry = _default_learners.get(model)
    if entry is None or entry[0] != key:
        entry = (key, Learner(model))
        _default_learners[model] = entry
    return entry[1]
