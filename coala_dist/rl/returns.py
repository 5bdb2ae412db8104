"""Batch λ-returns: the paper's Algorithm 1 (COALA-PG).

One function, `batch_lambda_returns`, computes every return and advantage the learner needs:
COALA-PG returns (Eq. 5), M-FOS returns (Eq. 7), batch-unaware (per-trajectory) TD(λ) returns
(Eq. 6 / Eq. 10), and, fed with TD errors and λ = 1, the matching GAE advantages (App. A.3). Inputs
are batch-major `[B, L]` arrays for one meta-episode (B parallel trajectories of L = M·T steps);
callers vmap over the meta-batch.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = jax.Array
BoolLike = bool | Array


def num_inner_episodes(length: int, inner_episode_length: int) -> int:
    """M = L / T, the number of inner episodes of a meta-trajectory of L steps.

    Raises:
      ValueError: if `inner_episode_length` is not positive or does not divide L.
    """
    if inner_episode_length <= 0 or length % inner_episode_length:
        raise ValueError(
            f"inner_episode_length={inner_episode_length} must be positive and divide the sequence length L={length}."
        )
    return length // inner_episode_length


def batch_lambda_returns(
    r_t: Array,
    v_t: Array,
    discount: float | Array,
    lambda_: float | Array,
    average_future_episodes: BoolLike,
    normalize_current_episode: BoolLike,
    inner_episode_length: int,
    stop_target_gradients: bool = False,
) -> Array:
    """Batch λ-returns of one meta-episode ("COALA-PG, Algorithm 1").

    Per-trajectory accumulators Gᵇ and one batch-average accumulator Ḡ run backwards in time from
    the bootstrap value after the last step, Gᵇ = v_t[b, L−1] and Ḡ = meanᵦ v_t[b, L−1].
    For t = L−1 … 0:

        if average_future_episodes and t is the last step of an inner episode:
            Gᵇₜ₊₁ ← Ḡₜ₊₁   (for every b)
        Gᵇₜ = rᵇₜ / n + γ [(1 − λ) vᵇₜ + λ Gᵇₜ₊₁]
        Ḡₜ  = meanᵦ( rᵇₜ + γ [(1 − λ) vᵇₜ + λ Ḡₜ₊₁] )

    with n = B if normalize_current_episode else 1 (the batch accumulator is never divided by n).
    Step t ends an inner episode when t mod T = T − 1. With γ = λ = 1, a zero terminal value and
    both flags set, the output is exactly the COALA-PG return weight of Eq. 5 (Theorem 3.1):

        Gᵇₗ = (1/B) Σ_{k=l}^{T·mₗ} rᵇₖ + (1/B) Σ_{b'} Σ_{k=T·mₗ+1}^{MT} rᵇ'ₖ.

    Special cases (paper Eq. 5–7, App. A.3):
      * flags (True, True): COALA-PG (Eq. 5);
      * flags (True, False): the M-FOS rule (Eq. 7), own current episode without the 1/B;
      * flags (False, False): rlax-style per-trajectory TD(λ) returns (batch-unaware PG, Eq. 6,
        and the value targets of Eq. 10);
      * B = 1: all three coincide;
      * TD errors as `r_t`, zero `v_t`, discount γ·λ_gae and λ = 1: GAE (App. A.3).

    Index convention (rlax `lambda_returns`, which Algorithm 1 copies): `r_t[:, t]` is the reward
    received after acting at step t, and `v_t[:, t]` is the value V̂(h_{t+1}) of the history AFTER
    step t, t ∈ [0, L−1]; so `v_t[:, L−1]` is the bootstrap value after the final step (0 when the
    meta-trajectory ends there).

    The two flags may be Python bools or traced boolean scalars (the learner selects them per
    meta-episode under vmap), so they enter through `jnp.where`, never a Python branch.

    See "Multi-agent cooperation through learning-aware policy gradients" by Meulemans, Kobayashi
    et al. (https://arxiv.org/abs/2410.18636), Algorithm 1 and Eq. 3/5.

    Args:
      r_t: [B, L] float, rewards (or TD errors) at steps t ∈ [0, L−1] of the B trajectories.
      v_t: [B, L] float, values of the next histories V̂(h_{t+1}) for t ∈ [0, L−1].
      discount: scalar γ.
      lambda_: scalar λ mixing bootstrapped values (λ = 0) and Monte Carlo returns (λ = 1).
      average_future_episodes: bool scalar; credit future inner episodes with the batch-average
        return.
      normalize_current_episode: bool scalar; divide the own current-episode rewards by B.
      inner_episode_length: T, a Python int that divides L.
      stop_target_gradients: whether to stop gradients flowing through the returns.

    Returns:
      [B, L] returns Gᵇₜ for t ∈ [0, L−1].

    Raises:
      ValueError: if `inner_episode_length` is not positive or does not divide L.
    """
    chex.assert_rank(
        [r_t, v_t, discount, lambda_, average_future_episodes, normalize_current_episode],
        [2, 2, 0, 0, 0, 0],
    )
    chex.assert_type([r_t, v_t], float)
    chex.assert_equal_shape([r_t, v_t])
    batch_size, length = r_t.shape
    num_inner_episodes(length, inner_episode_length)

    dtype = r_t.dtype
    discount = jnp.asarray(discount, dtype)
    lambda_ = jnp.asarray(lambda_, dtype)
    average_future_episodes = jnp.asarray(average_future_episodes, bool)
    current_episode_scale = jnp.where(
        jnp.asarray(normalize_current_episode, bool), 1.0 / batch_size, 1.0
    ).astype(dtype)
    is_inner_episode_end = (jnp.arange(length) % inner_episode_length) == inner_episode_length - 1

    def _backward_step(carry, inputs):
        own_return, batch_return = carry  # [B], scalar: returns from step t+1 on
        r, v, episode_ends_here = inputs  # [B], [B], bool
        # Everything after the last step of an inner episode lies in FUTURE inner episodes; an
        # action reaches those through the co-player's update, which sees the whole batch, so use
        # the batch average there.
        own_return = jnp.where(
            jnp.logical_and(average_future_episodes, episode_ends_here),
            jnp.broadcast_to(batch_return, own_return.shape),
            own_return,
        )
        bootstrap = (1 - lambda_) * v
        own_return = current_episode_scale * r + discount * (bootstrap + lambda_ * own_return)
        batch_return = jnp.mean(r + discount * (bootstrap + lambda_ * batch_return))
        return (own_return, batch_return), own_return

    initial_carry = (v_t[:, -1], jnp.mean(v_t[:, -1]))
    # Scan over time: transpose to time-major [L, B].
    _, returns = jax.lax.scan(
        _backward_step, initial_carry, (r_t.T, v_t.T, is_inner_episode_end), reverse=True
    )
    returns = returns.T
    return jax.lax.stop_gradient(returns) if stop_target_gradients else returns
