"""pymeta.rl.build_problem: the MAML experiments' defaults, one-line errors for bad choices, and a
TRPO meta-learner usable step by step."""

import keras
import numpy as np
import pytest

from pymeta.metalearners import ReptileMetaLearner
from pymeta.rl import MAMLTRPOMetaLearner, build_problem


def test_navigation2d_defaults_are_the_papers():
    p = build_problem("navigation2d", "maml", seed=0)
    assert isinstance(p.metalearner, MAMLTRPOMetaLearner)
    s = p.settings
    assert (s["meta_batch_size"], s["inner_lr"], s["horizon"], s["episodes_per_task"], s["max_kl"]) == (20, 0.5, 100, 20, 0.01)
    assert [tuple(w.shape) for w in p.model.trainable_variables] == [(2, 100), (100,), (100, 100), (100,), (100, 2), (2,), (2,)]
    assert len(p.distribution.sample_batch()) == 20
    assert isinstance(build_problem("navigation2d", "reptile", hidden=(8,)).metalearner, ReptileMetaLearner)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "pong"}, "unknown RL problem 'pong'"),
    ({"name": "navigation2d", "metamodel": "imaml"}, "unknown metamodel"),
    ({"name": "navigation2d", "metamodel": "fomaml", "outer_optimizer": "trpo"}, "TRPO outer step is for MAML"),
])
def test_bad_choices_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        build_problem(**kwargs)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_trpo_step_by_step_uses_the_tasks_recorded_data():
    np.random.seed(0)
    p = build_problem("navigation2d", "maml", hidden=(8,), meta_batch_size=2, horizon=10, seed=0)
    ml, model = p.metalearner, p.model
    tasks = p.distribution.sample_batch()
    results = []
    for task in tasks:
        ml.task_begin(task)
        task.fit_n_iterations(model, 1, 3)
        results.append(ml.task_end(task))
    with pytest.raises(ValueError, match="needs the tasks"):
        ml.update(results)
    before = [w.copy() for w in ml.current_initial_parameters]
    out = ml.update(results, tasks=tasks)
    assert out["accepted"] == 1.0 and out["kl"] <= 0.01 and out["surrogate_after"] < out["surrogate_before"]
    assert max(np.abs(a - b).max() for a, b in zip(before, ml.current_initial_parameters)) > 0


def test_navigation2d_steps_as_the_papers_normalized_point_env():
    """The dynamics of cbfinn/maml_rl's `TfEnv(normalize(PointEnvRandGoal()))`, written out: rllab's
    normalize maps an action a to lb + (a + 1) (ub - lb) / 2 clipped to [lb, ub] (lb, ub = -0.1, 0.1),
    the point env adds it to the position; reward -distance; done within 0.01 on both coordinates."""
    from pymeta.rl.navigation import Navigation2DEnv
    rng = np.random.default_rng(0)
    goals = rng.uniform(-0.5, 0.5, (6, 2))
    env = Navigation2DEnv(goals)
    assert np.array_equal(env.action_space.low, [-1, -1]) and np.array_equal(env.action_space.high, [1, 1])
    pos = np.zeros((6, 2))
    np.testing.assert_array_equal(env.reset(), pos)
    lb, ub = -0.1, 0.1
    for _ in range(30):
        a = rng.normal(0, 1.5, (6, 2))  # some beyond the box
        obs, rewards, terminated = env.step(a)
        pos = pos + np.clip(lb + (a + 1.0) * 0.5 * (ub - lb), lb, ub)
        np.testing.assert_allclose(obs, pos.astype(np.float32), rtol=1e-6)
        np.testing.assert_allclose(rewards, -np.linalg.norm(pos - goals, axis=1), rtol=1e-12)
        np.testing.assert_array_equal(terminated, np.all(np.abs(pos - goals) < 0.01, axis=1))
    env.reset()
    obs, _, terminated = env.step((goals[:1] - 0) / 0.1 * np.ones((6, 1)))  # straight onto goal 0 if reachable
    assert terminated[0] == bool(np.all(np.abs(goals[0]) <= 0.1))
