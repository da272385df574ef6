"""Monitoring that leaves a run alone: the random generators and the kept inner optimizer state are
restored after a plot, an extra TensorBoard task or RL's seeded validation."""

import contextlib
import random
from typing import Any, Iterator

import numpy as np

from pymeta.checkpoint import kept_inner_state


@contextlib.contextmanager
def monitoring_leaves_the_run_alone(metalearner: Any = None) -> Iterator[None]:
    """For monitoring (TensorBoard's extra validation task, plots): the random generators the run
    draws from (numpy's and Python's global ones, TensorFlow's global generator) and the meta-learner's
    kept inner optimizer state are restored afterwards, so that a run's parameters are the same with
    monitoring on or off."""
    import tensorflow as tf
    np_state, py_state = np.random.get_state(), random.getstate()
    tf_state = tf.random.get_global_generator().state.numpy()
    kept = kept_inner_state(metalearner) if metalearner is not None else None
    kept_state = None if kept is None else kept.read()
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        tf.random.get_global_generator().reset(tf_state)
        if kept is not None:
            kept.write(kept_state)
