"""Sinusoid regression tasks (Finn et al. 2017): y = A sin(x + phase), K random training points and a
test set on an even grid."""

import copy
import numbers

import numpy as np

from pymeta.core.task import SupervisedTask
from pymeta.core.task_distribution import TaskDistribution, as_count


class SinusoidTask(SupervisedTask):
    """One sinusoid; `reset()` draws a new amplitude, phase and training points.

    Training set: X [num_training_samples, 1] uniform in [min_x, max_x], y = A sin(X + phase).
    Test set: `num_test_samples` points evenly spaced on [min_x, max_x] (shape [Q, 1]).
    """

    def __init__(self, min_amplitude=0.1, max_amplitude=5.0, min_phase=0.0, max_phase=np.pi,
                 min_x=-5.0, max_x=5.0, num_training_samples=10, num_test_samples=100):
        bounds = (min_amplitude, max_amplitude, min_phase, max_phase, min_x, max_x)
        if not all(isinstance(b, numbers.Real) and not isinstance(b, bool) and np.isfinite(b) for b in bounds):
            raise ValueError("the amplitude, phase and x ranges must be finite numbers")
        if not (0 <= min_amplitude <= max_amplitude and min_phase <= max_phase and min_x < max_x):
            raise ValueError("need 0 <= min_amplitude <= max_amplitude, min_phase <= max_phase and "
                             "min_x < max_x")
        self.num_training_samples = as_count(num_training_samples, "num_training_samples")
        self.num_test_samples = as_count(num_test_samples, "num_test_samples")
        self.min_amplitude, self.max_amplitude = float(min_amplitude), float(max_amplitude)
        self.min_phase, self.max_phase = float(min_phase), float(max_phase)
        self.min_x, self.max_x = float(min_x), float(max_x)
        self.reset()

    def __deepcopy__(self, memo):
        # every array is replaced by reset(): a shallow copy is an independent task
        return copy.copy(self)

    def reset(self):
        self.amplitude = np.random.uniform(self.min_amplitude, self.max_amplitude)
        self.phase = np.random.uniform(self.min_phase, self.max_phase)
        self.X = np.random.uniform(self.min_x, self.max_x, (self.num_training_samples, 1)).astype(np.float32)
        self.y = self.function(self.X)
        self.test_X = np.linspace(self.min_x, self.max_x, self.num_test_samples,
                                  dtype=np.float32).reshape(-1, 1)
        self.test_y = self.function(self.test_X)

    def function(self, x):
        """The task's sinusoid at x (any shape), float32."""
        return (self.amplitude * np.sin(x + self.phase)).astype(np.float32)

    def num_train_samples(self):
        return self.num_training_samples

    def get_train_set(self):
        return self.X, self.y

    def get_test_set(self):
        return self.test_X, self.test_y


def create_sinusoid_task_distribution(min_amplitude=0.1, max_amplitude=5.0, min_phase=0.0,
                                      max_phase=np.pi, min_x=-5.0, max_x=5.0,
                                      num_training_samples=10, num_test_samples=100,
                                      num_test_tasks=100, batch_size=5):
    """(meta-train, meta-validation, meta-test) TaskDistributions of sinusoids.

    Sinusoids are drawn afresh at every sample, so the three distributions are the same family;
    `num_test_tasks` is kept for the original signature.
    """
    as_count(num_test_tasks, "num_test_tasks", minimum=0)
    batch_size = as_count(batch_size, "batch_size")

    def make():
        task = SinusoidTask(min_amplitude, max_amplitude, min_phase, max_phase, min_x, max_x,
                            num_training_samples, num_test_samples)
        return TaskDistribution([task], [1.0], batch_size=batch_size, sample_with_replacement=True)

    return make(), make(), make()
