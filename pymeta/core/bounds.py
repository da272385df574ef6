"""What a hyperparameter given by a user must be: one `Bound` per quantity, stated once and used by the
Python API (`pymeta.optim`, iMAML, TRPO, `pymeta.core.finite`) and by the command line's flags
(`pymeta.config.checks`) alike. Pure Python, no numpy or TensorFlow: the flags are checked before
TensorFlow starts.

A NaN or infinite learning rate, proximal strength or damping does not fail by itself: it trains on and
turns the weights to NaN. Every bound therefore asks for a finite number.
"""

import math
import numbers
import reprlib
from typing import Any, NamedTuple, Optional


class Bound(NamedTuple):
    """A finite real number x with x >= minimum, x > above and x < below (each when given)."""
    minimum: Optional[float] = None
    above: Optional[float] = None
    below: Optional[float] = None

    def __str__(self) -> str:
        """The rule as the messages state it: 'a finite number >= 0 and < 1'."""
        limits = [f"{op} {v:g}" for op, v in ((">=", self.minimum), (">", self.above), ("<", self.below))
                  if v is not None]
        return "a finite number" + (" " + " and ".join(limits) if limits else "")

    def holds(self, x: float) -> bool:
        """Whether the float `x` is within the bound."""
        return math.isfinite(x) and (self.minimum is None or x >= self.minimum) and \
            (self.above is None or x > self.above) and (self.below is None or x < self.below)

    def check(self, value: Any, name: str) -> float:
        """`value` as a float if it is a real number within the bound; otherwise a one-line ValueError
        '{name} must be {rule}, got {value}' (booleans and strings are refused too)."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{name} must be {self}, got {reprlib.repr(value)}")
        try:
            x = float(value)
        except OverflowError:  # an int beyond float range
            raise ValueError(f"{name} must be {self}, got {reprlib.repr(value)}") from None
        if not self.holds(x):
            raise ValueError(f"{name} must be {self}, got {x!r}")
        return x


NON_NEGATIVE = Bound(minimum=0.0)
POSITIVE = Bound(above=0.0)
# a step size: the learning rate of an optimizer built in Python (pymeta.optim, a Keras optimizer given as
# the inner or outer one; 0 is no step) and each of a meta-test's --step_sizes
STEP_SIZE = NON_NEGATIVE
# --inner_lr / --meta_lr: a run whose rate is 0 learns nothing, so the flags ask for more than a step size.
# There is no upper bound: a sane one depends on the model, and a rate that makes training diverge is caught
# when the loss or the meta-parameters stop being finite.
LEARNING_RATE = POSITIVE
PROXIMAL_STRENGTH = NON_NEGATIVE  # optim.add_proximal_gradient; a meta-test's --imaml_lambda_reg (0: plain steps)
LAMBDA_REG = POSITIVE             # iMAML's lambda_reg / --imaml_lambda_reg: its meta-gradient divides by it
DAMPING = NON_NEGATIVE            # iMAML's cg_damping, lam_damping, TRPO's cg_damping (and their flags)
CG_TOL = NON_NEGATIVE             # iMAML's cg_tol / --imaml_cg_tol
MAX_KL = POSITIVE                 # TRPO's step size max_kl / --max_kl
UNIT_INTERVAL = Bound(minimum=0.0, below=1.0)  # Adam's beta_1, beta_2
