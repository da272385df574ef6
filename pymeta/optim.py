"""Inner-loop optimizers as pure gradient transformations (the optax contract), usable inside
`tf.function`.

A `GradientTransformation` is a pair of pure functions:

    init(params) -> state
    update(updates, state, params) -> (new updates, new state)

params, updates and gradients are lists of tensors shaped like the parameters; a state is a named
tuple of tensors (`EmptyState`, `AdamState`, `ChainState`). Every transform maps updates to updates:
`sgd` and `adam` return the step to add (-lr g, ...), `add_proximal_gradient` adds the proximal
term's gradient, and `apply_updates(params, updates)` adds the final updates to the parameters.
`chain(t1, ..., tn)` composes any transforms the same way (`ChainState` holds the parts' states).
The inner loop (`pymeta.inner_loop.adapt`) runs, at every step,
`updates, state = opt.update(grads, state, params); params = apply_updates(params, updates)`.

By default the state is created fresh for every task, so nothing leaks between tasks;
`InnerStateVariables` keeps it between tasks instead (the original Reptile implementation's Adam).
Its flat list of variables (what .h5 model files and checkpoints store) is the state's leaves in
field order: Adam's (count, mu..., nu...), as before these states were named.
"""

from typing import Any, Callable, Dict, List, NamedTuple, Sequence, Tuple, Union

import keras
import tensorflow as tf

from pymeta.core.bounds import NON_NEGATIVE, PROXIMAL_STRENGTH, STEP_SIZE, UNIT_INTERVAL
from pymeta.core.finite import check_learning_rate

Params = List[tf.Tensor]      # one tensor per trainable variable
Updates = List[tf.Tensor]     # shaped like Params
OptState = Any                # a named tuple (of named tuples) of tensors


class EmptyState(NamedTuple):
    """The state of a stateless transform."""


class AdamState(NamedTuple):
    """Adam's state: count (float32 scalar: steps taken), mu and nu (first and second moments, shaped
    like the parameters)."""
    count: tf.Tensor
    mu: List[tf.Tensor]
    nu: List[tf.Tensor]


class ChainState(NamedTuple):
    """The states of a chain's transforms, in order."""
    parts: tuple


class GradientTransformation(NamedTuple):
    """init(params) -> state; update(updates, state, params) -> (updates, state). name and config say
    what it is (config['learning_rate'] of the optimizer: iMAML's pull-back step reads it)."""
    init: Callable[[Sequence[tf.Tensor]], OptState]
    update: Callable[[Sequence[tf.Tensor], OptState, Sequence[tf.Tensor]], Tuple[Updates, OptState]]
    name: str
    config: Dict[str, Any]


# the name this module's transforms had before they followed the optax contract
InnerOptimizer = GradientTransformation


def apply_updates(params: Sequence[tf.Tensor], updates: Sequence[tf.Tensor]) -> Params:
    """params + updates, tensor by tensor (the updates cast to each parameter's dtype)."""
    return [p + tf.cast(u, p.dtype) for p, u in zip(params, updates)]


def sgd(learning_rate: float) -> GradientTransformation:
    """Plain gradient descent: updates -lr * g (so p <- p - lr * g). learning_rate: finite, >= 0."""
    lr = STEP_SIZE.check(learning_rate, "pymeta.optim.sgd: learning_rate")

    def init(params):
        return EmptyState()

    def update(grads, state, params):
        return [-(tf.cast(lr, p.dtype) * g) for p, g in zip(params, grads)], state

    return GradientTransformation(init, update, "sgd", {"learning_rate": lr})


def adam(learning_rate: float, beta_1: float = 0.0, beta_2: float = 0.999,
         epsilon: float = 1e-7) -> GradientTransformation:
    """Adam with Keras' update rule (bias-corrected step size, epsilon outside the sqrt): updates
    -lr_t m / (sqrt(v) + eps), lr_t = lr sqrt(1 - b2^t) / (1 - b1^t). State: `AdamState`.

    beta_1=0 is the original pyMeta's choice for Reptile and sinusoid. learning_rate and epsilon:
    finite, >= 0; beta_1, beta_2 in [0, 1).
    """
    lr = STEP_SIZE.check(learning_rate, "pymeta.optim.adam: learning_rate")
    b1 = UNIT_INTERVAL.check(beta_1, "pymeta.optim.adam: beta_1")
    b2 = UNIT_INTERVAL.check(beta_2, "pymeta.optim.adam: beta_2")
    eps = NON_NEGATIVE.check(epsilon, "pymeta.optim.adam: epsilon")

    def init(params):
        return AdamState(tf.constant(0.0), [tf.zeros_like(p) for p in params],
                         [tf.zeros_like(p) for p in params])

    def update(grads, state, params):
        step, ms, vs = state
        step = step + 1.0
        # the bias correction in the parameters' precision (float32 constants would cost a float64
        # model 1e-5 relative accuracy: 1 - 0.999 is not exact in float32)
        dtype = params[0].dtype if params and params[0].dtype == tf.float64 else tf.float32
        t = tf.cast(step, dtype)
        lr_t = lr * tf.sqrt(1.0 - tf.pow(tf.constant(b2, dtype), t)) / (1.0 - tf.pow(tf.constant(b1, dtype), t))
        new_m = [b1 * m + (1.0 - b1) * g for m, g in zip(ms, grads)]
        new_v = [b2 * v + (1.0 - b2) * tf.square(g) for v, g in zip(vs, grads)]
        updates = [-(tf.cast(lr_t, p.dtype) * m / (tf.sqrt(v) + eps))
                   for p, m, v in zip(params, new_m, new_v)]
        return updates, AdamState(step, new_m, new_v)

    return GradientTransformation(init, update, "adam",
                                  {"learning_rate": lr, "beta_1": b1, "beta_2": b2, "epsilon": eps})


def add_proximal_gradient(anchor: Sequence[tf.Tensor], strength: float) -> GradientTransformation:
    """updates <- updates + strength * (p - anchor), the gradient of the proximal term
    (strength / 2) ||p - anchor||^2 (iMAML's inner objective). Stateless; chain it before an
    optimizer, whose input it then is. strength: finite, >= 0."""
    lam = PROXIMAL_STRENGTH.check(strength, "pymeta.optim.add_proximal_gradient: strength")
    anchor = [tf.convert_to_tensor(a) for a in anchor]

    def init(params):
        return EmptyState()

    def update(grads, state, params):
        return [g + tf.cast(lam, p.dtype) * (p - tf.cast(a, p.dtype))
                for g, p, a in zip(grads, params, anchor)], state

    return GradientTransformation(init, update, "add_proximal_gradient", {"strength": lam})


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """The transforms applied one after the other, each to the previous one's updates (optax's
    `chain`). State: `ChainState` of the parts' states; config: {part name: part config}."""
    if not transforms:
        raise ValueError("chain needs at least one transform")

    def init(params):
        return ChainState(tuple(t.init(params) for t in transforms))

    def update(updates, state, params):
        new_states = []
        for t, s in zip(transforms, state.parts):
            updates, s = t.update(updates, s, params)
            new_states.append(s)
        return updates, ChainState(tuple(new_states))

    return GradientTransformation(init, update, "+".join(t.name for t in transforms),
                                  {t.name: t.config for t in transforms})


class InnerStateVariables:
    """An inner optimizer's state kept in variables from one task to the next.

    The original Reptile code reset only the model's weights for each task and kept one Adam state
    (moments and step count) for the whole run. `read()` gives the state as the optimizer's named
    tuple of tensors, `write(state)` stores one back; `variables` is the flat list (the leaves in
    field order) that model files and checkpoints store.
    """

    def __init__(self, optimizer: GradientTransformation, params: Sequence[Any]):
        initial = optimizer.init([tf.convert_to_tensor(p) for p in params])
        self._structure = initial
        self.variables: List[tf.Variable] = [
            tf.Variable(t, trainable=False, name=f"inner_optimizer_state_{i}")
            for i, t in enumerate(tf.nest.flatten(initial))]

    def read(self) -> OptState:
        return tf.nest.pack_sequence_as(self._structure, [tf.convert_to_tensor(v) for v in self.variables])

    def write(self, state: Any) -> None:
        """Store `state`: the optimizer's state structure, or its flat list in `variables` order."""
        for v, t in zip(self.variables, tf.nest.flatten(state)):
            v.assign(t)

    def fits(self, arrays: Sequence[Any]) -> bool:
        """Whether `arrays` (e.g. read from a file) have the shapes of this optimizer's state."""
        return [tuple(v.shape) for v in self.variables] == [tuple(a.shape) for a in arrays]


def from_keras(optimizer: Union[GradientTransformation, str, keras.optimizers.Optimizer]
               ) -> GradientTransformation:
    """The `GradientTransformation` equivalent to a Keras SGD (without momentum) or Adam optimizer.

    This is how `model.compile(optimizer=...)` of the original API chooses the inner optimizer.
    """
    if isinstance(optimizer, GradientTransformation):
        return optimizer
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    config = optimizer.get_config()
    lr = config["learning_rate"]
    if not isinstance(lr, (int, float)):
        raise ValueError("the inner optimizer needs a constant learning rate, got a schedule")
    check_learning_rate(optimizer, "the inner optimizer")
    if isinstance(optimizer, keras.optimizers.SGD):
        if config.get("momentum", 0.0) or config.get("nesterov", False):
            raise ValueError("inner SGD with momentum is not supported; use plain SGD or Adam")
        return sgd(lr)
    if isinstance(optimizer, keras.optimizers.Adam) and not config.get("amsgrad", False):
        return adam(lr, config["beta_1"], config["beta_2"], config["epsilon"])
    raise ValueError(f"unsupported inner optimizer {type(optimizer).__name__}: use keras.optimizers.SGD "
                     "or keras.optimizers.Adam (or pymeta.optim.sgd / adam)")

