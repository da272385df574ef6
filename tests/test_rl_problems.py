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
