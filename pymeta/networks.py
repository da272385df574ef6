"""The networks of the original pyMeta, built with Keras 3 and pymeta's exact-moments batch norm.

All classifiers end in a softmax (probabilities out); losses use the cached logits for stability.
"""

import keras

from pymeta.layers import BatchNormalization


def _conv_classifier(num_output_classes, input_shape, filters, pool_padding, name):
    """4 x [conv 3x3 `filters` (no bias), BN, max-pool 2, ReLU] -> flatten -> dense softmax.

    Input [batch, *input_shape] float32 in [0, 1]; output [batch, num_output_classes] probabilities.
    """
    if num_output_classes < 1:
        raise ValueError(f"num_output_classes must be >= 1, got {num_output_classes}")
    # four 2x2 poolings: "valid" needs 16 pixels a side (16 -> 8 -> 4 -> 2 -> 1), "same" one
    smallest = 16 if pool_padding == "valid" else 1
    if len(input_shape) != 3 or min(input_shape[:2]) < smallest:
        raise ValueError(f"images of shape {tuple(input_shape)} are too small for this network ({name}: four "
                         f"2x2 poolings need at least {smallest}x{smallest} pixels and a channel axis)")
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for i in range(4):
        # no conv bias: the batch norm's beta makes it redundant (its gradient is exactly zero)
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, padding=pool_padding, name=f"pool{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(num_output_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def make_omniglot_cnn_model(num_output_classes, input_shape=(28, 28, 1), filters=64):
    """Conv-4 with 64 filters for 28x28x1 Omniglot (valid pooling: 28 -> 14 -> 7 -> 3 -> 1)."""
    return _conv_classifier(num_output_classes, input_shape, filters, "valid", "omniglot_cnn")


def make_miniimagenet_cnn_model(num_output_classes, input_shape=(84, 84, 3), filters=32):
    """Conv-4 with 32 filters for 84x84x3 Mini-ImageNet (same pooling: 84 -> 42 -> 21 -> 11 -> 6)."""
    return _conv_classifier(num_output_classes, input_shape, filters, "same", "miniimagenet_cnn")


def make_sinusoid_model():
    """MLP 1 -> 64 -> 64 -> 1 with ReLU, for sinusoid regression. Input [batch, 1], output [batch, 1]."""
    return keras.Sequential([
        keras.Input(shape=(1,)),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(1),
    ], name="sinusoid_mlp")
