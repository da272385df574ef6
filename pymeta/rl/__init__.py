"""Reinforcement-learning tasks for pymeta: agents, the policy-gradient objective, the linear feature
baseline and GAE, `RLTask` and the MAML paper's task distributions.

+ `policies`: Gaussian (learnt log-std inside the Keras model) and categorical policy models.
+ `agent`: `Agent` (batched acting, log-probs as pure functions of the parameters).
+ `objective`: the policy-gradient objective a meta-learner's inner loop descends.
+ `returns`: episodes, discounted returns, the linear feature baseline, GAE, batches.
+ `sampler`: fixed-horizon rollouts of a batched environment.
+ `task`: `RLTask` (step-by-step `fit_n_iterations` and the fast path's `meta_batch_task_data`).
+ `navigation`: the 2D-navigation tasks, vectorised in numpy.
+ `trpo`: `TRPOStep`, the paper's TRPO outer step (`MAMLTRPOMetaLearner`: MAML with it).
+ `problems`: `build_problem(name, ...)` with the MAML experiments' defaults.
+ `gym_tasks`: `GymTask` (alias `OpenAIGymTask`) on gymnasium vector envs, HalfCheetah vel / dir, Ant dir.
"""

from pymeta.rl.agent import Agent, agent_for
from pymeta.rl.navigation import Navigation2DEnv, Navigation2DTask, navigation2d
from pymeta.rl.objective import PolicyGradientObjective
from pymeta.rl.policies import GaussianLogStd, make_categorical_policy, make_gaussian_policy
from pymeta.rl.returns import Episodes, fit_linear_baseline, gae, linear_features, policy_gradient_batch
from pymeta.rl.task import RLTask, adaptation_returns, collect
from pymeta.rl.gym_tasks import (GymTask, GymTaskDistribution, OpenAIGymTask, ant_dir,  # noqa: E402
                                 halfcheetah_dir, halfcheetah_vel)
from pymeta.rl.problems import build_problem  # noqa: E402
from pymeta.rl.trpo import MAMLTRPOMetaLearner, TRPOStep  # noqa: E402
