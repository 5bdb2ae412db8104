"""Exact, differentiable infinitely-iterated prisoner's dilemma with tabular policies (paper.md §7.1).

The analytic game of the paper's §4 (App. C). Each player has a 5-logit memory-one policy
`logits = [φ0, φ1, φ2, φ3, φ4]`:

  σ(φ0)    probability of cooperating in the first round;
  σ(φ1..4) probability of cooperating after the joint action CC, CD, DC, DD of the previous round.

As in the RL environment (coala_dist/envs/ipd.py) every player reads a joint action as (own, other), so the same
logits mean the same strategy whichever seat a player takes. The Markov chain is written in player 1's order
(CC, CD, DC, DD with player 1's action first); player 2's logits are read through the permutation CD ↔ DC.

Everything here is a pure function of arrays: `jax.grad`, `jax.vmap` and `jax.jit` apply to all of it. The learning
rules of the paper are built from one exact quantity, the discounted return (Eq. 15–16):

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
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

NUM_LOGITS = 5
NUM_JOINT_ACTIONS = 4

# Stage-game payoffs (T, R, P, S) of Table 1.
TEMPTATION = 2.0
REWARD = 1.0
PUNISHMENT = 0.0
SUCKER = -1.0

# Joint actions in player 1's order (player 1's action first), 0 = cooperate, 1 = defect: index = 2·a¹ + a².
CC, CD, DC, DD = range(4)

# Payoff vectors over (CC, CD, DC, DD) in player 1's order (paper.md §7.1): r¹ = [R, S, T, P], r² = [R, T, S, P].
PAYOFF_PLAYER_1 = (REWARD, SUCKER, TEMPTATION, PUNISHMENT)
PAYOFF_PLAYER_2 = (REWARD, TEMPTATION, SUCKER, PUNISHMENT)

# Player 2 sees joint action (a¹, a²) as (a², a¹): CD and DC swap, CC and DD stay.
PLAYER_2_VIEW = (CC, DC, CD, DD)


def _check_logits(*logits: jax.Array) -> None:
    for policy_logits in logits:
        chex.assert_shape(policy_logits, (NUM_LOGITS,))


def joint_action_distribution(cooperate_player_1: jax.Array, cooperate_player_2: jax.Array) -> jax.Array:
    """Distribution of the joint action (CC, CD, DC, DD) when both players act independently.

    Args:
      cooperate_player_1: [...] probability that player 1 cooperates.
      cooperate_player_2: [...] probability that player 2 cooperates (same shape).

    Returns:
      [..., 4] probabilities in player 1's order.
    """
    p, q = cooperate_player_1, cooperate_player_2
    return jnp.stack([p * q, p * (1 - q), (1 - p) * q, (1 - p) * (1 - q)], axis=-1)


def initial_state_distribution(logits_player_1: jax.Array, logits_player_2: jax.Array) -> jax.Array:
    """Distribution of the first round's joint action, s0 of paper.md §7.1.

    s0 = [σ(φ¹0)σ(φ²0), σ(φ¹0)(1−σ(φ²0)), (1−σ(φ¹0))σ(φ²0), (1−σ(φ¹0))(1−σ(φ²0))]ᵀ.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.

    Returns:
      [4] probabilities of CC, CD, DC, DD in player 1's order.
    """
    _check_logits(logits_player_1, logits_player_2)
    return joint_action_distribution(jax.nn.sigmoid(logits_player_1[0]), jax.nn.sigmoid(logits_player_2[0]))


def transition_matrix(logits_player_1: jax.Array, logits_player_2: jax.Array) -> jax.Array:
    """Markov matrix of the joint action from one round to the next (paper.md §7.1).

    M[next, previous] = P(joint action `next` | previous joint action `previous`), so each *column* sums to 1 and
    the distribution evolves as s_{t+1} = M s_t. Player 2's cooperation logit in state `previous` is read at
    PLAYER_2_VIEW[previous], its own view of that joint action.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.

    Returns:
      [4, 4] column-stochastic matrix.
    """
    _check_logits(logits_player_1, logits_player_2)
    cooperate_player_1 = jax.nn.sigmoid(logits_player_1[1:])
    cooperate_player_2 = jax.nn.sigmoid(logits_player_2[1:][jnp.array(PLAYER_2_VIEW)])
    # Row `previous` of the stacked distribution is column `previous` of M.
    return joint_action_distribution(cooperate_player_1, cooperate_player_2).T


def discounted_state_visitation(
    logits_player_1: jax.Array, logits_player_2: jax.Array, gamma: float | jax.Array
) -> jax.Array:
    """Discounted visitation of the joint actions, Σ_{t≥0} γᵗ Mᵗ s0 = (I − γM)⁻¹ s0 (paper.md Eq. 15–16).

    Computed by one linear solve. Multiplied by (1 − γ) it is a probability distribution.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.
      gamma: discount factor in [0, 1).

    Returns:
      [4] discounted visit counts of CC, CD, DC, DD (player 1's order); they sum to 1 / (1 − γ).
    """
    markov = transition_matrix(logits_player_1, logits_player_2)
    start = initial_state_distribution(logits_player_1, logits_player_2)
    return solve_diagonally_dominant(jnp.eye(NUM_JOINT_ACTIONS, dtype=markov.dtype) - gamma * markov, start)


def solve_diagonally_dominant(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """Solves matrix @ x = rhs for a small diagonally dominant matrix, with cheap derivatives of any order.

    I − γM is column diagonally dominant (each column of M sums to 1 and γ < 1), and its transpose is row
    diagonally dominant, so Gaussian elimination needs no pivoting for either and is stable. Unrolled elementwise
    elimination vectorises under `vmap` much better than a batched LAPACK call; wrapping it in
    `lax.custom_linear_solve` makes derivatives solves again (dx = A⁻¹(db − dA x)) instead of differentiating the
    elimination itself, which keeps the second derivatives of LOLA and of the shaping objective small and fast.

    Args:
      matrix: [k, k], k small (4 here), diagonally dominant by columns or rows.
      rhs: [k].

    Returns:
      [k] the solution.
    """
    return jax.lax.custom_linear_solve(
        lambda x: matrix @ x,
        rhs,
        solve=lambda _, b: _gaussian_elimination(matrix, b),
        transpose_solve=lambda _, b: _gaussian_elimination(matrix.T, b),
    )


def _gaussian_elimination(matrix: jax.Array, rhs: jax.Array) -> jax.Array:
    """Unrolled Gaussian elimination without pivoting; [k, k] and [k] -> [k]."""
    size = matrix.shape[0]
    rows = [matrix[i] for i in range(size)]
    values = [rhs[i] for i in range(size)]
    for pivot in range(size):  # static size-4 loops, unrolled at trace time
        for row in range(pivot + 1, size):
            factor = rows[row][pivot] / rows[pivot][pivot]
            rows[row] = rows[row] - factor * rows[pivot]
            values[row] = values[row] - factor * values[pivot]
    solution = [None] * size
    for row in reversed(range(size)):
        known = sum(rows[row][col] * solution[col] for col in range(row + 1, size))
        solution[row] = (values[row] - known) / rows[row][row]
    return jnp.stack(solution)


def discounted_return(
    logits_player_1: jax.Array, logits_player_2: jax.Array, gamma: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Exact discounted returns of both players, Jⁱ = rⁱᵀ Σ_{t≥0} γᵗ Mᵗ s0 = rⁱᵀ (I − γM)⁻¹ s0 (Eq. 15–16).

    The first round is undiscounted (t = 0). Payoffs are those of Table 1: r¹ = [1, −1, 2, 0],
    r² = [1, 2, −1, 0] over (CC, CD, DC, DD).

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.
      gamma: discount factor in [0, 1).

    Returns:
      (J1, J2), two scalars.
    """
    visitation = discounted_state_visitation(logits_player_1, logits_player_2, gamma)
    return (
        jnp.dot(jnp.asarray(PAYOFF_PLAYER_1, visitation.dtype), visitation),
        jnp.dot(jnp.asarray(PAYOFF_PLAYER_2, visitation.dtype), visitation),
    )


def average_reward(
    logits_player_1: jax.Array, logits_player_2: jax.Array, gamma: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Normalised returns (1 − γ)·(J1, J2): the discounted average reward per round.

    This is the quantity every learning rule of this module ascends and every figure reports: mutual cooperation
    gives 1, mutual defection 0, whatever γ.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.
      gamma: discount factor in [0, 1).

    Returns:
      (average reward of player 1, average reward of player 2), two scalars.
    """
    return_player_1, return_player_2 = discounted_return(logits_player_1, logits_player_2, gamma)
    return (1 - gamma) * return_player_1, (1 - gamma) * return_player_2


def cooperation_rates(
    logits_player_1: jax.Array, logits_player_2: jax.Array, gamma: float | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Discounted fraction of rounds in which each player cooperates.

    Player 1 cooperates in CC and CD, player 2 in CC and DC (player 1's order), weighted by the normalised
    discounted visitation (1 − γ)(I − γM)⁻¹ s0.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.
      gamma: discount factor in [0, 1).

    Returns:
      (cooperation rate of player 1, cooperation rate of player 2), two scalars in [0, 1].
    """
    visitation = (1 - gamma) * discounted_state_visitation(logits_player_1, logits_player_2, gamma)
    return visitation[CC] + visitation[CD], visitation[CC] + visitation[DC]


def own_average_reward(logits_own: jax.Array, logits_other: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """Average reward of the player with `logits_own` against `logits_other` (seat-independent).

    Args:
      logits_own: [5] the player's logits.
      logits_other: [5] the co-player's logits.
      gamma: discount factor in [0, 1).

    Returns:
      Scalar (1 − γ)·J of the player with `logits_own`.
    """
    return average_reward(logits_own, logits_other, gamma)[0]


def partial_gradient(logits_own: jax.Array, logits_other: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """∂Jⁱ/∂φⁱ with the co-player held fixed: the naive learner's gradient and a meta agent's gradient against
    another meta agent (paper.md §7.1 "Gradients used").

    Args:
      logits_own: [5] the learner's logits φⁱ.
      logits_other: [5] the co-player's logits φ⁻ⁱ.
      gamma: discount factor in [0, 1).

    Returns:
      [5] gradient of the normalised return with respect to `logits_own`.
    """
    return jax.grad(own_average_reward)(logits_own, logits_other, gamma)


def naive_step(
    logits_naive: jax.Array,
    logits_other: jax.Array,
    gamma: float | jax.Array,
    learning_rate: float | jax.Array,
) -> jax.Array:
    """One naive-learner update: φ⁻ⁱ ← φ⁻ⁱ + η_naive ∂J⁻ⁱ/∂φ⁻ⁱ (plain gradient ascent, paper.md §7.1).

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
    _check_logits(logits_agent, logits_naive)

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
    """Co-player shaping objective (paper.md Eq. 17), averaged over the M + 1 points of the learning trajectory.

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
    rewards = jax.vmap(own_average_reward, in_axes=(None, 0, None))(logits_agent, trajectory, gamma)
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


def lola_objective(
    logits_agent: jax.Array,
    logits_other: jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    look_ahead: int,
) -> jax.Array:
    """LOLA objective with k look-ahead steps (paper.md Eq. 4).

    Jⁱ(φⁱ, φ⁻ⁱ + Σ_{q=1}^{k} Δ_q φ⁻ⁱ),  Δ_q φ⁻ⁱ = α ∂/∂φ⁻ⁱ J⁻ⁱ(φⁱ, φ⁻ⁱ + Σ_{q'<q} Δ_{q'} φ⁻ⁱ):

    the agent's (normalised) return after the co-player, modelled as a naive learner with learning rate α, took
    k steps. Unlike Eq. 17 only the end point counts. k = 0 is the plain return.

    Args:
      logits_agent: [5] φⁱ.
      logits_other: [5] the co-player's current logits φ⁻ⁱ.
      gamma: discount factor in [0, 1).
      naive_learning_rate: α, the look-ahead learning rate.
      look_ahead: k ≥ 0 (static).

    Returns:
      Scalar.
    """
    trajectory = naive_learning_trajectory(logits_agent, logits_other, gamma, naive_learning_rate, look_ahead)
    return own_average_reward(logits_agent, trajectory[-1], gamma)


def lola_gradient(
    logits_agent: jax.Array,
    logits_other: jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    look_ahead: int,
) -> jax.Array:
    """∇^LOLA of Eq. 4: the total derivative of `lola_objective` with respect to φⁱ.

    Args:
      logits_agent: [5] φⁱ.
      logits_other: [5] φ⁻ⁱ.
      gamma: discount factor in [0, 1).
      naive_learning_rate: α.
      look_ahead: k ≥ 0 (static).

    Returns:
      [5] gradient.
    """
    return jax.grad(lola_objective)(logits_agent, logits_other, gamma, naive_learning_rate, look_ahead)


def mixed_group_gradient(
    logits_agent: jax.Array,
    logits_naive_batch: jax.Array,
    logits_meta_coplayers: jax.Array,
    p_naive: float | jax.Array,
    gamma: float | jax.Array,
    naive_learning_rate: float | jax.Array,
    num_naive_steps: int,
) -> jax.Array:
    """Gradient of a learning-aware agent in a group with a fraction p_naive of naive learners (paper.md §7.1).

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


# ---------------------------------------------------------------------------------------------------------------
# Zero-determinant strategies (Press & Dyson 2012), paper.md Eq. 18.


def zero_determinant_phi_max(
    chi: float | jax.Array,
    temptation: float = TEMPTATION,
    reward: float = REWARD,
    punishment: float = PUNISHMENT,
    sucker: float = SUCKER,
) -> jax.Array:
    """Largest admissible φ of the ZD extortion family for extortion factor χ: (P − S) / ((P − S) + χ(T − P)).

    Args:
      chi: [...] χ ≥ 1.
      temptation, reward, punishment, sucker: stage-game payoffs (T, R, P, S).

    Returns:
      [...] φ_max(χ).
    """
    del reward
    chi = jnp.asarray(chi)
    return (punishment - sucker) / ((punishment - sucker) + chi * (temptation - punishment))


def zero_determinant_strategy(
    chi: float | jax.Array,
    phi: float | jax.Array,
    temptation: float = TEMPTATION,
    reward: float = REWARD,
    punishment: float = PUNISHMENT,
    sucker: float = SUCKER,
) -> jax.Array:
    """Cooperation probabilities of the ZD extortion strategy with parameters (χ, φ) (paper.md Eq. 18).

    p1 = 1 − φ(χ − 1)(R − P)/(P − S)
    p2 = 1 − φ(1 + χ(T − P)/(P − S))
    p3 = φ(χ + (T − P)/(P − S))
    p4 = 0

    after CC, CD, DC, DD (own action first), for χ ≥ 1 and 0 < φ ≤ `zero_determinant_phi_max(χ)`. Against any
    co-player it enforces s_own − P = χ (s_other − P) on the long-run average payoffs. χ = 1 with φ = φ_max is
    tit-for-tat.

    Args:
      chi: [...] extortion factor χ.
      phi: [...] scale φ (broadcasts with `chi`).
      temptation, reward, punishment, sucker: stage-game payoffs (T, R, P, S).

    Returns:
      [..., 4] probabilities (p1, p2, p3, p4).
    """
    chi, phi = jnp.broadcast_arrays(jnp.asarray(chi), jnp.asarray(phi))
    gain = punishment - sucker
    p1 = 1 - phi * (chi - 1) * (reward - punishment) / gain
    p2 = 1 - phi * (1 + chi * (temptation - punishment) / gain)
    p3 = phi * (chi + (temptation - punishment) / gain)
    return jnp.stack([p1, p2, p3, jnp.zeros_like(p1)], axis=-1)


class ZeroDeterminantFit(NamedTuple):
    """Least-squares fit of a memory-one strategy to the ZD extortion family.

    Attributes:
      chi: [...] fitted extortion factor χ ≥ 1.
      phi: [...] fitted φ in [0, φ_max(χ)].
      squared_error: [...] ‖p − p_ZD(χ, φ)‖² over the four conditional cooperation probabilities.
    """

    chi: jax.Array
    phi: jax.Array
    squared_error: jax.Array


def _best_phi_for_chi(
    cooperate: jax.Array, chi: jax.Array, payoffs: tuple[float, float, float, float]
) -> tuple[jax.Array, jax.Array]:
    """For fixed χ the family is affine in φ, p_ZD = a + φ b, so the constrained optimum is a clipped projection."""
    offset = zero_determinant_strategy(chi, 0.0, *payoffs)
    direction = zero_determinant_strategy(chi, 1.0, *payoffs) - offset
    unconstrained = jnp.sum((cooperate - offset) * direction, -1) / jnp.sum(direction**2, -1)
    phi = jnp.clip(unconstrained, 0.0, zero_determinant_phi_max(chi, *payoffs))
    error = jnp.sum((cooperate - offset - phi[..., None] * direction) ** 2, -1)
    return phi, error


def fit_zero_determinant(
    cooperate: jax.Array,
    num_grid_points: int = 512,
    num_refinements: int = 3,
    temptation: float = TEMPTATION,
    reward: float = REWARD,
    punishment: float = PUNISHMENT,
    sucker: float = SUCKER,
) -> ZeroDeterminantFit:
    """Least-squares fit of a strategy to the ZD extortion family: min_{χ≥1, 0≤φ≤φ_max(χ)} ‖p − p_ZD(χ, φ)‖².

    (paper.md §7.1, Fig. 8: the fit of σ(φⁱ)[1:5].) For fixed χ the optimal φ is closed form; χ is searched on a
    grid of u = 1/χ ∈ (0, 1] (covering χ ∈ [1, ∞)) that is refined `num_refinements` times around the best point.

    Args:
      cooperate: [4] probabilities of cooperating after CC, CD, DC, DD (own action first).
      num_grid_points: grid size per round (static).
      num_refinements: number of zoom-in rounds (static).
      temptation, reward, punishment, sucker: stage-game payoffs (T, R, P, S).

    Returns:
      `ZeroDeterminantFit` of scalars.
    """
    chex.assert_shape(cooperate, (NUM_JOINT_ACTIONS,))
    payoffs = (temptation, reward, punishment, sucker)
    smallest_u = 1e-4
    low, high = jnp.asarray(smallest_u, cooperate.dtype), jnp.asarray(1.0, cooperate.dtype)
    best_u = high
    for _ in range(num_refinements + 1):  # a handful of static rounds, unrolled at trace time
        inverse_chi = jnp.linspace(low, high, num_grid_points)
        _, errors = _best_phi_for_chi(cooperate, 1.0 / inverse_chi, payoffs)
        best_index = jnp.argmin(errors)
        best_u = inverse_chi[best_index]
        spacing = (high - low) / (num_grid_points - 1)
        low = jnp.maximum(best_u - spacing, smallest_u)
        high = jnp.minimum(best_u + spacing, 1.0)
    chi = 1.0 / best_u
    phi, error = _best_phi_for_chi(cooperate, chi, payoffs)
    return ZeroDeterminantFit(chi=chi, phi=phi, squared_error=error)


def logits_from_probabilities(probabilities: jax.Array, clip: float = 1e-6) -> jax.Array:
    """Inverse sigmoid, clipped away from 0 and 1 so deterministic strategies get finite logits.

    Args:
      probabilities: [...] values in [0, 1].
      clip: probabilities are clipped to [clip, 1 − clip].

    Returns:
      [...] logits.
    """
    probabilities = jnp.clip(probabilities, clip, 1 - clip)
    return jnp.log(probabilities) - jnp.log1p(-probabilities)
