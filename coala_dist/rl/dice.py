"""DiCE and LOLA-DiCE: the baseline of paper Fig. 5C, "LOLA-DiCE also cooperates" (paper Sec. 5.1, Eq. 4).

DiCE (Foerster et al. 2018, "DiCE: The Infinitely Differentiable Monte-Carlo Estimator",
https://arxiv.org/abs/1802.05098) writes a sampled return as a surrogate whose value is the return and whose
derivatives of every order, with respect to the parameters of every policy that drew the samples, are unbiased
estimates of the derivatives of the expected return. LOLA (Eq. 4) needs exactly that: the gradient of an agent's
return after the co-player's look-ahead step, which depends on the agent's parameters through the co-player's
gradient (a second-order term).

The functions here are small and pure, rlax-style:

* `magic_box`: □(x) = exp(x − ⊥x), value 1, ∇□(x) = □(x)∇x;
* `dice_objective`: one player's DiCE surrogate of a batch of trajectories [B, T], with the optional baseline term;
* `lola_look_ahead` / `lola_dice_gradient`: Eq. 4 on any differentiable objectives (DiCE surrogates of sampled
  trajectories in RL; exact expectations in the tests, where the gradient is checked against the analytic LOLA
  gradient of `coala_dist.rl.analytic_rules.lola_gradient`).

* `inner_episode_dice_objective` / `lola_dice_objective`: the LOLA-DiCE meta agent's objective on one replayed
  meta-episode / a meta-batch of them (estimator "lola_dice"; `coala_dist.lola_dice_learner.LolaDiceLearner`
  replays the episodes with `coala_dist.rollout.Rollout.replay`).

LOLA-DiCE meta agent (our reading; the paper gives no RL details: docs/choices.md#lola-dice-in-the-rl-games): Eq. 4's
look-ahead steps are the naive co-player's own M − 1 A2C updates inside the meta-episode (its real rule: Adam, clipping,
advantage normalisation), made differentiable in the ego's parameters by DiCE (`Rollout.play(look_ahead=True)`). The
agent ascends Σₘ Jⁱ(φⁱ, θₘ(φⁱ)): each inner episode's DiCE surrogate, whose stochastic dependencies are the actions of
that inner episode only. So the agent learns through the co-player's parameter updates (LOLA's white-box model), not
through the in-context (recurrent-state) effects across inner episodes that COALA-PG credits. A meta co-player does not
update inside a meta-episode; LOLA then models its learning as Eq. 4 does in the analytic game:
`config.meta.lola_look_ahead_steps` (default 1) steps of gradient ascent of size `config.meta.lola_look_ahead_lr`
(default 1.0; the paper gives neither) on its own inner-episode DiCE objective of the same episode
(`LolaDiceLearner.loss`); with 0 steps it is a per-inner-episode REINFORCE with a baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp

from coala_dist.rl.returns import num_inner_episodes

Array = jax.Array


def magic_box(x: Array) -> Array:
    """DiCE's magic box □(x) = exp(x − stop_gradient(x)): evaluates to 1, and ∇□(x) = □(x)·∇x at every order."""
    return jnp.exp(x - jax.lax.stop_gradient(x))


def dice_objective(
    log_probs: Array,
    rewards: Array,
    discount: float | Array,
    baselines: Array | None = None,
) -> Array:
    """One player's DiCE surrogate of a batch of trajectories (Foerster et al. 2018, Eq. 8; baseline as in
    Farquhar et al. 2019, "Loaded DiCE").

        L = mean_b Σ_t γᵗ rᵇ_t · □(Σ_{k≤t} wᵇ_k)  [+ mean_b Σ_t γᵗ (1 − □(wᵇ_t)) bᵇ_t]

    where wᵇ_k is the sum of the log-probabilities of every action taken at step k (both players' in a two-player
    game: the reward at step t depends on all of them up to t). The value of L is the mean discounted return; its
    derivatives of any order with respect to the parameters behind `log_probs` are unbiased estimates of the
    derivatives of the expected discounted return. The baseline term has value 0 and zero expected first-order
    gradient (it reduces variance only).

    Args:
      log_probs: [B, T] log-probabilities of the actions taken at each step (all players summed), differentiable.
      rewards: [B, T] this player's rewards r_t (treated as constants).
      discount: γ.
      baselines: optional [B, T] baselines b_t (treated as constants), e.g. the critic's values V(h_t).

    Returns:
      Scalar surrogate.
    """
    chex.assert_rank([log_probs, rewards], 2)
    chex.assert_equal_shape([log_probs, rewards])
    length = rewards.shape[1]
    discounts = jnp.asarray(discount, rewards.dtype) ** jnp.arange(length, dtype=rewards.dtype)
    rewards = jax.lax.stop_gradient(rewards) * discounts
    dependencies = jnp.cumsum(log_probs, axis=1)
    objective = jnp.sum(rewards * magic_box(dependencies), axis=1)
    if baselines is not None:
        chex.assert_equal_shape([baselines, rewards])
        baselines = jax.lax.stop_gradient(baselines) * discounts
        objective = objective + jnp.sum((1.0 - magic_box(log_probs)) * baselines, axis=1)
    return jnp.mean(objective)


Objective = Callable[[Any, Any], Array]  # (params of the agent, params of the co-player) -> scalar to ascend


def lola_look_ahead(
    params_own: Any,
    params_other: Any,
    co_player_objective: Objective,
    learning_rate: float | Array,
    steps: int,
) -> Any:
    """The co-player's parameters after `steps` naive look-ahead steps, as a differentiable function of
    `params_own` (paper Eq. 4):

        φ⁻ⁱ_q = φ⁻ⁱ_{q−1} + α ∂/∂φ⁻ⁱ J⁻ⁱ(φⁱ, φ⁻ⁱ_{q−1}),  φ⁻ⁱ_0 = φ⁻ⁱ.

    Args:
      params_own: φⁱ (a pytree).
      params_other: φ⁻ⁱ (a pytree).
      co_player_objective: J⁻ⁱ(φⁱ, φ⁻ⁱ) to ascend, e.g. the co-player's `dice_objective` of trajectories drawn with
        the current parameters (a DiCE surrogate, so that ∂/∂φ⁻ⁱ keeps its dependence on φⁱ).
      learning_rate: α.
      steps: k ≥ 0 look-ahead steps (static).

    Returns:
      φ⁻ⁱ_k, same structure as `params_other`.
    """
    if steps < 0:
        raise ValueError(f"the number of look-ahead steps must be >= 0, got {steps}")
    other = params_other
    for _ in range(steps):
        gradient = jax.grad(co_player_objective, argnums=1)(params_own, other)
        other = jax.tree_util.tree_map(lambda p, g: p + learning_rate * g, other, gradient)
    return other


def lola_dice_gradient(
    params_own: Any,
    params_other: Any,
    own_objective: Objective,
    co_player_objective: Objective,
    learning_rate: float | Array,
    steps: int,
) -> Any:
    """∇^LOLA of paper Eq. 4: d/dφⁱ Jⁱ(φⁱ, φ⁻ⁱ_k(φⁱ)), the total derivative through the co-player's look-ahead.

    With DiCE surrogates as the objectives this is LOLA-DiCE; with exact returns it is exact LOLA (the analytic
    game's `lola_gradient`, which the tests compare against).

    Args:
      params_own: φⁱ.
      params_other: φ⁻ⁱ.
      own_objective: Jⁱ(φⁱ, φ⁻ⁱ) to ascend.
      co_player_objective: J⁻ⁱ(φⁱ, φ⁻ⁱ), the co-player's objective used for its look-ahead steps.
      learning_rate: α of the look-ahead steps.
      steps: k ≥ 0 (0: the plain partial gradient ∂Jⁱ/∂φⁱ).

    Returns:
      The gradient, same structure as `params_own`.
    """

    def objective(own: Any) -> Array:
        return own_objective(own, lola_look_ahead(own, params_other, co_player_objective, learning_rate, steps))

    return jax.grad(objective)(params_own)


def inner_episode_dice_objective(
    ego_log_probs: Array,
    coplayer_log_probs: Array,
    rewards: Array,
    baselines: Array,
    inner_episode_length: int,
    discount: float | Array,
) -> Array:
    """Σₘ of each inner episode's DiCE surrogate (`dice_objective`) over B meta-trajectories of M inner episodes.

        L = (1/B) Σ_b Σ_m Σ_t γᵗ r_{b,m,t} □(Σ_{k≤t} w_{b,m,k}) + baseline terms,   w = log π_ego + log π_co

    with t counted from each inner episode's start. Its value is the mean over b of the discounted return summed
    over the inner episodes; its gradient is the LOLA-DiCE gradient when the co-player's log-probabilities depend on
    the ego's parameters through its look-ahead updates (`coala_dist.rollout.Rollout.play`).

    Args:
      ego_log_probs: [B, L] log-probabilities of the ego's actions (L = M·T).
      coplayer_log_probs: [B, L] log-probabilities of the co-player's actions.
      rewards: [B, L] the ego's rewards (constants).
      baselines: [B, L] baselines, e.g. the critic's V(h_t) (constants).
      inner_episode_length: T.
      discount: γ within an inner episode.

    Returns:
      Scalar surrogate to ascend.
    """
    chex.assert_equal_shape([ego_log_probs, coplayer_log_probs, rewards, baselines])
    batch, length = rewards.shape
    episodes = num_inner_episodes(length, inner_episode_length)

    def rows(x: Array) -> Array:  # [B, M·T] -> [B·M, T]: one row per inner episode
        return x.reshape((batch * episodes, inner_episode_length))

    per_row = dice_objective(rows(ego_log_probs + coplayer_log_probs), rows(rewards), discount, rows(baselines))
    return per_row * episodes  # mean over B·M rows × M = mean over b of the sum over m


def lola_dice_objective(
    ego_log_probs: Array,
    coplayer_log_probs: Array,
    rewards: Array,
    baselines: Array,
    inner_episode_length: int,
    discount: float | Array,
) -> Array:
    """The LOLA-DiCE meta agent's objective on a meta-batch: the mean over its N meta-episodes of
    `inner_episode_dice_objective`; arrays [N, B, L]. Returns the scalar to ascend."""

    def one_episode(ego: Array, coplayer: Array, r: Array, b: Array) -> Array:
        return inner_episode_dice_objective(ego, coplayer, r, b, inner_episode_length, discount)

    return jnp.mean(jax.vmap(one_episode)(ego_log_probs, coplayer_log_probs, rewards, baselines))
