"""The policy-gradient (REINFORCE / VPG) objective the inner loop descends.

batch = (obs [N, d], actions [N, A] or [N], advantages [N], mask [N]) with N = episodes x horizon
(steps after an episode terminated have mask 0):

    objective = -sum(mask * log pi(a | s) * adv) / sum(mask)

Its gradient is the usual policy-gradient estimate. The advantages are normalised per batch (mean 0,
std 1 over the valid steps of one task's batch) when the batch is built (`pymeta.rl.returns`), as
the MAML paper's code (rllab, `center_adv=True`) did; the objective itself does not normalise.
"""

from typing import Any, Sequence

import tensorflow as tf


class PolicyGradientObjective:
    """`objective(params, state, batch) -> scalar` of an `Agent` (see the module doc)."""

    def __init__(self, agent: Any):
        self.agent = agent

    def __call__(self, params: Sequence[tf.Tensor], state: Sequence[tf.Tensor], batch: Any) -> tf.Tensor:
        obs, actions, advantages, mask = batch
        logp = self.agent.log_prob(params, state, obs, actions)
        mask = tf.cast(mask, logp.dtype)
        total = tf.reduce_sum(mask * logp * tf.cast(advantages, logp.dtype))
        return -total / tf.maximum(tf.reduce_sum(mask), tf.ones([], logp.dtype))
