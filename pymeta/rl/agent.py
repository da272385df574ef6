"""`Agent`: a policy model and its action space; acting on a batch of observations, log-probs.

Acting is one compiled policy call for the whole batch (all environments of all tasks), numpy in
and numpy out; the sampling noise comes from numpy's global generator (`np.random.seed` makes a run
reproducible). Stored actions are the raw samples (their log-probs are what the objective needs);
`to_env` maps them to the action space (clipped to a Box, integers for Discrete).
"""

import weakref
from typing import Any, Callable, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from pymeta.core.compiled import CompiledFunctions
from pymeta.rl.policies import (categorical_kl, categorical_log_prob, gaussian_kl, gaussian_log_prob,
                                is_gaussian_policy, sample_actions)
from pymeta.rl.spaces import space_kind


class Agent:
    """A Keras policy model acting in `action_space` (a Box: Gaussian policy, Discrete: categorical)."""

    def __init__(self, model: keras.Model, action_space: Any):
        self.kind = space_kind(action_space)
        if (self.kind == "box") != is_gaussian_policy(model):
            raise ValueError(f"a {'Box' if self.kind == 'box' else 'Discrete'} action space needs a "
                             f"{'Gaussian (make_gaussian_policy)' if self.kind == 'box' else 'categorical (make_categorical_policy)'} policy")
        self.model = model
        self.action_space = action_space
        self.compiled_functions = CompiledFunctions()

    @property
    def dtype(self) -> np.dtype:
        """The model's float type (float32, or float64 under keras.config.set_floatx('float64'))."""
        return np.dtype(self.model.trainable_variables[0].dtype)

    # --- pure functions of the parameters ----------------------------------------------------------------
    def outputs(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], obs: tf.Tensor) -> tf.Tensor:
        """obs [N, d] -> distribution parameters [N, D] (Gaussian: mean and log-std; logits)."""
        out, _ = self.model.stateless_call(list(params), list(state), obs, training=False)
        return out

    def log_prob(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], obs: tf.Tensor,
                 actions: tf.Tensor) -> tf.Tensor:
        """log pi(actions | obs) [N] under the policy with `params`."""
        out = self.outputs(params, state, obs)
        return gaussian_log_prob(out, actions) if self.kind == "box" else categorical_log_prob(out, actions)

    def kl(self, outputs_p: tf.Tensor, outputs_q: tf.Tensor) -> tf.Tensor:
        """KL(p || q) [N] between distributions given by policy outputs [N, D]."""
        return gaussian_kl(outputs_p, outputs_q) if self.kind == "box" else categorical_kl(outputs_p, outputs_q)

    @property
    def objective(self) -> Any:
        """The policy-gradient objective of this agent (see `pymeta.rl.objective`)."""
        from pymeta.rl.objective import PolicyGradientObjective
        return PolicyGradientObjective(self)

    def read_params(self) -> list:
        return [tf.convert_to_tensor(v) for v in self.model.trainable_variables]

    def read_state(self) -> list:
        return [tf.convert_to_tensor(v) for v in self.model.non_trainable_variables]

    # --- acting (compiled) ------------------------------------------------------------------------------
    def _fn(self, key: str, fn: Callable[..., Any]) -> Any:
        return self.compiled_functions.get(key, fn)

    def policy_outputs(self, obs: np.ndarray, params: Optional[Sequence] = None) -> np.ndarray:
        """obs [N, d] -> outputs [N, D] with the model's current weights (or `params`): one call."""
        obs = np.asarray(obs, self.dtype)
        if params is None:
            return self._fn("current", self._current_outputs)(obs).numpy()
        return self._fn("given", lambda p, o: self.outputs(p, self.read_state(), o))(list(params), obs).numpy()

    def policy_outputs_per_task(self, params_stacked: Sequence, obs: np.ndarray) -> np.ndarray:
        """obs [M, N, d] with one parameter set per task (leaves [M, ...]) -> outputs [M, N, D]: one
        compiled, vectorised call for all the tasks."""
        return self._fn("per_task", self._per_task_outputs)(list(params_stacked),
                                                            np.asarray(obs, self.dtype)).numpy()

    def outputs_fn(self, obs_shape: Sequence[int],
                   params_per_task: Optional[Sequence] = None) -> Callable[[np.ndarray], np.ndarray]:
        """A callable obs -> outputs (numpy) bound to one traced graph, for the many calls of a rollout
        (no signature matching per call): obs [N, d] with the model's current weights, or obs [M, E, d]
        with one parameter set per task (leaves [M, ...]; see `policy_outputs_per_task`)."""
        obs_spec = tf.TensorSpec(obs_shape, self.dtype)
        if params_per_task is None:
            concrete = self._fn("current", self._current_outputs).get_concrete_function(obs_spec)
            return lambda obs: concrete(tf.constant(obs, self.dtype)).numpy()
        params = [tf.convert_to_tensor(p) for p in params_per_task]
        graph = self._fn("per_task", self._per_task_outputs)
        concrete = graph.get_concrete_function([tf.TensorSpec(p.shape, p.dtype) for p in params], obs_spec)
        return lambda obs: concrete(params, tf.constant(obs, self.dtype)).numpy()

    def _current_outputs(self, o):
        return self.outputs(self.read_params(), self.read_state(), o)

    def _per_task_outputs(self, params, o):
        state = self.read_state()
        return tf.vectorized_map(lambda args: self.outputs(args[0], state, args[1]), (params, o))

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Raw actions -> actions of the action space (clipped to a Box; integers for Discrete)."""
        if self.kind == "box":
            return np.clip(actions, self.action_space.low, self.action_space.high).astype(actions.dtype)
        return np.asarray(actions, np.int64)

    def sample(self, obs: np.ndarray, params: Optional[Sequence] = None) -> Tuple[np.ndarray, np.ndarray]:
        """obs [N, d] -> (raw actions [N, A] (or [N] ints), environment actions): one policy call."""
        actions = sample_actions(self.kind, self.policy_outputs(obs, params))
        return actions, self.to_env(actions)

    def act(self, obs: np.ndarray) -> np.ndarray:
        """obs [N, d] -> environment actions [N, ...] sampled from the current policy."""
        return self.sample(obs)[1]


_agents: "weakref.WeakKeyDictionary[Any, Agent]" = weakref.WeakKeyDictionary()


def agent_for(agent_or_model: Any, action_space: Any) -> Agent:
    """The `Agent` itself, or the (cached) agent of a Keras model in `action_space`."""
    if isinstance(agent_or_model, Agent):
        return agent_or_model
    agent = _agents.get(agent_or_model)
    if agent is None or not same_space(agent.action_space, action_space):
        agent = Agent(agent_or_model, action_space)
        _agents[agent_or_model] = agent
    return agent


def same_space(a: Any, b: Any) -> bool:
    """Whether two action spaces are equal (a deep-copied task's space equals its prototype's)."""
    if a is b:
        return True
    if space_kind(a) != space_kind(b):
        return False
    if space_kind(a) == "discrete":
        return int(a.n) == int(b.n)
    return np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)
