"""pymeta.rl: the policy-gradient estimator is unbiased, MAML-RL's meta-gradient equals finite
differences on recorded episodes, the step-by-step and fast paths adapt as their recorded data say,
meta-learning on 2D navigation learns, and bad environments fail with one-line errors."""

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta import optim
from pymeta.metalearners import FOMAMLMetaLearner, MAMLMetaLearner, ReptileMetaLearner
from pymeta.rl import Agent, Navigation2DTask, make_gaussian_policy, navigation2d
from pymeta.rl.navigation import Navigation2DEnv
from pymeta.rl.spaces import box
from second_order_helpers import flat, floatx, unflat


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


def test_policy_gradient_estimator_is_unbiased_on_a_gaussian_bandit():
    """One step, a ~ N(mu, sigma^2), r(a) = -(a - c)^2: J = -((mu - c)^2 + sigma^2), so
    dJ/dmu = -2 (mu - c) and dJ/dlog(sigma) = -2 sigma^2. The estimate (minus the objective's gradient
    with advantages = rewards) is the mean of N i.i.d. terms r_i * score_i; it must be within 4
    standard errors of the analytic gradient (a fixed seed; a fair estimator fails with probability
    6e-5 per coordinate), and the standard error is < 3% of the gradient, so a bias of >= 12% fails."""
    mu, log_sigma, c, n = 0.3, -0.5, 1.0, 200_000
    model = make_gaussian_policy(1, 1, hidden=())
    model.get_layer("mean_out").bias.assign([mu])
    model.get_layer("log_std").log_std.assign([log_sigma])
    agent = Agent(model, box(-np.inf, np.inf, (1,)))
    obs = np.zeros((n, 1), np.float32)
    actions, _ = agent.sample(obs)
    rewards = -(actions[:, 0].astype(np.float64) - c) ** 2
    batch = (obs, actions, rewards.astype(np.float32), np.ones(n, np.float32))
    params = agent.read_params()
    with tf.GradientTape() as tape:
        tape.watch(params)
        loss = agent.objective(params, [], batch)
    grads = tape.gradient(loss, params)
    names = [v.path for v in model.trainable_variables]
    estimate = -np.array([grads[names.index(k)].numpy().item() for k in ("mean_out/bias", "log_std/log_std")])
    sigma2 = np.exp(2 * log_sigma)
    a = actions[:, 0].astype(np.float64)
    terms = np.stack([rewards * (a - mu) / sigma2, rewards * ((a - mu) ** 2 / sigma2 - 1)], -1)
    np.testing.assert_allclose(estimate, terms.mean(0), rtol=2e-4)  # the objective computes this mean
    analytic = np.array([-2 * (mu - c), -2 * sigma2])
    se = terms.std(0) / np.sqrt(n)
    assert np.all(se < 0.03 * np.abs(analytic)), se
    assert np.all(np.abs(estimate - analytic) < 4 * se), (estimate, analytic, se)


def reference_objective(model):
    """-mean over valid steps of log N(a; mean, std) * adv, written from the model's outputs."""
    def objective(params, batch):
        obs, actions, adv, mask = (tf.constant(b) for b in batch)
        out, _ = model.stateless_call(list(params), [], obs)
        mean, log_std = out[:, :2], out[:, 2:]
        logp = tf.reduce_sum(-0.5 * ((actions - mean) / tf.exp(log_std)) ** 2 - log_std
                             - 0.5 * np.log(2 * np.pi), -1)
        return -tf.reduce_sum(mask * logp * adv) / tf.reduce_sum(mask)
    return objective


def test_maml_rl_meta_gradient_equals_finite_differences_on_recorded_episodes():
    with floatx("float64"):
        model = make_gaussian_policy(2, 2, hidden=(6,), activation="tanh", seed=3)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = MAMLMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=optim.sgd(0.3),
                         objective=agent.objective)
    task = Navigation2DTask(horizon=10)
    ml.task_begin(task)
    out = task.fit_n_iterations(model, 2, 3)
    assert set(out) >= {"last_minibatch_loss", "mean_return"}
    data = task.last_fit
    assert data.inner[0].shape == (2, 30, 2) and data.query[0].shape == (30, 2)
    assert data.inner[0].dtype == np.float64
    result = ml.task_end(task)
    theta = [t.numpy() for t in ml.theta_tensors()]
    objective = reference_objective(model)

    def outer(th):  # plain SGD on the recorded inner batches, then the query objective
        params = [tf.constant(p) for p in th]
        for t in range(2):
            with tf.GradientTape() as tape:
                tape.watch(params)
                loss = objective(params, tuple(b[t] for b in data.inner))
            params = [p - 0.3 * g for p, g in zip(params, tape.gradient(loss, params))]
        return float(objective(params, data.query))

    base, eps = flat(theta), 1e-6
    fd = np.array([(outer(unflat(base + eps * e, theta)) - outer(unflat(base - eps * e, theta))) / (2 * eps)
                   for e in np.eye(len(base))])
    np.testing.assert_allclose(flat([np.asarray(r) for r in result]), fd, rtol=1e-5, atol=1e-8)
    # second-order terms matter: the first-order gradient differs
    fo = MAMLMetaLearner(model, keras.optimizers.SGD(1.0), first_order=True, inner_optimizer=optim.sgd(0.3),
                         objective=agent.objective)
    fo.task_begin(task)
    model.set_weights(model.get_weights())
    phi = ml.adapt([tf.constant(t) for t in theta], [], data.inner)[0]
    fo_grad = flat([g.numpy() for g in fo.task_result(None, phi, [], data)[0]])
    assert np.linalg.norm(fo_grad - fd) > 1e-3 * np.linalg.norm(fd)


def test_recorded_data_reproduce_the_adaptation_in_both_paths():
    model = make_gaussian_policy(2, 2, hidden=(16,), seed=2)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = ReptileMetaLearner(model, keras.optimizers.SGD(1.0), inner_optimizer=optim.sgd(0.5),
                            objective=agent.objective)
    ml.initialize()
    theta = ml.theta_tensors()
    # step by step: the adapted weights are the inner loop replayed on the recorded batches
    task = Navigation2DTask(horizon=20)
    ml.task_begin(task)
    task.fit_n_iterations(model, 2, 4)
    replayed = ml.adapt(theta, [], task.last_fit.inner)[0]
    np.testing.assert_allclose(flat(model.get_weights()), flat([p.numpy() for p in replayed]), rtol=1e-5, atol=1e-6)
    ml.task_end(task)
    ml.task_begin(None)  # model <- theta
    # fast path: Reptile with SGD(1) moves theta to the mean of the replayed adaptations
    tasks = navigation2d(batch_size=3, horizon=20).sample_batch()
    out = ml.metatrain_step(tasks, 2, 4)
    assert np.isfinite(out["last_minibatch_loss"])
    phis = [flat([p.numpy() for p in ml.adapt(theta, [], t.last_fit.inner)[0]]) for t in tasks]
    np.testing.assert_allclose(flat(ml.current_initial_parameters), np.mean(phis, 0), rtol=1e-5, atol=1e-6)
    assert all(set(t.last_stats) == {"mean_return_before", "mean_return"} for t in tasks)


@pytest.mark.parametrize("cls", [FOMAMLMetaLearner, ReptileMetaLearner, MAMLMetaLearner])
def test_step_by_step_loop_runs_every_metalearner_unchanged(cls):
    model = make_gaussian_policy(2, 2, hidden=(16,), seed=2)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = cls(model, keras.optimizers.Adam(0.01), inner_optimizer=optim.sgd(0.5), objective=agent.objective)
    ml.initialize()
    before = flat(ml.current_initial_parameters)
    results = []
    for task in navigation2d(batch_size=2, horizon=15).sample_batch():
        ml.task_begin(task)
        out = task.fit_n_iterations(model, 1, 3)
        assert np.isfinite(out["mean_return"])
        results.append(ml.task_end(task))
    ml.update(results)
    assert np.abs(flat(ml.current_initial_parameters) - before).max() > 0
    assert np.isfinite(task.evaluate(model)["mean_return"])


def post_adaptation_returns(ml, tasks):
    for t in tasks:
        t.reset()
    ml.stack_tasks(tasks, 1, 20)  # collects and adapts, theta unchanged
    return (np.mean([t.last_stats["mean_return_before"] for t in tasks]),
            np.mean([t.last_stats["mean_return"] for t in tasks]))


@pytest.mark.slow
def test_maml_on_navigation2d_learns_and_adaptation_helps():
    model = make_gaussian_policy(2, 2, seed=0)
    agent = Agent(model, Navigation2DEnv.action_space)
    ml = MAMLMetaLearner(model, keras.optimizers.Adam(0.01), inner_optimizer=optim.sgd(0.5),
                         objective=agent.objective)
    dist = navigation2d(batch_size=10)
    np.random.seed(1)
    eval_tasks = dist.sample_batch(20)
    np.random.seed(2)
    before0, after0 = post_adaptation_returns(ml, copy.deepcopy(eval_tasks))
    for _ in range(15):
        ml.metatrain_step(dist.sample_batch(), 1, 10)
    np.random.seed(2)
    before, after = post_adaptation_returns(ml, copy.deepcopy(eval_tasks))
    assert after > after0 + 5.0, (after0, after)       # meta-learning improved the adapted policy
    assert after > before + 3.0, (before, after)       # one adaptation step improves the return


class NaNEnv(Navigation2DEnv):
    def __init__(self, goals, where):
        super().__init__(goals)
        self.where = where

    def step(self, actions):
        obs, rewards, terminated = super().step(actions)
        if self.where == "obs":
            obs[0, 1] = np.nan
        else:
            rewards[-1] = np.inf
        return obs, rewards, terminated


@pytest.mark.parametrize("where", ["obs", "rewards"])
def test_non_finite_observations_or_rewards_are_one_line_errors(where):
    class BadTask(Navigation2DTask):
        @classmethod
        def make_env(cls, tasks, episodes):
            return NaNEnv(np.zeros((len(tasks) * episodes, 2)), where)

    model = make_gaussian_policy(2, 2, hidden=(4,))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match=f"non-finite {'observations' if where == 'obs' else 'rewards'}") as e:
        BadTask(horizon=5).fit_n_iterations(model, 1, 2)
    assert "\n" not in str(e.value)


def test_an_uncompiled_policy_without_a_metalearner_is_a_one_line_error():
    with pytest.raises(ValueError, match="no inner optimizer"):
        Navigation2DTask(horizon=5).fit_n_iterations(make_gaussian_policy(2, 2, hidden=(4,)), 1, 2)
