"""Helpers shared by the second-order tests (HVP/CG, iMAML, MAML, SeqFOMAML): float64 models,
flat-vector conversions, tiny synthetic tasks."""

import contextlib

import keras
import numpy as np
import tensorflow as tf

from pymeta.core.task import SupervisedTask
from pymeta.core.task_distribution import TaskDistribution


@contextlib.contextmanager
def floatx(dtype):
    """Build Keras layers in `dtype` inside the block (floatx and global dtype policy; both restored)."""
    old_floatx, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old_floatx)
        keras.config.set_dtype_policy(old_policy)


def flat(tensors):
    return np.concatenate([np.ravel(np.asarray(t)) for t in tensors])


def unflat(vector, like):
    out, k = [], 0
    for t in like:
        n = int(np.prod(t.shape))
        out.append(tf.constant(np.reshape(vector[k:k + n], t.shape), dtype=t.dtype))
        k += n
    return out


def params_of(model):
    return [tf.convert_to_tensor(v) for v in model.trainable_variables]


def state_of(model):
    return [tf.convert_to_tensor(v) for v in model.non_trainable_variables]


def mlp(sizes, activation="tanh", out_activation=None, seed=0):
    """Dense MLP sizes[0] -> ... -> sizes[-1] (in the current floatx)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(sizes[0],))
    x = inputs
    for s in sizes[1:-1]:
        x = keras.layers.Dense(s, activation=activation)(x)
    outputs = keras.layers.Dense(sizes[-1], activation=out_activation)(x)
    return keras.Model(inputs, outputs)


def bn_mlp(input_shape=(6, 6, 1), hidden=12, classes=3, seed=0):
    """Flatten -> Dense -> pymeta BatchNormalization -> ReLU -> Dense softmax: batch norm at the cost of
    a small MLP (cheap to compile)."""
    from pymeta.layers import BatchNormalization
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hidden, use_bias=False)(x)
    x = keras.layers.ReLU()(BatchNormalization()(x))
    outputs = keras.layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


class ArrayTask(SupervisedTask):
    """A task given by fixed arrays (x, y, test_x, test_y)."""

    def __init__(self, x, y, test_x, test_y):
        self.x, self.y, self.test_x, self.test_y = x, y, test_x, test_y

    def get_train_set(self):
        return self.x, self.y

    def get_test_set(self):
        return self.test_x, self.test_y


class PatternClassificationTask(SupervisedTask):
    """N-way K-shot classification of noisy class patterns ("synthetic Omniglot").

    A pool of `num_classes` fixed random binary images (size x size x 1) is shared by all copies; a
    reset draws N classes, labels them 0..N-1 in random order, and draws K support and Q query
    examples per class: the class image with pixels flipped with probability `flip` plus Gaussian
    noise. Labels are arbitrary per task, so only fast adaptation can classify.
    """

    _shared_attributes = ("prototypes",)

    def __init__(self, prototypes, num_ways=5, shots=1, queries=5, flip=0.1, noise=0.1):
        self.prototypes = prototypes
        self.num_ways, self.shots, self.queries = num_ways, shots, queries
        self.flip, self.noise = flip, noise
        self.reset()

    def _draw(self, classes, per_class):
        xs, ys = [], []
        for label, c in enumerate(classes):
            p = self.prototypes[c]
            flips = np.random.rand(per_class, *p.shape) < self.flip
            x = np.where(flips, 1.0 - p, p) + self.noise * np.random.randn(per_class, *p.shape)
            xs.append(x.astype(np.float32))
            ys.append(np.full(per_class, label, np.int64))
        order = np.random.permutation(per_class * len(classes))
        return np.concatenate(xs)[order], np.concatenate(ys)[order]

    def reset(self):
        classes = np.random.choice(len(self.prototypes), self.num_ways, replace=False)
        self.x, self.y = self._draw(classes, self.shots)
        self.test_x, self.test_y = self._draw(classes, self.queries)

    def get_train_set(self):
        return self.x, self.y

    def get_test_set(self):
        return self.test_x, self.test_y


def pattern_distribution(num_classes=40, size=16, batch_size=4, seed=0, block=1, **task_kwargs):
    """Tasks of `PatternClassificationTask` over `num_classes` random binary size x size patterns made
    of block x block squares."""
    rng = np.random.RandomState(seed)
    cells = (rng.rand(num_classes, size // block, size // block, 1) < 0.5).astype(np.float32)
    prototypes = np.repeat(np.repeat(cells, block, axis=1), block, axis=2)
    return TaskDistribution([PatternClassificationTask(prototypes, **task_kwargs)], [1.0],
                            batch_size=batch_size)
