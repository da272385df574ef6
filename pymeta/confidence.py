"""The 95% confidence interval of a mean, as meta-learning papers report it."""

from typing import Sequence, Tuple

import numpy as np


def mean_confidence_interval(values: Sequence[float], z: float = 1.96) -> Tuple[float, float]:
    """(mean, half-width of the 95% normal confidence interval) of `values`."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(z * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
