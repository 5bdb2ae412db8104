"""The learning rules of the analytic IPD (paper Sec. 4, App. C), on the exact return of envs/analytic_ipd.py.

Every rule is built from one exact quantity, the normalised discounted return of two tabular policies (Eq. 15–16,
`analytic_ipd.own_average_reward`), and differentiated with JAX:

  naive learner          φ⁻ⁱ ← φ⁻ⁱ + η_naive ∂J⁻ⁱ/∂φ⁻ⁱ                                  (§7.1 "Naive learners")
  shaping objective      J̄(φⁱ) = mean over m = 0..M of Jⁱ(φⁱ, φ⁻ⁱ_m), φ⁻ⁱ_m after m naive steps  (Eq. 17)
  LOLA objective         Jⁱ(φⁱ, φ⁻ⁱ_k) after k look-ahead naive steps                           (Eq. 4)
  mixed-group gradient   p_naive ∇J̄ + (1 − p_naive) ∂Jⁱ/∂φⁱ                                   (§7.1)

Notation: n = number of naive learners (a meta-batch), c = number of meta co-players.

Conventions chosen here where the paper is silent (see also configs/analytic_ipd.py):
  * Learning rules use the *normalised* return (1 − γ)·J, the discounted average reward per round (mutual
    cooperation earns 1, mutual defection 0 for every γ). This fixes the unit of the naive learning rate: a
    step η on the normalised return is a step η/(1 − γ) on J itself. The meta optimiser (Adam) is insensitive to
    the overall scale.
  * The shaping objective (Eq. 17) sums M + 1 returns; we average them instead, so that the naive-learner term and
    the meta-co-player term of the mixed-group gradient are both "return per inner episode", as they are in the
    RL estimators (COALA-PG vs a naive learner and the standard PG vs a meta agent both sum over the M episodes of
    one meta-trajectory).

Everything is a pure function of arrays: `jax.grad`, `jax.vmap` and `jax.jit` apply to all of it.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from coala_dist.envs import analytic_ipd as ipd
from coala_dist.rl import dice


def partial_gradient(logits_own: jax.Array, logits_other: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """∂Jⁱ/∂φⁱ with the co-player held fixed: the naive learner's gradient and a meta agent's gradient against
    another meta agent (paper App. C).

    Args:
      logits_own: [5] the learner's logits φⁱ.
      logits_other: [5] the co-player's logits φ⁻ⁱ.
      gamma: discount factor in [0, 1).

    Returns:
      [5] gradient of the normalised return with respect to `logits_own`.
    """
    return jax.grad(ipd.own_average_reward)(logits_own, logits_other, gamma)


def naive_step(
    logits_naive: jax.Array,
    logits_other: jax.Array,
    gamma: float | jax.Array,
    learning_rate: float | jax.Array,
) -> jax.Array:
    """One naive-learner update: φ⁻ⁱ ← φ⁻ⁱ + η_naive ∂J⁻ⁱ/∂φ⁻ⁱ (plain gradient ascent, paper Sec. 4, App. C).

    Args:
      logits_naive: [5] the naive learner's logits φ⁻ⁱ.
      logits_other: [5] its co-player's logits φⁱ (held fixed by the naive learner).
      gamma: discount factor in [0, 1).
      learning_rate: η_naive, in units of the normalised return.

    Returns:
      [5] the naive learner's updated logits.
    """
    return logits_naive + learning_rate * partial_gradient(logits_naive, logits_other, gamma)


def naive_learning_trajectory(
    logits_agent: jax.Array,
    logits_naive: jax.Array,
    gamma: float | jax.Array,
    learning_rate: float | jax.Array,
    num_steps: int,
) -> jax.Array:
    """The naive learner's parameters along `num_steps` updates against the fixed `logits_agent`.

    φ⁻ⁱ_0 = `logits_naive`, φ⁻ⁱ_m = φ⁻ⁱ_{m−1} + η ∂J⁻ⁱ(φ⁻ⁱ_{m−1}, φⁱ)/∂φ⁻ⁱ, i.e. φ⁻ⁱ + Σ_{q≤m} Δ_q φ⁻ⁱ of Eq. 17.
    Differentiable in both arguments (the gradient through it is the shaping gradient).

    Args:
      logits_agent: [5] the co-player's fixed logits φⁱ.
      logits_naive: [5] the naive learner's initial logits φ⁻ⁱ_0.
      gamma: discount factor in [0, 1).
      learning_rate: η_naive.
      num_steps: M ≥ 0, number of updates (static).

    Returns:
      [num_steps + 1, 5] the logits φ⁻ⁱ_0 .. φ⁻ⁱ_M.
    """
    ipd.check_logits(logits_agent, logits_naive)

    def _update(logits, _):
        new_logits = naive_step(logits, logits_agent, gamma, learning_rate)
        return new_logits, new_logits

    _, later = jax.lax.scan(_update, logits_naive, None, length=num_steps)
    return jnp.concatenate([logits_naive[None], later], axis=0)


def shaping_objective(
    logits_agent: jax.Array,
    logits_naive: jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    num_naive_steps: int,
) -> jax.Array:
    """Co-player shaping objective (paper Eq. 17), averaged over the M + 1 points of the learning trajectory.

    J̄(φⁱ) = 1/(M+1) Σ_{m=0}^{M} Jⁱ(φⁱ, φ⁻ⁱ + Σ_{q=1}^{m} Δ_q φ⁻ⁱ),  Δ_q φ⁻ⁱ = η_naive ∂J⁻ⁱ/∂φ⁻ⁱ(·),

    with Jⁱ the normalised return. Its gradient backpropagates through the M naive updates. (Eq. 17 sums; the
    average only rescales it by 1/(M+1), see the module docstring.)

    Args:
      logits_agent: [5] the learning-aware agent's logits φⁱ.
      logits_naive: [5] the naive learner's initial logits φ⁻ⁱ.
      gamma: discount factor in [0, 1).
      naive_learning_rate: η_naive.
      num_naive_steps: M (static).

    Returns:
      Scalar: the agent's average reward over the naive learner's learning trajectory.
    """
    trajectory = naive_learning_trajectory(logits_agent, logits_naive, gamma, naive_learning_rate, num_naive_steps)
    rewards = jax.vmap(ipd.own_average_reward, in_axes=(None, 0, None))(logits_agent, trajectory, gamma)
    return jnp.mean(rewards)


def shaping_gradient(
    logits_agent: jax.Array,
    logits_naive_batch: jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    num_naive_steps: int,
) -> jax.Array:
    """Gradient of the shaping objective (Eq. 17) averaged over a meta-batch of naive learners.

    Args:
      logits_agent: [5] φⁱ.
      logits_naive_batch: [n, 5] initial logits of n independent naive learners.
      gamma: discount factor in [0, 1).
      naive_learning_rate: η_naive.
      num_naive_steps: M (static).

    Returns:
      [5] d/dφⁱ of mean_n J̄(φⁱ; φ⁻ⁱ_n).
    """
    chex.assert_rank(logits_naive_batch, 2)

    def batch_objective(logits):
        per_learner = jax.vmap(shaping_objective, in_axes=(None, 0, None, None, None))(
            logits, logits_naive_batch, gamma, naive_learning_rate, num_naive_steps
        )
        return jnp.mean(per_learner)

    return jax.grad(batch_objective)(logits_agent)


def lola_gradient(
    logits_agent: jax.Array,
    logits_other: jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    look_ahead: int,
) -> jax.Array:
    """∇^LOLA of Eq. 4: the total derivative with respect to φⁱ of the LOLA objective with k look-ahead steps,

    Jⁱ(φⁱ, φ⁻ⁱ + Σ_{q=1}^{k} Δ_q φ⁻ⁱ),  Δ_q φ⁻ⁱ = α ∂/∂φ⁻ⁱ J⁻ⁱ(φⁱ, φ⁻ⁱ + Σ_{q'<q} Δ_{q'} φ⁻ⁱ) (paper Eq. 4):

    the agent's (normalised) return after the co-player, modelled as a naive learner with learning rate α, took
    k steps. Unlike Eq. 17 only the end point counts. k = 0 is the plain return (the partial gradient).

    Args:
      logits_agent: [5] φⁱ.
      logits_other: [5] the co-player's current logits φ⁻ⁱ.
      gamma: discount factor in [0, 1).
      naive_learning_rate: α, the look-ahead learning rate.
      look_ahead: k ≥ 0 (static).

    Returns:
      [5] gradient.
    """

    ipd.check_logits(logits_agent, logits_other)

    def own_return(own: jax.Array, other: jax.Array) -> jax.Array:
        return ipd.own_average_reward(own, other, gamma)

    def coplayer_return(own: jax.Array, other: jax.Array) -> jax.Array:
        return ipd.own_average_reward(other, own, gamma)

    # The look-ahead is the naive learner's own update (`naive_step`): gradient ascent on its exact return.
    return dice.lola_dice_gradient(
        logits_agent, logits_other, own_return, coplayer_return, naive_learning_rate, look_ahead
    )


def mixed_group_gradient(
    logits_agent: jax.Array,
    logits_naive_batch: jax.Array,
    logits_meta_coplayers: jax.Array,
    p_naive: float | jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    num_naive_steps: int,
) -> jax.Array:
    """Gradient of a learning-aware agent in a group with a fraction p_naive of naive learners (paper Sec. 4, App. C).

    p_naive · ∇ mean_n J̄(φⁱ; φ⁻ⁱ_n)  +  (1 − p_naive) · mean_c ∂Jⁱ(φⁱ, φ^c)/∂φⁱ,

    the convex mixture of the shaping gradient against naive learners (Eq. 17) and the partial gradient against
    the other learning-aware agents, who are not modelled as learners.

    Args:
      logits_agent: [5] φⁱ.
      logits_naive_batch: [n, 5] initial logits of the naive learners met.
      logits_meta_coplayers: [c, 5] logits of the learning-aware co-players met.
      p_naive: probability that a co-player is naive, in [0, 1].
      gamma: discount factor in [0, 1).
      naive_learning_rate: η_naive.
      num_naive_steps: M (static).

    Returns:
      [5] gradient (ascent direction).
    """
    chex.assert_rank([logits_naive_batch, logits_meta_coplayers], [2, 2])
    naive_part = shaping_gradient(logits_agent, logits_naive_batch, gamma, naive_learning_rate, num_naive_steps)
    meta_part = jnp.mean(
        jax.vmap(partial_gradient, in_axes=(None, 0, None))(logits_agent, logits_meta_coplayers, gamma),
        axis=0,
    )
    return p_naive * naive_part + (1 - p_naive) * meta_part
