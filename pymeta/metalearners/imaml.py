"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019, https://arxiv.org/abs/1909.04630).

Inner loop, two modes (`inner_mode`):
+ "proximal": from theta, minimise the task's training objective plus the proximal term
  (lambda / 2) ||phi - theta||^2 (approximately, with the usual inner optimizer and steps; the
  term enters as a gradient transform chained before the inner optimizer,
  `pymeta.optim.add_proximal_gradient`). Evaluation adapts the same way.
+ "pullback" (the reference implementation, aravindr93/imaml_dev): T plain inner steps, then one
  step on the proximal term alone, phi <- phi - alpha lambda (phi - theta) (alpha: the inner
  learning rate), then the implicit gradient at that phi. Evaluation adapts with plain steps.
At the exact minimiser phi*(theta), d phi* / d theta = (I + H / lambda)^-1 with H the Hessian of the
training loss at phi*, so the meta-gradient of a task is the solution g of

    (I + H / lambda) g = grad_phi L_test(phi)

found with `n_iters_optimizer` conjugate-gradient steps started from zero, as in the reference
implementation (zero steps give exactly the FOMAML gradient, grad_phi L_test(phi)). H is applied
through Hessian-vector products of the training (support) loss at phi, batch norm in training mode
(`pymeta.hvp`). Memory does not grow with the
number of inner steps: nothing is differentiated through the inner loop.

Practical notes.
+ The implicit gradient is exact only if the inner loop (nearly) minimises the proximal objective; with
  a few SGD steps of learning rate a, (1 / (T a)) is the strength of regularisation the inner loop
  actually applies, so lambda should not be far below it.
+ The Hessian of a network is not positive definite: I + H/lambda can be indefinite (eigenvalues of
  H below -lambda). `cg_damping` (e.g. 1.0) adds to the diagonal; CG stops at a non-positive
  curvature and the iterate of smallest residual is kept (watch `last_cg_residual`).
+ On the Omniglot CNN, H/lambda with lambda = 2 is so badly conditioned that 5 CG steps barely reduce
  the residual (measured on 5 tasks of a partly trained network: relative residual 0.44-0.66 started
  from zero, 0.67-1.59 started from the right-hand side, which this class did before). The reference
  implementation (aravindr93/imaml_dev) therefore divides H by lambda + lam_damping (its default
  lam_damping = 10, with cg_damping = 1): `lam_damping` here does the same (residual 0.001-0.02 on
  the same tasks). It solves a more damped system than the exact implicit gradient; 0 is exact.
+ Nothing in the implicit gradient sees whether the inner optimiser is stable. On sinusoid regression
  (`make_sinusoid_model`, inner SGD 0.01, 10 steps, lambda 2, cg_damping 1, 5 CG steps, meta-batch 5,
  Adam 0.001) meta-training sharpens the initialisation (median largest Hessian eigenvalue of a task's
  training loss at theta: ~25 after 100 meta-iterations, ~145 after 400) until the inner SGD diverges
  on some tasks (NaN after ~500 meta-iterations; the post-adaptation MSE was 5.1 -> 1.6 by then).
  The FOMAML gradient (0 CG steps, same inner loop) sharpens too, more slowly (~120 after 500).
  MAML's gradient, taken through the inner steps, accounts for their stability. Measured mitigations:
  a smaller inner learning rate (0.005, 20 steps, lambda 5) delays the divergence; clipping the
  meta-gradient (global_clipnorm=10) does not prevent it; an inner Adam avoids the NaN but the MSE
  then drifts up.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import tensorflow as tf

from pymeta import hvp, optim
from pymeta.core.bounds import CG_TOL, DAMPING, LAMBDA_REG
from pymeta.core.learner import Tensors
from pymeta.core.meta_learner import Aux, GradBasedMetaLearner
from pymeta.core.task import Task
from pymeta.core.task_data import TaskData
from pymeta.metalearners.fomaml import query_gradient

IMAML_INNER_MODES = ("proximal", "pullback")


class iMAMLMetaLearner(GradBasedMetaLearner):
    """iMAML with a conjugate-gradient meta-gradient.

    Args:
        model, optimizer: the Keras model whose initialisation is meta-learnt, the outer optimizer.
        lambda_reg: lambda, the strength of the proximal term (lambda/2)||phi - theta||^2 (and of the
            implicit gradient).
        n_iters_optimizer: conjugate-gradient steps per task (0: the FOMAML gradient).
        cg_damping: extra diagonal added to I + H/lambda (helps when H has large negative eigenvalues).
        lam_damping: the meta-gradient's system uses H / (lambda + lam_damping) (the reference
            implementation's damping; 0: the exact implicit gradient). The inner loop keeps lambda.
        cg_tol: CG stops early once its residual is below cg_tol * ||b||.
        hvp_method: how Hessian-vector products are computed (`pymeta.hvp.HVP_METHODS`).
        inner_mode: "proximal" or "pullback" (see the module doc).
        **kwargs: inner_optimizer, loss, objective, jit_compile, name: see `GradBasedMetaLearner`.

    Each task's auxiliary values: 'cg_residual', the relative CG residual ||b - A g|| / ||b|| of the
    returned solution g (A = (1 + cg_damping) I + H / (lambda + lam_damping), b the query gradient),
    and 'cg_steps', the CG iterations actually run (each one Hessian-vector product; CG stops once
    the residual is below cg_tol * ||b||). `metatrain_step(s)` and `update` return their means over
    the tasks; the residual is also kept in `last_cg_residual`.
    """

    aux_names: Tuple[str, ...] = ("last_minibatch_loss", "cg_residual", "cg_steps")
    supports_persistent_inner_state = False

    def __init__(self, model: Any, optimizer: Any, lambda_reg: float = 2.0, n_iters_optimizer: int = 5,
                 cg_damping: float = 1.0, cg_tol: float = 1e-6, hvp_method: str = hvp.DEFAULT_HVP_METHOD,
                 lam_damping: float = 0.0, inner_mode: str = "pullback", **kwargs: Any) -> None:
        super().__init__(model, optimizer, **kwargs)
        self.lambda_reg = LAMBDA_REG.check(lambda_reg, "lambda_reg")
        if int(n_iters_optimizer) != n_iters_optimizer or n_iters_optimizer < 0:
            raise ValueError(f"n_iters_optimizer must be an integer >= 0, got {n_iters_optimizer}")
        self.cg_damping = DAMPING.check(cg_damping, "cg_damping")
        self.lam_damping = DAMPING.check(lam_damping, "lam_damping")
        self.cg_tol = CG_TOL.check(cg_tol, "cg_tol")
        if hvp_method not in hvp.HVP_METHODS:
            raise ValueError(f"hvp_method must be one of {hvp.HVP_METHODS}, got {hvp_method!r}")
        if inner_mode not in IMAML_INNER_MODES:
            raise ValueError(f"inner_mode must be one of {IMAML_INNER_MODES}, got {inner_mode!r}")
        self.n_iters_optimizer = int(n_iters_optimizer)
        self.hvp_method = hvp_method
        self.inner_mode = inner_mode
        self.last_cg_residual: Optional[float] = None

    # --- the inner loop --------------------------------------------------------------------------------
    def inner_optimizer_for(self, theta: Optional[Sequence[tf.Tensor]]) -> optim.GradientTransformation:
        if self.inner_mode == "pullback" or theta is None:
            return self.inner_optimizer
        return optim.chain(optim.add_proximal_gradient(theta, self.lambda_reg), self.inner_optimizer)

    def pull_back(self, theta: Sequence[tf.Tensor], phi: Sequence[tf.Tensor]) -> Tensors:
        """The reference implementation's last inner step: phi - alpha lambda (phi - theta)."""
        rate = self.inner_optimizer.config["learning_rate"] * self.lambda_reg
        return [p - tf.cast(rate, p.dtype) * (p - tf.cast(t, p.dtype)) for p, t in zip(phi, theta)]

    # --- the meta-gradient -------------------------------------------------------------------------------
    def implicit_gradient(self, phi: Tensors, state: Tensors, support: Any, query: Any) -> Tuple[Tensors, tf.Tensor]:
        """(meta-gradient of one task: list of tensors, relative CG residual: scalar float32).

        Solves ((1 + cg_damping) I + H / (lambda + lam_damping)) g = d objective(phi, query) / d phi,
        H the Hessian of the objective on the `support` batch at phi (batch norm in training mode), CG
        started from zero. The Hessian of a network need not be positive definite: the CG iterate of
        smallest residual is returned. Zero CG steps return the right-hand side (the FOMAML gradient),
        residual 0.
        """
        g, residual, _ = self.solve_implicit(phi, state, support, query)
        return g, residual

    def solve_implicit(self, phi: Tensors, state: Tensors, support: Any,
                       query: Any) -> Tuple[Tensors, tf.Tensor, tf.Tensor]:
        """`implicit_gradient` plus the number of CG steps run (float32 scalar; CG skips the steps after
        its residual fell below cg_tol * ||b||)."""
        b = query_gradient(self, phi, state, query)
        if self.n_iters_optimizer == 0:
            return b, tf.constant(0.0), tf.constant(0.0)
        hessian = hvp.HessianOperator(lambda p: self.objective(p, state, support), phi, self.hvp_method)
        inv_lambda = 1.0 / (self.lambda_reg + self.lam_damping)

        def matvec(v):
            return [vi + tf.cast(inv_lambda, vi.dtype) * hv for vi, hv in zip(v, hessian(v))]

        result = hvp.conjugate_gradient(matvec, b, self.n_iters_optimizer, damping=self.cg_damping,
                                        tol=self.cg_tol, return_best=True)
        b_norm = hvp.vnorm(b)
        relative = tf.reduce_min(result.residual_norms) / tf.maximum(b_norm, tf.cast(1e-30, b_norm.dtype))
        return result.x, tf.cast(relative, tf.float32), tf.cast(result.steps, tf.float32)

    def task_result(self, theta: Tensors, phi: Tensors, state: Tensors, data: TaskData) -> Tuple[Tensors, Aux]:
        if self.inner_mode == "pullback":
            phi = self.pull_back(theta, phi)
        grads, residual, steps = self.solve_implicit(phi, state, data.support, data.query)
        return grads, {"cg_residual": residual, "cg_steps": steps}

    def meta_gradient(self, theta: Tensors, mean_result: Tensors) -> Tensors:
        return mean_result

    # --- the residual, for the user ----------------------------------------------------------------------
    def metatrain_steps(self, meta_batches: Sequence[Sequence[Task]], num_inner_iterations: int,
                        inner_batch_size: int = -1) -> List[Dict[str, float]]:
        out = super().metatrain_steps(meta_batches, num_inner_iterations, inner_batch_size)
        if out:
            self.last_cg_residual = float(sum(d["cg_residual"] for d in out) / len(out))
        return out

    def update(self, list_of_results: Sequence[Sequence[Any]], tasks: Optional[Sequence[Task]] = None,
               **kwargs: Any) -> Dict[str, float]:
        aux = super().update(list_of_results, tasks, **kwargs)
        self.last_cg_residual = aux.get("cg_residual")
        return aux
