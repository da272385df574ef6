"""Returns, the linear feature baseline of the MAML experiments, GAE, and the batches they give.

Episodes have a fixed horizon H: arrays [E, H, ...] with mask [E, H] (1 up to and including the step
an episode terminated on, 0 after). The value after the last step (t = H) and after termination is 0,
as in rllab and pytorch-maml-rl.
"""

import logging
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)


class Episodes(NamedTuple):
    """Recorded episodes: obs [..., E, H, d], actions [..., E, H, A] (or [..., E, H] ints),
    rewards [..., E, H], mask [..., E, H] (leading axes: e.g. tasks)."""
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray

    def returns(self) -> np.ndarray:
        """Undiscounted return of each episode [..., E]."""
        return (self.rewards * self.mask).sum(-1)

    def lengths(self) -> np.ndarray:
        return self.mask.sum(-1)


def discount_cumsum(rewards: np.ndarray, mask: np.ndarray, gamma: float) -> np.ndarray:
    """[E, H] -> [E, H]: sum_{k >= t} gamma^(k-t) r_k over the valid steps of each episode."""
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        running = mask[..., t] * (rewards[..., t] + gamma * running)
        out[..., t] = running
    return out


def linear_features(obs: np.ndarray) -> np.ndarray:
    """obs [E, H, d] -> [E, H, 2d + 4]: [o, o^2, t/100, (t/100)^2, (t/100)^3, 1], o clipped to
    [-10, 10] and t the step within the episode (rllab's LinearFeatureBaseline)."""
    o = np.clip(obs.reshape(obs.shape[0], obs.shape[1], -1), -10, 10).astype(np.float64)
    t = np.broadcast_to((np.arange(obs.shape[1]) / 100.0)[None, :, None], o.shape[:2] + (1,))
    return np.concatenate([o, o ** 2, t, t ** 2, t ** 3, np.ones_like(t)], axis=-1)


def fit_linear_baseline(obs: np.ndarray, returns: np.ndarray, mask: np.ndarray, reg: float = 1e-5,
                        attempts: int = 5) -> np.ndarray:
    """Ridge least squares of the returns [E, H] on `linear_features(obs)` over the valid steps:
    coefficients [F] solving (X^T X + reg I) c = X^T y; reg is raised x10 when the solve fails or
    gives non-finite coefficients (at most `attempts` tries, as rllab)."""
    x = linear_features(obs)[mask > 0]
    y = returns[mask > 0]
    gram, rhs = x.T @ x, x.T @ y
    for _ in range(attempts):
        try:
            coeffs = np.linalg.solve(gram + reg * np.eye(len(gram)), rhs)
            if np.all(np.isfinite(coeffs)):
                return coeffs
        except np.linalg.LinAlgError:
            pass
        log.debug("linear baseline: solve failed with reg %g, raising it x10", reg)
        reg *= 10.0
    log.warning("linear baseline: no finite fit after %d attempts; using a zero baseline", attempts)
    return np.zeros(x.shape[1])


def predict_linear_baseline(coeffs: np.ndarray, obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Baseline values [E, H] (0 on masked steps)."""
    return (linear_features(obs) @ coeffs) * mask


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Generalised advantage estimates [E, H]: A_t = sum_k (gamma lam)^k delta_{t+k},
    delta_t = r_t + gamma V_{t+1} - V_t, with V = 0 after the last valid step."""
    adv = np.zeros(rewards.shape, np.float64)
    running = np.zeros(rewards.shape[:-1])
    next_value = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m = mask[..., t]
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = m * (delta + gamma * lam * running)
        adv[..., t] = running
        next_value = m * values[..., t]
    return adv


def policy_gradient_batch(episodes: Episodes, gamma: float = 0.99, gae_lambda: float = 1.0,
                          normalize_advantages: bool = True, dtype=np.float32):
    """One task's episodes (leaves [E, H, ...]) -> the objective's batch (obs [N, d], actions [N, ...],
    advantages [N], mask [N]), N = E H: the linear baseline refit on these episodes, GAE, and the
    advantages normalised over the valid steps (as rllab's center_adv)."""
    obs, actions, rewards, mask = episodes
    mask = mask.astype(np.float64)
    coeffs = fit_linear_baseline(obs, discount_cumsum(rewards, mask, gamma), mask)
    adv = gae(rewards, predict_linear_baseline(coeffs, obs, mask), mask, gamma, gae_lambda)
    if normalize_advantages:
        valid = adv[mask > 0]
        adv = (adv - valid.mean()) / (valid.std() + 1e-8) * mask
    e, h = mask.shape
    act = actions.reshape((e * h,) + actions.shape[2:])
    return (obs.reshape(e * h, -1).astype(dtype), act.astype(dtype if act.dtype.kind == "f" else np.int32),
            adv.reshape(-1).astype(dtype), mask.reshape(-1).astype(dtype))
