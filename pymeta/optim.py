"""Inner-loop optimizers as pure functions (optax style), usable inside `tf.function`.

An `InnerOptimizer` is a pair of functions:
    init(params) -> state
    update(grads, state, params) -> (new_params, new_state)
where params/grads are lists of tensors and state is a (possibly empty) tuple of tensors. By default the
state is created fresh for every task, so nothing leaks between tasks; `InnerStateVariables` keeps it
between tasks instead (the original Reptile implementation's Adam).
"""

from typing import Callable, NamedTuple

import keras
import tensorflow as tf


class InnerOptimizer(NamedTuple):
    init: Callable
    update: Callable
    name: str
    config: dict


def sgd(learning_rate):
    """Plain gradient descent: p <- p - lr * g."""
    lr = float(learning_rate)

    def init(params):
        return ()

    def update(grads, state, params):
        return [p - tf.cast(lr, p.dtype) * g for p, g in zip(params, grads)], state

    return InnerOptimizer(init, update, "sgd", {"learning_rate": lr})


def adam(learning_rate, beta_1=0.0, beta_2=0.999, epsilon=1e-7):
    """Adam with Keras' update rule (bias-corrected step size, epsilon outside the sqrt).

    beta_1=0 is the original pyMeta's choice for Reptile and sinusoid. State: (step, m list, v list).
    """
    lr, b1, b2, eps = float(learning_rate), float(beta_1), float(beta_2), float(epsilon)

    def init(params):
        zeros = [tf.zeros_like(p) for p in params]
        return (tf.constant(0.0), zeros, [tf.zeros_like(p) for p in params])

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
        new_p = [p - tf.cast(lr_t, p.dtype) * m / (tf.sqrt(v) + eps)
                 for p, m, v in zip(params, new_m, new_v)]
        return new_p, (step, new_m, new_v)

    return InnerOptimizer(init, update, "adam",
                          {"learning_rate": lr, "beta_1": b1, "beta_2": b2, "epsilon": eps})


def add_proximal_gradient(anchor, strength):
    """A gradient transform: g <- g + strength * (p - anchor), the gradient of the proximal term
    (strength / 2) ||p - anchor||^2 (iMAML's inner objective). Stateless; chain it before an optimizer."""
    anchor = [tf.convert_to_tensor(a) for a in anchor]
    lam = float(strength)

    def init(params):
        return ()

    def update(grads, state, params):
        return [g + tf.cast(lam, p.dtype) * (p - tf.cast(a, p.dtype))
                for g, p, a in zip(grads, params, anchor)], state

    return InnerOptimizer(init, update, "add_proximal_gradient", {"strength": lam})


def chain(*transforms):
    """Compose gradient transforms and one final optimizer (optax style): every transform but the
    last maps gradients to gradients (`update` returns (new grads, state)), the last returns the new
    parameters. State: the tuple of the parts' states."""
    *pre, last = transforms

    def init(params):
        return tuple(t.init(params) for t in transforms)

    def update(grads, state, params):
        new_state = []
        for t, s in zip(pre, state):
            grads, s = t.update(grads, s, params)
            new_state.append(s)
        params, s = last.update(grads, state[-1], params)
        return params, tuple(new_state) + (s,)

    return InnerOptimizer(init, update, "+".join(t.name for t in transforms),
                          {t.name: t.config for t in transforms})


class InnerStateVariables:
    """An inner optimizer's state kept in variables from one task to the next.

    The original Reptile code reset only the model's weights for each task and kept one Adam state
    (moments and step count) for the whole run. `read()` gives the state as the optimizer's nested
    structure of tensors, `write(state)` stores one back; `variables` is the flat list (checkpoints).
    """

    def __init__(self, optimizer, params):
        initial = optimizer.init([tf.convert_to_tensor(p) for p in params])
        self._structure = initial
        self.variables = [tf.Variable(t, trainable=False, name=f"inner_optimizer_state_{i}")
                          for i, t in enumerate(tf.nest.flatten(initial))]

    def read(self):
        return tf.nest.pack_sequence_as(self._structure, [tf.convert_to_tensor(v) for v in self.variables])

    def write(self, state):
        """Store `state`: the optimizer's nested structure, or its flat list in `variables` order."""
        for v, t in zip(self.variables, tf.nest.flatten(state)):
            v.assign(t)

    def fits(self, arrays):
        """Whether `arrays` (e.g. read from a file) have the shapes of this optimizer's state."""
        return [tuple(v.shape) for v in self.variables] == [tuple(a.shape) for a in arrays]


def from_keras(optimizer):
    """The `InnerOptimizer` equivalent to a Keras SGD (without momentum) or Adam optimizer.

    This is how `model.compile(optimizer=...)` of the original API chooses the inner optimizer.
    """
    if isinstance(optimizer, InnerOptimizer):
        return optimizer
    if isinstance(optimizer, str):
        optimizer = keras.optimizers.get(optimizer)
    config = optimizer.get_config()
    lr = config["learning_rate"]
    if not isinstance(lr, (int, float)):
        raise ValueError("the inner optimizer needs a constant learning rate, got a schedule")
    if isinstance(optimizer, keras.optimizers.SGD):
        if config.get("momentum", 0.0) or config.get("nesterov", False):
            raise ValueError("inner SGD with momentum is not supported; use plain SGD or Adam")
        return sgd(lr)
    if isinstance(optimizer, keras.optimizers.Adam) and not config.get("amsgrad", False):
        return adam(lr, config["beta_1"], config["beta_2"], config["epsilon"])
    raise ValueError(f"unsupported inner optimizer {type(optimizer).__name__}: use keras.optimizers.SGD "
                     "or keras.optimizers.Adam (or pymeta.optim.sgd / adam)")
