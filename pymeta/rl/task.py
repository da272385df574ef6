"""`RLTask`: a task whose data are episodes collected by the policy being adapted.

A subclass says how a task is drawn (`sample_params`), which spaces it has and how to build one
batched environment for the episodes of several tasks (`make_env(tasks, episodes_per_task)`, n =
tasks x episodes environments, task-major). Everything else is shared:

+ `fit_n_iterations(agent_or_model, T, E)`: T inner policy-gradient steps, each on E fresh episodes
  collected with the current (adapted) policy, each through the learner's `fit_in_place` (THE inner
  loop); records `last_fit = TaskData(support=last inner batch, inner=[T, ...] batches,
  query=batch of E episodes collected after adaptation)`.
+ `meta_batch_task_data(tasks, learner, T, E)` (classmethod; `RLTask` is a
  `pymeta.core.protocols.CollectsTaskData`, which the fast path's `stack_tasks` asks for the data):
  the same for a whole meta-batch, one policy call per time step for all environments of all tasks,
  the tasks adapted between collections by the learner's compiled adaptation (`Learner.adapt_tasks`).

A batch is (obs [N, d], actions [N, ...], advantages [N], mask [N]), N = E x horizon (see
`pymeta.rl.objective`). With a stateless inner optimizer (SGD, the paper's) collection and MAML's
replay from theta adapt identically; a stateful one (Adam) restarts its state at each collection step.
"""

import logging
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pymeta.core.learner import Learner
from pymeta.core.protocols import CollectsTaskData
from pymeta.core.task import Task
from pymeta.core.task_data import TaskData, stack_task_data
from pymeta.rl.agent import Agent, agent_for
from pymeta.rl.objective import PolicyGradientObjective
from pymeta.rl.returns import Episodes, policy_gradient_batch
from pymeta.rl.sampler import rollout

log = logging.getLogger(__name__)
_default_rl_learners: "weakref.WeakKeyDictionary[Any, Tuple[Any, Learner]]" = weakref.WeakKeyDictionary()


class RLTask(Task, CollectsTaskData):
    """Base class of reinforcement-learning tasks (see the module doc).

    Args:
        horizon: steps per episode (fixed; shorter episodes are masked).
        gamma, gae_lambda: discount and GAE lambda of the advantages.
        normalize_advantages: normalise the advantages of each batch (rllab's center_adv).
        restart_episodes: each of the E environments runs the whole horizon, a new episode of the same
            task following one that terminated (rllab's batches of E x H samples, as behind the MAML
            paper's numbers); the returns reported are each environment's first episode's.
    """

    observation_space: Any = None
    action_space: Any = None

    def __init__(self, horizon: int, gamma: float = 0.99, gae_lambda: float = 1.0,
                 normalize_advantages: bool = True, restart_episodes: bool = False):
        if int(horizon) < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = int(horizon)
        self.gamma, self.gae_lambda = float(gamma), float(gae_lambda)
        self.normalize_advantages = bool(normalize_advantages)
        self.restart_episodes = bool(restart_episodes)
        self.params: Any = None
        self.last_stats: Dict[str, float] = {}
        self.reset()

    # --- what a subclass defines ---------------------------------------------------------------------
    def sample_params(self) -> Any:
        """A new task's parameters (goal, target velocity, direction, ...)."""
        raise NotImplementedError

    @classmethod
    def make_env(cls, tasks: Sequence["RLTask"], episodes_per_task: int) -> Any:
        """A batched environment (see `pymeta.rl.sampler`) of len(tasks) x episodes_per_task envs."""
        raise NotImplementedError

    # --- shared ----------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.params = self.sample_params()

    def agent(self, agent_or_model: Any) -> Agent:
        return agent_for(agent_or_model, self.action_space)

    def learner_for(self, model: Any) -> Learner:
        learner = self.learner
        if learner is not None and learner.model is model:
            return learner
        optimizer = getattr(model, "optimizer", None)
        entry = _default_rl_learners.get(model)
        if entry is None or entry[0] is not optimizer:
            if optimizer is None:
                raise ValueError("no inner optimizer: begin the task with a meta-learner "
                                 "(metalearner.task_begin(task)) or compile the policy "
                                 "(model.compile(optimizer=keras.optimizers.SGD(0.1)))")
            entry = (optimizer, Learner(model, objective=self.agent(model).objective))
            _default_rl_learners[model] = entry
        return entry[1]

    def batch(self, episodes: Episodes, dtype: Any = np.float32) -> Tuple[np.ndarray, ...]:
        """This task's episodes (leaves [E, H, ...]) -> the objective's batch (leaves [E H, ...])."""
        return policy_gradient_batch(episodes, self.gamma, self.gae_lambda, self.normalize_advantages, dtype)

    def fit_n_iterations(self, agent_or_model: Any, num_iterations: int,
                         episodes_per_iteration: int = 20) -> Dict[str, float]:
        """`num_iterations` inner policy-gradient steps on `episodes_per_iteration` fresh episodes each
        (see the module doc). Returns {'last_minibatch_loss', 'mean_return' (after adaptation),
        'mean_return_before'}."""
        agent = self.agent(agent_or_model)
        learner = self.learner_for(agent.model)
        episodes_per_iteration = _episodes(episodes_per_iteration)
        inner, loss, before = [], float("nan"), None
        for _ in range(int(num_iterations)):
            episodes = collect([self], agent, episodes_per_iteration)
            before = float(episodes.returns().mean()) if before is None else before
            batch = self.batch(_task(episodes, 0), agent.dtype)
            loss = float(learner.fit_in_place(agent.model, tf.nest.map_structure(lambda b: b[None], batch)))
            inner.append(batch)
        episodes = collect([self], agent, episodes_per_iteration)
        query = self.batch(_task(episodes, 0), agent.dtype)
        after = float(episodes.returns().mean())
        self.last_fit = TaskData(support=inner[-1] if inner else query,
                                 inner=_stack_steps(inner, query), query=query)
        self.last_stats = {"mean_return_before": after if before is None else before, "mean_return": after}
        return {"last_minibatch_loss": loss, "mean_return": after,
                "mean_return_before": self.last_stats["mean_return_before"]}

    def evaluate(self, agent_or_model: Any, num_episodes: int = 20) -> Dict[str, float]:
        """{'mean_return', 'mean_episode_length'} of the current policy on fresh episodes."""
        episodes = collect([self], self.agent(agent_or_model), num_episodes)
        return {"mean_return": float(episodes.returns().mean()),
                "mean_episode_length": float(episodes.lengths().mean())}

    @classmethod
    def meta_batch_task_data(cls, tasks: Sequence["RLTask"], learner: Learner, num_iterations: int,
                             episodes_per_iteration: int = 20) -> TaskData:
        """The stacked `TaskData` (leaves [M, ...]) of a meta-batch, collected with theta and then with
        each task's adapted parameters (the fast path's hook in `GradBasedMetaLearner.stack_tasks`).
        Each task also gets its own `last_fit` and `last_stats`. `metatrain_steps` with several RL
        meta-batches collects all of them with the current theta (the later ones off-policy): call
        `metatrain_step` once per meta-batch."""
        tasks = list(tasks)
        episodes, batches = adapt_and_collect(tasks, learner, num_iterations, _episodes(episodes_per_iteration))
        before, after = episodes[0].returns().mean(-1), episodes[-1].returns().mean(-1)
        datas = []
        for i, task in enumerate(tasks):
            q = tuple(b[i] for b in batches[-1])
            steps = [tuple(b[i] for b in step) for step in batches[:-1]]
            task.last_fit = TaskData(support=steps[-1] if steps else q, inner=_stack_steps(steps, q), query=q)
            task.last_stats = {"mean_return_before": float(before[i]), "mean_return": float(after[i])}
            datas.append(task.last_fit)
        return stack_task_data(datas)


def adapt_and_collect(tasks: Sequence[RLTask], learner: Learner, num_steps: int, episodes_per_task: int,
                      step_learners: Optional[Sequence[Learner]] = None
                      ) -> Tuple[List[Episodes], List[Tuple[np.ndarray, ...]]]:
    """Collect with theta (the learner's meta-parameters, else its model's weights), adapt every task
    one inner step on its batch (one compiled call of the learner's `adapt` for all tasks), collect
    again, ... `num_steps` times. step_learners: the learner of each inner step (e.g. one per step size;
    the last one for the later steps), default `learner` for all. Returns (episodes of each collection
    [num_steps + 1] (leaves [M, E, H, ...]), their batches [num_steps + 1] (leaves [M, E H, ...]))."""
    agent = agent_of_learner(learner, tasks[0].action_space)
    theta = learner.anchor() or agent.read_params()
    step_learners = list(step_learners or [learner])
    phis, all_episodes, all_batches = None, [], []
    for step in range(int(num_steps) + 1):
        episodes = collect(tasks, agent, episodes_per_task, phis)
        batches = _batches(tasks, episodes, agent.dtype)
        all_episodes.append(episodes)
        all_batches.append(batches)
        if step < num_steps:
            phis = _adapt_each(step_learners[min(step, len(step_learners) - 1)], theta, phis, batches)
    return all_episodes, all_batches


def adaptation_returns(learner: Learner, tasks: Sequence[RLTask], num_steps: int = 3, episodes_per_task: int = 20,
                       step_lrs: Optional[Sequence[float]] = None, per_task: bool = False,
                       with_lengths: bool = False) -> Any:
    """Mean undiscounted return per episode after 0, 1, ..., num_steps inner steps from the learner's
    theta, averaged over `tasks`: [num_steps + 1] (per_task: not averaged, [num_steps + 1, M]);
    with_lengths: (returns, mean episode lengths shaped alike).

    step_lrs: plain policy-gradient (SGD) steps of these sizes, the last one for all later steps (the
    MAML evaluation: [lr, lr / 2]); default: the learner's inner optimizer at every step."""
    step_learners = None
    if step_lrs is not None:
        from pymeta import optim
        cache = learner.__dict__.setdefault("_sgd_step_learners", {})  # compiled once per step size
        step_learners = [cache.setdefault(float(lr), Learner(learner.model, inner_optimizer=optim.sgd(lr),
                                                             objective=learner.objective)) for lr in step_lrs]
    episodes, _ = adapt_and_collect(list(tasks), learner, num_steps, episodes_per_task, step_learners)
    per = np.array([e.returns().mean(-1) for e in episodes])
    lengths = np.array([e.lengths().mean(-1) for e in episodes])
    if not per_task:
        per, lengths = per.mean(-1), lengths.mean(-1)
    return (per, lengths) if with_lengths else per


def agent_of_learner(learner: Learner, action_space: Any = None) -> Agent:
    """The agent whose policy-gradient objective the learner descends (`PolicyGradientObjective.agent`),
    else an agent of the learner's model in `action_space`."""
    objective = learner.objective
    if isinstance(objective, PolicyGradientObjective):
        return objective.agent
    if action_space is None:
        raise ValueError("the learner's objective is not a PolicyGradientObjective: build the meta-learner "
                         "with objective=agent.objective")
    return agent_for(learner.model, action_space)


def collect(tasks: Sequence[RLTask], agent: Agent, episodes_per_task: int,
            params_per_task: Optional[List] = None) -> Episodes:
    """Episodes of all tasks (leaves [M, E, H, ...]) with one policy call per time step for all M x E
    environments: the model's current weights, or one parameter set per task (leaves [M, ...])."""
    tasks = list(tasks)
    m, e = len(tasks), int(episodes_per_task)
    if e < 1:
        raise ValueError(f"episodes per task must be >= 1, got {episodes_per_task}")
    horizons = {t.horizon for t in tasks}
    if len(horizons) != 1 or len({(type(t), t.restart_episodes) for t in tasks}) != 1:
        raise ValueError("the tasks of a meta-batch must be of one type with one horizon and restart setting")
    env = type(tasks[0]).make_env(tasks, e)
    from pymeta.rl.policies import sample_actions
    outputs = None  # one traced graph for all the steps (built at the first, when obs' shape is known)

    def policy(obs):
        nonlocal outputs
        shape = obs.shape if params_per_task is None else (m, e) + obs.shape[1:]
        if outputs is None:
            outputs = agent.outputs_fn(shape, params_per_task)
        out = outputs(obs.reshape(shape))  # [N, D] or [M, E, D]
        actions = sample_actions(agent.kind, out.reshape(-1, out.shape[-1]))
        return actions, agent.to_env(actions)

    episodes = rollout(env, policy, horizons.pop(), restart=tasks[0].restart_episodes)
    return episodes.map(lambda x: x.reshape((m, e) + x.shape[1:]))


def _episodes(episodes_per_iteration: Optional[int]) -> int:
    """Episodes per task and inner step: -1 or None (the supervised "whole set") mean 20."""
    return 20 if episodes_per_iteration is None or int(episodes_per_iteration) < 0 else int(episodes_per_iteration)


def _task(episodes: Episodes, i: int) -> Episodes:
    return episodes.map(lambda x: x[i])


def _batches(tasks, episodes, dtype):
    per_task = [t.batch(_task(episodes, i), dtype) for i, t in enumerate(tasks)]
    return tuple(np.stack(leaves) for leaves in zip(*per_task))


def _stack_steps(steps, like):
    """Per-step batches -> leaves [T, ...] (an empty [0, ...] axis when T = 0)."""
    if steps:
        return tuple(np.stack(leaves) for leaves in zip(*steps))
    return tuple(np.zeros((0,) + b.shape, b.dtype) for b in like)


def _adapt_each(learner: Learner, theta: Sequence[tf.Tensor], phis: Optional[List[tf.Tensor]],
                batches: tuple) -> List[tf.Tensor]:
    """One inner step for every task (batch leaves [M, ...]) in one compiled call of the learner's
    adaptation (`Learner.adapt_tasks`; phis None: every task from theta)."""
    return learner.adapt_tasks(list(theta), phis, tuple(b[:, None] for b in batches))
