"""pymeta.rl: policies' log-probs against closed forms, the log-std inside the model, acting, GAE by
hand, the linear feature baseline against numpy.linalg.lstsq."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta.rl import Agent, Episodes, make_categorical_policy, make_gaussian_policy
from pymeta.rl import returns as R
from pymeta.rl.spaces import Discrete, box


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


def gaussian_agent(obs_dim=3, act_dim=2, low=-1.0, high=1.0):
    return Agent(make_gaussian_policy(obs_dim, act_dim, hidden=(8,), seed=1), box(low, high, (act_dim,)))


def test_gaussian_log_prob_is_the_diagonal_normal_density():
    agent = gaussian_agent()
    agent.model.get_layer("log_std").log_std.assign([-0.7, 0.4])
    obs = np.random.randn(6, 3).astype(np.float32)
    actions = np.random.randn(6, 2).astype(np.float32)
    logp = agent.log_prob(agent.read_params(), [], obs, actions).numpy()
    mean = agent.model.predict(obs, verbose=0)[:, :2]
    std = np.exp([-0.7, 0.4])  # the normal density, coordinate by coordinate
    expected = np.log(np.exp(-0.5 * ((actions - mean) / std) ** 2) / (std * np.sqrt(2 * np.pi))).sum(-1)
    np.testing.assert_allclose(logp, expected, rtol=1e-5, atol=1e-5)


def test_categorical_log_prob_is_the_log_softmax():
    agent = Agent(make_categorical_policy(3, 4, hidden=(8,), seed=1), Discrete(4))
    obs = np.random.randn(7, 3).astype(np.float32)
    actions = np.random.randint(0, 4, 7)
    logits = agent.model.predict(obs, verbose=0).astype(np.float64)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(agent.log_prob(agent.read_params(), [], obs, actions).numpy(),
                               np.log(p[np.arange(7), actions]), rtol=1e-5, atol=1e-6)
    # sampling follows the probabilities (chi-square-free check: 20k draws, frequencies within 0.02)
    draws = [agent.sample(np.repeat(obs[:1], 20000, 0))[0]]
    freq = np.bincount(draws[0], minlength=4) / 20000
    np.testing.assert_allclose(freq, p[0], atol=0.02)


def test_the_log_std_is_a_trainable_weight_saved_with_the_model(tmp_path):
    model = make_gaussian_policy(2, 2)
    names = [v.path for v in model.trainable_variables]
    assert any("log_std" in n for n in names), names
    model.get_layer("log_std").log_std.assign([0.25, -0.5])
    path = str(tmp_path / "policy.h5")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.get_layer("log_std").log_std.numpy(), [0.25, -0.5])
    x = np.random.randn(4, 2).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_act_is_one_batched_call_mapped_to_the_box():
    agent = gaussian_agent(low=-0.1, high=0.1)
    agent.model.get_layer("log_std").log_std.assign([1.0, 1.0])
    raw, env_actions = agent.sample(np.random.randn(500, 3))
    assert raw.shape == env_actions.shape == (500, 2)
    assert np.abs(raw).max() > 0.1 and np.abs(env_actions).max() <= 0.1
    np.testing.assert_array_equal(env_actions, np.clip(raw, -0.1, 0.1))
    assert agent.act(np.zeros((3, 3))).shape == (3, 2)


def test_unsupported_action_spaces_are_one_line_errors():
    class MultiBinary:
        n = 3
    with pytest.raises(ValueError, match="unsupported action space") as e:
        Agent(make_gaussian_policy(2, 2), MultiBinary())
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="1-D Box"):
        Agent(make_gaussian_policy(2, 2), box(-1, 1, (2, 2)))
    with pytest.raises(ValueError, match="Gaussian"):
        Agent(make_categorical_policy(2, 3), box(-1, 1, (3,)))


# --- returns, GAE, the linear baseline ------------------------------------------------------------------
def test_gae_equals_the_sum_of_discounted_td_errors_by_hand():
    rewards = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 2.0, 0.0]])
    values = np.array([[0.5, 1.0, 1.5, 2.0], [1.0, 0.0, -1.0, 9.0]])
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], float)  # episode 2 terminated at its third step
    g, lam = 0.9, 0.8
    # by hand: V after the last valid step is 0; delta_t = r_t + g V_{t+1} - V_t; A_t = sum (g lam)^k delta
    d1 = [1 + g * 1.0 - 0.5, 2 + g * 1.5 - 1.0, 3 + g * 2.0 - 1.5, 4 + 0 - 2.0]
    d2 = [0.5 + g * 0.0 - 1.0, -1 + g * -1.0 - 0.0, 2 + 0 - (-1.0)]
    gl = g * lam
    a1 = [sum(gl ** k * d1[t + k] for k in range(4 - t)) for t in range(4)]
    a2 = [sum(gl ** k * d2[t + k] for k in range(3 - t)) for t in range(3)] + [0.0]
    np.testing.assert_allclose(R.gae(rewards, values * mask, mask, g, lam), [a1, a2], rtol=1e-12)
    # lambda = 1 with a zero baseline: the discounted returns
    np.testing.assert_allclose(R.gae(rewards, 0 * values, mask, g, 1.0), R.discount_cumsum(rewards, mask, g))
    np.testing.assert_allclose(R.discount_cumsum(rewards, mask, g)[1],
                               [0.5 - g + 2 * g * g, -1 + 2 * g, 2, 0])


def ridge_by_lstsq(obs, returns, mask, reg):
    x = R.linear_features(obs)[mask > 0]
    y = returns[mask > 0]
    aug_x = np.concatenate([x, np.sqrt(reg) * np.eye(x.shape[1])])
    aug_y = np.concatenate([y, np.zeros(x.shape[1])])
    return np.linalg.lstsq(aug_x, aug_y, rcond=None)[0]


def test_linear_baseline_is_the_ridge_least_squares_fit():
    obs = np.random.randn(5, 30, 3) * 4  # some beyond the +-10 clip after squaring, none before
    obs[0, 0, 0] = 25.0  # clipped to 10 by the features
    returns = np.random.randn(5, 30)
    mask = np.ones((5, 30))
    mask[2, 17:] = 0
    feats = R.linear_features(obs)
    assert feats.shape == (5, 30, 3 * 2 + 4)
    assert feats[0, 0, 0] == 10.0 and feats[0, 0, 3] == 100.0
    np.testing.assert_allclose(feats[1, 7, 6:], [0.07, 0.07 ** 2, 0.07 ** 3, 1.0])
    coeffs = R.fit_linear_baseline(obs, returns, mask)
    np.testing.assert_allclose(coeffs, ridge_by_lstsq(obs, returns, mask, 1e-5), rtol=1e-6, atol=1e-8)


def test_linear_baseline_raises_the_regularisation_x10_on_failure(monkeypatch):
    obs, returns, mask = np.random.randn(2, 10, 2), np.random.randn(2, 10), np.ones((2, 10))
    real_solve, calls = np.linalg.solve, []

    def failing_once(a, b):
        calls.append(a)
        if len(calls) == 1:
            raise np.linalg.LinAlgError("singular")
        return real_solve(a, b)

    monkeypatch.setattr(R.np.linalg, "solve", failing_once)
    coeffs = R.fit_linear_baseline(obs, returns, mask)
    monkeypatch.undo()
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1] - calls[0], 9e-5 * np.eye(len(coeffs)), atol=1e-12)
    np.testing.assert_allclose(coeffs, ridge_by_lstsq(obs, returns, mask, 1e-4), rtol=1e-6, atol=1e-8)


def test_policy_gradient_batch_normalises_advantages_over_valid_steps():
    e, h = 4, 6
    mask = np.ones((e, h))
    mask[1, 3:] = 0
    eps = Episodes(np.random.randn(e, h, 2), np.random.randn(e, h, 2), np.random.randn(e, h) * mask, mask)
    obs, actions, adv, m = R.policy_gradient_batch(eps, 0.99, 0.95)
    assert obs.shape == (e * h, 2) and actions.shape == (e * h, 2) and adv.shape == m.shape == (e * h,)
    valid = adv[m > 0]
    assert abs(valid.mean()) < 1e-6 and abs(valid.std() - 1) < 1e-5
    assert np.all(adv[m == 0] == 0)
