"""The declared seams of the core (issue #35): the optax contract of `pymeta.optim` (bit-identical to
the update rules it replaced, same on-disk state layout), the outer step as a strategy, the
distributed wrapper's declared interface, the compiled adaptation of a meta-batch, the one cross-rank
reduction and the one compiled-function cache."""

import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import optim
from pymeta.core.compiled import CompiledFunctions
from pymeta.core.outer_step import OptimizerStep
from pymeta.core.protocols import CollectsTaskData, MetaLearnerLike, OuterStep, ProducesTaskData
from pymeta.metalearners import FOMAMLMetaLearner, MAMLMetaLearner, ReptileMetaLearner
from pymeta.metalearners.distributed import DistributedMetaLearner
from pymeta.mpi import Collectives, flatten_arrays, unflatten_arrays
from second_order_helpers import ArrayTask, mlp


def arrays(seed, shapes=((3, 2), (2,)), dtype=np.float32):
    rng = np.random.RandomState(seed)
    return [rng.randn(*s).astype(dtype) for s in shapes]


# --- pymeta.optim: transforms map updates to updates, bit-identical to the rules they replaced ----------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sgd_adam_and_the_proximal_chain_give_the_former_parameters_bit_for_bit(dtype):
    """Reference: the former update rules, written out (p - lr g; Keras' Adam with the step size
    bias-corrected; the proximal gradient g + lam (p - anchor) fed to SGD), compared with
    np.array_equal: the optax form (updates, then params + updates) changes no bit."""
    params, anchor = arrays(0, dtype=dtype), arrays(1, dtype=dtype)
    grads = [arrays(2 + k, dtype=dtype) for k in range(3)]
    p = [tf.constant(x) for x in params]

    sgd, p_sgd, p_ref = optim.sgd(0.1), list(p), list(p)
    state = sgd.init(p_sgd)
    for g in grads:
        updates, state = sgd.update([tf.constant(x) for x in g], state, p_sgd)
        p_sgd = optim.apply_updates(p_sgd, updates)
        p_ref = [q - tf.cast(0.1, q.dtype) * x for q, x in zip(p_ref, g)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(p_sgd, p_ref))

    adam, p_adam, p_ref = optim.adam(0.05, beta_1=0.5), list(p), list(p)
    state = adam.init(p_adam)
    ms, vs, step = [tf.zeros_like(q) for q in p], [tf.zeros_like(q) for q in p], tf.constant(0.0)
    for g in grads:
        g = [tf.constant(x) for x in g]
        updates, state = adam.update(g, state, p_adam)
        p_adam = optim.apply_updates(p_adam, updates)
        step = step + 1.0
        t_dtype = tf.float64 if dtype == np.float64 else tf.float32
        t = tf.cast(step, t_dtype)
        lr_t = 0.05 * tf.sqrt(1.0 - tf.pow(tf.constant(0.999, t_dtype), t)) / (1.0 - tf.pow(tf.constant(0.5, t_dtype), t))
        ms = [0.5 * m + (1.0 - 0.5) * x for m, x in zip(ms, g)]
        vs = [0.999 * v + (1.0 - 0.999) * tf.square(x) for v, x in zip(vs, g)]
        p_ref = [q - tf.cast(lr_t, q.dtype) * m / (tf.sqrt(v) + 1e-7) for q, m, v in zip(p_ref, ms, vs)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(p_adam, p_ref))

    prox = optim.chain(optim.add_proximal_gradient(anchor, 2.0), optim.sgd(0.1))
    p_prox, p_ref = list(p), list(p)
    state = prox.init(p_prox)
    for g in grads:
        updates, state = prox.update([tf.constant(x) for x in g], state, p_prox)
        p_prox = optim.apply_updates(p_prox, updates)
        pulled = [x + tf.cast(2.0, q.dtype) * (q - tf.cast(a, q.dtype)) for x, q, a in zip(g, p_ref, anchor)]
        p_ref = [q - tf.cast(0.1, q.dtype) * x for q, x in zip(p_ref, pulled)]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(p_prox, p_ref))


def test_states_are_named_and_keep_the_saved_layout():
    """Adam's state is an AdamState(count, mu, nu); a chain's a ChainState of its parts' states; the
    flat list a model file or checkpoint stores is (count, mu..., nu...), as before the states were
    named (so inner states saved by earlier versions load into the same variables)."""
    p = [tf.constant(x) for x in arrays(0)]
    state = optim.adam(0.1).init(p)
    assert isinstance(state, optim.AdamState) and state._fields == ("count", "mu", "nu")
    assert [tuple(t.shape) for t in tf.nest.flatten(state)] == [(), (3, 2), (2,), (3, 2), (2,)]
    chained = optim.chain(optim.add_proximal_gradient(p, 1.0), optim.adam(0.1)).init(p)
    assert isinstance(chained, optim.ChainState) and isinstance(chained.parts[0], optim.EmptyState)
    kept = optim.InnerStateVariables(optim.adam(0.1), p)
    old_layout = [np.float32(7.0)] + arrays(5) + arrays(6)  # count, mu..., nu... as files hold them
    assert kept.fits(old_layout)
    kept.write(old_layout)
    read = kept.read()
    assert float(read.count) == 7.0 and np.array_equal(read.nu[1].numpy(), old_layout[4])


# --- the outer step as a strategy ------------------------------------------------------------------------
def test_the_outer_step_is_a_strategy_with_one_update_signature():
    model = mlp([2, 3, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ml = FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01))
    assert isinstance(ml.outer_step, OptimizerStep) and ml.optimizer is ml.outer_step.optimizer
    with pytest.raises(ValueError, match="not both"):
        FOMAMLMetaLearner(model, keras.optimizers.Adam(0.01), outer_step=OptimizerStep(keras.optimizers.SGD(1.0)))
    with pytest.raises(ValueError, match="outer optimizer"):
        FOMAMLMetaLearner(model)
    # one `update` signature for every meta-learner (TRPO's takes the tasks the same way)
    from pymeta.rl.trpo import MAMLTRPOMetaLearner, TRPOStep
    signature = inspect.signature(MAMLMetaLearner.update)
    assert "tasks" in signature.parameters and MAMLTRPOMetaLearner.update is MAMLMetaLearner.update
    for step in (OptimizerStep(keras.optimizers.SGD(1.0)), TRPOStep()):
        for name in ("variables", "build", "metatrain", "update"):
            assert hasattr(step, name), (type(step).__name__, name)
    assert OuterStep is not None


def test_the_trpo_step_keeps_the_checkpoint_layout_of_the_optimizer_group():
    """Checkpoints store `metalearner.optimizer.variables`: MAML-TRPO's held Keras SGD(0)'s two
    scalars (int64 iterations, float32 learning rate); its TRPO step holds two scalars of those
    dtypes, so its checkpoints, old and new, load into it."""
    from pymeta.rl import Agent, make_gaussian_policy
    from pymeta.rl.navigation import Navigation2DEnv
    from pymeta.rl.trpo import MAMLTRPOMetaLearner
    model = make_gaussian_policy(2, 2, hidden=(4,), seed=0)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = MAMLTRPOMetaLearner(model, inner_optimizer=optim.sgd(0.1), objective=agent.objective)
    ml.initialize()
    legacy = keras.optimizers.SGD(0.0)
    legacy.build(ml.meta_variables)
    ours = ml.optimizer.variables
    assert [(tuple(v.shape), v.dtype) for v in ours] == [(tuple(v.shape), v.dtype) for v in legacy.variables]
    assert ml.agent is agent and ml.collectives is None
    with pytest.raises(ValueError, match="tasks"):
        ml.update([])


# --- the distributed wrapper's declared interface ---------------------------------------------------------
def test_single_process_and_distributed_meta_learners_declare_the_same_members(monkeypatch):
    for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    model = mlp([2, 3, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ml = ReptileMetaLearner(model, keras.optimizers.SGD(1.0))
    dml = DistributedMetaLearner(ml)
    assert "__getattr__" not in vars(DistributedMetaLearner)
    assert isinstance(ml, MetaLearnerLike) and isinstance(dml, MetaLearnerLike)
    with pytest.raises(AttributeError):
        dml.fmodel  # noqa: B018 - not forwarded: reached through dml.metalearner
    dml.initialize()
    assert dml.is_root and ml.is_root and dml.allreduce_max(3.0) == 3.0 == ml.allreduce_max(3.0)
    tasks = [ArrayTask(*arrays(k, ((4, 2), (4, 1))) * 2) for k in range(3)]
    assert ml.local_tasks(tasks) == tasks and len(dml.local_tasks(tasks)) == 3
    assert dml.meta_variables is ml.meta_variables and dml.outer_step is ml.outer_step
    assert dml.inner_state is None and dml.model is model


# --- the compiled adaptation of a meta-batch --------------------------------------------------------------
def test_adapt_tasks_equals_each_task_adapted_alone():
    """Reference: `Learner.adapt` task by task; `adapt_tasks` adapts the meta-batch in one call."""
    model = mlp([2, 3, 1])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    ml = FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0))
    ml.initialize()
    theta, state = ml.theta_tensors(), ml.state_tensors()
    rng = np.random.RandomState(0)
    x, y = rng.randn(4, 2, 5, 2).astype(np.float32), rng.randn(4, 2, 5, 1).astype(np.float32)  # [M, T, B, ...]
    stacked = ml.adapt_tasks(theta, None, (x, y))
    for i in range(4):
        alone, _, _ = ml.adapt(theta, state, (x[i], y[i]), theta=theta)
        for a, b in zip(alone, stacked):
            np.testing.assert_allclose(b[i].numpy(), a.numpy(), rtol=1e-6, atol=1e-7)


def test_task_types_declare_how_they_give_their_data():
    from pymeta.rl.navigation import Navigation2DTask
    supervised = ArrayTask(*arrays(0, ((4, 2), (4, 1))) * 2)
    rl = Navigation2DTask(horizon=5)
    assert isinstance(supervised, ProducesTaskData) and not isinstance(supervised, CollectsTaskData)
    assert isinstance(rl, CollectsTaskData) and not isinstance(rl, ProducesTaskData)


# --- one cross-rank reduction, one compiled-function cache ---------------------------------------------------
def test_the_cross_rank_reduction_on_one_process_returns_its_input():
    coll = Collectives(None)
    values = arrays(0) + [np.float32(3.0)]
    summed = coll.allreduce_sum_arrays(values, np.float32)
    assert all(np.array_equal(a, b) and a.dtype == np.float32 for a, b in zip(summed, values))
    flat = flatten_arrays(values, np.float64)
    assert flat.shape == (9,) and all(np.array_equal(a, b) for a, b in zip(unflatten_arrays(flat, values), values))
    tensors = [tf.constant(v) for v in values]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(coll.allreduce_sum_tensors(tensors), tensors))


def test_the_compiled_function_cache_traces_once_per_key():
    traces = []
    cache = CompiledFunctions()

    def f(x):
        traces.append(1)
        return 2 * x

    for n in (3, 4, 5):
        cache.get("double", f)(tf.ones([n]))
    assert cache.get("double", lambda x: x) is cache.get("double", f) and len(cache) == 1
    assert len(traces) <= 2  # reduce_retracing: one shape-specific trace, then one with a free dimension
