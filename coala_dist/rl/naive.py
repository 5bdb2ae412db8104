"""Naive learners: A2C on the B trajectories of one inner episode (paper App. B.2, Table 8).

A naive co-player has the same Hawk architecture as a meta agent but its context is one inner episode: its recurrent
state is reset at every inner-episode start (segment position 0). After each inner episode it takes one A2C step on
the batch of B length-T trajectories with Monte Carlo returns (the inner episode really terminates, so there is no
bootstrapping). Its optimiser state is fresh at the start of every meta-trajectory (not stated in the paper:
docs/choices.md#naive-learners).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from coala_dist.networks.policy import HawkPolicy, evaluate_actions
from coala_dist.rl.losses import a2c_loss


def discounted_returns(rewards: jax.Array, discount: float) -> jax.Array:
    """Monte Carlo returns within one terminating episode.

    Gₜ = Σ_{k=t}^{T−1} γ^{k−t} r_k: Algorithm 1 (`rl.returns.batch_lambda_returns`) with λ = 1, a zero terminal
    value and both switches off, here in closed form as one matrix product (T is short: 10 in IPD, 64 in Clean Up);
    a test checks the two agree.

    Args:
      rewards: [B, T] rewards r_0 … r_{T−1}.
      discount: γ.

    Returns:
      [B, T] returns G_0 … G_{T−1}.
    """
    length = rewards.shape[-1]
    steps = jnp.arange(length)
    offset = steps[None, :] - steps[:, None]  # [t, k] = k − t
    weights = jnp.where(offset >= 0, jnp.asarray(discount, rewards.dtype) ** jnp.maximum(offset, 0), 0.0)
    return rewards @ weights.T


@dataclasses.dataclass(frozen=True)
class NaiveLearner:
    """One A2C step per inner episode for a naive co-player (Table 8).

    Attributes:
      policy: the shared Hawk policy module.
      optimizer: clip-by-global-norm then Adam/SGD.
      discount: γ of the Monte Carlo returns (0.99 in IPD).
      reward_scale: rewards are multiplied by this before the update (0.05 in IPD).
      value_coefficient: weight of the value loss.
      entropy_coefficient: weight of the entropy bonus.
      advantage_normalization: standardise advantages over the B·T samples.
    """

    policy: HawkPolicy
    optimizer: optax.GradientTransformation
    discount: float
    reward_scale: float
    value_coefficient: float
    entropy_coefficient: float
    advantage_normalization: bool

    def init(self, params: Any) -> optax.OptState:
        """A fresh optimiser state (one per meta-trajectory)."""
        return self.optimizer.init(params)

    def loss(
        self,
        params: Any,
        obs: jax.Array,
        actions: jax.Array,
        rewards: jax.Array,
        trajectory_weights: jax.Array | None = None,
    ) -> jax.Array:
        """A2C loss on one inner episode.

        Args:
          params: the naive learner's parameters.
          obs: [B, T, obs_dim] its observations.
          actions: [B, T] int its actions.
          rewards: [B, T] its rewards (unscaled).
          trajectory_weights: optional [B] weights of each trajectory's share of the loss (the advantage
            normalisation's statistics stay those of the whole batch): mean_b w_b · ℓ_b. LOLA-DiCE passes DiCE's
            magic boxes, which evaluate to 1, so that the update keeps its value and gains the derivative of how
            the trajectories were drawn (`coala_dist.rl.dice`). None: the plain loss.
        """
        logp, entropy, values = evaluate_actions(self.policy, params, obs, actions)
        returns = discounted_returns(rewards * self.reward_scale, self.discount)
        advantages = jax.lax.stop_gradient(returns - values)
        if self.advantage_normalization:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        def loss_of(*rows: jax.Array) -> jax.Array:
            return a2c_loss(
                *rows,
                sum_over_batch=False,
                value_coefficient=self.value_coefficient,
                entropy_coefficient=self.entropy_coefficient,
            ).loss

        inputs = (logp, entropy, values, advantages, returns)
        if trajectory_weights is None:
            return loss_of(*inputs)
        # a2c_loss is a mean over [B, T]: with equal lengths it is the mean over b of each trajectory's own loss.
        per_trajectory = jax.vmap(lambda *row: loss_of(*(x[None] for x in row)))(*inputs)
        return jnp.mean(trajectory_weights * per_trajectory)

    def update(
        self,
        params: Any,
        opt_state: optax.OptState,
        obs: jax.Array,
        actions: jax.Array,
        rewards: jax.Array,
        trajectory_weights: jax.Array | None = None,
    ) -> tuple[Any, optax.OptState]:
        """One A2C step on the B trajectories of the inner episode just played. Arguments as in `loss`."""
        grads = jax.grad(self.loss)(params, obs, actions, rewards, trajectory_weights)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state
