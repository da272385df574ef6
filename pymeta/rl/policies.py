"""Policies: a Keras model whose output parameterises a distribution over actions.

+ Gaussian (Box actions): the model outputs [N, 2A] = [mean, log_std]; the log-std is a learnt,
  state-independent weight [A] inside the model (`GaussianLogStd`), so it is meta-learnt with the
  rest and saved in .h5 files.
+ Categorical (Discrete actions): the model outputs logits [N, K].

Log-probabilities are pure functions of the model's outputs (`gaussian_log_prob`,
`categorical_log_prob`), hence of (params, state, obs, actions) through `model.stateless_call`.
"""

import math
from typing import Any, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="pymeta.rl")
class GaussianLogStd(keras.layers.Layer):
    """mean [N, A] -> [N, 2A]: the mean followed by a learnt log-std weight [A] broadcast over N."""

    def __init__(self, init_log_std: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.init_log_std = float(init_log_std)

    def build(self, input_shape: Any) -> None:
        self.log_std = self.add_weight(shape=(input_shape[-1],), name="log_std",
                                       initializer=keras.initializers.Constant(self.init_log_std))

    def call(self, mean: Any) -> Any:
        return keras.ops.concatenate([mean, keras.ops.zeros_like(mean) + self.log_std], axis=-1)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return tuple(input_shape[:-1]) + (2 * input_shape[-1],)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "init_log_std": self.init_log_std}


def _mlp(obs_dim, out_dim, hidden, activation, seed, name):
    init = keras.initializers.GlorotUniform(seed=seed)
    inputs = keras.Input((obs_dim,))
    x = inputs
    for i, h in enumerate(hidden):
        x = keras.layers.Dense(h, activation=activation, kernel_initializer=init, name=f"{name}_hidden_{i}")(x)
    return inputs, keras.layers.Dense(out_dim, kernel_initializer=init, name=f"{name}_out")(x)


def make_gaussian_policy(obs_dim: int, act_dim: int, hidden: Sequence[int] = (100, 100),
                         activation: str = "relu", init_log_std: float = 0.0, seed: Optional[int] = None) -> keras.Model:
    """obs [N, obs_dim] -> [N, 2 act_dim] (mean, log-std); the MAML paper's 2x100 ReLU MLP by default."""
    inputs, mean = _mlp(obs_dim, act_dim, hidden, activation, seed, "mean")
    return keras.Model(inputs, GaussianLogStd(init_log_std, name="log_std")(mean), name="gaussian_policy")


def make_categorical_policy(obs_dim: int, num_actions: int, hidden: Sequence[int] = (100, 100),
                            activation: str = "relu", seed: Optional[int] = None) -> keras.Model:
    """obs [N, obs_dim] -> logits [N, num_actions]."""
    inputs, logits = _mlp(obs_dim, num_actions, hidden, activation, seed, "logits")
    return keras.Model(inputs, logits, name="categorical_policy")


def is_gaussian_policy(model: keras.Model) -> bool:
    return any(isinstance(layer, GaussianLogStd) for layer in model.layers)


def gaussian_log_prob(outputs: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """outputs [N, 2A] (mean, log-std), actions [N, A] -> log N(actions; mean, exp(log_std)^2 I) [N]."""
    mean, log_std = tf.split(outputs, 2, axis=-1)
    z = (tf.cast(actions, mean.dtype) - mean) * tf.exp(-log_std)
    a = tf.cast(tf.shape(mean)[-1], mean.dtype)
    return -0.5 * tf.reduce_sum(tf.square(z), -1) - tf.reduce_sum(log_std, -1) - 0.5 * a * math.log(2 * math.pi)


def categorical_log_prob(logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """logits [N, K], integer actions [N] -> log softmax(logits)[actions] [N]."""
    logp = tf.nn.log_softmax(logits, axis=-1)
    return tf.gather(logp, tf.cast(actions, tf.int32), axis=-1, batch_dims=1)


def gaussian_kl(outputs_p: tf.Tensor, outputs_q: tf.Tensor) -> tf.Tensor:
    """KL(p || q) of two diagonal Gaussians given as model outputs [N, 2A] -> [N]."""
    mp, lp = tf.split(outputs_p, 2, axis=-1)
    mq, lq = tf.split(outputs_q, 2, axis=-1)
    return tf.reduce_sum(lq - lp + (tf.exp(2 * lp) + tf.square(mp - mq)) / (2 * tf.exp(2 * lq)) - 0.5, -1)


def categorical_kl(logits_p: tf.Tensor, logits_q: tf.Tensor) -> tf.Tensor:
    """KL(p || q) of two categorical distributions given as logits [N, K] -> [N]."""
    lp, lq = tf.nn.log_softmax(logits_p, -1), tf.nn.log_softmax(logits_q, -1)
    return tf.reduce_sum(tf.exp(lp) * (lp - lq), -1)


def sample_actions(kind: str, outputs: np.ndarray, rng: Any = np.random) -> np.ndarray:
    """Numpy sampling from model outputs [..., D]: Gaussian -> [..., A] float, categorical -> [...] int."""
    if kind == "box":
        mean, log_std = np.split(outputs, 2, axis=-1)
        return mean + np.exp(log_std) * rng.standard_normal(mean.shape).astype(mean.dtype)
    logits = outputs - outputs.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    u = rng.random_sample(p.shape[:-1] + (1,))
    return np.minimum((np.cumsum(p, -1) < u).sum(-1), p.shape[-1] - 1).astype(np.int64)
