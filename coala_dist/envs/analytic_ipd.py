"""Exact, differentiable infinitely-iterated prisoner's dilemma with tabular policies (paper Sec. 4, App. C).

The analytic game of the paper's §4 (App. C). Each player has a 5-logit memory-one policy
`logits = [φ0, φ1, φ2, φ3, φ4]`:

  σ(φ0)    probability of cooperating in the first round;
  σ(φ1..4) probability of cooperating after the joint action CC, CD, DC, DD of the previous round.

As in the RL environment (coala_dist/envs/ipd.py) every player reads a joint action as (own, other), so the same
logits mean the same strategy whichever seat a player takes. The Markov chain is written in player 1's order
(CC, CD, DC, DD with player 1's action first); player 2's logits are read through the permutation CD ↔ DC.

Everything here is a pure function of arrays: `jax.grad`, `jax.vmap` and `jax.jit` apply to all of it. This module
holds the game: payoffs, the state distributions, the exact discounted return of two policies (Eq. 15–16) and the
zero-determinant strategies (Eq. 18). The learning rules built on that return (naive step, shaping objective Eq. 17,
LOLA Eq. 4, mixed-group gradient) are in coala_dist/rl/analytic_rules.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
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

# Payoff vectors over (CC, CD, DC, DD) in player 1's order (paper Sec. 4, App. C): r¹ = [R, S, T, P], r² = [R, T, S, P].
PAYOFF_PLAYER_1 = (REWARD, SUCKER, TEMPTATION, PUNISHMENT)
PAYOFF_PLAYER_2 = (REWARD, TEMPTATION, SUCKER, PUNISHMENT)

# Player 2 sees joint action (a¹, a²) as (a², a¹): CD and DC swap, CC and DD stay.
PLAYER_2_VIEW = (CC, DC, CD, DD)


def check_logits(*logits: jax.Array) -> None:
    """Asserts that every argument is one policy's [5] logits."""
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
    """Distribution of the first round's joint action, s0 of paper Sec. 4, App. C.

    s0 = [σ(φ¹0)σ(φ²0), σ(φ¹0)(1−σ(φ²0)), (1−σ(φ¹0))σ(φ²0), (1−σ(φ¹0))(1−σ(φ²0))]ᵀ.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.

    Returns:
      [4] probabilities of CC, CD, DC, DD in player 1's order.
    """
    check_logits(logits_player_1, logits_player_2)
    return joint_action_distribution(jax.nn.sigmoid(logits_player_1[0]), jax.nn.sigmoid(logits_player_2[0]))


def transition_matrix(logits_player_1: jax.Array, logits_player_2: jax.Array) -> jax.Array:
    """Markov matrix of the joint action from one round to the next (paper Sec. 4, App. C).

    M[next, previous] = P(joint action `next` | previous joint action `previous`), so each *column* sums to 1 and
    the distribution evolves as s_{t+1} = M s_t. Player 2's cooperation logit in state `previous` is read at
    PLAYER_2_VIEW[previous], its own view of that joint action.

    Args:
      logits_player_1: [5] player 1's policy logits.
      logits_player_2: [5] player 2's policy logits.

    Returns:
      [4, 4] column-stochastic matrix.
    """
    check_logits(logits_player_1, logits_player_2)
    cooperate_player_1 = jax.nn.sigmoid(logits_player_1[1:])
    cooperate_player_2 = jax.nn.sigmoid(logits_player_2[1:][jnp.array(PLAYER_2_VIEW)])
    # Row `previous` of the stacked distribution is column `previous` of M.
    return joint_action_distribution(cooperate_player_1, cooperate_player_2).T


def discounted_state_visitation(
    logits_player_1: jax.Array, logits_player_2: jax.Array, gamma: float | jax.Array
) -> jax.Array:
    """Discounted visitation of the joint actions, Σ_{t≥0} γᵗ Mᵗ s0 = (I − γM)⁻¹ s0 (paper Eq. 15–16).

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

    This is the quantity every learning rule of coala_dist/rl/analytic_rules.py ascends and every figure reports:
    mutual cooperation gives 1, mutual defection 0, whatever γ.

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


# ---------------------------------------------------------------------------------------------------------------
# Zero-determinant strategies (Press & Dyson 2012), paper Eq. 18.


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
    """Cooperation probabilities of the ZD extortion strategy with parameters (χ, φ) (paper Eq. 18).

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

    (paper Sec. 4, App. C, Fig. 8: the fit of σ(φⁱ)[1:5].) For fixed χ the optimal φ is closed form; χ is searched on a
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


def fit_zero_determinant_rows(
    cooperate: jax.Array, payoffs: tuple[float, float, float, float] = (TEMPTATION, REWARD, PUNISHMENT, SUCKER)
) -> ZeroDeterminantFit:
    """`fit_zero_determinant` of every row of `cooperate`, in one call compiled once per payoff table.

    Args:
      cooperate: [n, 4] probabilities of cooperating after CC, CD, DC, DD (own action first).
      payoffs: (T, R, P, S) of the game.

    Returns:
      `ZeroDeterminantFit` of [n] arrays.
    """
    return _compiled_row_fit(tuple(float(x) for x in payoffs))(cooperate)


@functools.lru_cache(maxsize=8)
def _compiled_row_fit(payoffs: tuple[float, float, float, float]) -> Callable[[jax.Array], ZeroDeterminantFit]:
    """`fit_zero_determinant` vmapped over rows and jitted, once per payoff table."""
    temptation, reward, punishment, sucker = payoffs
    return jax.jit(
        jax.vmap(
            lambda p: fit_zero_determinant(
                p, temptation=temptation, reward=reward, punishment=punishment, sucker=sucker
            )
        )
    )


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
