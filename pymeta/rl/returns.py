"""Returns, the linear feature baseline of the MAML experiments, GAE, and the batches they give.

Episodes have a fixed horizon H: arrays [E, H, ...] with mask [E, H] (1 up to and including the step
an episode terminated on, 0 after). The value after the last step (t = H) and after termination is 0,
as in rllab and pytorch-maml-rl.

With restarts (`RLTask(restart_episodes=True)`, rllab's batches of E x H samples) a row is one
environment's H steps, holding one or more episodes back to back: `time` [E, H] is the step within
the episode (0 where one starts), the mask is 1 throughout, and an episode ends where the next one
starts or at the row's end (the last one cut there). Returns, GAE and the baseline's time features
restart at every episode start, and a batch holds all the row's steps; the reported returns are those
of each row's first episode (E unbiased samples: later episodes that fit in a row are biased towards
short ones, and the last is cut); without `time` a row is one episode.
"""

import logging
from typing import Any, Callable, NamedTuple, Optional, Tuple

import numpy as np

log = logging.getLogger(__name__)


class Episodes(NamedTuple):
    """Recorded episodes: obs [..., E, H, d], actions [..., E, H, A] (or [..., E, H] ints),
    rewards [..., E, H], mask [..., E, H], time [..., E, H] or None (leading axes: e.g. tasks;
    see the module doc)."""
    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray
    time: Optional[np.ndarray] = None

    def map(self, fn: Callable[[Any], Any]) -> "Episodes":
        """fn applied to every array (time too, when present)."""
        return Episodes(*(None if x is None else fn(x) for x in self))  # type: ignore[arg-type]

    def first_episode_mask(self) -> np.ndarray:
        """[..., E, H]: the mask of each row's first episode (the mask itself without restarts)."""
        if self.time is None:
            return self.mask
        return self.mask * (np.cumsum(self.time == 0, axis=-1) == 1)

    def returns(self) -> np.ndarray:
        """Undiscounted return of each row's first episode [..., E] (every episode without restarts)."""
        return (self.rewards * self.first_episode_mask()).sum(-1)

    def lengths(self) -> np.ndarray:
        """Length of each row's first episode [..., E]."""
        return self.first_episode_mask().sum(-1)


def episode_ends(time: Optional[np.ndarray], shape: Tuple[int, ...]) -> Optional[np.ndarray]:
    """[..., H] bool: True where an episode of a restarting row ends (the next step starts one, or the
    row ends); None without `time` (a row is one episode)."""
    if time is None:
        return None
    return np.concatenate([time[..., 1:] == 0, np.ones(shape[:-1] + (1,), bool)], axis=-1)


def discount_cumsum(rewards: np.ndarray, mask: np.ndarray, gamma: float,
                    ends: Optional[np.ndarray] = None) -> np.ndarray:
    """[E, H] -> [E, H]: sum_{k >= t} gamma^(k-t) r_k over the valid steps of each episode (ends
    [E, H]: where episodes of restarting rows end, see `episode_ends`)."""
    out = np.zeros_like(rewards, dtype=np.float64)
    running = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        if ends is not None:
            running = np.where(ends[..., t], 0.0, running)
        running = mask[..., t] * (rewards[..., t] + gamma * running)
        out[..., t] = running
    return out


def linear_features(obs: np.ndarray, time: Optional[np.ndarray] = None) -> np.ndarray:
    """obs [E, H, d] -> [E, H, 2d + 4]: [o, o^2, t/100, (t/100)^2, (t/100)^3, 1], o clipped to
    [-10, 10] and t the step within the episode (rllab's LinearFeatureBaseline; `time` [E, H], default
    the column index)."""
    o = np.clip(obs.reshape(obs.shape[0], obs.shape[1], -1), -10, 10).astype(np.float64)
    if time is None:
        t = np.broadcast_to((np.arange(obs.shape[1]) / 100.0)[None, :, None], o.shape[:2] + (1,))
    else:
        t = (np.asarray(time, np.float64) / 100.0)[..., None]
    return np.concatenate([o, o ** 2, t, t ** 2, t ** 3, np.ones_like(t)], axis=-1)


def fit_linear_baseline(obs: np.ndarray, returns: np.ndarray, mask: np.ndarray, reg: float = 1e-5,
                        attempts: int = 5, time: Optional[np.ndarray] = None) -> np.ndarray:
    """Ridge least squares of the returns [E, H] on `linear_features(obs)` over the valid steps:
    coefficients [F] solving (X^T X + reg I) c = X^T y; reg is raised x10 when the solve fails or
    gives non-finite coefficients (at most `attempts` tries, as rllab)."""
    x = linear_features(obs, time)[mask > 0]
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


def predict_linear_baseline(coeffs: np.ndarray, obs: np.ndarray, mask: np.ndarray,
                            time: Optional[np.ndarray] = None) -> np.ndarray:
    """Baseline values [E, H] (0 on masked steps)."""
    return (linear_features(obs, time) @ coeffs) * mask


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float,
        ends: Optional[np.ndarray] = None) -> np.ndarray:
    """Generalised advantage estimates [E, H]: A_t = sum_k (gamma lam)^k delta_{t+k},
    delta_t = r_t + gamma V_{t+1} - V_t, with V = 0 after the last valid step of an episode (ends:
    see `discount_cumsum`)."""
    adv = np.zeros(rewards.shape, np.float64)
    running = np.zeros(rewards.shape[:-1])
    next_value = np.zeros(rewards.shape[:-1])
    for t in range(rewards.shape[-1] - 1, -1, -1):
        m = mask[..., t]
        if ends is not None:
            running = np.where(ends[..., t], 0.0, running)
            next_value = np.where(ends[..., t], 0.0, next_value)
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        running = m * (delta + gamma * lam * running)
        adv[..., t] = running
        next_value = m * values[..., t]
    return adv


def policy_gradient_batch(episodes: Episodes, gamma: float = 0.99, gae_lambda: float = 1.0,
                          normalize_advantages: bool = True,
                          dtype: Any = np.float32) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One task's episodes (leaves [E, H, ...]) -> the objective's batch (obs [N, d], actions [N, ...],
    advantages [N], mask [N]), N = E H: the linear baseline refit on these episodes, GAE, and the
    advantages normalised over the valid steps (as rllab's center_adv)."""
    obs, actions, rewards, mask, time = episodes
    mask = mask.astype(np.float64)
    ends = episode_ends(time, mask.shape)
    coeffs = fit_linear_baseline(obs, discount_cumsum(rewards, mask, gamma, ends), mask, time=time)
    adv = gae(rewards, predict_linear_baseline(coeffs, obs, mask, time), mask, gamma, gae_lambda, ends)
    if normalize_advantages:
        valid = adv[mask > 0]
        adv = (adv - valid.mean()) / (valid.std() + 1e-8) * mask
    e, h = mask.shape
    act = actions.reshape((e * h,) + actions.shape[2:])
    return (obs.reshape(e * h, -1).astype(dtype), act.astype(dtype if act.dtype.kind == "f" else np.int32),
            adv.reshape(-1).astype(dtype), mask.reshape(-1).astype(dtype))
