"""`GymTask` (alias `OpenAIGymTask`): RL tasks on any gymnasium (>= 1.0) environment, and the MAML
paper's HalfCheetah and Ant task distributions.

A task's parameters come from `sample_task_params()` (a dict) on `reset()`: its "make_kwargs" entry
(if any) is passed to `gymnasium.make` / the factory, and the whole dict to `reward_fn` (if any),
which recomputes the rewards of a step from (params, next obs, actions, rewards, infos).

Episodes: each task of a meta-batch gets a gymnasium vector environment of E copies (sync, or async
across processes), each copy wrapped in `TimeLimit(horizon)`, reset with `reset(seed=...)` (seeds
from numpy's global generator), stepped through the 5-tuple API. Autoreset is DISABLED: a copy whose
episode terminated early is reset through `reset_mask` and its later steps are masked out, so no
transition of another episode, and no reset observation, enters a batch. Vector environments are
cached per (environment, make kwargs, E, horizon) and reused across meta-iterations.
"""

import functools
import json
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

from pymeta.core.task_distribution import TaskDistribution
from pymeta.rl.task import RLTask

log = logging.getLogger(__name__)
INSTALL_HINT = 'pip install -e ".[rl]"'
_vector_envs: Dict[tuple, Any] = {}
_mujoco_warnings_seen: set = set()  # the MuJoCo warnings this process has logged (see route_mujoco_warnings)


def require_gymnasium() -> Any:
    """The gymnasium module, or a one-line ImportError naming the install command."""
    try:
        import gymnasium
    except ImportError:
        raise ImportError(f"gymnasium tasks need gymnasium >= 1.0 (and mujoco for MuJoCo environments): "
                          f"{INSTALL_HINT}") from None
    return gymnasium


def _log_mujoco_warning(message: str) -> None:
    if message not in _mujoco_warnings_seen:
        _mujoco_warnings_seen.add(message)
        log.warning("MuJoCo: %s", message)


def route_mujoco_warnings() -> None:
    """MuJoCo's warnings to `logging`, each distinct message once per process, instead of to stderr and a
    MUJOCO_LOG.TXT in the working directory. (gymnasium 1.4's HalfCheetah model uses an attribute MuJoCo
    4 deprecates, and MuJoCo warns every time a copy is built: 800 lines for a meta-batch of 40 tasks x
    20 episodes.) A warning handler the user installed is kept; without mujoco nothing happens."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_log_mujoco_warning)


def make_single_env(env: Union[str, Callable], make_kwargs: Optional[dict], horizon: Optional[int]) -> Any:
    """One gymnasium environment from an id or a factory, wrapped in TimeLimit(horizon); one-line errors
    for an unknown id or a missing dependency (mujoco). MuJoCo's warnings go to `logging`
    (`route_mujoco_warnings`; this runs in each worker process of an async vector env too)."""
    gym = require_gymnasium()
    route_mujoco_warnings()
    kwargs = dict(make_kwargs or {})
    try:
        if isinstance(env, str):
            e = gym.make(env, max_episode_steps=horizon, **kwargs) if horizon else gym.make(env, **kwargs)
        else:
            e = env(**kwargs)
            if horizon:
                e = gym.wrappers.TimeLimit(e, max_episode_steps=horizon)
    except gym.error.DependencyNotInstalled as err:
        raise ImportError(f"{env!r} needs a missing dependency ({str(err).splitlines()[0]}): "
                          f"{INSTALL_HINT}") from None
    except gym.error.Error as err:
        if isinstance(env, str):
            raise ValueError(f"unknown gymnasium environment id {env!r}: {str(err).splitlines()[0]}") from None
        raise
    except TypeError as err:  # a keyword argument the environment does not take
        if kwargs and "argument" in str(err):
            raise ValueError(f"{env!r} does not take the keyword arguments {kwargs}: "
                             f"{str(err).splitlines()[0]}") from None
        raise
    return e


class GymBatchedEnv:
    """The batched environment of M tasks x E episodes (see `pymeta.rl.sampler`) over M vector envs."""

    def __init__(self, tasks: Sequence["GymTask"], episodes_per_task: int):
        self.tasks = list(tasks)
        self.e = int(episodes_per_task)
        self.venvs = [tasks[0].vector_env(t.params, self.e, slot) for slot, t in enumerate(self.tasks)]

    def reset(self) -> np.ndarray:
        """-> obs [M E, d]; each vector env reset with a seed drawn from numpy's global generator."""
        obs = [v.reset(seed=int(np.random.randint(2 ** 31 - 1)))[0] for v in self.venvs]
        return np.concatenate(obs).astype(np.float64)

    def step(self, actions: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """actions [M E, ...] -> (obs [M E, d], rewards [M E], terminated [M E])."""
        gym = require_gymnasium()
        out_obs, out_rewards, out_term = [], [], []
        for i, (task, venv) in enumerate(zip(self.tasks, self.venvs)):
            a = actions[i * self.e:(i + 1) * self.e]
            obs, rewards, terminated, truncated, infos = venv.step(a)
            if task.reward_fn is not None:
                rewards = task.reward_fn(task.params, obs, a, rewards, infos)
            done = np.logical_or(terminated, truncated)
            if done.any():  # autoreset disabled: reset the finished copies; their next steps are masked
                obs = obs.copy()
                new_obs, _ = venv.reset(options={"reset_mask": done})
                obs[done] = new_obs[done]
            out_obs.append(obs)
            out_rewards.append(np.asarray(rewards, np.float64))
            out_term.append(np.asarray(terminated, bool))
        del gym
        return np.concatenate(out_obs).astype(np.float64), np.concatenate(out_rewards), np.concatenate(out_term)


class GymTask(RLTask):
    """A task on a gymnasium environment.

    Args:
        env: an environment id ("HalfCheetah-v5") or a factory `f(**make_kwargs) -> gymnasium.Env`.
        sample_task_params: `() -> dict` drawn on `reset()` (default: no parameters); its
            "make_kwargs" entry is passed to the environment's constructor.
        reward_fn: optional `(params, next_obs [E, d], actions [E, ...], rewards [E], infos) -> [E]`.
        horizon: steps per episode (default: the environment's `max_episode_steps`).
        vectorization: "sync" (one process) or "async" (one process per copy, across the cores).
        make_kwargs: passed to the constructor of every task's environment (e.g. {"frame_skip": 1});
            a task's own "make_kwargs" take precedence.
        gamma, gae_lambda, normalize_advantages: see `RLTask`.
    """

    # shared, never copied, by the copies a TaskDistribution draws
    _shared_attributes = ("env", "sample_task_params", "reward_fn", "observation_space", "action_space",
                          "make_kwargs")

    def __init__(self, env: Union[str, Callable], sample_task_params: Optional[Callable] = None,
                 reward_fn: Optional[Callable] = None, horizon: Optional[int] = None,
                 vectorization: str = "sync", make_kwargs: Optional[dict] = None, **kwargs: Any):
        if vectorization not in ("sync", "async"):
            raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
        if not (isinstance(env, str) or callable(env)):
            raise ValueError(f"env must be a gymnasium environment id or a function returning an environment, "
                             f"got {type(env).__name__} {env!r}")
        self.env = env
        self.sample_task_params = sample_task_params or dict
        self.reward_fn = reward_fn
        self.vectorization = vectorization
        self.make_kwargs = dict(make_kwargs or {})
        probe = make_single_env(env, self.env_kwargs(self.sample_task_params()), None)
        self.observation_space = probe.observation_space
        self.action_space = probe.action_space
        if horizon is None:
            horizon = probe.spec.max_episode_steps if probe.spec is not None else None
            if horizon is None:
                raise ValueError(f"{env!r} has no max_episode_steps: pass horizon=")
        probe.close()
        super().__init__(horizon, **kwargs)

    def sample_params(self) -> dict:
        params: Any = self.sample_task_params()
        if not isinstance(params, dict):
            raise ValueError(f"sample_task_params must return a dict, got {type(params).__name__}")
        return params

    def env_kwargs(self, params: dict) -> dict:
        """The constructor kwargs of the environment of a task with `params`: `make_kwargs`, updated
        with the task's own."""
        return {**self.make_kwargs, **(params.get("make_kwargs") or {})}

    def vector_env(self, params: dict, num_envs: int, slot: int) -> Any:
        """A cached gymnasium vector env of `num_envs` copies with this task's make kwargs (autoreset
        disabled); `slot` distinguishes tasks of one meta-batch that share make kwargs."""
        gym = require_gymnasium()
        make_kwargs = self.env_kwargs(params)
        key = (self.env if isinstance(self.env, str) else id(self.env), json.dumps(make_kwargs, sort_keys=True, default=repr),
               num_envs, self.horizon, self.vectorization, slot)
        if key not in _vector_envs:
            fns = [functools.partial(make_single_env, self.env, make_kwargs, self.horizon)] * num_envs
            cls = gym.vector.SyncVectorEnv if self.vectorization == "sync" else gym.vector.AsyncVectorEnv
            _vector_envs[key] = cls(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)
        return _vector_envs[key]

    @classmethod
    def make_env(cls, tasks: Sequence[RLTask], episodes_per_task: int) -> GymBatchedEnv:
        return GymBatchedEnv(cast(Sequence[GymTask], tasks), episodes_per_task)


OpenAIGymTask = GymTask  # the original pyMeta's name


def close_vector_envs() -> None:
    """Close the cached vector environments (e.g. the worker processes of async ones)."""
    for venv in _vector_envs.values():
        venv.close()
    _vector_envs.clear()


def GymTaskDistribution(env_id_or_factory: Union[str, Callable], sample_task_params: Optional[Callable] = None,
                        batch_size: int = 20, **task_kwargs: Any) -> TaskDistribution:
    """Tasks on one gymnasium environment, drawn with `sample_task_params` (see `GymTask`)."""
    return TaskDistribution([GymTask(env_id_or_factory, sample_task_params, **task_kwargs)], [1.0],
                            batch_size=batch_size)


# --- the MAML paper's HalfCheetah tasks ------------------------------------------------------------------
def _sample_velocity():
    return {"velocity": float(np.random.uniform(0.0, 2.0))}


def halfcheetah_vel_reward(params: Dict[str, Any], obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray,
                           infos: Dict[str, Any]) -> np.ndarray:
    """-|v_x - v*| - 0.05 ||a||^2, v_x = info["x_velocity"] (the MAML paper's HalfCheetah-vel)."""
    return -np.abs(infos["x_velocity"] - params["velocity"]) - 0.05 * np.sum(np.square(actions), -1)


def _sample_direction():
    d = float(np.random.choice([-1.0, 1.0]))
    return {"direction": d, "make_kwargs": {"forward_reward_weight": d, "ctrl_cost_weight": 0.05}}


def halfcheetah_vel(batch_size: int = 40, horizon: int = 200, **kwargs: Any) -> TaskDistribution:
    """HalfCheetah-v5, target velocity v* ~ U[0, 2], reward -|v_x - v*| - 0.05 ||a||^2, horizon 200."""
    return GymTaskDistribution("HalfCheetah-v5", _sample_velocity, batch_size, reward_fn=halfcheetah_vel_reward,
                               horizon=horizon, **kwargs)


def halfcheetah_dir(batch_size: int = 40, horizon: int = 200, **kwargs: Any) -> TaskDistribution:
    """HalfCheetah-v5 with forward_reward_weight = d in {-1, +1} and ctrl_cost_weight 0.05, horizon 200:
    reward d v_x - 0.05 ||a||^2."""
    return GymTaskDistribution("HalfCheetah-v5", _sample_direction, batch_size, horizon=horizon, **kwargs)


# --- the MAML paper's Ant-dir ----------------------------------------------------------------------------
ANT_DIR_KWARGS = {"ctrl_cost_weight": 0.005, "contact_cost_weight": 5e-4, "healthy_reward": 0.05}


def _sample_ant_direction():
    d = float(np.random.choice([-1.0, 1.0]))
    return {"direction": d, "make_kwargs": {"forward_reward_weight": d, **ANT_DIR_KWARGS}}


def ant_dir(batch_size: int = 40, horizon: int = 200, **kwargs: Any) -> TaskDistribution:
    """Ant-v5 with forward_reward_weight = d in {-1, +1}, horizon 200, and the MAML experiments' other
    terms (cbfinn/maml_rl, pytorch-maml-rl): reward 0.05 + d v_x - 0.005 ||a||^2 - 5e-4 ||clip(cfrc_ext,
    -1, 1)||^2. Episodes end early when the torso leaves gymnasium's healthy height range (0.2, 1.0)."""
    return GymTaskDistribution("Ant-v5", _sample_ant_direction, batch_size, horizon=horizon, **kwargs)
