"""2D navigation (the MAML paper's point robot, cbfinn/maml_rl `point_env_randgoal.py`), vectorised.

A point starts at (0, 0); observation = position [2]; action a in the normalised box [-1, 1]^2, velocity
= 0.1 * clip(a, -1, 1) (the paper's numbers come from `TfEnv(normalize(PointEnvRandGoal()))`: rllab's
`normalize` maps the policy's [-1, 1] onto the environment's velocity box [-0.1, 0.1]^2, so a Gaussian
policy with unit standard deviation starts with velocities of spread 0.1, not saturated at the bound);
after the move, reward = -||position - goal||_2; the episode terminates when both coordinates are
within 0.01 of the goal (as in the paper's code), and that robot is put back at the origin (the start
of its next episode, see `pymeta.rl.sampler`); horizon 100; goal ~ U[-0.5, 0.5]^2 per task.
All environments of all tasks of a meta-batch are one numpy array.
"""

from typing import Any, Sequence, Tuple

import numpy as np

from pymeta.rl.spaces import box


class Navigation2DEnv:
    """n point robots, goals [n, 2] (see the module doc for the dynamics)."""

    observation_space = box(-np.inf, np.inf, (2,))
    action_space = box(-1.0, 1.0, (2,))  # normalised (see the module doc)
    max_speed = 0.1  # per coordinate and step

    def __init__(self, goals: np.ndarray):
        self.goals = np.asarray(goals, np.float64).reshape(-1, 2)
        self.pos = np.zeros_like(self.goals)

    def reset(self) -> np.ndarray:
        """-> obs [n, 2] (all at the origin)."""
        self.pos = np.zeros_like(self.goals)
        return self.pos.astype(np.float32)

    def step(self, actions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """actions [n, 2] -> (obs [n, 2], rewards [n], terminated [n])."""
        self.pos = self.pos + self.max_speed * np.clip(actions, -1.0, 1.0)
        d = self.pos - self.goals
        rewards = -np.sqrt((d ** 2).sum(-1))
        terminated = np.all(np.abs(d) < 0.01, axis=-1)
        self.pos[terminated] = 0.0
        return self.pos.astype(np.float32), rewards, terminated


from pymeta.core.task_distribution import TaskDistribution  # noqa: E402
from pymeta.rl.task import RLTask  # noqa: E402


class Navigation2DTask(RLTask):
    """One goal ~ U[goal_low, goal_high]^2 (drawn on `reset()`); horizon 100 by default."""

    observation_space = Navigation2DEnv.observation_space
    action_space = Navigation2DEnv.action_space

    def __init__(self, horizon: int = 100, goal_low: float = -0.5, goal_high: float = 0.5, **kwargs: Any):
        self.goal_low, self.goal_high = float(goal_low), float(goal_high)
        super().__init__(horizon, **kwargs)

    def sample_params(self) -> np.ndarray:
        return np.random.uniform(self.goal_low, self.goal_high, size=2)

    @property
    def goal(self) -> np.ndarray:
        return self.params

    @classmethod
    def make_env(cls, tasks: Sequence[RLTask], episodes_per_task: int) -> Navigation2DEnv:
        return Navigation2DEnv(np.repeat(np.stack([t.params for t in tasks]), episodes_per_task, axis=0))


def navigation2d(batch_size: int = 20, **task_kwargs: Any) -> TaskDistribution:
    """The 2D-navigation task distribution (meta-batch 20 by default, as in the MAML experiments)."""
    return TaskDistribution([Navigation2DTask(**task_kwargs)], [1.0], batch_size=batch_size)
