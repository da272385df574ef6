"""pymeta's batch norm (exact moments, fused float32 path == float64 formula) and model files."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pymeta.layers import BatchNormalization, _batch_norm_train
from pymeta.model_io import load_model, load_weights_into, save_model
from pymeta.networks import make_miniimagenet_cnn_model, make_omniglot_cnn_model, make_sinusoid_model


def reference_bn(x, gamma, beta, eps=1e-3):
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


def test_batch_moments_match_numpy():
    rng = np.random.RandomState(0)
    x = rng.randn(6, 5, 5, 4) * 3 + 2
    gamma, beta = rng.rand(4) + 0.5, rng.randn(4)
    ref, mean, var = reference_bn(x, gamma, beta)
    for dtype, tol in ((tf.float32, 1e-4), (tf.float64, 1e-12)):
        y, m, v = _batch_norm_train(tf.constant(x, dtype), tf.constant(gamma, dtype),
                                    tf.constant(beta, dtype), 1e-3)
        np.testing.assert_allclose(y.numpy(), ref, rtol=tol * 10, atol=tol * 10)
        np.testing.assert_allclose(m.numpy(), mean, rtol=1e-5)
        np.testing.assert_allclose(v.numpy(), var, rtol=1e-5)  # biased (population) variance


def test_layer_statistics_momentum_zero_and_inference():
    rng = np.random.RandomState(1)
    layer = BatchNormalization()
    x = tf.constant(rng.randn(8, 3, 3, 2).astype(np.float32) * 2 + 1)
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.numpy(), x.numpy().mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.numpy().var((0, 1, 2)), rtol=1e-5)
    # inference with the stored statistics of x reproduces the training-mode output on x
    np.testing.assert_allclose(layer(x, training=False).numpy(), layer(x, training=True).numpy(),
                               rtol=1e-4, atol=1e-5)


def test_gradient_matches_finite_differences_float64():
    rng = np.random.RandomState(2)
    x = tf.constant(rng.randn(5, 3, 3, 2))
    w = tf.constant(rng.randn(5, 3, 3, 2))
    gamma, beta = tf.constant([1.3, 0.7], tf.float32), tf.constant([0.1, -0.2], tf.float32)

    def f(x):
        y, _, _ = _batch_norm_train(x, gamma, beta, 1e-3)
        return tf.reduce_sum(tf.sin(y) * w)

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = f(x)
    grad = tape.gradient(value, x).numpy()
    eps = 1e-6
    fd = np.zeros_like(grad)
    xn = x.numpy()
    for idx in np.ndindex(xn.shape):
        e = np.zeros_like(xn)
        e[idx] = eps
        fd[idx] = (f(tf.constant(xn + e)) - f(tf.constant(xn - e))).numpy() / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_fused_second_order_matches_float64_formula():
    """Hessian-vector products through the fused float32 kernel equal the float64 formula's."""
    rng = np.random.RandomState(3)
    X, W, V = (rng.randn(6, 4, 4, 3) for _ in range(3))
    gamma, beta = tf.constant([1.2, 0.8, 1.0]), tf.constant([0.0, 0.3, -0.1])

    def hvp(dtype):
        x, w, v = (tf.constant(a, dtype) for a in (X, W, V))
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y, _, _ = _batch_norm_train(x, gamma, beta, 1e-3)
                loss = tf.reduce_sum(tf.sin(y) * w)
            g = inner.gradient(loss, x)
            gv = tf.reduce_sum(g * v)
        return outer.gradient(gv, x).numpy().astype(np.float64)

    h32, h64 = hvp(tf.float32), hvp(tf.float64)
    assert np.linalg.norm(h32 - h64) / np.linalg.norm(h64) < 1e-5


def test_stock_keras_batchnorm_second_order_is_wrong_ours_is_right():
    """Documents why pymeta has its own layer: Keras' BN drops a second-order term."""
    rng = np.random.RandomState(4)
    X, W, V = (rng.randn(6, 4, 4, 3) for _ in range(3))

    def hvp(layer, dtype):
        x, w, v = (tf.constant(a, dtype) for a in (X, W, V))
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                loss = tf.reduce_sum(tf.sin(layer(x, training=True)) * w)
            gv = tf.reduce_sum(inner.gradient(loss, x) * v)
        return outer.gradient(gv, x).numpy()

    ours = hvp(BatchNormalization(dtype="float64"), tf.float64)
    exact = hvp(lambda x, training: _batch_norm_train(x, tf.ones(3), tf.zeros(3), 1e-3)[0], tf.float64)
    stock = hvp(keras.layers.BatchNormalization(dtype="float64"), tf.float64)
    np.testing.assert_allclose(ours, exact, rtol=1e-10, atol=1e-10)
    assert np.linalg.norm(stock - exact) / np.linalg.norm(exact) > 1e-3


@pytest.mark.parametrize("make,shape", [(lambda: make_omniglot_cnn_model(5), (3, 28, 28, 1)),
                                        (lambda: make_miniimagenet_cnn_model(4), (2, 84, 84, 3)),
                                        (make_sinusoid_model, (7, 1))])
def test_h5_round_trip(tmp_path, make, shape):
    keras.utils.set_random_seed(0)
    model = make()
    for v in model.non_trainable_variables:
        v.assign(np.random.rand(*v.shape))
    x = np.random.rand(*shape).astype(np.float32)
    path = save_model(model, tmp_path / "sub" / "model.h5")
    again = load_model(path)
    for training in (False, True):
        np.testing.assert_array_equal(model(x, training=training).numpy(), again(x, training=training).numpy())
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.startswith(".tmp")]


def test_model_file_errors(tmp_path):
    path = save_model(make_sinusoid_model(), tmp_path / "m.h5")
    with pytest.raises(ValueError, match="another architecture"):
        load_weights_into(make_omniglot_cnn_model(5), path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot read"):
        load_model(tmp_path / "junk.h5")
    with pytest.raises(ValueError, match=".h5 or .keras"):
        save_model(make_sinusoid_model(), tmp_path / "m.txt")


def test_network_shapes():
    assert make_omniglot_cnn_model(5).output_shape == (None, 5)
    assert make_miniimagenet_cnn_model(5).output_shape == (None, 5)
    assert make_sinusoid_model().output_shape == (None, 1)
    with pytest.raises(ValueError):
        make_omniglot_cnn_model(0)
