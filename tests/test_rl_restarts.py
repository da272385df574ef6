"""Restarting rows (`RLTask(restart_episodes=True)`, rllab's batches of E x H samples): returns, GAE,
the baseline and the batch of rows holding several episodes equal the same quantities computed
episode by episode; the sampler starts a new episode where one terminated; the reported return is
each row's first episode's."""

import numpy as np
import pytest

from pymeta.rl import Episodes
from pymeta.rl import returns as R
from pymeta.rl.navigation import Navigation2DEnv
from pymeta.rl.sampler import rollout

H = 12
STARTS = [[0, 5, 9], [0], [0, 1, 2, 7]]  # episode starts of three rows of H steps


def restarting_rows(seed=0):
    rng = np.random.default_rng(seed)
    time = np.zeros((len(STARTS), H), np.int64)
    for row, starts in enumerate(STARTS):
        for s, end in zip(starts, starts[1:] + [H]):
            time[row, s:end] = np.arange(end - s)
    return Episodes(rng.normal(size=(len(STARTS), H, 2)), rng.normal(size=(len(STARTS), H, 2)),
                    rng.normal(size=(len(STARTS), H)), np.ones((len(STARTS), H)), time)


def one_row_per_episode(eps):
    """The episodes of restarting rows as rows of their own (padded to H, masked), and where each
    step of the rows went: (Episodes, [(row, t) for each valid step, in order])."""
    rows, where = [], []
    for row, starts in enumerate(STARTS):
        for s, end in zip(starts, starts[1:] + [H]):
            pad = lambda x: np.concatenate([x[row, s:end], np.zeros((H - end + s,) + x.shape[2:])])
            rows.append((pad(eps.obs), pad(eps.actions), pad(eps.rewards),
                         np.concatenate([np.ones(end - s), np.zeros(H - end + s)])))
            where += [(row, t) for t in range(s, end)]
    return Episodes(*(np.stack(leaves) for leaves in zip(*rows))), where


def test_returns_gae_and_features_restart_at_every_episode():
    eps = restarting_rows()
    split, where = one_row_per_episode(eps)
    valid = split.mask > 0
    ends = R.episode_ends(eps.time, eps.mask.shape)
    g, lam = 0.9, 0.8
    values = np.random.default_rng(1).normal(size=eps.rewards.shape)
    split_values = np.zeros_like(split.rewards)
    split_values[valid] = [values[r, t] for r, t in where]
    pairs = [
        (R.discount_cumsum(eps.rewards, eps.mask, g, ends), R.discount_cumsum(split.rewards, split.mask, g)),
        (R.gae(eps.rewards, values, eps.mask, g, lam, ends), R.gae(split.rewards, split_values, split.mask, g, lam)),
        (R.linear_features(eps.obs, eps.time), R.linear_features(split.obs)),
    ]
    for restarting, by_episode in pairs:
        np.testing.assert_allclose([restarting[r, t] for r, t in where], by_episode[valid], rtol=1e-12)


def test_batch_of_restarting_rows_equals_the_batch_of_their_episodes():
    eps = restarting_rows()
    split, where = one_row_per_episode(eps)
    obs, actions, adv, mask = R.policy_gradient_batch(eps, 0.99, 0.95)
    s_obs, s_actions, s_adv, s_mask = R.policy_gradient_batch(split, 0.99, 0.95)
    order = [r * H + t for r, t in where]  # the restarting batch's index of each valid step of the split one
    assert mask.sum() == s_mask.sum() == len(STARTS) * H
    np.testing.assert_allclose(adv[order], s_adv[s_mask > 0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(obs[order], s_obs[s_mask > 0])


def test_reported_return_and_length_are_each_rows_first_episode():
    eps = restarting_rows()
    first_end = [starts[1] if len(starts) > 1 else H for starts in STARTS]
    np.testing.assert_allclose(eps.returns(), [eps.rewards[r, :e].sum() for r, e in enumerate(first_end)])
    np.testing.assert_array_equal(eps.lengths(), first_end)
    no_restarts = eps._replace(time=None)
    np.testing.assert_allclose(no_restarts.returns(), eps.rewards.sum(-1))


@pytest.mark.parametrize("restart", [False, True])
def test_navigation_rollout_restarts_at_the_origin_after_reaching_the_goal(restart):
    env = Navigation2DEnv(np.array([[0.2, 0.0]]))  # full speed along x reaches it in 2 steps
    policy = lambda obs: (np.tile([[1.0, 0.0]], (len(obs), 1)),) * 2
    eps = rollout(env, policy, 5, restart=restart)
    if restart:  # back at the origin after each 2-step episode
        np.testing.assert_allclose(eps.obs[0, :, 0], [0.0, 0.1, 0.0, 0.1, 0.0], atol=1e-7)
        np.testing.assert_allclose(eps.rewards[0], [-0.1, 0.0, -0.1, 0.0, -0.1], atol=1e-7)
        np.testing.assert_array_equal(eps.time[0], [0, 1, 0, 1, 0])
        np.testing.assert_array_equal(eps.mask[0], np.ones(5))
    else:
        np.testing.assert_array_equal(eps.mask[0], [1, 1, 0, 0, 0])
        assert eps.time is None
    np.testing.assert_allclose(eps.returns(), [-0.1], atol=1e-7)
    np.testing.assert_array_equal(eps.lengths(), [2])


def test_restart_setting_reaches_the_tasks():
    from pymeta.rl.problems import build_problem
    for restart in (False, True):
        problem = build_problem("navigation2d", "fomaml", meta_batch_size=2, restart_episodes=restart)
        assert problem.distribution.sample_batch(2)[0].restart_episodes is restart
        assert problem.settings["restart_episodes"] is restart
