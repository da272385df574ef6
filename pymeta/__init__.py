"""pymeta: gradient-based meta-learning on TensorFlow 2 / Keras 3."""
