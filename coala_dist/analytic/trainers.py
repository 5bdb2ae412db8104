"""Trainers of the analytic IPD experiments (paper Sec. 4, App. C): pure JAX functions that scan over updates.

Every trainer is a pure function of its key (and initial parameters) that scans over updates; seeds are batched with
`jax.vmap` inside one `jax.jit`, as in purejaxrl. The figures that run them, and the paper's claims they are checked
against, are in `coala_dist.analytic.figures` and `coala_dist.analytic.claims`.

Learning-aware ("meta") agents are tabular 5-logit policies trained with Optax `adamw` (default arguments, paper
Sec. 4, App. C) on one of the gradients of coala_dist/rl/analytic_rules.py:
  * against naive learners: the shaping gradient of Eq. 17 (fresh naive learners every update);
  * in a mixed group: p_naive · shaping + (1 − p_naive) · partial gradient against the other meta agents;
  * LOLA: p · ∇LOLA (Eq. 4) + (1 − p) · partial gradient against the other LOLA agent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from coala_dist.envs import analytic_ipd as ipd
from coala_dist.rl import analytic_rules as rules


class ShapingMetrics(NamedTuple):
    """A learning-aware agent against a batch of naive learners, averaged over the batch.

    Attributes:
      agent_reward: the agent's average reward over the naive learning trajectory (the Eq. 17 objective).
      naive_reward: the naive learners' average reward over the same trajectory.
      agent_reward_final: the agent's average reward against the naive learners after their M updates.
      naive_reward_final: the naive learners' average reward after their M updates.
      naive_cooperation_final: how often the naive learners cooperate after their M updates.
    """

    agent_reward: jax.Array
    naive_reward: jax.Array
    agent_reward_final: jax.Array
    naive_reward_final: jax.Array
    naive_cooperation_final: jax.Array


def shaping_metrics(
    logits_agent: jax.Array,
    logits_naive_batch: jax.Array,
    gamma: float,
    naive_learning_rate: float,
    num_naive_steps: int,
) -> ShapingMetrics:
    """Rewards of an agent and of the naive learners it shapes, along their M naive updates.

    Args:
      logits_agent: [5] the agent's logits.
      logits_naive_batch: [n, 5] the naive learners' initial logits.
      gamma: discount factor.
      naive_learning_rate: η_naive.
      num_naive_steps: M (static).

    Returns:
      `ShapingMetrics` of scalars (means over the n naive learners).
    """
    trajectories = jax.vmap(rules.naive_learning_trajectory, in_axes=(None, 0, None, None, None))(
        logits_agent, logits_naive_batch, gamma, naive_learning_rate, num_naive_steps
    )  # [n, M + 1, 5]
    rewards = jax.vmap(jax.vmap(ipd.average_reward, in_axes=(None, 0, None)), in_axes=(None, 0, None))(
        logits_agent, trajectories, gamma
    )  # two [n, M + 1]
    _, naive_cooperation = jax.vmap(ipd.cooperation_rates, in_axes=(None, 0, None))(
        logits_agent, trajectories[:, -1], gamma
    )
    return ShapingMetrics(
        agent_reward=jnp.mean(rewards[0]),
        naive_reward=jnp.mean(rewards[1]),
        agent_reward_final=jnp.mean(rewards[0][:, -1]),
        naive_reward_final=jnp.mean(rewards[1][:, -1]),
        naive_cooperation_final=jnp.mean(naive_cooperation),
    )


def sample_naive(key: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
    """Initial logits of fresh naive learners: N(0, scale²) per logit. Returns [*shape, 5]."""
    return scale * jax.random.normal(key, (*shape, ipd.NUM_LOGITS))


def scan_with_logging(
    update: Callable[[Any, jax.Array], Any],
    measure: Callable[[Any, jax.Array], Any],
    carry: Any,
    keys: jax.Array,
    log_every: int,
) -> tuple[Any, Any]:
    """Runs `update(carry, key)` once per key, measuring `measure(carry, key)` before every `log_every`-th update.

    Metrics cost a forward pass through every naive learning trajectory, so they are taken on a subset of the
    updates: an outer scan over log points, an inner scan over the updates between them. The metrics of a log
    point use the same key (hence the same naive learners) as the update that follows it.

    Args:
      update: (carry, key) -> carry.
      measure: (carry, key) -> pytree of scalars.
      carry: initial carry.
      keys: [num_steps, ...] one key per update; num_steps must be a multiple of `log_every`.
      log_every: updates per log point.

    Returns:
      (final carry, metrics stacked over the num_steps / log_every log points).
    """
    num_steps = keys.shape[0]
    if num_steps % log_every:
        raise ValueError(f"num_steps ({num_steps}) must be a multiple of log_every ({log_every})")
    chunks = keys.reshape(num_steps // log_every, log_every, *keys.shape[1:])

    def _chunk(carry, chunk_keys):
        metrics = measure(carry, chunk_keys[0])
        carry, _ = jax.lax.scan(lambda c, k: (update(c, k), None), carry, chunk_keys)
        return carry, metrics

    return jax.lax.scan(_chunk, carry, chunks)


def make_shaping_trainer(
    shaping: ml_collections.ConfigDict, gamma: float, num_steps: int, log_every: int = 1
) -> Callable[[jax.Array, jax.Array], tuple[jax.Array, ShapingMetrics]]:
    """One learning-aware agent trained against fresh naive learners on the Eq. 17 gradient (Fig. 3A).

    Args:
      shaping: the config's `shaping` block (M, naive lr, meta-batch size, init scale, meta lr).
      gamma: discount factor.
      num_steps: number of meta updates.
      log_every: metrics are taken before every `log_every`-th update, on the naive learners it uses.

    Returns:
      train(key, initial_logits [5]) -> (final logits [5], `ShapingMetrics` history, each
      [num_steps / log_every]).
    """
    optimizer = optax.adamw(shaping.meta_learning_rate)
    num_naive_steps = shaping.num_naive_steps
    naive_learning_rate = shaping.naive_learning_rate

    def naive_batch(key):
        return sample_naive(key, (shaping.meta_batch_size,), shaping.naive_init_scale)

    def update(carry, key):
        logits, opt_state = carry
        gradient = rules.shaping_gradient(logits, naive_batch(key), gamma, naive_learning_rate, num_naive_steps)
        updates, opt_state = optimizer.update(-gradient, opt_state, logits)  # ascent
        return optax.apply_updates(logits, updates), opt_state

    def measure(carry, key):
        return shaping_metrics(carry[0], naive_batch(key), gamma, naive_learning_rate, num_naive_steps)

    def train(key: jax.Array, initial_logits: jax.Array) -> tuple[jax.Array, ShapingMetrics]:
        initial = (initial_logits, optimizer.init(initial_logits))
        (logits, _), history = scan_with_logging(update, measure, initial, jax.random.split(key, num_steps), log_every)
        return logits, history

    return train


class GroupMetrics(NamedTuple):
    """A group of learning-aware agents.

    Attributes:
      meta_reward: average reward of the meta agents when they meet each other (mean over ordered pairs).
      meta_cooperation: how often they cooperate when they meet each other.
      shaping_reward: their average reward over the learning trajectory of fresh naive learners (Eq. 17).
      naive_reward: the naive learners' average reward over that trajectory.
    """

    meta_reward: jax.Array
    meta_cooperation: jax.Array
    shaping_reward: jax.Array
    naive_reward: jax.Array


def _other_members(group_size: int) -> np.ndarray:
    """[K, K − 1] indices: row i lists every member but i (who meets whom in the group)."""
    return np.array([[j for j in range(group_size) if j != i] for i in range(group_size)], np.int32)


def make_group_trainer(
    shaping: ml_collections.ConfigDict, gamma: float, num_steps: int, group_size: int, log_every: int = 1
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, GroupMetrics]]:
    """A group of learning-aware agents meeting naive learners with probability p_naive (Fig. 3B/3C, 9, 10).

    Every agent follows `rules.mixed_group_gradient`: p_naive times its shaping gradient against its own fresh
    naive learners plus (1 − p_naive) times its partial gradient against the other members. All update at once.

    Args:
      shaping: the config's `shaping` block.
      gamma: discount factor.
      num_steps: number of updates.
      group_size: K ≥ 2 learning-aware agents.
      log_every: metrics are taken before every `log_every`-th update.

    Returns:
      train(key, initial_logits [K, 5], p_naive) -> (final logits [K, 5], `GroupMetrics` history
      [num_steps / log_every]).
    """
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2, got {group_size}")
    optimizer = optax.adamw(shaping.meta_learning_rate)
    others = _other_members(group_size)
    num_naive_steps = shaping.num_naive_steps
    naive_learning_rate = shaping.naive_learning_rate

    def own_cooperation(own, other, gamma):
        return ipd.cooperation_rates(own, other, gamma)[0]

    def meet_each_other(function, logits, coplayers):
        """[K, K − 1]: function(member i, its j-th co-player, γ)."""
        per_member = jax.vmap(function, in_axes=(None, 0, None))
        return jax.vmap(per_member, in_axes=(0, 0, None))(logits, coplayers, gamma)

    def naive_batch(key):
        return sample_naive(key, (group_size, shaping.meta_batch_size), shaping.naive_init_scale)

    def train(key, initial_logits, p_naive):
        def update(carry, key):
            logits, opt_state = carry
            gradients = jax.vmap(rules.mixed_group_gradient, in_axes=(0, 0, 0, None, None, None, None))(
                logits, naive_batch(key), logits[others], p_naive, gamma, naive_learning_rate, num_naive_steps
            )
            updates, opt_state = optimizer.update(-gradients, opt_state, logits)
            return optax.apply_updates(logits, updates), opt_state

        def measure(carry, key):
            logits = carry[0]
            shaping_values = jax.vmap(shaping_metrics, in_axes=(0, 0, None, None, None))(
                logits, naive_batch(key), gamma, naive_learning_rate, num_naive_steps
            )
            return GroupMetrics(
                meta_reward=jnp.mean(meet_each_other(ipd.own_average_reward, logits, logits[others])),
                meta_cooperation=jnp.mean(meet_each_other(own_cooperation, logits, logits[others])),
                shaping_reward=jnp.mean(shaping_values.agent_reward),
                naive_reward=jnp.mean(shaping_values.naive_reward),
            )

        initial = (initial_logits, optimizer.init(initial_logits))
        (logits, _), history = scan_with_logging(update, measure, initial, jax.random.split(key, num_steps), log_every)
        return logits, history

    return train


def make_mutual_trainer(
    meta_learning_rate: float, gamma: float, num_steps: int, self_play: bool
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """Learning-aware agents trained against each other without naive learners (Fig. 3B).

    Against another learning-aware agent the gradient is the partial gradient ∂Jⁱ/∂φⁱ (paper Sec. 4, App. C). Two
    agents update simultaneously; in self-play one agent meets a frozen copy of itself (the copy is a separate
    player that the partial gradient holds fixed).

    Args:
      meta_learning_rate: adamw learning rate.
      gamma: discount factor.
      num_steps: number of updates.
      self_play: one agent against its own copy instead of two agents.

    Returns:
      train(initial_logits [2, 5], or [5] in self-play) -> (final logits, mutual reward history [num_steps],
      the mean of both players' rewards).
    """
    optimizer = optax.adamw(meta_learning_rate)

    def gradients(logits):
        if self_play:
            return rules.partial_gradient(logits, logits, gamma)
        return jnp.stack(
            [rules.partial_gradient(logits[0], logits[1], gamma), rules.partial_gradient(logits[1], logits[0], gamma)]
        )

    def mutual_reward(logits):
        first, second = (logits, logits) if self_play else (logits[0], logits[1])
        return jnp.mean(jnp.stack(ipd.average_reward(first, second, gamma)))

    def train(initial_logits):
        def _update(carry, _):
            logits, opt_state = carry
            updates, opt_state = optimizer.update(-gradients(logits), opt_state, logits)
            return (optax.apply_updates(logits, updates), opt_state), mutual_reward(logits)

        initial = (initial_logits, optimizer.init(initial_logits))
        (logits, _), history = jax.lax.scan(_update, initial, None, length=num_steps)
        return logits, history

    return train


def make_lola_trainer(
    gamma: float,
    meta_learning_rate: float,
    meta_init_scale: float,
    num_steps: int,
    look_ahead: int,
    naive_learning_rate: float,
    lola_weight: float,
) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """Two LOLA agents trained against each other (Fig. 4), optionally mixed with the naive partial gradient.

    Each agent ascends lola_weight · ∇LOLA_k (Eq. 4) + (1 − lola_weight) · ∂Jⁱ/∂φⁱ; lola_weight = 1 is pure
    LOLA (Fig. 4A), < 1 is Fig. 4C.

    Args:
      gamma: discount factor.
      meta_learning_rate: adamw learning rate.
      meta_init_scale: initial logits ~ N(0, scale²).
      num_steps: number of updates.
      look_ahead: k, the number of modelled naive steps of the co-player (static).
      naive_learning_rate: α of the modelled naive steps.
      lola_weight: weight of the LOLA gradient in [0, 1].

    Returns:
      train(key) -> (final logits [2, 5], reward history [num_steps, 2]).
    """
    optimizer = optax.adamw(meta_learning_rate)

    def gradient(own, other):
        lola = rules.lola_gradient(own, other, gamma, naive_learning_rate, look_ahead)
        return lola_weight * lola + (1 - lola_weight) * rules.partial_gradient(own, other, gamma)

    def train(key):
        initial_logits = meta_init_scale * jax.random.normal(key, (2, ipd.NUM_LOGITS))

        def _update(carry, _):
            logits, opt_state = carry
            gradients = jnp.stack([gradient(logits[0], logits[1]), gradient(logits[1], logits[0])])
            rewards = jnp.stack(ipd.average_reward(logits[0], logits[1], gamma))
            updates, opt_state = optimizer.update(-gradients, opt_state, logits)
            return (optax.apply_updates(logits, updates), opt_state), rewards

        initial = (initial_logits, optimizer.init(initial_logits))
        (logits, _), history = jax.lax.scan(_update, initial, None, length=num_steps)
        return logits, history

    return train


def naive_learning_curves(
    logits_agent: jax.Array,
    logits_naive_batch: jax.Array,
    gamma: float,
    naive_learning_rate: float,
    num_steps: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Fresh naive learners trained against a fixed policy (Fig. 4B, Fig. 10C).

    Args:
      logits_agent: [5] the fixed policy.
      logits_naive_batch: [n, 5] the naive learners' initial logits.
      gamma: discount factor.
      naive_learning_rate: η_naive.
      num_steps: number of naive updates (static).

    Returns:
      (agent reward [num_steps + 1, n], naive reward [num_steps + 1, n], naive cooperation [num_steps + 1, n]).
    """
    trajectories = jax.vmap(rules.naive_learning_trajectory, in_axes=(None, 0, None, None, None))(
        logits_agent, logits_naive_batch, gamma, naive_learning_rate, num_steps
    )
    pairwise = jax.vmap(jax.vmap(ipd.average_reward, in_axes=(None, 0, None)), in_axes=(None, 0, None))
    agent_reward, naive_reward = pairwise(logits_agent, trajectories, gamma)
    cooperation = jax.vmap(jax.vmap(ipd.cooperation_rates, in_axes=(None, 0, None)), in_axes=(None, 0, None))(
        logits_agent, trajectories, gamma
    )[1]
    return agent_reward.T, naive_reward.T, cooperation.T
