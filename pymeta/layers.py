"""Layers of pymeta's own.

`BatchNormalization` normalises with the exact batch moments: mean and variance are both
differentiated in full, so second-order meta-gradients (MAML, iMAML Hessian-vector products) through
it are correct. Keras 3's stock layer computes the variance around a `stop_gradient`-ed mean, which is
exact to first order only.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="pymeta")
class BatchNormalization(keras.layers.Layer):
    """Batch normalisation over all axes but `axis`, with exact batch moments.

    Args:
        axis: the feature axis (default last).
        momentum: weight of the old value in the moving statistics update. pymeta's default is 0.0:
            after a call in training mode the "moving" statistics are exactly the moments of that
            batch. Meta-learning uses this for non-transductive evaluation (statistics of the support
            set, then applied to each query example).
        epsilon: added to the variance.

    Input/output: any shape [..., C] (C on `axis`). Moments are computed in float32 also under a
    bfloat16/float16 compute policy.
    """

    def __init__(self, axis=-1, momentum=0.0, epsilon=1e-3, center=True, scale=True, **kwargs):
        kwargs.setdefault("autocast", False)  # statistics and variables stay float32 under mixed precision
        super().__init__(**kwargs)
        self.axis = axis
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale

    def build(self, input_shape):
        dim = input_shape[self.axis]
        self.gamma = self.add_weight(shape=(dim,), initializer="ones", name="gamma", trainable=self.scale)
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta", trainable=self.center)
        self.moving_mean = self.add_weight(shape=(dim,), initializer="zeros", name="moving_mean",
                                           trainable=False)
        self.moving_variance = self.add_weight(shape=(dim,), initializer="ones",
                                               name="moving_variance", trainable=False)

    def call(self, inputs, training=None):
        rank = len(inputs.shape)
        axis = self.axis % rank
        if axis != rank - 1:
            raise ValueError("pymeta BatchNormalization supports the last axis only (channels last)")
        if training:
            y, mean, variance = _batch_norm_train(inputs, self.gamma, self.beta, self.epsilon)
            m = self.momentum
            if m:
                mean = m * _float32(self.moving_mean) + (1.0 - m) * tf.cast(mean, tf.float32)
                variance = m * _float32(self.moving_variance) + (1.0 - m) * tf.cast(variance, tf.float32)
            self.moving_mean.assign(tf.cast(mean, self.moving_mean.dtype))
            self.moving_variance.assign(tf.cast(variance, self.moving_variance.dtype))
            return y
        inv = tf.math.rsqrt(_float32(self.moving_variance) + self.epsilon) * _float32(self.gamma)
        shift = _float32(self.beta) - _float32(self.moving_mean) * inv
        dtype = inputs.dtype
        return inputs * tf.cast(inv, dtype) + tf.cast(shift, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon,
                      center=self.center, scale=self.scale)
        return config


def _float32(v):
    return tf.cast(tf.convert_to_tensor(v), tf.float32)


def _batch_norm_train(x, gamma, beta, epsilon):
    """Normalise x [..., C] with its exact batch moments; returns (y, mean [C], biased variance [C])
    (moments in float32, or float64 for float64 x).

    float32/bfloat16/float16: TensorFlow's fused kernel (x flattened to [n, 1, 1, C]); its first- and
    second-order gradients are exact (tested against float64 finite differences). float64 (no fused
    kernel): the same moments written out, every term differentiated.
    """
    shape = tf.shape(x)
    channels = x.shape[-1]
    if x.dtype == tf.float64:
        axes = list(range(len(x.shape) - 1))
        mean = tf.reduce_mean(x, axes)
        variance = tf.reduce_mean(tf.square(x - mean), axes)
        inv = tf.math.rsqrt(variance + epsilon) * tf.cast(gamma, x.dtype)
        y = x * inv + (tf.cast(beta, x.dtype) - mean * inv)
        return y, mean, variance
    flat = x if len(x.shape) == 4 else tf.reshape(x, [-1, 1, 1, channels])
    y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=flat, scale=tf.cast(gamma, tf.float32), offset=tf.cast(beta, tf.float32),
        mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
    n = tf.cast(tf.size(flat) // channels, tf.float32)
    variance = variance * (n - 1.0) / n  # the kernel reports the Bessel-corrected variance
    return tf.reshape(y, shape), mean, variance
