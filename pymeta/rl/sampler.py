"""Collecting fixed-horizon episodes from a batched environment with one policy call per time step.

A batched environment holds n = (tasks x episodes) environments as arrays:
    reset() -> obs [n, d];  step(env_actions [n, ...]) -> (obs [n, d], rewards [n], terminated [n])
where an environment whose episode ended is reset within `step` (its returned obs starts a new
episode) (`pymeta.rl.navigation.Navigation2DEnv` natively; `pymeta.rl.gym_tasks.GymBatchedEnv` wraps
gymnasium vector environments). Steps after an episode terminated are masked out (mask 0, reward 0),
or, with `restart=True`, hold the next episode of the same environment (rllab's fixed-size batches).
"""

from typing import Any, Callable

import numpy as np

from pymeta.rl.returns import Episodes


def rollout(env: Any, policy: Callable, horizon: int, restart: bool = False) -> Episodes:
    """Run `horizon` steps of all n environments: policy(obs [n, d]) -> (raw actions, env actions).
    Returns `Episodes` with leaves [n, H, ...] (restart: with `time`, episodes back to back in each row,
    see `pymeta.rl.returns`); raises ValueError on NaN/inf observations or rewards."""
    obs = np.asarray(env.reset())
    _check_finite(obs, "observations", "reset")
    n = obs.shape[0]
    alive = np.ones(n, bool)
    step_in_episode = np.zeros(n, np.int64)
    all_obs, all_actions, all_rewards, all_mask, all_time = [], [], [], [], []
    for t in range(horizon):
        actions, env_actions = policy(obs)
        next_obs, rewards, terminated = env.step(env_actions)
        rewards = np.asarray(rewards, np.float64)
        _check_finite(rewards[alive], "rewards", f"step {t}")
        all_obs.append(obs)
        all_actions.append(actions)
        all_rewards.append(np.where(alive, rewards, 0.0))
        all_mask.append(alive.copy())
        all_time.append(step_in_episode.copy())
        if restart:
            step_in_episode = np.where(np.asarray(terminated, bool), 0, step_in_episode + 1)
        else:
            alive &= ~np.asarray(terminated, bool)
        obs = np.asarray(next_obs)
        _check_finite(obs[alive], "observations", f"step {t}")
        obs = np.where(alive.reshape((n,) + (1,) * (obs.ndim - 1)), obs, 0.0).astype(obs.dtype)
    stack = lambda xs: np.stack(xs, axis=1)
    return Episodes(stack(all_obs), stack(all_actions), stack(all_rewards), stack(all_mask).astype(np.float64),
                    stack(all_time) if restart else None)


def _check_finite(x, what, where):
    if not np.all(np.isfinite(x)):
        raise ValueError(f"the environment returned non-finite {what} at {where}")
