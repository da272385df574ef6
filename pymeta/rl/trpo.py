"""The MAML paper's TRPO outer step for MAML-RL (as in cbfinn/maml_rl and pytorch-maml-rl).

For a meta-batch of recorded tasks (stacked `TaskData`: inner [M, T, N, ...], query [M, N, ...]),
with phi_i(theta) the adaptation of theta on task i's inner batches (the one inner loop) and
pi_old_i the post-adaptation policy that collected task i's query episodes (phi_i(theta_old)):

    surrogate(theta) = mean_i -sum(mask * exp(log pi_phi_i(a|s) - log pi_old_i(a|s)) * adv) / sum(mask)
    kl(theta)        = mean_i sum(mask * KL(pi_phi_i(.|s) || pi_old_i(.|s))) / sum(mask)

Step: g = d surrogate / d theta (through the adaptation: MAML's meta-gradient), x = CG(H + damping I,
g) with H v the Hessian-vector products of kl at theta_old (`pymeta.hvp`, through the adaptation),
full step x sqrt(2 max_kl / x^T (H + damping I) x) (as rllab; the quadratic form from CG's residual r,
(H + damping I) x = g - r, without another product), then a backtracking line search (ratio 0.8, 15 tries) that
accepts the first theta_old - ratio^k step with surrogate below the old one and kl <= max_kl;
if none qualifies, theta is unchanged.

Under MPI (`collectives` set) each rank holds its own tasks' data; every mean over the tasks (loss and
gradient, each KL Hessian-vector product of CG, each line-search evaluation) is combined across the
ranks by an Allreduce inside the compiled step, so all ranks take the same step and theta stays equal.

`TRPOStep` is this outer step (a `pymeta.core.protocols.OuterStep`): any MAML meta-learner takes it,
`MAMLMetaLearner(model, outer_step=TRPOStep(max_kl=0.01), inner_optimizer=..., objective=agent.objective)`;
`MAMLTRPOMetaLearner(model, max_kl=...)` builds exactly that.
"""

import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pymeta.core.bounds import DAMPING, MAX_KL, Bound
from pymeta.core.compiled import CompiledFunctions
from pymeta.core.meta_learner import for_each_task
from pymeta.core.task_data import TaskData, stack_task_data, task_slice
from pymeta.hvp import (HessianOperator, conjugate_gradient, gauss_newton_vector_product,
                        hvp_reverse_over_reverse_recompute, vdot)
from pymeta.metalearners.maml import MAMLMetaLearner
from pymeta.mpi import Collectives
from pymeta.rl.agent import Agent
from pymeta.rl.task import agent_of_learner

if TYPE_CHECKING:  # pragma: no cover
    from pymeta.core.meta_learner import GradBasedMetaLearner

log = logging.getLogger(__name__)

TRPO_HVP_METHODS = ("gauss_newton", "per_task", "shared")


def line_search(theta: Sequence[tf.Tensor], full_step: Sequence[tf.Tensor], evaluate: Callable,
                old_loss: float, max_kl: float, ratio: float = 0.8,
                max_backtracks: int = 15) -> Tuple[Optional[List[tf.Tensor]], int, float, float]:
    """The first candidate theta - ratio^k full_step (k = 0, 1, ...) whose evaluate(candidate) ->
    (loss, kl) has loss < old_loss and kl <= max_kl: (candidate or None, k, loss, kl)."""
    loss = kl = float("nan")
    for k in range(int(max_backtracks)):
        scale = ratio ** k
        candidate = [t - scale * s for t, s in zip(theta, full_step)]
        loss, kl = (float(v) for v in evaluate(candidate))
        if np.isfinite(loss) and loss < old_loss and kl <= max_kl:
            return candidate, k, loss, kl
    return None, int(max_backtracks), loss, kl


class TRPOStep:
    """The TRPO outer step of MAML-RL (see the module doc); a `pymeta.core.protocols.OuterStep` of a
    `MAMLMetaLearner` whose objective is an agent's `PolicyGradientObjective`.

    Args:
        max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks: the paper's 0.01, 10, 1e-5,
            0.8, 15 by default.
        hvp: how the KL Hessian-vector products of CG are computed, each the mean over the tasks of
            theirs: "gauss_newton" (default) J^T F J v with J the Jacobian of the adapted policy's outputs
            (a forward-mode and a reverse pass through the adaptation; equal to the Hessian at theta_old,
            where every task's KL is at its minimum), "per_task" (reverse over reverse, fresh tapes per
            task: third derivatives of the inner loss), "shared" (reverse over reverse through one
            `HessianOperator` sharing the forward and first backward pass of all tasks; slow to compile).
        collectives: a `pymeta.mpi.Collectives` under MPI (each rank holds its own tasks; may be set
            later, before the first step).

    `last_trpo`: the last step's statistics. `variables` (what a checkpoint stores): `iterations`
    (int64, TRPO steps taken) and `last_kl` (float32, the KL of the last accepted step); two scalars
    of these dtypes, the layout of the checkpoints of earlier versions (which hold 0 and 0.0 there).
    """

    def __init__(self, max_kl: float = 0.01, cg_iters: int = 10, cg_damping: float = 1e-5,
                 backtrack_ratio: float = 0.8, max_backtracks: int = 15, hvp: str = "gauss_newton",
                 collectives: Optional[Collectives] = None):
        self.max_kl = MAX_KL.check(max_kl, "max_kl")  # TRPO's step size
        self.cg_iters, self.cg_damping = int(cg_iters), DAMPING.check(cg_damping, "cg_damping")
        self.backtrack_ratio = Bound(above=0.0, below=1.0).check(backtrack_ratio, "backtrack_ratio")
        self.max_backtracks = int(max_backtracks)
        if hvp not in TRPO_HVP_METHODS:
            raise ValueError(f"unknown TRPO Hessian-vector product {hvp!r}: use one of {', '.join(TRPO_HVP_METHODS)}")
        self.hvp = hvp
        self.collectives = collectives
        self.last_trpo: Dict[str, float] = {}
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="trpo_iterations")
        self.last_kl = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="trpo_last_kl")
        self._learner: Optional["GradBasedMetaLearner"] = None
        self._compiled = CompiledFunctions()

    def __repr__(self) -> str:
        return f"TRPOStep(max_kl={self.max_kl}, hvp={self.hvp!r})"

    # --- the OuterStep protocol ----------------------------------------------------------------------------
    @property
    def variables(self) -> List[tf.Variable]:
        return [self.iterations, self.last_kl]

    def build(self, learner: "GradBasedMetaLearner") -> None:
        if self._learner is not None and self._learner is not learner:
            raise ValueError("this TRPOStep already steps another meta-learner: give each its own")
        agent_of_learner(learner)  # a one-line error now for a learner without a policy-gradient objective
        self._learner = learner
        self._compiled.jit_compile = learner.jit_compile

    def metatrain(self, learner: "GradBasedMetaLearner", meta_batches: Sequence[Sequence[Any]],
                  num_inner_iterations: int, inner_batch_size: int = -1) -> List[Dict[str, float]]:
        """For each meta-batch in turn: collect it with the current theta (`stack_tasks`), one TRPO
        step. Each dict: `last_trpo` and 'seconds_collect'."""
        out = []
        for tasks in meta_batches:
            start = time.perf_counter()
            data = learner.stack_tasks(tasks, num_inner_iterations, inner_batch_size)
            seconds = time.perf_counter() - start
            out.append({**self.step(learner, data), "seconds_collect": seconds})
        return out

    def update(self, learner: "GradBasedMetaLearner", results: Sequence[Sequence[Any]],
               tasks: Optional[Sequence[Any]] = None) -> Dict[str, float]:
        """Step by step: TRPO on the data the `tasks` recorded (`task.last_fit`; the results are not
        used: the step recomputes the tasks from theta)."""
        if tasks is None:
            raise ValueError("the TRPO outer step needs the tasks' recorded data: update(results, tasks=tasks)")
        return self.step(learner, stack_task_data([t.last_fit for t in tasks]))

    # --- the step ------------------------------------------------------------------------------------------
    @property
    def learner(self) -> "GradBasedMetaLearner":
        if self._learner is None:
            raise ValueError("the TRPO step is not built: initialize its meta-learner first")
        return self._learner

    @property
    def agent(self) -> Agent:
        return agent_of_learner(self.learner)

    def step(self, learner: "GradBasedMetaLearner", data: TaskData) -> Dict[str, float]:
        """One TRPO step on stacked task data (leaves [M, ...]); theta (and the model) move to the
        accepted candidate. Returns {'surrogate_before', 'surrogate_after', 'kl', 'backtracks',
        'accepted', 'expected_improvement', 'seconds_direction' (gradient + CG), 'seconds_line_search'}."""
        meta_variables = learner.ensure_initialized()
        data = tf.nest.map_structure(tf.convert_to_tensor, data)
        theta = learner.theta_tensors()
        start = time.perf_counter()
        with learner.compiled_call_options():
            step, old_loss, old, expected = self._compiled.get("direction", self._direction_fn)(
                theta, data, tf.constant(self.max_kl, tf.float64))
            evaluate = self._compiled.get("evaluate", self._evaluate_fn)
            old_loss = float(old_loss)
            seconds_direction = time.perf_counter() - start
            candidate, k, loss, kl = line_search(theta, step, lambda th: evaluate(th, data, old), old_loss,
                                                 self.max_kl, self.backtrack_ratio, self.max_backtracks)
        if candidate is not None:
            for v, c in zip(meta_variables, candidate):
                v.assign(c)
            self.last_kl.assign(kl)
        else:
            log.info("TRPO: line search found no step improving the surrogate within the KL bound")
        self.iterations.assign_add(1)
        learner.load_theta_into_model()
        self.last_trpo = {"surrogate_before": float(old_loss), "surrogate_after": loss if candidate is not None
                          else float(old_loss), "kl": kl if candidate is not None else 0.0,
                          "backtracks": float(k), "accepted": float(candidate is not None),
                          "expected_improvement": float(expected), "seconds_direction": seconds_direction,
                          "seconds_line_search": time.perf_counter() - start - seconds_direction}
        return self.last_trpo

    # --- pure functions of theta and the stacked data (one task at a time, in tf.while_loops) ---------------
    def _task_outputs(self, theta, state, task):
        """The adapted policy's outputs [N, D] on the task's query observations. The inner steps are
        unrolled (straight-line code; faster for CG's products than a `tf.while_loop` of one step)."""
        phi, _, _ = self.learner.adapt(theta, state, task.inner, theta=theta, unroll=True)
        return self.agent.outputs(phi, state, task.query[0])

    def _task_surrogate_and_kl(self, theta, state, task, old):
        """(surrogate, mean KL(new || old)) of one task; old: the outputs [N, D] that collected its query."""
        out = self._task_outputs(theta, state, task)
        return self._surrogate(out, old, task), self._mean_kl(out, old, task.query[3])

    def _surrogate(self, out, old, task):
        """-mean over the unmasked query steps of pi_out(a|s) / pi_old(a|s) * advantage."""
        agent = self.agent
        _, actions, adv, mask = task.query
        ratio = tf.exp(_log_prob(agent, out, actions) - _log_prob(agent, old, actions))
        return -tf.reduce_sum(mask * ratio * adv) / tf.reduce_sum(mask)

    def _mean_kl(self, out, old, mask):
        """mean over the unmasked steps of KL(pi_out || pi_old); out, old [N, D], mask [N]."""
        return tf.reduce_sum(mask * self.agent.kl(out, old)) / tf.reduce_sum(mask)

    def _kl_hvp(self, theta, state, data, old):
        """v -> H v, H the Hessian at theta of the mean over the tasks of their KL (see `hvp`)."""
        if self.hvp == "gauss_newton":  # exact at theta_old, where each task's KL is at its minimum
            def per_task(v):
                return lambda i, task: gauss_newton_vector_product(
                    lambda th: self._task_outputs(th, state, task),
                    lambda out: self._mean_kl(out, old[i], task.query[3]), theta, v)
            return lambda v: self._mean_over_tasks(data, per_task(v), theta)
        if self.hvp == "per_task":
            return lambda v: self._mean_over_tasks(data, lambda i, task: hvp_reverse_over_reverse_recompute(
                lambda th: self._task_surrogate_and_kl(th, state, task, old[i])[1], theta, v), theta)
        zero = tf.zeros([], theta[0].dtype)  # one forward and first backward pass for all the products
        return HessianOperator(lambda th: self._mean_over_tasks(
            data, lambda i, task: [self._task_surrogate_and_kl(th, state, task, old[i])[1]], [zero])[0], theta)

    def _mean_over_tasks(self, data, per_task, like):
        """mean over the tasks of per_task(i, task) (a list of tensors shaped like `like`); under MPI
        (`collectives`), over the tasks of all ranks: one Allreduce of the sums and the task count."""
        def step(i, acc):
            return [a + r for a, r in zip(acc, per_task(i, task_slice(data, i)))]

        return self._mean_of_sums(data, for_each_task(data, step, [tf.zeros_like(t) for t in like]))

    def _mean_of_sums(self, data, total):
        count = tf.cast(_num_tasks(data), tf.float64)
        if self.collectives is not None and self.collectives.size > 1:
            *total, count = self.collectives.allreduce_sum_tensors(list(total) + [count])
        return [t / tf.cast(count, t.dtype) for t in total]

    def _loss_gradient_and_old(self, theta, state, data):
        """(mean surrogate, its gradient, the old outputs [M, N, D]) at theta = theta_old, in one pass over
        the tasks: there each task's adapted outputs are its old ones (held constant)."""
        def step(i, carry):
            acc, outs = carry
            task = task_slice(data, i)
            with tf.GradientTape() as tape:
                tape.watch(theta)
                out = self._task_outputs(theta, state, task)
                old = tf.stop_gradient(out)
                loss = self._surrogate(out, old, task)
            grads = tape.gradient(loss, theta, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            return [a + r for a, r in zip(acc, [loss] + grads)], outs.write(i, old)

        init = ([tf.zeros([], theta[0].dtype)] + [tf.zeros_like(t) for t in theta],
                tf.TensorArray(theta[0].dtype, size=_num_tasks(data)))
        total, outs = for_each_task(data, step, init)
        loss, *g = self._mean_of_sums(data, total)
        return loss, g, outs.stack()

    def _direction_fn(self, theta, data, max_kl):
        state = self.learner.state_tensors()
        loss, g, old = self._loss_gradient_and_old(theta, state, data)

        hvp = self._kl_hvp(theta, state, data, old)
        cg = conjugate_gradient(hvp, g, tf.constant(self.cg_iters), damping=self.cg_damping)
        x = cg.x
        assert cg.residual is not None
        shs = 0.5 * vdot(x, [gi - ri for gi, ri in zip(g, cg.residual)])  # x^T (H + damping I) x / 2
        scale = tf.sqrt(shs / tf.cast(max_kl, shs.dtype))
        return [xi / scale for xi in x], loss, old, vdot(g, x) / scale

    def _evaluate_fn(self, theta, data, old):
        state = self.learner.state_tensors()
        zero = tf.zeros([], theta[0].dtype)
        loss, kl = self._mean_over_tasks(
            data, lambda i, task: list(self._task_surrogate_and_kl(theta, state, task, old[i])), [zero, zero])
        return loss, kl


class MAMLTRPOMetaLearner(MAMLMetaLearner):
    """MAML with the TRPO outer step: `MAMLMetaLearner(model, outer_step=TRPOStep(max_kl, ...), **kwargs)`
    under its earlier name and constructor (see `TRPOStep` for the arguments). Fast path:
    `metatrain_step(tasks, T, E)`; step by step: `update(results, tasks=tasks)` (every meta-learner's
    `update` takes the tasks; TRPO needs the data they recorded).

    Args:
        model: the policy model; objective: the agent's policy-gradient objective (required).
        max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks, hvp: see `TRPOStep`.
        **kwargs: inner_optimizer, first_order, ...: see `MAMLMetaLearner` (no outer optimizer).
    """

    outer_step: TRPOStep

    def __init__(self, model: Any, max_kl: float = 0.01, cg_iters: int = 10, cg_damping: float = 1e-5,
                 backtrack_ratio: float = 0.8, max_backtracks: int = 15, hvp: str = "gauss_newton",
                 **kwargs: Any):
        step = TRPOStep(max_kl, cg_iters, cg_damping, backtrack_ratio, max_backtracks, hvp)
        super().__init__(model, outer_step=step, **kwargs)

    # the step's settings and results, under the names they had on this class
    @property
    def trpo(self) -> TRPOStep:
        return self.outer_step

    @property
    def agent(self) -> Agent:
        return agent_of_learner(self)

    @property
    def collectives(self) -> Optional[Collectives]:
        return self.outer_step.collectives

    @collectives.setter
    def collectives(self, value: Optional[Collectives]) -> None:
        self.outer_step.collectives = value

    @property
    def last_trpo(self) -> Dict[str, float]:
        return self.outer_step.last_trpo

    @property
    def max_kl(self) -> float:
        return self.outer_step.max_kl

    @max_kl.setter
    def max_kl(self, value: float) -> None:
        self.outer_step.max_kl = float(value)

    @property
    def hvp(self) -> str:
        return self.outer_step.hvp

    @hvp.setter
    def hvp(self, value: str) -> None:  # before the first step traces it
        if value not in TRPO_HVP_METHODS:
            raise ValueError(f"unknown TRPO Hessian-vector product {value!r}: use one of {', '.join(TRPO_HVP_METHODS)}")
        self.outer_step.hvp = value

    def trpo_update(self, data: TaskData) -> Dict[str, float]:
        """One TRPO step on stacked task data (see `TRPOStep.step`)."""
        return self.outer_step.step(self, data)


def _num_tasks(data):
    return tf.shape(tf.nest.flatten(data)[0])[0]


def _log_prob(agent, outputs, actions):
    from pymeta.rl.policies import categorical_log_prob, gaussian_log_prob
    return gaussian_log_prob(outputs, actions) if agent.kind == "box" else categorical_log_prob(outputs, actions)
