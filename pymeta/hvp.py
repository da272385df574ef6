"""Hessian-vector products and the conjugate-gradient method, in TensorFlow (no numpy).

Vectors are lists of tensors shaped like a model's parameters (`FunctionalModel` params). Everything
here is traceable by `tf.function` (and XLA).

Hessian-vector products of a scalar function f(params), three ways:

+ "reverse_over_reverse" (default): the gradient of f is computed once under a persistent outer
  `GradientTape`; each product H v is then one reverse pass through that gradient computation,
  `outer.gradient(grad_f, params, output_gradients=v)` (Pearlmutter's trick with v as the
  cotangent, H being symmetric). The forward and first backward passes are shared by all the
  products of one operator, which is what conjugate gradient needs.
+ "reverse_over_reverse_recompute": a fresh pair of nested tapes per product (the forward and
  backward passes are recomputed every time).
+ "forward_over_backward": `tf.autodiff.ForwardAccumulator` with tangent v around a `GradientTape`
  gradient. TensorFlow implements the JVP of most ops with two reverse-mode passes per op.

Measured (benchmarks/bench_second_order.py, Omniglot CNN `make_omniglot_cnn_model(5)`, training loss
on 25 support images 28x28x1, float32, 2 shared CPU cores; marginal cost of one product in a chain of
dependent products, best of 7; one gradient took 27 ms in that run):

    method                          unrolled   in a tf.while_loop
    reverse_over_reverse            62.5 ms    85.0 ms
    reverse_over_reverse_recompute  60.5 ms    86.9 ms
    forward_over_backward           64.8 ms    95.8 ms

Reverse-over-reverse (double GradientTape) is the default: the two reverse-over-reverse variants are
equal within the noise (the forward and first backward passes are a small part of a product's cost;
repeated ones may also be merged by Grappler), forward-over-backward is 5-10% slower. Conjugate gradient is unrolled when its number of steps is a
Python int (the loop costs ~25 ms more per product).
"""

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Union

import tensorflow as tf

Vector = Sequence[Any]  # a list of tensors shaped like the parameters
ScalarFn = Callable[[List[tf.Tensor]], tf.Tensor]  # params -> scalar

HVP_METHODS = ("reverse_over_reverse", "reverse_over_reverse_recompute", "forward_over_backward")
DEFAULT_HVP_METHOD = "reverse_over_reverse"


# --- vectors as lists of tensors -----------------------------------------------------------------------
def _as_list(vector):
    return [tf.convert_to_tensor(t) for t in vector]


def vdot(a: Vector, b: Vector, dtype: Any = None) -> tf.Tensor:
    """<a, b> summed over all the tensors of the two lists (scalar of `dtype`, default a[0]'s)."""
    dtype = dtype or a[0].dtype
    return tf.add_n([tf.cast(tf.reduce_sum(x * y), dtype) for x, y in zip(a, b)])


def vnorm(a: Vector, dtype: Any = None) -> tf.Tensor:
    """Euclidean norm of a list of tensors seen as one vector."""
    return tf.sqrt(vdot(a, a, dtype))


def vaxpy(alpha: Any, x: Vector, y: Vector) -> List[tf.Tensor]:
    """alpha * x + y, elementwise over the lists (alpha a scalar tensor or number)."""
    return [tf.cast(alpha, yi.dtype) * xi + yi for xi, yi in zip(x, y)]


# --- Hessian-vector products ---------------------------------------------------------------------------
def _gradient(f, params):
    with tf.GradientTape() as tape:
        tape.watch(params)
        value = f(params)
    return value, tape.gradient(value, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def hvp_reverse_over_reverse_recompute(f: ScalarFn, params: Vector, vector: Vector) -> List[tf.Tensor]:
    """H v with H the Hessian of f at params: nested tapes, forward and backward recomputed."""
    params, vector = _as_list(params), _as_list(vector)
    with tf.GradientTape() as outer:
        outer.watch(params)
        _, grads = _gradient(f, params)
    return outer.gradient(grads, params, output_gradients=vector,
                          unconnected_gradients=tf.UnconnectedGradients.ZERO)


def hvp_forward_over_backward(f: ScalarFn, params: Vector, vector: Vector) -> List[tf.Tensor]:
    """H v: forward-mode derivative (tangent v) of the reverse-mode gradient of f."""
    params, vector = _as_list(params), _as_list(vector)
    with tf.autodiff.ForwardAccumulator(params, vector) as acc:
        _, grads = _gradient(f, params)
    return [tf.zeros_like(p) if t is None else t
            for p, t in zip(params, acc.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO))]


def gauss_newton_vector_product(outputs_fn: Callable[[List[tf.Tensor]], tf.Tensor],
                                output_loss: Callable[[tf.Tensor], tf.Tensor], params: Vector,
                                vector: Vector) -> List[tf.Tensor]:
    """G v = J^T (d^2 l / d out^2) J v, with out = outputs_fn(params) and J = d out / d params.

    This is H v for the Hessian H of l(outputs_fn(params)) wherever d l / d out = 0, e.g. a KL
    divergence KL(out || out_old) at out = out_old (TRPO's trust region at the old parameters). It
    needs one forward-mode pass (J v) and one reverse pass (J^T u) through outputs_fn, not a reverse
    pass through a gradient of outputs_fn, which is what makes it cheaper when outputs_fn contains a
    gradient itself (MAML's adaptation step: second instead of third derivatives of the inner loss).
    output_loss: out -> scalar; its curvature in out is computed by autodiff on the outputs alone.
    """
    params, vector = _as_list(params), _as_list(vector)
    zero = tf.UnconnectedGradients.ZERO
    with tf.GradientTape() as tape:
        tape.watch(params)
        with tf.autodiff.ForwardAccumulator(params, vector) as acc:
            out = outputs_fn(list(params))
        jv = acc.jvp(out, unconnected_gradients=zero)
    leaf = tf.stop_gradient(out)
    with tf.GradientTape() as outer:
        outer.watch(leaf)
        with tf.GradientTape() as inner:
            inner.watch(leaf)
            loss = output_loss(leaf)
        grad = inner.gradient(loss, leaf, unconnected_gradients=zero)
    curvature_jv = outer.gradient(grad, leaf, output_gradients=tf.stop_gradient(jv), unconnected_gradients=zero)
    return tape.gradient(out, params, output_gradients=curvature_jv, unconnected_gradients=zero)


class HessianOperator:
    """v -> H v for the Hessian H of the scalar function f at `params`.

    Build it once and call it many times (conjugate gradient): with "reverse_over_reverse" the
    forward and first backward passes are recorded once, at construction; `value` and `gradient`
    (f and its gradient at params) are then available for free. With the other methods they are
    computed at construction too, for the same interface.

    The operator may be called inside a `tf.while_loop` built after it, in the same `tf.function`.
    """

    def __init__(self, f: ScalarFn, params: Vector, method: str = DEFAULT_HVP_METHOD):
        if method not in HVP_METHODS:
            raise ValueError(f"unknown Hessian-vector product method {method!r}; use one of {HVP_METHODS}")
        self.f = f
        self.params = _as_list(params)
        self.method = method
        if method == "reverse_over_reverse":
            self._tape = tf.GradientTape(persistent=True)
            with self._tape:
                self._tape.watch(self.params)
                self.value, self.gradient = _gradient(f, self.params)
        else:
            self.value, self.gradient = _gradient(f, self.params)

    def __call__(self, vector: Vector) -> List[tf.Tensor]:
        vector = _as_list(vector)
        if self.method == "reverse_over_reverse":
            return self._tape.gradient(self.gradient, self.params, output_gradients=vector,
                                       unconnected_gradients=tf.UnconnectedGradients.ZERO)
        if self.method == "reverse_over_reverse_recompute":
            return hvp_reverse_over_reverse_recompute(self.f, self.params, vector)
        return hvp_forward_over_backward(self.f, self.params, vector)


def hessian_vector_product(f: ScalarFn, params: Vector, vector: Vector,
                           method: str = DEFAULT_HVP_METHOD) -> List[tf.Tensor]:
    """H v, H the Hessian of the scalar function f (list of tensors -> scalar) at params."""
    if method == "forward_over_backward":
        return hvp_forward_over_backward(f, params, vector)
    if method in ("reverse_over_reverse", "reverse_over_reverse_recompute"):
        return hvp_reverse_over_reverse_recompute(f, params, vector)
    raise ValueError(f"unknown Hessian-vector product method {method!r}; use one of {HVP_METHODS}")


def training_loss(fmodel: Any, state: Sequence[tf.Tensor], x: Any, y: Any) -> ScalarFn:
    """params -> mean loss of a `FunctionalModel` on (x, y), batch norm in training mode."""
    return lambda params: fmodel.loss(params, state, x, y, training=True)


def training_loss_hessian(fmodel: Any, params: Vector, state: Sequence[tf.Tensor], x: Any, y: Any,
                          method: str = DEFAULT_HVP_METHOD) -> "HessianOperator":
    """The `HessianOperator` of a FunctionalModel's mean training loss on (x, y) at params."""
    return HessianOperator(training_loss(fmodel, state, x, y), params, method)


# --- conjugate gradient --------------------------------------------------------------------------------
class CGResult(NamedTuple):
    x: list                  # the solution, a list of tensors shaped like b
    residual_norms: tf.Tensor  # [num_steps + 1]: ||r_k|| of the CG recurrence, r_0 = b - A x0
    steps: Optional[tf.Tensor] = None  # int32 scalar: iterations actually run (= products with A computed)
    residual: Optional[list] = None    # r = b - (A + damping I) x of the recurrence, for the returned x


def conjugate_gradient(matvec: Callable[[List[tf.Tensor]], Sequence[tf.Tensor]], b: Vector,
                       num_steps: Union[int, tf.Tensor], damping: float = 0.0, x0: Optional[Vector] = None,
                       tol: float = 0.0, return_best: bool = False, unroll: Optional[bool] = None) -> CGResult:
    """Solve (A + damping I) x = b with `num_steps` conjugate-gradient iterations.

    matvec: v -> A v on lists of tensors; A must be symmetric, and positive definite for the method to
        be meaningful (if p^T A p <= 0 is met the iteration stops where it is, x is kept).
    b: list of tensors. x0: starting point (default zeros). num_steps: int or int scalar tensor.
    tol: the iterations stop updating once ||r_k|| <= tol * ||b|| (0: only at an exactly zero residual).
        In float32, a tol around 1e-6 avoids steps taken on rounding noise.
    return_best: return the iterate of smallest residual norm instead of the last one (a safeguard
        when A may be indefinite, e.g. the Hessian of a neural network far from a minimum).
    unroll: unroll the iterations in Python (default: when num_steps is a Python int); otherwise a
        `tf.while_loop`.

    Returns CGResult(x, residual_norms [num_steps + 1], steps, residual) where residual_norms[k] is the
    norm of the recurrence residual after k steps (equal to ||b - (A + damping I) x_k|| up to rounding;
    steps after a stop repeat the last value), `residual` that residual for the returned x (so
    (A + damping I) x = b - residual costs no further product) and `steps` the number of iterations actually run: once the
    residual is below tol * ||b|| (or curvature is non-positive) the remaining iterations are skipped
    by a `tf.cond`, so they cost no product with A. In exact arithmetic the solution is exact after as many steps as A
    has distinct eigenvalues (at most the dimension).
    """
    b = _as_list(b)
    dtype = b[0].dtype
    damping = float(damping)

    def op(v):
        av = matvec(v)
        return av if damping == 0.0 else vaxpy(damping, v, list(av))

    if x0 is None:
        x, r = [tf.zeros_like(t) for t in b], list(b)
    else:
        x = _as_list(x0)
        r = [bi - ai for bi, ai in zip(b, op(x))]
    p = list(r)
    rr = vdot(r, r, dtype)
    zero = tf.zeros([], dtype)
    threshold = tf.square(tf.cast(tol, dtype)) * vdot(b, b, dtype)  # stop once rr <= tol^2 ||b||^2

    def iterate(x, r, p, rr):
        ap = op(p)
        pap = vdot(p, ap, dtype)
        ok = pap > 0  # non-positive curvature: stop where we are
        alpha = tf.where(ok, rr / tf.where(ok, pap, tf.ones_like(pap)), zero)
        x = vaxpy(alpha, p, x)
        r = vaxpy(-alpha, ap, r)
        rr_new = tf.where(ok, vdot(r, r, dtype), rr)
        beta = tf.where(ok, rr_new / tf.where(ok, rr, tf.ones_like(rr)), zero)
        p = vaxpy(beta, p, r)
        return x, r, p, rr_new, tf.logical_not(ok)

    def step(x, r, p, rr, done, steps):
        """One iteration, or nothing once converged / stopped: a converged system costs no more
        products with A (the branch not taken is not run)."""
        stop = tf.logical_or(done, rr <= threshold)
        return tf.cond(stop, lambda: (x, r, p, rr, tf.constant(True), steps),
                       lambda: iterate(x, r, p, rr) + (steps + 1,))

    def keep_best(best, best_rr, x, r, rr):
        better = rr < best_rr
        return [tf.where(better, a, c) for a, c in zip(x + r, best)], tf.minimum(rr, best_rr)

    def result(x, r, norms, steps, best):
        if return_best:
            x, r = best[:len(x)], best[len(x):]
        return CGResult(x, norms, steps, r)

    done, steps = tf.constant(False), tf.constant(0)
    best, best_rr = list(x) + list(r), rr  # the iterate of smallest residual and its residual
    if unroll is None:
        unroll = isinstance(num_steps, int)
    if unroll:
        norms = [tf.sqrt(rr)]
        for _ in range(int(num_steps)):
            x, r, p, rr, done, steps = step(x, r, p, rr, done, steps)
            norms.append(tf.sqrt(rr))
            if return_best:
                best, best_rr = keep_best(best, best_rr, x, r, rr)
        return result(x, r, tf.stack(norms), steps, best)

    num_steps = tf.convert_to_tensor(num_steps, tf.int32)
    norms = tf.TensorArray(dtype, size=num_steps + 1, element_shape=[])
    norms = norms.write(0, tf.sqrt(rr))

    def body(k, x, r, p, rr, done, steps, norms, best, best_rr):
        x, r, p, rr, done, steps = step(x, r, p, rr, done, steps)
        if return_best:
            best, best_rr = keep_best(best, best_rr, x, r, rr)
        return k + 1, x, r, p, rr, done, steps, norms.write(k + 1, tf.sqrt(rr)), best, best_rr

    _, x, r, _, _, _, steps, norms, best, _ = tf.while_loop(
        lambda k, *_: k < num_steps, body,
        (tf.constant(0), x, r, p, rr, done, steps, norms, best, best_rr))
    return result(x, r, norms.stack(), steps, best)
