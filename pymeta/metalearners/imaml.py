"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019, https://arxiv.org/abs/1909.04630).

Inner loop: from theta, minimise the task's training loss plus the proximal term
(lambda / 2) ||phi - theta||^2 (approximately, with the usual inner optimizer and steps).
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

import tensorflow as tf

from pymeta import hvp
from pymeta.core.meta_learner import GradBasedMetaLearner
from pymeta.core.task import TaskAsSequenceOfTasks
from pymeta.inner_loop import functional_model_for


class iMAMLMetaLearner(GradBasedMetaLearner):
    """iMAML with a conjugate-gradient meta-gradient.

    Args:
        model, optimizer: the Keras model whose initialisation is meta-learnt, the outer optimizer.
        lambda_reg: lambda, the strength of the proximal term (lambda/2)||phi - theta||^2 of the inner
            objective (and of the implicit gradient).
        n_iters_optimizer: conjugate-gradient steps per task (0: the FOMAML gradient).
        cg_damping: extra diagonal added to I + H/lambda (helps when H has large negative eigenvalues).
        lam_damping: the meta-gradient's system uses H / (lambda + lam_damping) (the reference
            implementation's damping; 0: the exact implicit gradient). The inner loop keeps lambda.
        cg_tol: CG stops early once its residual is below cg_tol * ||b||.
        hvp_method: how Hessian-vector products are computed (`pymeta.hvp.HVP_METHODS`).
        **kwargs: inner_optimizer, loss, jit_compile, name: see `GradBasedMetaLearner`.

    The proximal term is installed as the inner regularizer of a `FunctionalModel` of this meta-learner's
    own (attached to the model), so the fast path, `task.fit_n_iterations` in the step-by-step API and
    `evaluate_tasks` all minimise it, anchored at the current meta-parameters. A meta-learner created
    later on the same model without loss/inner_optimizer arguments would share it: create a new one
    with explicit arguments if you switch algorithms on one model.

    After every `metatrain_step(s)` / `sum_task_results` call, and after every `task_end`,
    `last_cg_residual` holds the mean over the tasks concerned (the tasks of the call, or the tasks
    ended since the last `update`) of the relative CG residual ||b - A g|| / ||b|| of the returned
    solution g (recurrence residual, A = (1 + cg_damping) I + H / lambda, b the query gradient);
    `metatrain_step(s)` also return it as 'cg_residual'.
    """

    def __init__(self, model, optimizer, lambda_reg=2.0, n_iters_optimizer=5, cg_damping=0.0,
                 cg_tol=1e-6, hvp_method=hvp.DEFAULT_HVP_METHOD, lam_damping=0.0, **kwargs):
        super().__init__(model, optimizer, **kwargs)
        if not lambda_reg > 0:
            raise ValueError(f"lambda_reg must be > 0, got {lambda_reg}")
        if int(n_iters_optimizer) != n_iters_optimizer or n_iters_optimizer < 0:
            raise ValueError(f"n_iters_optimizer must be an integer >= 0, got {n_iters_optimizer}")
        if not cg_damping >= 0:
            raise ValueError(f"cg_damping must be >= 0, got {cg_damping}")
        if not lam_damping >= 0:
            raise ValueError(f"lam_damping must be >= 0, got {lam_damping}")
        if not cg_tol >= 0:
            raise ValueError(f"cg_tol must be >= 0, got {cg_tol}")
        if hvp_method not in hvp.HVP_METHODS:
            raise ValueError(f"hvp_method must be one of {hvp.HVP_METHODS}, got {hvp_method!r}")
        self.lambda_reg = float(lambda_reg)
        self.n_iters_optimizer = int(n_iters_optimizer)
        self.cg_damping = float(cg_damping)
        self.lam_damping = float(lam_damping)
        self.cg_tol = float(cg_tol)
        self.hvp_method = hvp_method
        # a FunctionalModel of our own, so that no compiled inner loop traced without the proximal term
        # (e.g. by a previous meta-learner of the same model) is reused
        shared = self.fmodel
        self.fmodel = functional_model_for(model, loss=shared.loss_fn, inner_optimizer=shared.inner_optimizer)
        self.fmodel.jit_compile = shared.jit_compile
        self.fmodel.unroll = shared.unroll
        self.fmodel.inner_regularizer = self.proximal_term
        self._residual_sum = tf.Variable(0.0, trainable=False, name="imaml_cg_residual_sum")
        self._residual_count = tf.Variable(0.0, trainable=False, name="imaml_cg_residual_count")
        self._pending_residuals = []
        self.last_cg_residual = None

    # --- the inner objective ---------------------------------------------------------------------------
    def proximal_term(self, params):
        """(lambda / 2) ||params - theta||^2, theta read from the meta-parameters."""
        if self.meta_variables is None:
            raise RuntimeError("iMAML's inner loop needs the meta-parameters: call metalearner.initialize() "
                               "or metalearner.task_begin(task) before fitting a task")
        sq = tf.add_n([tf.reduce_sum(tf.square(p - tf.cast(t, p.dtype)))
                       for p, t in zip(params, self.meta_variables)])
        return 0.5 * self.lambda_reg * sq

    # --- the meta-gradient -------------------------------------------------------------------------------
    def implicit_gradient(self, phi, state, support_x, support_y, query_x, query_y):
        """(meta-gradient of one task: list of tensors, relative CG residual: scalar float32).

        Solves ((1 + cg_damping) I + H / (lambda + lam_damping)) g = d L_query / d phi at phi, H the
        Hessian of the mean training loss on the support set (batch norm in training mode), CG started
        from zero. The Hessian of a network need not be positive definite: the CG iterate of smallest
        residual is returned. Zero CG steps return the right-hand side (the FOMAML gradient), residual 0.
        """
        fm = self.fmodel
        _, b = fm.loss_and_grad(phi, state, query_x, query_y)
        if self.n_iters_optimizer == 0:
            return b, tf.constant(0.0)
        hessian = hvp.training_loss_hessian(fm, phi, state, support_x, support_y, self.hvp_method)
        inv_lambda = 1.0 / (self.lambda_reg + self.lam_damping)

        def matvec(v):
            return [vi + tf.cast(inv_lambda, vi.dtype) * hv for vi, hv in zip(v, hessian(v))]

        result = hvp.conjugate_gradient(matvec, b, self.n_iters_optimizer, damping=self.cg_damping,
                                        tol=self.cg_tol, return_best=True)
        b_norm = hvp.vnorm(b)
        relative = tf.reduce_min(result.residual_norms) / tf.maximum(b_norm, tf.cast(1e-30, b_norm.dtype))
        return result.x, tf.cast(relative, tf.float32)

    def task_result(self, theta, phi, state, query_x, query_y):
        raise NotImplementedError("iMAML's task result needs the support set: it is computed by task_step "
                                  "(fast path) and task_end (step-by-step API)")

    def meta_gradient(self, theta, mean_result):
        return mean_result

    def task_step(self, theta, state, support_x, support_y, batch_indices, query_x, query_y):
        phi, loss = self.fmodel.adapt(theta, state, support_x, support_y, batch_indices)
        grads, residual = self.implicit_gradient(phi, state, support_x, support_y, query_x, query_y)
        self._residual_sum.assign_add(residual)
        self._residual_count.assign_add(1.0)
        return grads, loss

    # --- the fast path: expose the CG residual -----------------------------------------------------------
    def _reset_residuals(self):
        self._residual_sum.assign(0.0)
        self._residual_count.assign(0.0)

    def _read_residuals(self):
        count = float(self._residual_count.numpy())
        self.last_cg_residual = float(self._residual_sum.numpy()) / count if count else None
        return self.last_cg_residual

    def metatrain_steps(self, meta_batches, num_inner_iterations, inner_batch_size=-1):
        """As `GradBasedMetaLearner.metatrain_steps`; each returned dict also has 'cg_residual', the
        mean relative CG residual over all the tasks of the call (also in `last_cg_residual`)."""
        self._reset_residuals()
        out = super().metatrain_steps(meta_batches, num_inner_iterations, inner_batch_size)
        residual = self._read_residuals()
        for d in out:
            d["cg_residual"] = residual
        return out

    def sum_task_results(self, tasks, num_inner_iterations, inner_batch_size=-1):
        self._reset_residuals()
        out = super().sum_task_results(tasks, num_inner_iterations, inner_batch_size)
        self._read_residuals()
        return out

    # --- the step-by-step API --------------------------------------------------------------------------
    def task_end(self, task=None, **kwargs):
        """The implicit meta-gradient of the model's current (adapted) weights on `task` (for a
        sequence of tasks, its last task): support set for the Hessian, test set for the gradient."""
        if task is None:
            raise ValueError(f"{self.name}.task_end needs the task")
        if isinstance(task, TaskAsSequenceOfTasks):
            task = task.get_task_by_index(-1)
        sx, sy = task.get_train_set()
        qx, qy = task.get_test_set()
        grads, residual = self._function("imaml_task_end", self._imaml_task_end_fn)(sx, sy, qx, qy)
        self._pending_residuals.append(float(residual))
        self.last_cg_residual = sum(self._pending_residuals) / len(self._pending_residuals)
        return grads

    def _imaml_task_end_fn(self, sx, sy, qx, qy):
        fm = self.fmodel
        return self.implicit_gradient(fm.read_params(), fm.read_state(), sx, sy, qx, qy)

    def update(self, list_of_results, **kwargs):
        super().update(list_of_results, **kwargs)
        self._pending_residuals = []
