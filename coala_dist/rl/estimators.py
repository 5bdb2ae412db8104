"""Policy-gradient estimators as Algorithm 1 flag settings (paper Sec. 3, App. A).

| estimator       | return weight of action aᵇₗ                     | flags (avg_future, norm_cur) | over b |
|-----------------|-------------------------------------------------|------------------------------|--------|
| "coala"         | (1/B)·own rest of episode + batch-mean future   | (True, True)                 | Σ      |
| "mfos"          | own rest of episode + batch-mean future         | (True, False)                | Σ      |
| "batch_unaware" | own rest of meta-trajectory                     | (False, False)               | mean   |
| "mfos_mean"     | as "mfos"                                       | (True, False)                | mean   |

"mfos_mean" is the other reading of M-FOS (App. H.3): the paper does not say whether its M-FOS baseline sums the
policy gradient over the B trajectories (as the M-FOS code does, "mfos") or averages it like an ordinary
batch-of-trajectories gradient. `PAPER_ESTIMATORS` are the three the paper's figures compare.

`REGISTRY` is the one definition of each estimator (name → Algorithm 1 flags, Σ or mean of the policy
gradient over the B trajectories of a naive-opponent episode); config validation, the learner, the
experiments and every report read it (reports name and colour them in `coala_dist.analysis.style`).
Adding an estimator is one entry here plus its own loss. Against another meta agent the learner always
uses the batch-unaware flags: its B trajectories are independent (paper App. B.2.1).

Value convention in this module: `values[:, t]` = V̂(h_t), the critic's output at step t *before*
acting, as the rollout records it. Only the end of the meta-trajectory is terminal; inner-episode
ends are ignored (paper App. B.2.1; docs/choices.md#time-scales), so the value after the last step of an
inner episode is the first value of the next inner episode of the same trajectory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp

from coala_dist.rl.returns import BoolLike, batch_lambda_returns, num_inner_episodes

Array = jax.Array

@dataclasses.dataclass(frozen=True)
class Estimator:
    """One naive-opponent policy-gradient rule (paper Eq. 5–7).

    Attributes:
      name: the config value (`estimator`, `agent_estimators`).
      average_future_episodes: Algorithm 1 flag: future inner episodes' returns averaged over the batch.
      normalize_current_episode: Algorithm 1 flag: the current inner episode's own return divided by B.
      sum_over_batch: the policy gradient of a naive-opponent episode is summed over its B trajectories
        (Eq. 5, Eq. 26) instead of averaged (Eq. 6); see `coala_dist.rl.losses`.
      lola_dice: not an Algorithm 1 rule but LOLA-DiCE (paper Eq. 4, `coala_dist.rl.dice`): the learner replays
        the meta-batch and ascends the DiCE objective through the naive co-player's updates; the three flags above
        are then unused.
    """

    name: str
    average_future_episodes: bool
    normalize_current_episode: bool
    sum_over_batch: bool
    lola_dice: bool = False

    @property
    def flags(self) -> tuple[bool, bool, bool]:
        """(average_future_episodes, normalize_current_episode, sum_over_batch): what the learner needs of a rule."""
        return self.average_future_episodes, self.normalize_current_episode, self.sum_over_batch


REGISTRY: dict[str, Estimator] = {
    e.name: e
    for e in (
        Estimator("coala", True, True, True),
        Estimator("mfos", True, False, True),
        Estimator("batch_unaware", False, False, False),
        Estimator("mfos_mean", True, False, False),
        Estimator("lola_dice", False, False, False, lola_dice=True),
    )
}

ESTIMATORS = tuple(REGISTRY)
PAPER_ESTIMATORS = ("coala", "mfos", "batch_unaware")


def get_estimator(name: str) -> Estimator:
    """The registered estimator `name`.

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
    """
    if name not in REGISTRY:
        raise ValueError(f"Unknown estimator {name!r}; valid estimators are {ESTIMATORS}.")
    return REGISTRY[name]


def rule_flags(names: str | Sequence[str]) -> tuple[Array, Array, Array]:
    """The learner's (average_future_episodes, normalize_current_episode, sum_over_batch) of one rule (three bool
    scalars) or of one rule per meta agent (three [P] bool arrays), as arrays that can be selected under vmap.

    Raises:
      ValueError: for an unknown estimator name; the message lists the valid ones.
    """
    if isinstance(names, str):
        return tuple(jnp.asarray(flag) for flag in get_estimator(names).flags)
    rules = [get_estimator(name).flags for name in names]
    return tuple(jnp.array([rule[i] for rule in rules]) for i in range(3))


def _next_values(values: Array) -> Array:
    """Shifts V̂(h_t) to V̂(h_{t+1}), with 0 after the final (terminal) step. [B, L] -> [B, L]."""
    return jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)


def td_errors(rewards: Array, values: Array, discount: float | Array) -> Array:
    """One-step TD errors across a whole meta-trajectory (paper Eq. 11–14, App. A.3).

        δᵇₜ = rᵇₜ + γ V̂(hᵇₜ₊₁) − V̂(hᵇₜ),   V̂(hᵇ_L) = 0.

    Inner-episode dones are ignored: at an inner boundary V̂(hᵇₜ₊₁) is the first value of the next
    inner episode of the same trajectory b.

    Args:
      rewards: [B, L] rewards rᵇₜ, t ∈ [0, L−1].
      values: [B, L] critic outputs V̂(hᵇₜ) before acting at step t.
      discount: scalar γ.

    Returns:
      [B, L] TD errors δᵇₜ.
    """
    chex.assert_rank([rewards, values], 2)
    chex.assert_type([rewards, values], float)
    chex.assert_equal_shape([rewards, values])
    return rewards + discount * _next_values(values) - values


def advantages(
    rewards: Array,
    values: Array,
    *,
    average_future_episodes: BoolLike,
    normalize_current_episode: BoolLike,
    discount: float | Array,
    gae_lambda: float | Array,
    inner_episode_length: int,
    stop_target_gradients: bool = True,
) -> Array:
    """GAE advantages under an estimator's flags (paper Eq. 11–14, App. A.3).

    Algorithm 1 runs on δᵇₜ (see `td_errors`) with discount γ·λ_gae, λ = 1 and a zero initial
    accumulator. With γ·λ_gae = 1 and the COALA flags the result telescopes to Eq. 13–14:

        Aᵇₗ = (1/B) Σ_{k=l}^{T·mₗ} rᵇₖ + (1/B) Σ_{b'} Σ_{k>T·mₗ} rᵇ'ₖ
              − (1/B) V̂(hᵇₗ) − (1/B) Σ_{b'≠b} V̂(hᵇ'_{T·mₗ+1}),

    and with both flags False it is ordinary per-trajectory GAE.

    Args:
      rewards: [B, L] rewards.
      values: [B, L] critic outputs V̂(hᵇₜ) before acting at step t.
      average_future_episodes: bool scalar (Python or traced), see `rule_flags`.
      normalize_current_episode: bool scalar (Python or traced), see `rule_flags`.
      discount: scalar γ.
      gae_lambda: scalar λ_gae.
      inner_episode_length: T, divides L.
      stop_target_gradients: stop gradients into the advantages (policy losses treat them as
        constants).

    Returns:
      [B, L] advantages.
    """
    deltas = td_errors(rewards, values, discount)
    return batch_lambda_returns(
        deltas,
        # λ = 1 below, so v_t enters only as the initial accumulator: 0 at the terminal end.
        jnp.zeros_like(deltas),
        discount * jnp.asarray(gae_lambda, deltas.dtype),
        jnp.asarray(1.0, deltas.dtype),
        average_future_episodes,
        normalize_current_episode,
        inner_episode_length,
        stop_target_gradients=stop_target_gradients,
    )


def current_episode_advantages(
    rewards: Array,
    values: Array,
    *,
    normalize_current_episode: BoolLike,
    discount: float | Array,
    gae_lambda: float | Array,
    inner_episode_length: int,
) -> Array:
    """The part of `advantages` that comes from the action's own inner episode (paper Eq. 13).

    GAE sums discounted TD errors: Aᵇₗ = Σ_{k≥l} (γλ_gae)^{k−l} δᵇₖ / n over the action's own inner episode (n = B
    under `normalize_current_episode`, else 1), plus the discounted accumulator of every later inner episode
    (batch-averaged under `average_future_episodes`). This returns the first sum only: Algorithm 1 run on each
    inner episode alone, so nothing after the episode's last step enters. `advantages − current_episode_advantages`
    is then the future-episode part, the one through which an action shapes the co-player's learning. The gradient
    diagnostic (`coala_dist.analysis.snr`) splits the policy gradient along this line.

    Args:
      rewards: [B, L] rewards.
      values: [B, L] critic outputs V̂(hᵇₜ) before acting at step t.
      normalize_current_episode: bool scalar (Python or traced).
      discount: scalar γ.
      gae_lambda: scalar λ_gae.
      inner_episode_length: T, divides L.

    Returns:
      [B, L] advantages, without gradient.
    """
    deltas = td_errors(rewards, values, discount)
    batch_size, length = deltas.shape
    episodes = num_inner_episodes(length, inner_episode_length)
    per_episode = jnp.swapaxes(deltas.reshape(batch_size, episodes, inner_episode_length), 0, 1)

    def one_inner_episode(episode_deltas: Array) -> Array:
        return batch_lambda_returns(
            episode_deltas,
            jnp.zeros_like(episode_deltas),  # zero accumulator after the episode's last step
            discount * jnp.asarray(gae_lambda, deltas.dtype),
            jnp.asarray(1.0, deltas.dtype),
            False,
            normalize_current_episode,
            inner_episode_length,
            stop_target_gradients=True,
        )

    return jnp.swapaxes(jax.vmap(one_inner_episode)(per_episode), 0, 1).reshape(batch_size, length)


def value_targets(
    rewards: Array,
    values: Array,
    *,
    discount: float | Array,
    td_lambda: float | Array,
    inner_episode_length: int,
    average_future_episodes: BoolLike = False,
    stop_target_gradients: bool = True,
) -> Array:
    """TD(λ_td) targets of the batch-unaware value V̂ (Eq. 10) through Algorithm 1 (paper App. A.2).

    Algorithm 1 runs with `normalize_current_episode=False` on the rewards and the next-step values
    V̂(hᵇₜ₊₁) (0 after the final step):

        Gᵇₜ = rᵇₜ + γ [(1 − λ_td) V̂(hᵇₜ₊₁) + λ_td Gᵇₜ₊₁].

    Choice on an ambiguity (paper App. A.2; docs/choices.md#value-targets-against-naive-co-players): the paper states
    the flags only for meta-opponent batches (both False). The default `average_future_episodes=False` is Eq. 10's own
    definition (own-trajectory return to go) and is used for every batch; `True` replaces the future inner episodes' own
    return by the batch average, an estimate of the same expectation against a naive learner (Eq. 9's argument), and is
    left as a switch.

    Args:
      rewards: [B, L] rewards.
      values: [B, L] critic outputs V̂(hᵇₜ) before acting at step t.
      discount: scalar γ.
      td_lambda: scalar λ_td.
      inner_episode_length: T, divides L.
      average_future_episodes: bool scalar (Python or traced).
      stop_target_gradients: stop gradients into the targets (regression targets are constants).

    Returns:
      [B, L] value targets for V̂(hᵇₜ).
    """
    chex.assert_rank([rewards, values], 2)
    chex.assert_equal_shape([rewards, values])
    return batch_lambda_returns(
        rewards,
        _next_values(values),
        jnp.asarray(discount, rewards.dtype),
        jnp.asarray(td_lambda, rewards.dtype),
        average_future_episodes,
        False,
        inner_episode_length,
        stop_target_gradients=stop_target_gradients,
    )


def center_advantages(adv: Array, is_naive: Array, *, divide_by_std: bool = False, epsilon: float = 1e-8) -> Array:
    """Centres advantages separately for naive-opponent and meta-opponent episodes (paper App. A.4).

    "Advantage normalization" is centring over the batched trajectories, applied "separately for the
    2 types of meta-trajectories" in mixed pools. Each group's mean over all its episodes,
    trajectories and steps is subtracted from that group. Whether the paper also divides by the
    standard deviation is not stated; it is the `divide_by_std` switch (per group as well). An empty
    group has no elements to change, and the other group is unaffected by it.

    Args:
      adv: [N, B, L] advantages of a meta-batch of N meta-episodes.
      is_naive: [N] bool, whether episode n was played against a naive learner.
      divide_by_std: also divide each group by its standard deviation (+ `epsilon`).
      epsilon: added to the standard deviation.

    Returns:
      [N, B, L] centred (and optionally scaled) advantages.
    """
    chex.assert_rank([adv, is_naive], [3, 1])
    chex.assert_type(is_naive, bool)
    chex.assert_equal_shape_prefix([adv, is_naive], 1)
    elements_per_episode = adv.shape[1] * adv.shape[2]

    def _standardize_group(in_group: Array) -> Array:
        # in_group: [N] bool. max(count, 1) keeps an empty group finite (no NaN); none of its
        # elements is selected below.
        weights = in_group.astype(adv.dtype)[:, None, None]
        count = jnp.maximum(jnp.sum(in_group) * elements_per_episode, 1).astype(adv.dtype)
        centred = adv - jnp.sum(weights * adv) / count
        if divide_by_std:
            std = jnp.sqrt(jnp.sum(weights * centred**2) / count)
            centred = centred / (std + epsilon)
        return centred

    return jnp.where(
        is_naive[:, None, None], _standardize_group(is_naive), _standardize_group(~is_naive)
    )
