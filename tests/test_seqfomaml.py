"""SeqFOMAML on sequences of tasks (pymeta.metalearners.seq_fomaml)."""

import copy

import keras
import numpy as np
import pytest

from conftest import step_by_step_iteration
from pymeta.core.task import TaskAsSequenceOfTasks
from pymeta.core.task_distribution import TaskAsSequenceOfTasksDistribution
from pymeta.metalearners.fomaml import FOMAMLMetaLearner
from pymeta.metalearners.seq_fomaml import SEQ_FOMAML_VARIANTS, SeqFOMAMLMetaLearner, auxiliary_terms
from second_order_helpers import ArrayTask, flat, mlp, params_of, pattern_distribution


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(0)
    keras.utils.set_random_seed(0)


class FixedTasks:
    """A stand-in task distribution returning given tasks (a sequence of known tasks)."""

    def __init__(self, tasks):
        self.tasks = tasks

    def sample_batch(self, batch_size):
        return self.tasks[:batch_size]


def make_setup(n=3):
    model = mlp([2, 8, 3], out_activation="softmax")
    model.compile(optimizer=keras.optimizers.SGD(0.3), loss="sparse_categorical_crossentropy")
    rng = np.random.RandomState(1)
    tasks = [ArrayTask(rng.randn(9, 2).astype(np.float32), rng.randint(0, 3, 9),
                       rng.randn(6, 2).astype(np.float32), rng.randint(0, 3, 6)) for _ in range(n)]
    return model, tasks, TaskAsSequenceOfTasks(FixedTasks(tasks), n, n)


def fit_with_snapshots(ml, seq, steps, batch):
    """The sequence's inner loop task by task, keeping the weights after each task."""
    ml.task_begin(seq)
    snapshots = []
    for t in seq.current_task_sequence:
        t.fit_n_iterations(ml.model, steps, batch)
        snapshots.append(params_of(ml.model))
    return snapshots


def query_grad(ml, params, task):
    _, g = ml.fmodel.loss_and_grad(params, [], *task.get_test_set())
    return flat(g)


def expected_result(ml, tasks, snapshots, aux):
    final = np.mean([query_grad(ml, snapshots[-1], t) for t in tasks], axis=0)
    if not aux:
        return final
    return final + np.mean([w * query_grad(ml, snapshots[i], tasks[j]) for i, j, w in aux], axis=0)


@pytest.mark.parametrize("variant", SEQ_FOMAML_VARIANTS)
def test_variants_match_their_definition(variant):
    model, tasks, seq = make_setup(4)
    ml = SeqFOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), variant=variant)
    snapshots = fit_with_snapshots(ml, seq, 3, 5)
    np.random.seed(11)
    got = flat(ml.task_end(seq))
    np.random.seed(11)
    aux = auxiliary_terms(variant, 4)
    np.testing.assert_allclose(got, expected_result(ml, tasks, snapshots, aux), rtol=1e-5, atol=1e-7)
    # the original's `results={'weights_<i>': ...}` give the same (no replay)
    results = {f"weights_{i}": [w.numpy() for w in s] for i, s in enumerate(snapshots)}
    np.random.seed(11)
    np.testing.assert_allclose(flat(ml.task_end(seq, results=results)), got, rtol=1e-5, atol=1e-7)


def test_auxiliary_terms():
    assert auxiliary_terms("plain", 3) == []
    assert auxiliary_terms("loss_after_each_task", 3) == [(0, 0, 1.0), (1, 1, 1.0), (2, 2, 1.0)]
    assert auxiliary_terms("all_losses_after_each_task", 3) == [(0, 0, 0.25), (1, 0, 0.25), (1, 1, 1.0 / 3)]
    sampled = auxiliary_terms("sampled_loss_after_each_task", 6, np.random.RandomState(0))
    assert [i for i, _, _ in sampled] == list(range(6)) and all(0 <= j <= i for i, j, _ in sampled)
    assert auxiliary_terms("all_losses_after_each_task", 1) == []
    with pytest.raises(ValueError):
        auxiliary_terms("other", 2)


def test_keyword_overrides_variant_and_plain_single_task_is_fomaml():
    model, tasks, seq = make_setup(2)
    ml = SeqFOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), variant="plain")
    snapshots = fit_with_snapshots(ml, seq, 2, -1)
    got = flat(ml.task_end(seq, seq_fomaml_loss="loss_after_each_task"))
    aux = auxiliary_terms("loss_after_each_task", 2)
    np.testing.assert_allclose(got, expected_result(ml, tasks, snapshots, aux), rtol=1e-5, atol=1e-7)
    # a single task, plain: FOMAML's task result
    fomaml = FOMAMLMetaLearner(model, keras.optimizers.SGD(1.0))
    fomaml.initialize()
    ml.task_begin(tasks[0])
    tasks[0].fit_n_iterations(model, 2, -1)
    np.testing.assert_allclose(flat(ml.task_end(tasks[0])), flat(fomaml.task_end(tasks[0])), rtol=1e-6)


def test_replay_needs_fitted_tasks():
    model, tasks, seq = make_setup(2)
    ml = SeqFOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), variant="loss_after_each_task")
    ml.task_begin(seq)
    with pytest.raises(ValueError, match="fit_n_iterations"):
        ml.task_end(seq)
    with pytest.raises(ValueError):
        SeqFOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), variant="bogus")


def test_meta_training_on_sequences_runs_and_reduces_the_loss():
    """A few meta-iterations on sequences of 3 pattern-classification tasks (one shared 3-way head):
    the mean query loss over the sequence after learning it goes down."""
    dist = pattern_distribution(num_classes=30, size=6, batch_size=1, num_ways=3, shots=2, queries=4,
                                flip=0.05, noise=0.1)
    seq_dist = TaskAsSequenceOfTasksDistribution(TaskAsSequenceOfTasks(dist, 3, 3), batch_size=4)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.2), loss="sparse_categorical_crossentropy")
    ml = SeqFOMAMLMetaLearner(model, keras.optimizers.Adam(0.01), variant="loss_after_each_task")
    ml.initialize()
    eval_seqs = seq_dist.sample_batch(8)

    def sequence_loss():
        losses = []
        for s in eval_seqs:
            ml.task_begin(s)
            s.fit_n_iterations(model, 3, -1)
            losses.append(np.mean([v for k, v in s.evaluate(model).items() if k.startswith("loss")]))
        return np.mean(losses)

    before = sequence_loss()
    for _ in range(40):
        step_by_step_iteration(ml, seq_dist.sample_batch(), 3, -1)
    after = sequence_loss()
    assert np.all([np.all(np.isfinite(v)) for v in ml.current_initial_parameters])
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("variant", ["loss_after_each_task", "sampled_loss_after_each_task",
                                     "all_losses_after_each_task"])
def test_fast_path_equals_step_by_step(variant):
    dist = pattern_distribution(num_classes=20, size=4, batch_size=1, num_ways=3, shots=3, queries=2)
    seq_dist = TaskAsSequenceOfTasksDistribution(TaskAsSequenceOfTasks(dist, 3, 3), batch_size=2)
    batches = [seq_dist.sample_batch() for _ in range(2)]
    weights = []
    for fast in (True, False):
        model = mlp([16, 8, 3], out_activation="softmax", seed=3)
        flat_model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), model])
        flat_model.compile(optimizer=keras.optimizers.SGD(0.3), loss="sparse_categorical_crossentropy")
        ml = SeqFOMAMLMetaLearner(flat_model, keras.optimizers.Adam(0.01), variant=variant)
        ml.initialize()
        np.random.seed(21)
        for seqs in copy.deepcopy(batches):
            if fast:
                out = ml.metatrain_step(seqs, 2, 4)
                assert np.isfinite(out["last_minibatch_loss"])
                continue
            step_by_step_iteration(ml, seqs, 2, 4)
        weights.append(flat(ml.current_initial_parameters))
    np.testing.assert_allclose(weights[0], weights[1], rtol=1e-4, atol=1e-6)


def test_single_tasks_in_the_fast_path_are_sequences_of_length_one():
    model, tasks, _ = make_setup(1)
    ml = SeqFOMAMLMetaLearner(model, keras.optimizers.SGD(1.0), variant="loss_after_each_task")
    ml.initialize()
    theta = params_of(model)
    total, _ = ml.sum_task_results([tasks[0]], 2, -1)  # the base class's single-task stacking
    ml.task_begin(tasks[0])
    tasks[0].fit_n_iterations(model, 2, -1)
    np.testing.assert_allclose(flat(total), flat(ml.task_end(tasks[0])), rtol=1e-5, atol=1e-7)
    assert not np.allclose(flat(params_of(model)), flat(theta))  # the model was adapted
