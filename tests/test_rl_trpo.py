"""The TRPO outer step of MAML-RL: the accepted step satisfies the KL constraint and improves the
surrogate (both recomputed independently), and the line search rejects steps violating it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import optim
from pymeta.rl import Agent, make_gaussian_policy, navigation2d
from pymeta.rl.navigation import Navigation2DEnv
from pymeta.rl.trpo import MAMLTRPOMetaLearner, line_search
from second_order_helpers import flat, floatx


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


def test_line_search_takes_the_first_step_inside_the_trust_region_that_improves():
    theta = [np.array([1.0, 1.0])]
    step = [np.array([1.0, 1.0])]
    # loss improves along the step; kl = 0.1 * ||theta - theta_old||^2 -> the full step has kl 0.2
    evaluate = lambda th: (float(np.sum(th[0] ** 2)), 0.1 * float(np.sum((th[0] - 1.0) ** 2)))
    cand, k, loss, kl = line_search(theta, step, evaluate, old_loss=2.0, max_kl=0.05, ratio=0.8, max_backtracks=15)
    # 0.2 * 0.8^(2k) <= 0.05 first at k = 4 (0.8^8 = 0.168 -> 0.0336; k = 3: 0.8^6 = 0.262 -> 0.0524)
    assert k == 4 and kl <= 0.05 and loss < 2.0
    np.testing.assert_allclose(cand[0], 1.0 - 0.8 ** 4)
    # a step that violates the constraint at every tried scale is rejected (theta unchanged)
    cand, k, _, kl = line_search(theta, step, evaluate, 2.0, max_kl=0.05, ratio=0.8, max_backtracks=3)
    assert cand is None and kl > 0.05
    # so is one that never improves the surrogate, however small
    cand, _, _, _ = line_search(theta, [-s for s in step], evaluate, 2.0, max_kl=10.0)
    assert cand is None


def reference_surrogate_and_kl(model, theta, data, old_theta, inner_lr):
    """Plain eager computation: SGD adaptation on each task's inner batches, then the mean over tasks
    of the importance-weighted surrogate and of KL(new || old) of diagonal Gaussians."""
    def adapt(th, inner):
        params = [tf.constant(p) for p in th]
        for t in range(inner[0].shape[0]):
            obs, actions, adv, mask = (tf.constant(b[t]) for b in inner)
            with tf.GradientTape() as tape:
                tape.watch(params)
                out, _ = model.stateless_call(params, [], obs)
                logp = _logp(out, actions)
                loss = -tf.reduce_sum(mask * logp * adv) / tf.reduce_sum(mask)
            params = [p - inner_lr * g for p, g in zip(params, tape.gradient(loss, params))]
        return params

    losses, kls = [], []
    for i in range(data.query[0].shape[0]):
        inner = tuple(b[i] for b in data.inner)
        obs, actions, adv, mask = (b[i] for b in data.query)
        new, _ = model.stateless_call(adapt(theta, inner), [], obs)
        old, _ = model.stateless_call(adapt(old_theta, inner), [], obs)
        new, old = new.numpy(), old.numpy()
        ratio = np.exp(_logp(new, actions).numpy() - _logp(old, actions).numpy())
        losses.append(-np.sum(mask * ratio * adv) / mask.sum())
        (mn, ln), (mo, lo) = np.split(new, 2, -1), np.split(old, 2, -1)
        kl = np.sum(lo - ln + (np.exp(2 * ln) + (mn - mo) ** 2) / (2 * np.exp(2 * lo)) - 0.5, -1)
        kls.append(np.sum(mask * kl) / mask.sum())
    return np.mean(losses), np.mean(kls)


def _logp(out, actions):
    mean, log_std = tf.split(tf.convert_to_tensor(out), 2, -1)
    return tf.reduce_sum(-0.5 * ((actions - mean) / tf.exp(log_std)) ** 2 - log_std - 0.5 * np.log(2 * np.pi), -1)


@pytest.mark.slow
def test_trpo_step_satisfies_the_kl_constraint_and_improves_the_surrogate():
    with floatx("float64"):
        model = make_gaussian_policy(2, 2, hidden=(16,), seed=4)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = MAMLTRPOMetaLearner(model, max_kl=0.01, inner_optimizer=optim.sgd(0.5), objective=agent.objective)
    ml.initialize()
    theta_old = [v.numpy() for v in ml.meta_variables]
    data = ml.stack_tasks(navigation2d(batch_size=3, horizon=20).sample_batch(), 1, 6)
    out = ml.trpo_update(data)
    theta_new = [v.numpy() for v in ml.meta_variables]
    assert out["accepted"] == 1.0 and np.abs(flat(theta_new) - flat(theta_old)).max() > 0
    np.testing.assert_allclose(flat(model.get_weights()), flat(theta_new))  # the model holds the new theta
    old_loss, old_kl = reference_surrogate_and_kl(model, theta_old, data, theta_old, 0.5)
    new_loss, new_kl = reference_surrogate_and_kl(model, theta_new, data, theta_old, 0.5)
    assert abs(old_kl) < 1e-12
    np.testing.assert_allclose([out["surrogate_before"], out["surrogate_after"], out["kl"]],
                               [old_loss, new_loss, new_kl], rtol=1e-6, atol=1e-10)
    assert new_kl <= 0.01 and new_loss < old_loss
    # the quadratic model is right near theta_old: the full step's KL is close to max_kl
    assert new_kl > 0.01 * 0.8 ** (2 * out["backtracks"]) * 0.5
    # another trust region (changed after compilation) is respected too
    ml.max_kl = 1e-4
    out = ml.trpo_update(data)
    assert out["accepted"] == 1.0 and 0.1e-4 < out["kl"] <= 1e-4


def test_kl_hessian_products_agree_at_theta_old_and_gauss_newton_differs_away_from_it():
    """TRPO's three ways of computing CG's KL Hessian-vector products give the same product at
    theta_old (Gauss-Newton is exact there, the KL being at its minimum); moved away from theta_old,
    the Gauss-Newton product leaves out the KL's gradient term, so it no longer equals the Hessian."""
    with floatx("float64"):
        model = make_gaussian_policy(2, 2, hidden=(8,), seed=3)
    agent = Agent(model, Navigation2DEnv.action_space)
    mls = {m: MAMLTRPOMetaLearner(model, inner_optimizer=optim.sgd(0.5), objective=agent.objective, hvp=m)
           for m in ("gauss_newton", "per_task", "shared")}
    for ml in mls.values():
        ml.initialize()
    ml = mls["per_task"]
    data = tf.nest.map_structure(tf.convert_to_tensor,
                                 ml.stack_tasks(navigation2d(batch_size=3, horizon=15).sample_batch(), 1, 4))
    theta, state = ml.theta_tensors(), ml.state_tensors()
    old = ml.trpo._loss_gradient_and_old(theta, state, data)[2]
    rng = np.random.default_rng(0)
    v = [tf.constant(rng.normal(size=t.shape)) for t in theta]
    moved = [t + 0.05 * tf.constant(rng.normal(size=t.shape)) for t in theta]
    for at, same in ((theta, True), (moved, False)):
        products = {m: flat(mls[m].trpo._kl_hvp(at, state, data, old)(v)) for m in mls}
        np.testing.assert_allclose(products["shared"], products["per_task"], rtol=1e-8, atol=1e-12)
        gap = np.abs(products["gauss_newton"] - products["per_task"]).max() / np.abs(products["per_task"]).max()
        assert (gap < 1e-8) if same else (gap > 1e-3)
    with pytest.raises(ValueError, match="unknown TRPO Hessian-vector product"):
        MAMLTRPOMetaLearner(model, inner_optimizer=optim.sgd(0.5), objective=agent.objective, hvp="exact")
