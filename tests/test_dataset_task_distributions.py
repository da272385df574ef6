"""Omniglot (both protocols) and Mini-ImageNet task distributions on small synthetic data."""

import pickle

import numpy as np
import pytest

from data_fixtures import synthetic_miniimagenet_dict, synthetic_omniglot_dict
from pymeta.tasks.miniimagenet_tasks import create_miniimagenet_task_distribution
from pymeta.tasks.omniglot_tasks import (create_omniglot_allcharacters_task_distribution,
                                         create_omniglot_task_distribution, omniglot_characters,
                                         standard_split)


@pytest.fixture(autouse=True)
def seeded():
    np.random.seed(1234)


@pytest.fixture(scope="module")
def omni():
    return synthetic_omniglot_dict(alphabets=(3, 2), chars_per_alphabet=10, drawings=20, size=8)


def char_ids(X):
    """Global character id of each uint8 image [n, s, s, 1] (the image median, see data_fixtures)."""
    return {int(v) for v in np.median(X.reshape(len(X), -1), axis=1)}


def check_batch(dist, N, K, Q, size=8, channels=1):
    batch = dist.sample_batch()
    assert len(batch) == dist.batch_size
    for task in batch:
        x, y = task.get_train_set()
        xt, yt = task.get_test_set()
        assert x.dtype == np.float32 and x.shape == (N * K, size, size, channels)
        assert xt.shape == (N * Q, size, size, channels)
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert sorted(y.tolist()) == sorted(list(range(N)) * K)
        assert sorted(yt.tolist()) == sorted(list(range(N)) * Q)
        assert task.X.dtype == np.uint8  # images stay uint8, shared by all task copies
        assert task.X is dist.tasks[0].X
    return batch


def test_standard_protocol(omni):
    tr, va, te = create_omniglot_task_distribution(omni, num_training_samples_per_class=1,
                                                   num_test_samples_per_class=-1, num_training_classes=5,
                                                   meta_batch_size=3, num_train_characters=30,
                                                   num_val_characters=8)
    Xtr, ytr = tr.tasks[0].X, tr.tasks[0].y
    assert len(np.unique(ytr)) == 30 * 4 and len(ytr) == 30 * 4 * 20
    assert len(np.unique(va.tasks[0].y)) == 8 and len(np.unique(te.tasks[0].y)) == 50 - 38
    train_chars, val_chars, test_chars = char_ids(Xtr), char_ids(va.tasks[0].X), char_ids(te.tasks[0].X)
    assert len(train_chars) == 30 and len(val_chars) == 8 and len(test_chars) == 12
    assert train_chars.isdisjoint(val_chars) and train_chars.isdisjoint(test_chars)
    assert val_chars.isdisjoint(test_chars)
    assert train_chars | val_chars | test_chars == set(range(50))
    # class 4c + k is the k * 90 degree rotation of the drawings of class 4c
    for c in (0, 7, 29):
        base = Xtr[ytr == 4 * c]
        for k in range(4):
            assert np.array_equal(Xtr[ytr == 4 * c + k], np.rot90(base, k, axes=(1, 2)))
    # no rotations at validation / test: the 255 marker stays at [0, 0]
    assert (va.tasks[0].X[:, 0, 0, 0] == 255).all() and (te.tasks[0].X[:, 0, 0, 0] == 255).all()
    for d in (tr, va, te):
        check_batch(d, N=5, K=1, Q=19)
    # meta-training batches use each class at most once
    for _ in range(5):
        ids = [c for t in tr.sample_batch() for c in t.classes_ids]
        assert len(ids) == len(set(ids))


def test_standard_protocol_split_is_seeded(omni):
    def split(seed):
        dists = create_omniglot_task_distribution(omni, num_train_characters=30, num_val_characters=8,
                                                  seed=seed)
        return [char_ids(d.tasks[0].X) for d in dists]
    np.random.seed(5)
    a = split(0)
    np.random.seed(6)
    assert split(0) == a  # the split depends on `seed` only, not on the global RNG
    assert split(1) != a
    state = np.random.get_state()
    train, val, test = standard_split(omni, seed=3, num_train_characters=30, num_val_characters=8)
    assert np.array_equal(np.random.get_state()[1], state[1])  # the split leaves the global RNG alone
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(50))


def test_standard_protocol_without_validation_split(omni):
    tr, va, te = create_omniglot_task_distribution(omni, num_train_characters=40, num_val_characters=0,
                                                   augment_rotations=False)
    assert len(np.unique(tr.tasks[0].y)) == 40
    assert char_ids(va.tasks[0].X) == char_ids(te.tasks[0].X) and len(char_ids(te.tasks[0].X)) == 10
    with pytest.raises(ValueError):
        create_omniglot_task_distribution(omni)  # 1200 training characters do not exist here


def test_allcharacters_protocol(omni):
    tr, va, te = create_omniglot_allcharacters_task_distribution(
        omni, num_training_samples_per_class=10, num_test_samples_per_class=-1, num_training_classes=4,
        meta_batch_size=2, num_train_alphabets=4)
    # alphabets: 3 background + 2 evaluation; train = first 4, test = the last, val = test (original)
    assert char_ids(tr.tasks[0].X) == set(range(40))
    assert char_ids(te.tasks[0].X) == set(range(40, 50)) == char_ids(va.tasks[0].X)
    assert sorted(np.unique(tr.tasks[0].y)) == list(range(40))
    for d in (tr, va, te):
        check_batch(d, N=4, K=10, Q=10)
    tr, va, te = create_omniglot_allcharacters_task_distribution(omni, num_training_classes=5,
                                                                 num_train_alphabets=3, num_val_alphabets=1)
    assert char_ids(tr.tasks[0].X) == set(range(30))
    assert char_ids(va.tasks[0].X) == set(range(30, 40)) and char_ids(te.tasks[0].X) == set(range(40, 50))
    with pytest.raises(ValueError):
        create_omniglot_allcharacters_task_distribution(omni)  # default cutoff 36 needs 37+ alphabets


def test_impossible_requests_raise(omni):
    with pytest.raises(ValueError):
        create_omniglot_task_distribution(omni, num_training_samples_per_class=15,
                                          num_test_samples_per_class=10, num_train_characters=30)
    with pytest.raises(ValueError):
        create_omniglot_allcharacters_task_distribution(omni, num_training_classes=11, num_train_alphabets=4)


def test_from_files(omni, tmp_path):
    import h5py
    path = tmp_path / "omniglot.pkl"
    with open(path, "wb") as f:
        pickle.dump(omni, f)
    tr, _, _ = create_omniglot_task_distribution(str(path), num_train_characters=30, num_val_characters=8)
    assert len(np.unique(tr.tasks[0].y)) == 120
    h5 = tmp_path / "omniglot.h5"
    with h5py.File(h5, "w") as f:
        for part in ("train", "test"):
            for i, (X, Y) in enumerate(zip(omni[part + "X"], omni[part + "Y"])):
                f.create_dataset(f"{part}/{i:03d}/X", data=X)
                f.create_dataset(f"{part}/{i:03d}/Y", data=Y)
    tr2, _, te2 = create_omniglot_task_distribution(h5, num_train_characters=30, num_val_characters=8)
    assert np.array_equal(tr.tasks[0].X, tr2.tasks[0].X)
    assert len(omniglot_characters(omni)) == 50


def test_miniimagenet_splits_are_disjoint(tmp_path):
    data = synthetic_miniimagenet_dict(classes=(8, 6, 6), images_per_class=40, size=6)
    path = tmp_path / "mini.pkl"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    tr, va, te = create_miniimagenet_task_distribution(path, num_training_samples_per_class=2,
                                                       num_test_samples_per_class=3, num_training_classes=4,
                                                       meta_batch_size=2, num_eval_test_samples_per_class=7)
    for s, (d, Q) in enumerate(((tr, 3), (va, 7), (te, 7))):
        X = d.tasks[0].X
        assert X.shape == (40 * (8 if s == 0 else 6), 6, 6, 3) and X.dtype == np.uint8
        assert set(np.unique(X) // 100) == {s}  # each distribution holds its own split only
        for task in check_batch(d, N=4, K=2, Q=Q, size=6, channels=3):
            x, y = task.get_train_set()
            # pixel value = 100 * split + class: the relabelled classes come from this split
            assert set(np.round(x[..., 0].max(axis=(1, 2)) * 255).astype(int) // 100) == {s}
    with pytest.raises(ValueError):
        create_miniimagenet_task_distribution(data, num_training_classes=7)  # val has 6 classes


@pytest.mark.parametrize("kwargs", [dict(num_training_classes=2.7), dict(num_training_samples_per_class=1.5),
                                    dict(num_test_samples_per_class=float("nan")), dict(meta_batch_size=True),
                                    dict(meta_batch_size="3"), dict(num_train_characters=30.5),
                                    dict(num_val_characters=-1), dict(seed=0.5),
                                    dict(use_classes_only_once="yes"), dict(augment_rotations=1)])
def test_standard_protocol_refuses_non_integer_counts(omni, kwargs):
    """Counts are refused, not truncated (2.7 classes used to become 2)."""
    args = dict(num_train_characters=30, num_val_characters=8)
    args.update(kwargs)
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        create_omniglot_task_distribution(omni, **args)


def test_counts_given_as_integral_floats_are_accepted(omni):
    tr, _, _ = create_omniglot_task_distribution(omni, num_training_classes=4.0, meta_batch_size=np.int64(2),
                                                 num_train_characters=30.0, num_val_characters=8)
    assert tr.batch_size == 2 and all(len(t.classes_ids) == 4 for t in tr.sample_batch())


@pytest.mark.parametrize("kwargs", [dict(num_training_classes=2.7), dict(num_train_alphabets=3.5),
                                    dict(num_val_alphabets=0.5), dict(meta_batch_size=0)])
def test_allcharacters_protocol_refuses_non_integer_counts(omni, kwargs):
    args = dict(num_train_alphabets=4, num_training_classes=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_omniglot_allcharacters_task_distribution(omni, **args)


@pytest.mark.parametrize("kwargs", [dict(num_training_classes=2.7), dict(num_eval_test_samples_per_class=7.5),
                                    dict(num_test_samples_per_class=0), dict(use_classes_only_once=2)])
def test_miniimagenet_refuses_non_integer_counts(kwargs):
    data = synthetic_miniimagenet_dict(classes=(8, 6, 6), images_per_class=40, size=6)
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        create_miniimagenet_task_distribution(data, **kwargs)


def test_characters_are_grouped_in_n_log_n():
    """One alphabet of 200,000 one-pixel images, each its own character: grouped in well under a second
    (a pass over the alphabet per character made this 4 * 10**10 comparisons)."""
    import time
    n = 200_000
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, (n, 1, 1, 1)).astype(np.uint8)
    Y = rng.permutation(n)
    data = {"trainX": [X], "trainY": [Y], "trainAlphabets": ["a"], "trainCharacters": [[str(i) for i in range(n)]],
            "testX": [], "testY": [], "testAlphabets": [], "testCharacters": []}
    start = time.time()
    chars = omniglot_characters(data)
    assert time.time() - start < 5
    assert len(chars) == n and all(c[2].shape == (1, 1, 1, 1) for c in chars[:10])
    assert [int(c[1]) for c in chars[:5]] == [0, 1, 2, 3, 4]
    assert [c[2][0, 0, 0, 0] for c in chars[:100]] == [X[Y == i][0, 0, 0, 0] for i in range(100)]
