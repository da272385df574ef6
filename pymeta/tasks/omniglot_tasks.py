"""Omniglot task distributions (N-way K-shot character classification).

Data: the file written by ``scripts/make_omniglot_dataset.py`` (see ``pymeta.data.load_omniglot``):
uint8 images [n, size, size, 1] per alphabet; 30 background + 20 evaluation alphabets, 1623 characters,
20 drawings each. Images stay uint8; ClassificationTask scales each batch to float32 in [0, 1].
Every builder returns (metatrain, metaval, metatest) TaskDistributions and accepts either a path
(pkl or h5) or an already loaded dict. Randomness during sampling comes from ``np.random``.

Protocols
---------
``create_omniglot_task_distribution`` (protocol 'standard', the one to train and report with; the
protocol of Santoro et al. 2016, Finn et al. 2017 (MAML) and Nichol et al. 2018 (Reptile)):
  * all 1623 characters pooled (background alphabets, then evaluation alphabets, each sorted by name),
    shuffled once with ``np.random.RandomState(seed)`` (seed=0 by default; the global RNG is untouched);
  * the first 1200 characters are meta-training characters; each is augmented with its 90, 180 and 270
    degree rotations (``np.rot90``) as new classes: 4800 meta-training classes;
  * validation: the next ``num_val_characters`` (100) characters; test: the remaining 323. Validation
    characters are taken out of the 423 held-out characters, not out of the 1200, so meta-training keeps
    the usual 4800 classes and no validation class is ever trained on. With ``num_val_characters=0`` the
    test set is the usual 423 characters and validation uses those same characters (Reptile's setup);
  * no rotation augmentation at validation / test.

``create_omniglot_allcharacters_task_distribution`` (protocol of the original pyMeta): the 50 alphabets
(30 background then 20 evaluation, each group sorted by name) are split by alphabet: the first 36
(all background + the first 6 evaluation alphabets) are meta-training, the remaining 14 evaluation
alphabets are meta-test. As in the original, validation uses the meta-test alphabets
(``num_val_alphabets=0``); ``num_val_alphabets=k`` takes the first k of the 14 for validation instead.
No rotations.

Train/test split inside a task: K train + Q test drawings per class with ``split_train_test=-1``
(K / (K + Q)) as the original did; with Q = -1 ("all the rest") the split puts exactly K of the 20
drawings in the train part and the others in the test part.
"""

import numpy as np

from pymeta.core.task_distribution import as_count, as_int
from pymeta.data import load_omniglot
from pymeta.tasks._dataset_tasks import (check_counts, check_flag, classes_only_once, distribution, min_class_size,
                                         split_by_label, split_for)

__all__ = ["create_omniglot_task_distribution", "create_omniglot_allcharacters_task_distribution",
           "omniglot_characters", "standard_split"]


def _load(path_or_data):
    return path_or_data if isinstance(path_or_data, dict) else load_omniglot(path_or_data)


def omniglot_characters(data):
    """All characters in a fixed order: list of (alphabet_name, character_name, uint8 [20, s, s, 1]).

    Background alphabets first, then evaluation alphabets (each in file order, i.e. sorted by name).
    """
    chars = []
    for part in ("train", "test"):
        for X, Y, alphabet, names in zip(data[part + "X"], data[part + "Y"], data[part + "Alphabets"],
                                         data[part + "Characters"]):
            for label, images in zip(np.unique(Y), split_by_label(X, Y)):
                chars.append((alphabet, names[label], images))
    return chars


def _stack(images_per_class):
    """[(uint8 [m, ...]), ...] -> (X uint8 [sum m, ...], y int64 class index)."""
    X = np.concatenate(images_per_class, axis=0)
    y = np.concatenate([np.full(len(x), i, np.int64) for i, x in enumerate(images_per_class)])
    return X, y


def standard_split(data, seed=0, num_train_characters=1200, num_val_characters=100):
    """Indices into ``omniglot_characters(data)``: (train, val, test) int arrays (see module docstring)."""
    n = len(omniglot_characters(data)) if isinstance(data, dict) else as_count(data, "number of characters", 0)
    seed = as_count(seed, "seed", minimum=0)
    num_train_characters = as_int(num_train_characters, "num_train_characters")
    num_val_characters = as_int(num_val_characters, "num_val_characters")
    if num_train_characters < 1 or num_val_characters < 0 or num_train_characters + num_val_characters >= n:
        raise ValueError(f"cannot take {num_train_characters} train + {num_val_characters} validation "
                         f"characters and leave test characters out of {n}")
    perm = np.random.RandomState(seed).permutation(n)
    train = perm[:num_train_characters]
    val = perm[num_train_characters:num_train_characters + num_val_characters]
    test = perm[num_train_characters + num_val_characters:]
    return train, val, test


def create_omniglot_task_distribution(path_to_pkl, num_training_samples_per_class=1,
                                      num_test_samples_per_class=-1, num_training_classes=5,
                                      meta_batch_size=5, seed=0, num_train_characters=1200,
                                      num_val_characters=100, augment_rotations=True,
                                      use_classes_only_once=None):
    """Standard Omniglot protocol (module docstring): (metatrain, metaval, metatest) TaskDistributions.

    Default: 5-way 1-shot, test (query) set = the 19 other drawings of each class, 5 tasks per meta-batch.
    Meta-train X: uint8 [4800 * 20, s, s, 1] (with rotations), y: class ids 0..4799 (4 * character + k
    for a rotation by k * 90 degrees). ``use_classes_only_once``: no class twice in one meta-training
    batch (None: on when possible); validation/test tasks are drawn independently.
    """
    K, Q, N, meta_batch_size = check_counts(num_training_samples_per_class, num_test_samples_per_class,
                                            num_training_classes, meta_batch_size)
    use_classes_only_once = check_flag(use_classes_only_once, "use_classes_only_once")
    augment_rotations = check_flag(augment_rotations, "augment_rotations")
    seed = as_count(seed, "seed", minimum=0)
    num_train_characters = as_count(num_train_characters, "num_train_characters")
    num_val_characters = as_count(num_val_characters, "num_val_characters", minimum=0)
    data = _load(path_to_pkl)
    chars = [c[2] for c in omniglot_characters(data)]
    train_idx, val_idx, test_idx = standard_split(len(chars), seed, num_train_characters, num_val_characters)
    if num_val_characters == 0:
        val_idx = test_idx

    train_classes = []
    for i in train_idx:
        rotations = range(4) if augment_rotations else range(1)
        train_classes.extend(np.ascontiguousarray(np.rot90(chars[i], k, axes=(1, 2))) for k in rotations)

    out = []
    for which, classes in (("train", train_classes), ("val", [chars[i] for i in val_idx]),
                           ("test", [chars[i] for i in test_idx])):
        X, y = _stack(classes)
        once = classes_only_once(use_classes_only_once, N, meta_batch_size, len(classes)) \
            if which == "train" else False
        out.append(distribution(X, y, K, Q, N, split_for(K, Q, min_class_size(y)), meta_batch_size, once))
    return tuple(out)


def create_omniglot_allcharacters_task_distribution(path_to_pkl, num_training_samples_per_class=10,
                                                    num_test_samples_per_class=-1, num_training_classes=20,
                                                    meta_batch_size=5, num_train_alphabets=36,
                                                    num_val_alphabets=0, use_classes_only_once=None):
    """Original pyMeta protocol (split by alphabet, module docstring): (metatrain, metaval, metatest).

    Each distribution holds X uint8 [n, s, s, 1] of its alphabets and y = character ids numbered
    across those alphabets.
    """
    K, Q, N, meta_batch_size = check_counts(num_training_samples_per_class, num_test_samples_per_class,
                                            num_training_classes, meta_batch_size)
    use_classes_only_once = check_flag(use_classes_only_once, "use_classes_only_once")
    num_train_alphabets = as_count(num_train_alphabets, "num_train_alphabets")
    num_val_alphabets = as_count(num_val_alphabets, "num_val_alphabets", minimum=0)
    data = _load(path_to_pkl)
    alphabets = list(zip(data["trainX"] + data["testX"], data["trainY"] + data["testY"]))
    if not 1 <= num_train_alphabets < len(alphabets) or \
            not 0 <= num_val_alphabets < len(alphabets) - num_train_alphabets:
        raise ValueError(f"cannot split {len(alphabets)} alphabets into {num_train_alphabets} train, "
                         f"{num_val_alphabets} validation and at least one test alphabet")
    groups = {"train": alphabets[:num_train_alphabets],
              "test": alphabets[num_train_alphabets + num_val_alphabets:]}
    groups["val"] = alphabets[num_train_alphabets:num_train_alphabets + num_val_alphabets] or groups["test"]

    out = []
    for which in ("train", "val", "test"):
        classes = [images for X, Y in groups[which] for images in split_by_label(X, Y)]
        X, y = _stack(classes)
        once = classes_only_once(use_classes_only_once, N, meta_batch_size, len(classes)) \
            if which == "train" else False
        out.append(distribution(X, y, K, Q, N, split_for(K, Q, min_class_size(y)), meta_batch_size, once))
    return tuple(out)
