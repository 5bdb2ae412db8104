"""PPO and A2C losses for one meta-episode (paper App. A.4, Tables 4 and 7).

Each function takes the `[B, L]` arrays of one meta-episode and returns scalars; the learner vmaps
over the meta-batch and averages ("The gradient is then averaged, and the parameter updated",
App. B.2.1).

Σ over b (Eq. 5): for an episode against a naive learner, COALA-PG and M-FOS *sum* the policy gradient over the B
trajectories. The policy term here is a mean over the B·L flattened elements, so `sum_over_batch=True` multiplies it by
B (paper App. A.4; docs/choices.md#summing-over-the-batch). Meta-opponent episodes and the batch-unaware rule keep the
plain mean. The value loss and the entropy bonus are never multiplied by B: they are not part of Eq. 5's sum.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from coala_dist.rl.returns import BoolLike

Array = jax.Array


class LossOutput(NamedTuple):
    """Scalar loss and diagnostics of one meta-episode.

    Attributes:
      loss: total loss to minimise,
        policy_loss + value_coefficient·value_loss − entropy_coefficient·entropy.
      policy_loss: policy-gradient surrogate (×B when summing over the batch).
      value_loss: 0.5·mean squared (possibly clipped) value error.
      entropy: mean policy entropy.
      approx_kl: mean of (ρ − 1) − log ρ, an estimate of KL(behaviour ‖ current); 0 for A2C.
      clip_fraction: fraction of elements with |ρ − 1| > ε; 0 for A2C.
    """

    loss: Array
    policy_loss: Array
    value_loss: Array
    entropy: Array
    approx_kl: Array
    clip_fraction: Array


def policy_gradient_scale(sum_over_batch: BoolLike, batch_size: int, dtype) -> Array:
    """The factor on a mean-over-(b, l) policy term: B when the policy gradient is summed over the B trajectories
    (Eq. 5), else 1. `sum_over_batch` is a Python or traced bool, or a bool array (one factor per element)."""
    return jnp.where(jnp.asarray(sum_over_batch, bool), batch_size, 1).astype(dtype)


def value_loss(
    values: Array,
    value_targets: Array,
    *,
    behaviour_values: Array | None = None,
    clip_epsilon: float = 0.0,
    clip: BoolLike = False,
) -> Array:
    """The critic's loss, 0.5 · mean[(V − G)²]; with `clip` (PPO's value clipping, given the behaviour values V_μ):
    0.5 · mean[max((V − G)², (V_μ + clip(V − V_μ, −ε_v, ε_v) − G)²)]."""
    error = jnp.square(values - value_targets)
    if behaviour_values is not None:
        clipped_values = behaviour_values + jnp.clip(values - behaviour_values, -clip_epsilon, clip_epsilon)
        clipped_error = jnp.square(clipped_values - value_targets)
        error = jnp.where(jnp.asarray(clip, bool), jnp.maximum(error, clipped_error), error)
    return 0.5 * jnp.mean(error)


def ppo_loss(
    logp: Array,
    behaviour_logp: Array,
    entropy: Array,
    values: Array,
    behaviour_values: Array,
    advantages: Array,
    value_targets: Array,
    *,
    sum_over_batch: BoolLike,
    clip_epsilon: float,
    value_coefficient: float,
    clip_value: BoolLike,
    value_clip_epsilon: float,
    entropy_coefficient: float,
) -> LossOutput:
    """Clipped PPO loss of one meta-episode, with COALA-PG's Σ over b (paper App. A.4).

        ρ = exp(log π − log μ)
        policy_loss = −n · mean[min(ρ A, clip(ρ, 1 − ε, 1 + ε) A)],   n = B if sum_over_batch else 1
        value_loss  = 0.5 · mean[max((V − G)², (V_μ + clip(V − V_μ, −ε_v, ε_v) − G)²)]
                                                          (if clip_value, else 0.5 · mean[(V − G)²])
        loss        = policy_loss + c_v · value_loss − c_H · mean(H)

    Advantages and targets are treated as constants.

    Args:
      logp: [B, L] log π(aₜ | hₜ) under the current parameters.
      behaviour_logp: [B, L] log μ(aₜ | hₜ) recorded by the actor.
      entropy: [B, L] entropy of the current policy at each step.
      values: [B, L] current critic outputs V(hₜ).
      behaviour_values: [B, L] critic outputs recorded by the actor.
      advantages: [B, L] advantages (see `coala_dist.rl.estimators.advantages`).
      value_targets: [B, L] TD(λ) targets G.
      sum_over_batch: Python or traced bool; multiply the policy term by B (naive-opponent
        episodes under COALA-PG or M-FOS).
      clip_epsilon: PPO ratio clip ε (0.2 in Tables 4 and 7).
      value_coefficient: c_v (0.5).
      clip_value: Python or traced bool; use the clipped value loss.
      value_clip_epsilon: ε_v, clip range of V − V_μ.
      entropy_coefficient: c_H.

    Returns:
      A `LossOutput` of scalars.
    """
    chex.assert_rank(
        [logp, behaviour_logp, entropy, values, behaviour_values, advantages, value_targets], 2
    )
    chex.assert_equal_shape(
        [logp, behaviour_logp, entropy, values, behaviour_values, advantages, value_targets]
    )
    advantages = jax.lax.stop_gradient(advantages)
    value_targets = jax.lax.stop_gradient(value_targets)
    batch_size = logp.shape[0]

    log_ratio = logp - behaviour_logp
    ratio = jnp.exp(log_ratio)
    surrogate = jnp.minimum(
        ratio * advantages, jnp.clip(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon) * advantages
    )
    policy_loss = -jnp.mean(surrogate) * policy_gradient_scale(sum_over_batch, batch_size, logp.dtype)
    critic_loss = value_loss(
        values, value_targets, behaviour_values=behaviour_values, clip_epsilon=value_clip_epsilon, clip=clip_value
    )
    mean_entropy = jnp.mean(entropy)
    loss = policy_loss + value_coefficient * critic_loss - entropy_coefficient * mean_entropy

    # Diagnostics carry no gradient.
    approx_kl = jax.lax.stop_gradient(jnp.mean((ratio - 1.0) - log_ratio))
    clip_fraction = jax.lax.stop_gradient(
        jnp.mean((jnp.abs(ratio - 1.0) > clip_epsilon).astype(logp.dtype))
    )
    return LossOutput(loss, policy_loss, critic_loss, mean_entropy, approx_kl, clip_fraction)


def a2c_loss(
    logp: Array,
    entropy: Array,
    values: Array,
    advantages: Array,
    value_targets: Array,
    *,
    sum_over_batch: BoolLike,
    value_coefficient: float,
    entropy_coefficient: float,
) -> LossOutput:
    """Advantage actor-critic loss of one meta-episode, with COALA-PG's Σ over b (paper App. A.4).

        policy_loss = −n · mean[log π(aₜ | hₜ) · Aₜ],   n = B if sum_over_batch else 1
        value_loss  = 0.5 · mean[(V − G)²]
        loss        = policy_loss + c_v · value_loss − c_H · mean(H)

    Advantages and targets are treated as constants.

    Args:
      logp: [B, L] log π(aₜ | hₜ) under the current parameters.
      entropy: [B, L] entropy of the current policy at each step.
      values: [B, L] current critic outputs V(hₜ).
      advantages: [B, L] advantages.
      value_targets: [B, L] TD(λ) targets G.
      sum_over_batch: Python or traced bool; multiply the policy term by B.
      value_coefficient: c_v.
      entropy_coefficient: c_H.

    Returns:
      A `LossOutput` of scalars (approx_kl and clip_fraction are 0).
    """
    chex.assert_rank([logp, entropy, values, advantages, value_targets], 2)
    chex.assert_equal_shape([logp, entropy, values, advantages, value_targets])
    advantages = jax.lax.stop_gradient(advantages)
    value_targets = jax.lax.stop_gradient(value_targets)
    batch_size = logp.shape[0]

    policy_loss = -jnp.mean(logp * advantages) * policy_gradient_scale(sum_over_batch, batch_size, logp.dtype)
    critic_loss = value_loss(values, value_targets)
    mean_entropy = jnp.mean(entropy)
    loss = policy_loss + value_coefficient * critic_loss - entropy_coefficient * mean_entropy
    zero = jnp.zeros((), logp.dtype)
    return LossOutput(loss, policy_loss, critic_loss, mean_entropy, zero, zero)
