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
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from pymeta import optim
from pymeta.core.task_data import TaskData
from pymeta.inner_loop import FunctionalModel, adapt


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

    def __init__(self, model, inner_optimizer=None, loss=None, objective=None, jit_compile=False):
        self.model = model
        inner_optimizer = inner_optimizer if inner_optimizer is not None else getattr(model, "optimizer", None)
        if inner_optimizer is None:
            raise ValueError("no inner optimizer: compile the model with one "
                             "(model.compile(optimizer=keras.optimizers.SGD(0.01), loss=...)) "
                             "or pass inner_optimizer= to the meta-learner")
        self.inner_optimizer = optim.from_keras(inner_optimizer)
        loss = loss if loss is not None else getattr(model, "loss", None)
        if objective is None or loss is not None:
            self.fmodel = FunctionalModel(model, loss)
        else:
            self.fmodel = None  # a user-defined objective without a supervised loss
        self.objective = objective if objective is not None else self.fmodel.objective
        self.jit_compile = bool(jit_compile)
        self.unroll = self.jit_compile
        self.inner_state: Optional[optim.InnerStateVariables] = None  # the kept inner optimizer state
        self._compiled = {}

    @property
    def is_classification(self) -> bool:
        return self.fmodel is not None and self.fmodel.is_classification

    # --- the inner loop ---------------------------------------------------------------------------
    def inner_optimizer_for(self, theta):
        """The inner update rule of a task adapted from the meta-parameters `theta` (iMAML's
        proximal mode chains a pull towards theta before the optimizer)."""
        return self.inner_optimizer

    def adapt(self, params, state, batches, theta=None, opt_state=None, unroll=None):
        """`pymeta.inner_loop.adapt` with this learner's objective and inner optimizer:
        (params after the T steps of `batches` [T, ...], last step's objective value, final optimizer
        state). theta: the meta-parameters the task started from (default: params)."""
        optimizer = self.inner_optimizer_for(params if theta is None else theta)
        return adapt(params, state, batches, self.objective, optimizer, opt_state,
                     unroll=self.unroll if unroll is None else unroll)

    def anchor(self):
        """The meta-parameters tasks start from (None for a plain learner)."""
        return None

    def check_data(self, data) -> None:
        """One-line errors, before any compiled call, for supervised `TaskData` this learner cannot
        train on: non-finite inputs, integer class labels with a regression loss, labels outside the
        model's outputs. Other task data passes unchecked."""
        if self.fmodel is None or not isinstance(data, TaskData):
            return
        for name, batch in (("support", data.support), ("query", data.query)):
            if not (isinstance(batch, tuple) and len(batch) == 2):
                return
            x, y = np.asarray(batch[0]), np.asarray(batch[1])
            if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
                raise ValueError(f"a task's {name} inputs contain NaN or infinite values")
            if not np.issubdtype(y.dtype, np.integer) or y.size == 0:
                continue
            if not self.fmodel.is_classification:
                raise ValueError("the tasks have integer class labels but the loss is a regression loss "
                                 f"({getattr(self.fmodel.loss_fn, '__name__', self.fmodel.loss_fn)}): use "
                                 "sparse_categorical_crossentropy")
            try:
                outputs = int(self.model.output_shape[-1])
            except (AttributeError, TypeError, ValueError, IndexError):
                continue  # a model without a single known output width
            if y.min() < 0 or y.max() >= outputs:
                raise ValueError(f"the tasks have class labels {int(y.min())}..{int(y.max())} but the model "
                                 f"has {outputs} outputs: build it with one output per class")

    # --- the in-place functions of the step-by-step API -------------------------------------------
    def fit_in_place(self, model, batches) -> tf.Tensor:
        """Run the inner steps of `batches` (structure of numpy arrays [T, ...]) on `model`'s current
        weights and write the result back; returns the last step's objective value."""
        self._check_model(model)
        # the number of steps T is left free (one trace for any T) unless the loop is unrolled
        free_dims = 0 if self.unroll else 1
        return self._function("fit_in_place", self._fit_in_place_fn, (batches,), free_dims=free_dims)(batches)

    def metrics_of_model(self, model, query_x, query_y, support_x=None):
        """(loss, accuracy) of `model`'s current weights on a query set (see `FunctionalModel.metrics`)."""
        self._check_model(model)
        if self.fmodel is None:
            raise ValueError("evaluate needs a supervised loss: this learner has only a custom objective")
        return self._function("metrics_of_model", self._metrics_of_model_fn)(query_x, query_y, support_x)

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
        return fm.metrics(fm.read_params(), fm.read_state(), query_x, query_y, support_x)

    # --- compiled functions -------------------------------------------------------------------------
    def _function(self, key, fn, example_args: Any = None, free_dims: int = 2):
        """`fn` compiled once per key; with `example_args` (a tuple of fn's arguments, each a structure of
        numpy arrays), compiled for their shapes with the `free_dims` leading dimensions (number of meta-batches, tasks) left
        free, so that it never retraces for another meta-batch size."""
        if example_args is None:
            if key not in self._compiled:
                self._compiled[key] = tf.function(fn, reduce_retracing=True, jit_compile=self.jit_compile)
            return self._compiled[key]
        flat = tf.nest.flatten(example_args)
        key = (key, len(flat)) + tuple((tuple(a.shape[free_dims:]), tf.as_dtype(a.dtype).name) for a in flat)
        if key not in self._compiled:
            self._compiled[key] = _flat_function(fn, example_args, free_dims, self.jit_compile)
        return self._compiled[key]


def _flat_function(fn, example_args, free_dims, jit_compile):
    """`fn(*example_args)` compiled for the shapes of `example_args` (structures of numpy arrays or
    tensors) with their `free_dims` leading dimensions free, called with the flat list of leaves
    converted to tensors here. Measured per call with six small arrays: a `tf.function` binding a
    nested signature of numpy arrays 1.3 ms (a fifth of a sinusoid meta-iteration), its concrete
    function called with tensors 0.34 ms."""
    structure = tf.nest.map_structure(lambda a: None, example_args)
    signature = [tf.TensorSpec((None,) * free_dims + tuple(a.shape[free_dims:]), tf.as_dtype(a.dtype))
                 for a in tf.nest.flatten(example_args)]
    compiled = tf.function(lambda *leaves: fn(*tf.nest.pack_sequence_as(structure, list(leaves))),
                           input_signature=signature, jit_compile=jit_compile)
    concrete = compiled.get_concrete_function()

    def call(*args):
        return concrete(*[tf.convert_to_tensor(a) for a in tf.nest.flatten(args)])
    return call


_default_learners = weakref.WeakKeyDictionary()


def default_learner(model) -> Learner:
    """The plain `Learner` of a model used without a meta-learner: its compiled loss and optimizer
    (rebuilt when the model is compiled again). Meta-learners never use or change it."""
    key = (id(getattr(model, "loss", None)), id(getattr(model, "optimizer", None)))
    entry = _default_learners.get(model)
    if entry is None or entry[0] != key:
        entry = (key, Learner(model))
        _default_learners[model] = entry
    return entry[1]
