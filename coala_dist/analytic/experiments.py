"""The analytic IPD experiments of the paper's Sec. 4 and App. C: one `run_*` function per figure.

Every trainer is a pure function of its key (and initial parameters) that scans over updates; seeds are batched with
`jax.vmap` inside one `jax.jit`, as in purejaxrl. A `run_*` function returns a `FigureResult`: JSON-able summary
numbers, the checks of the paper's claims, and the arrays the plots need.

Learning-aware ("meta") agents are tabular 5-logit policies trained with Optax `adamw` (default arguments, paper
Sec. 4, App. C) on one of the gradients of coala_dist/rl/analytic_rules.py:
  * against naive learners: the shaping gradient of Eq. 17 (fresh naive learners every update);
  * in a mixed group: p_naive · shaping + (1 − p_naive) · partial gradient against the other meta agents;
  * LOLA: p · ∇LOLA (Eq. 4) + (1 − p) · partial gradient against the other LOLA agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from coala_dist.envs import analytic_ipd as ipd
from coala_dist.rl import analytic_rules as rules

# Number of points kept from each training curve for the plots.
CURVE_POINTS = 200

FIGURES = ("fig3a", "fig3b", "fig3c", "fig9", "fig10", "fig4")


@dataclasses.dataclass
class FigureResult:
    """What one experiment produced.

    Attributes:
      name: figure name, e.g. "fig3a".
      summary: JSON-able numbers (medians, quantiles, means, standard errors) keyed by what they measure.
      checks: one entry per claim of the paper: {"claim", "criterion", "value", "passed"}.
      arrays: numpy arrays for the plots (training curves subsampled to `CURVE_POINTS` points, final policies).
    """

    name: str
    summary: dict[str, Any]
    checks: list[dict[str, Any]]
    arrays: dict[str, np.ndarray]


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


def _sample_naive(key: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
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
        return _sample_naive(key, (shaping.meta_batch_size,), shaping.naive_init_scale)

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
        return _sample_naive(key, (group_size, shaping.meta_batch_size), shaping.naive_init_scale)

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


# ---------------------------------------------------------------------------------------------------------------
# Summaries.


def rounded(values: np.ndarray, digits: int = 3) -> list[float]:
    """A 1-D array as a JSON-friendly list of Python floats rounded to `digits` (no float32 noise)."""
    return [round(float(value), digits) for value in np.asarray(values, np.float64)]


def quantiles(values: np.ndarray) -> dict[str, float]:
    """Median and interquartile range of a 1-D sample, as floats."""
    q25, median, q75 = np.percentile(np.asarray(values, np.float64), [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def mean_standard_error(values: np.ndarray) -> dict[str, float]:
    """Mean and standard error of the mean of a 1-D sample, as floats."""
    values = np.asarray(values, np.float64)
    return {
        "mean": float(values.mean()),
        "se": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0,
    }


def subsample_curve(
    curve: np.ndarray, log_every: int = 1, num_points: int = CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Keeps `num_points` evenly spaced log points of a [..., num_logs] curve.

    Returns:
      (update index of each kept point = log index · log_every, values [..., kept]).
    """
    curve = np.asarray(curve)
    kept = np.unique(np.linspace(0, curve.shape[-1] - 1, num_points).round().astype(int))
    return kept * log_every, curve[..., kept]


def _check(claim: str, criterion: str, value: Any, passed: bool) -> dict[str, Any]:
    return {"claim": claim, "criterion": criterion, "value": value, "passed": bool(passed)}


def _seed_keys(config: ml_collections.ConfigDict, figure: str, num_seeds: int) -> jax.Array:
    """Per-seed keys; each figure folds in its own index so figures draw independent naive learners."""
    root = jax.random.fold_in(jax.random.PRNGKey(config.seed), FIGURES.index(figure))
    return jax.random.split(root, num_seeds)


def _cooperation(logits: np.ndarray | jax.Array) -> np.ndarray:
    """σ(logits) on the host: the probabilities of cooperating of [..., 5] policies (first move, CC, CD, DC, DD)."""
    return 1 / (1 + np.exp(-np.asarray(logits)))


def _fit_zero_determinant_batch(cooperate: np.ndarray) -> ipd.ZeroDeterminantFit:
    """ZD fits of [n, 4] cooperation probabilities, as numpy."""
    fit = ipd.fit_zero_determinant_rows(jnp.asarray(cooperate, jnp.float32))
    return ipd.ZeroDeterminantFit(*(np.asarray(x) for x in fit))


def _defection_logits(config: ml_collections.ConfigDict, shape: tuple[int, ...]) -> jax.Array:
    return jnp.full((*shape, ipd.NUM_LOGITS), config.shaping.defection_logit)


def _random_logits(keys: jax.Array, shape: tuple[int, ...], scale: float) -> jax.Array:
    """[num_seeds, *shape, 5] random initial logits, one draw per seed key."""
    draw = lambda key: scale * jax.random.normal(jax.random.fold_in(key, 7), (*shape, ipd.NUM_LOGITS))
    return jax.vmap(draw)(keys)


def _train_shapers(
    config: ml_collections.ConfigDict, keys: jax.Array, initial_logits: jax.Array, num_steps: int, log_every: int
) -> tuple[np.ndarray, ShapingMetrics]:
    train = make_shaping_trainer(config.shaping, config.game.gamma, num_steps, log_every)
    logits, history = jax.jit(jax.vmap(train))(keys, initial_logits)
    return np.asarray(logits), ShapingMetrics(*(np.asarray(x) for x in history))


# ---------------------------------------------------------------------------------------------------------------
# Figures.


def run_fig3a(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> FigureResult:
    """Fig. 3A + Fig. 8: a learning-aware agent against naive learners learns ZD-like extortion.

    Trains `num_seeds` agents from random logits and `num_seeds` from defection (logits log 0.01) on the shaping
    gradient, then fits their policies to the ZD extortion family and compares with random policies.
    """
    settings = config.fig3a
    num_seeds = num_seeds or settings.num_seeds
    keys = _seed_keys(config, "fig3a", num_seeds)
    starts = {
        "random": _random_logits(keys, (), config.shaping.meta_init_scale),
        "defection": _defection_logits(config, (num_seeds,)),
    }
    random_policies = np.asarray(jax.random.uniform(jax.random.fold_in(keys[0], 99), (settings.num_random_policies, 4)))
    random_fit = _fit_zero_determinant_batch(random_policies)
    summary: dict[str, Any] = {
        "num_seeds": num_seeds,
        "random_policy_zd_error": quantiles(random_fit.squared_error),
    }
    checks, arrays = [], {}
    for start, initial_logits in starts.items():
        logits, history = _train_shapers(config, keys, initial_logits, settings.num_steps, settings.log_every)
        cooperate = _cooperation(logits)
        fit = _fit_zero_determinant_batch(cooperate[:, 1:])
        final = {name: value[:, -1] for name, value in history._asdict().items()}
        summary[start] = {
            "agent_reward_over_naive_learning": quantiles(final["agent_reward"]),
            "naive_reward_over_naive_learning": quantiles(final["naive_reward"]),
            "agent_reward_after_naive_learning": quantiles(final["agent_reward_final"]),
            "naive_reward_after_naive_learning": quantiles(final["naive_reward_final"]),
            "naive_cooperation_after_naive_learning": quantiles(final["naive_cooperation_final"]),
            "initial_agent_reward_over_naive_learning": quantiles(history.agent_reward[:, 0]),
            "policy_median": rounded(np.median(cooperate, 0)),
            "zd_error": quantiles(fit.squared_error),
            "zd_chi": quantiles(fit.chi),
            "zd_phi": quantiles(fit.phi),
        }
        agent_after = np.median(final["agent_reward_final"])
        naive_after = np.median(final["naive_reward_final"])
        naive_cooperation = np.median(final["naive_cooperation_final"])
        checks.append(
            _check(
                f"extortion from {start} logits (Fig. 3A)",
                "after naive learning, median agent reward > R = 1 > median naive reward, "
                "and naive learners cooperate > 50% of rounds",
                f"agent {agent_after:.3f}, naive {naive_after:.3f}, naive cooperation {naive_cooperation:.3f}",
                agent_after > ipd.REWARD > naive_after and naive_cooperation > 0.5,
            )
        )
        ratio = np.median(fit.squared_error) / np.median(random_fit.squared_error)
        checks.append(
            _check(
                f"ZD-extortion fit, {start} start (Fig. 8)",
                "median squared fit error < 1/5 of that of uniformly random policies",
                f"{np.median(fit.squared_error):.4f} vs {np.median(random_fit.squared_error):.4f} (ratio {ratio:.3f})",
                ratio < 0.2,
            )
        )
        for name in ("agent_reward", "naive_reward", "agent_reward_final", "naive_reward_final"):
            steps, arrays[f"{start}/{name}"] = subsample_curve(getattr(history, name), settings.log_every)
        arrays[f"{start}/steps"] = steps
        arrays[f"{start}/cooperate"] = cooperate
        arrays[f"{start}/zd_error"] = fit.squared_error
    arrays["baseline/zd_error"] = random_fit.squared_error
    return FigureResult("fig3a", summary, checks, arrays)


def run_fig3b(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> FigureResult:
    """Fig. 3B: extortioners trained against naive learners turn cooperative against each other / in self-play.

    Agent i (from random logits) is first trained as in Fig. 3A; then agent i and agent i + 1 (mod n) are trained
    against each other with partial gradients, and separately every agent is trained in self-play.
    """
    settings = config.fig3b
    if not 0 <= settings.turn_steps < settings.num_mutual_steps:
        raise ValueError(
            f"fig3b.turn_steps must be in [0, num_mutual_steps = {settings.num_mutual_steps}), "
            f"got {settings.turn_steps}"
        )
    num_seeds = num_seeds or settings.num_seeds
    keys = _seed_keys(config, "fig3b", num_seeds)
    gamma = config.game.gamma
    extortioners, _ = _train_shapers(
        config,
        keys,
        _random_logits(keys, (), config.shaping.meta_init_scale),
        settings.num_shaping_steps,
        log_every=settings.num_shaping_steps,  # only the final policies are used
    )
    pairs = jnp.stack([extortioners, np.roll(extortioners, -1, axis=0)], axis=1)  # [n, 2, 5]
    mutual = make_mutual_trainer(config.shaping.meta_learning_rate, gamma, settings.num_mutual_steps, False)
    mutual_logits, mutual_history = jax.jit(jax.vmap(mutual))(pairs)
    self_play = make_mutual_trainer(config.shaping.meta_learning_rate, gamma, settings.num_mutual_steps, True)
    self_logits, self_history = jax.jit(jax.vmap(self_play))(jnp.asarray(extortioners))
    mutual_reward = np.asarray(mutual_history)
    self_reward = np.asarray(self_history)
    summary = {
        "num_seeds": num_seeds,
        "extortioner_policy_median": rounded(np.median(_cooperation(extortioners), 0)),
        "pair_reward_before": quantiles(mutual_reward[:, 0]),
        f"pair_reward_after_{settings.turn_steps}_updates": quantiles(mutual_reward[:, settings.turn_steps]),
        "pair_reward_after": quantiles(mutual_reward[:, -1]),
        "pair_policy_after_median": rounded(np.median(_cooperation(mutual_logits).reshape(-1, 5), 0)),
        "self_play_reward_before": quantiles(self_reward[:, 0]),
        f"self_play_reward_after_{settings.turn_steps}_updates": quantiles(self_reward[:, settings.turn_steps]),
        "self_play_reward_after": quantiles(self_reward[:, -1]),
        "self_play_policy_after_median": rounded(np.median(_cooperation(self_logits), 0)),
    }
    checks = []
    turn = settings.turn_steps
    for label, curve in (("against each other", mutual_reward), ("in self-play", self_reward)):
        before, turned, end = (np.median(curve[:, index]) for index in (0, turn, -1))
        checks.append(
            _check(
                f"extortioners trained {label} turn cooperative (Fig. 3B)",
                f"median mutual reward < 0.5 at the start and > 0.9 after {turn} updates",
                f"{before:.3f} -> {turned:.3f} after {turn} updates; after {curve.shape[1]} updates "
                f"{end:.3f} (IQR {np.percentile(curve[:, -1], 25):.3f}-{np.percentile(curve[:, -1], 75):.3f})",
                before < 0.5 and turned > 0.9,
            )
        )
    steps, arrays_mutual = subsample_curve(mutual_reward)
    _, arrays_self = subsample_curve(self_reward)
    arrays = {
        "steps": steps,
        "turn_steps": np.asarray(settings.turn_steps),
        "pair_reward": arrays_mutual,
        "self_play_reward": arrays_self,
        "extortioner_cooperate": _cooperation(extortioners),
        "pair_cooperate": _cooperation(mutual_logits).reshape(-1, 5),
        "self_play_cooperate": _cooperation(self_logits),
    }
    return FigureResult("fig3b", summary, checks, arrays)


def _run_group_sweep(
    config: ml_collections.ConfigDict,
    figure: str,
    settings: ml_collections.ConfigDict,
    num_seeds: int,
    initial_logits: jax.Array,
    p_naive_values: tuple[float, ...],
) -> tuple[np.ndarray, GroupMetrics]:
    """Trains the mixed group for every p_naive (vmapped) and seed (vmapped) in one jit.

    Returns final logits [p, seeds, K, 5] and histories [p, seeds, steps].
    """
    keys = _seed_keys(config, figure, num_seeds)
    train = make_group_trainer(
        config.shaping, config.game.gamma, settings.num_steps, settings.group_size, settings.log_every
    )
    over_seeds = jax.vmap(train, in_axes=(0, 0, None))
    over_p = jax.vmap(over_seeds, in_axes=(None, None, 0))
    logits, history = jax.jit(over_p)(keys, initial_logits, jnp.asarray(p_naive_values))
    return np.asarray(logits), GroupMetrics(*(np.asarray(x) for x in history))


def run_fig3c(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> FigureResult:
    """Fig. 3C: a mixed group (0 < p_naive < 1) cooperates; a pure learning-aware group (p_naive = 0) defects."""
    settings = config.fig3c
    num_seeds = num_seeds or settings.num_seeds
    keys = _seed_keys(config, "fig3c", num_seeds)
    initial = _random_logits(keys, (settings.group_size,), config.shaping.meta_init_scale)
    p_values = tuple(settings.p_naive)
    logits, history = _run_group_sweep(config, "fig3c", settings, num_seeds, initial, p_values)
    summary: dict[str, Any] = {"num_seeds": num_seeds, "p_naive": list(p_values)}
    checks = []
    for index, p_naive in enumerate(p_values):
        final = history.meta_reward[index, :, -1]
        summary[f"p_naive={p_naive}"] = {
            "meta_reward_final": quantiles(final),
            "fraction_of_seeds_cooperating(>0.9)": float(np.mean(final > 0.9)),
            "meta_cooperation_final": quantiles(history.meta_cooperation[index, :, -1]),
            "shaping_reward_final": quantiles(history.shaping_reward[index, :, -1]),
            "policy_median": rounded(np.median(_cooperation(logits[index].reshape(-1, 5)), 0)),
        }
        if p_naive == 0:
            checks.append(
                _check(
                    "a pure learning-aware group stays in mutual defection (Fig. 3C)",
                    "p_naive = 0: median final meta-vs-meta reward < 0.1",
                    f"{np.median(final):.3f}",
                    np.median(final) < 0.1,
                )
            )
        elif p_naive < 1:
            checks.append(
                _check(
                    f"a mixed group cooperates, p_naive = {p_naive} (Fig. 3C)",
                    "median final meta-vs-meta reward > 0.9",
                    f"{np.median(final):.3f} (IQR {np.percentile(final, 25):.3f}-{np.percentile(final, 75):.3f})",
                    np.median(final) > 0.9,
                )
            )
    steps, curves = subsample_curve(history.meta_reward, settings.log_every)
    arrays = {
        "p_naive": np.asarray(p_values),
        "steps": steps,
        "meta_reward": curves,
        "meta_reward_final": history.meta_reward[:, :, -1],
    }
    return FigureResult("fig3c", summary, checks, arrays)


def transition_step(curve: np.ndarray, threshold: float = 0.5, log_every: int = 1) -> int:
    """First update (log index · log_every) at which a [num_logs] reward curve exceeds `threshold`; -1 if never."""
    above = np.flatnonzero(np.asarray(curve) > threshold)
    return int(above[0]) * log_every if above.size else -1


def run_fig9(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> FigureResult:
    """Fig. 9: the mixed group started at mutual defection learns to shape, then jumps to cooperation."""
    settings = config.fig9
    num_seeds = num_seeds or settings.num_seeds
    initial = _defection_logits(config, (num_seeds, settings.group_size))
    p_values = tuple(settings.p_naive)
    logits, history = _run_group_sweep(config, "fig9", settings, num_seeds, initial, p_values)
    summary: dict[str, Any] = {"num_seeds": num_seeds, "p_naive": list(p_values)}
    checks = []
    for index, p_naive in enumerate(p_values):
        rewards = history.meta_reward[index]
        # In updates (log index · log_every); -1 if never reached.
        rise = [transition_step(curve, 0.1, settings.log_every) for curve in rewards]
        cross = [transition_step(curve, 0.9, settings.log_every) for curve in rewards]
        widths = [b - a for a, b in zip(rise, cross, strict=True) if a >= 0 and b >= 0]
        summary[f"p_naive={p_naive}"] = {
            "meta_reward_initial": quantiles(rewards[:, 0]),
            "meta_reward_final": quantiles(rewards[:, -1]),
            "shaping_reward_final": quantiles(history.shaping_reward[index, :, -1]),
            "steps_to_reward_0.1": rise,
            "steps_to_reward_0.9": cross,
            "policy_median": rounded(np.median(_cooperation(logits[index].reshape(-1, 5)), 0)),
        }
        if p_naive == 0:
            checks.append(
                _check(
                    "from defection, a pure learning-aware group stays in defection (Fig. 9)",
                    "p_naive = 0: median final meta-vs-meta reward < 0.1",
                    f"{np.median(rewards[:, -1]):.3f}",
                    np.median(rewards[:, -1]) < 0.1,
                )
            )
            continue
        sharp = bool(widths) and np.median(widths) < 0.25 * np.median([r for r in rise if r >= 0])
        checks.append(
            _check(
                f"from defection, a mixed group jumps to cooperation, p_naive = {p_naive} (Fig. 9)",
                "median final reward > 0.9, and the median rise from 0.1 to 0.9 takes < 1/4 of the "
                "updates spent below 0.1 (a phase transition)",
                f"final {np.median(rewards[:, -1]):.3f}; below 0.1 for {rise} updates; 0.1->0.9 in {widths} updates",
                np.median(rewards[:, -1]) > 0.9 and sharp,
            )
        )
    steps, curves = subsample_curve(history.meta_reward, settings.log_every)
    _, shaping_curves = subsample_curve(history.shaping_reward, settings.log_every)
    arrays = {
        "p_naive": np.asarray(p_values),
        "steps": steps,
        "meta_reward": curves,
        "shaping_reward": shaping_curves,
    }
    return FigureResult("fig9", summary, checks, arrays)


def _tit_for_tat_logits(probability: float) -> jax.Array:
    """[5] logits of TFT softened to `probability`: cooperate first, then copy the co-player's last move."""
    tit_for_tat = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0])  # first, CC, CD, DC, DD (own action first)
    soft = tit_for_tat * probability + (1 - tit_for_tat) * (1 - probability)
    return ipd.logits_from_probabilities(soft)


def run_fig10(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> FigureResult:
    """Fig. 10: mutual TFT is not an equilibrium of the mixed group; agents leave TFT yet keep cooperating."""
    settings = config.fig10
    num_seeds = num_seeds or settings.num_seeds
    tft = _tit_for_tat_logits(settings.tft_probability)
    initial = jnp.broadcast_to(tft, (num_seeds, settings.group_size, ipd.NUM_LOGITS))
    logits, history = _run_group_sweep(config, "fig10", settings, num_seeds, initial, (settings.p_naive,))
    logits, history = logits[0], GroupMetrics(*(x[0] for x in history))
    cooperate = _cooperation(logits.reshape(-1, 5))
    tft_cooperate = _cooperation(tft)
    distance = np.linalg.norm(cooperate - tft_cooperate, axis=-1)
    # The softened TFT pair starts below full cooperation (its 1% errors echo); what matters is that cooperation,
    # once reached, is kept while the policies move away from TFT.
    lowest_after_cooperation = np.array(
        [curve[max(transition_step(curve, 0.95), 0) :].min() for curve in history.meta_reward]
    )
    # Fig. 10C: one fresh batch of naive learners (M steps) against TFT and against each learned policy.
    naive = _sample_naive(
        jax.random.PRNGKey(config.seed + 10),
        (config.shaping.meta_batch_size,),
        config.shaping.naive_init_scale,
    )
    curves = jax.jit(
        jax.vmap(naive_learning_curves, in_axes=(0, None, None, None, None)),
        static_argnums=4,
    )
    policies = jnp.concatenate([tft[None], jnp.asarray(logits[:, 0])], axis=0)
    agent_curve, naive_curve, _ = curves(
        policies,
        naive,
        config.game.gamma,
        config.shaping.naive_learning_rate,
        config.shaping.num_naive_steps,
    )
    agent_curve = np.asarray(agent_curve).mean(-1)  # [1 + seeds, M + 1]
    naive_curve = np.asarray(naive_curve).mean(-1)
    summary = {
        "num_seeds": num_seeds,
        "p_naive": settings.p_naive,
        "meta_reward_initial": quantiles(history.meta_reward[:, 0]),
        "meta_reward_lowest_after_reaching_0.95": quantiles(lowest_after_cooperation),
        "meta_reward_final": quantiles(history.meta_reward[:, -1]),
        "shaping_reward_initial": quantiles(history.shaping_reward[:, 0]),
        "shaping_reward_final": quantiles(history.shaping_reward[:, -1]),
        "distance_from_tft_final": quantiles(distance),
        "policy_median": rounded(np.median(cooperate, 0)),
        "tft_shaping_curve(agent reward per naive step)": rounded(agent_curve[0]),
        "learned_shaping_curve_median": rounded(np.median(agent_curve[1:], 0)),
    }
    checks = [
        _check(
            "agents leave strict TFT (Fig. 10)",
            "median ‖σ(φ) − σ(φ_TFT)‖ over the 5 probabilities > 0.1 at the end",
            f"{np.median(distance):.3f}",
            np.median(distance) > 0.1,
        ),
        _check(
            "leaving TFT shapes naive learners better (Fig. 10)",
            "median shaping reward (vs naive learners) increases over training",
            f"{np.median(history.shaping_reward[:, 0]):.3f} -> {np.median(history.shaping_reward[:, -1]):.3f}",
            np.median(history.shaping_reward[:, -1]) > np.median(history.shaping_reward[:, 0]),
        ),
        _check(
            "the learned policies still cooperate with each other (Fig. 10)",
            "median final meta-vs-meta reward > 0.95, and once above 0.95 it never falls below 0.9",
            f"final {np.median(history.meta_reward[:, -1]):.3f}, lowest after reaching 0.95: "
            f"{np.median(lowest_after_cooperation):.3f}",
            np.median(history.meta_reward[:, -1]) > 0.95 and np.median(lowest_after_cooperation) > 0.9,
        ),
    ]
    steps, meta_curves = subsample_curve(history.meta_reward, settings.log_every)
    _, shaping_curves = subsample_curve(history.shaping_reward, settings.log_every)
    arrays = {
        "steps": steps,
        "meta_reward": meta_curves,
        "shaping_reward": shaping_curves,
        "cooperate": cooperate,
        "tft_cooperate": tft_cooperate,
        "naive_step_agent_reward": agent_curve,
        "naive_step_naive_reward": naive_curve,
    }
    return FigureResult("fig10", summary, checks, arrays)


def run_fig4(config: ml_collections.ConfigDict, num_seeds: int | None = None) -> FigureResult:
    """Fig. 4: LOLA with few look-ahead steps cooperates; with many it extorts (4A, 4B); mixing in the naive
    partial gradient restores cooperation (4C)."""
    settings = config.fig4
    num_seeds = num_seeds or settings.num_seeds
    keys = _seed_keys(config, "fig4", num_seeds)
    gamma = settings.gamma
    look_aheads = tuple(settings.look_aheads)
    summary: dict[str, Any] = {"num_seeds": num_seeds, "look_aheads": list(look_aheads)}
    arrays: dict[str, np.ndarray] = {"look_aheads": np.asarray(look_aheads)}
    checks = []
    final_logits = {}
    for look_ahead, naive_lr, weight in zip(
        look_aheads, settings.naive_learning_rates, settings.lola_weights, strict=True
    ):
        for variant, lola_weight in (("pure", 1.0), ("mixed", weight)):
            if variant == "mixed" and lola_weight == 1.0:  # nothing mixed in: the pure run is this run
                summary[f"mixed/k={look_ahead}"] = summary[f"pure/k={look_ahead}"]
                for name in ("reward", "reward_final"):
                    arrays[f"mixed/k={look_ahead}/{name}"] = arrays[f"pure/k={look_ahead}/{name}"]
                continue
            train = make_lola_trainer(
                gamma,
                settings.meta_learning_rate,
                settings.meta_init_scale,
                settings.num_steps,
                look_ahead,
                naive_lr,
                lola_weight,
            )
            logits, rewards = jax.jit(jax.vmap(train))(keys)
            logits, rewards = np.asarray(logits), np.asarray(rewards).mean(-1)  # both players
            final_logits[(variant, look_ahead)] = logits
            cooperate = _cooperation(logits.reshape(-1, 5))
            fit = _fit_zero_determinant_batch(cooperate[:, 1:])
            summary[f"{variant}/k={look_ahead}"] = {
                "lola_weight": lola_weight,
                "naive_learning_rate": naive_lr,
                "reward_final": mean_standard_error(rewards[:, -1]),
                "policy_median": rounded(np.median(cooperate, 0)),
                "zd_error": quantiles(fit.squared_error),
                "zd_chi": quantiles(fit.chi),
            }
            steps, arrays[f"{variant}/k={look_ahead}/reward"] = subsample_curve(rewards)
            arrays["steps"] = steps
            arrays[f"{variant}/k={look_ahead}/reward_final"] = rewards[:, -1]
    # Fig. 4B: fresh naive learners against the final policy of the longest look-ahead (player 1 of each seed).
    longest = look_aheads[-1]
    naive = _sample_naive(
        jax.random.PRNGKey(config.seed + 4),
        (settings.eval_num_naive,),
        settings.eval_naive_init_scale,
    )
    curves = jax.jit(jax.vmap(naive_learning_curves, in_axes=(0, None, None, None, None)), static_argnums=4)
    agent_curve, naive_curve, naive_cooperation = (
        np.asarray(x).mean(-1)
        for x in curves(
            jnp.asarray(final_logits[("pure", longest)][:, 0]),
            naive,
            gamma,
            settings.eval_naive_learning_rate,
            settings.eval_naive_steps,
        )
    )  # each [seeds, steps + 1]
    summary[f"naive_vs_lola_k={longest}"] = {
        "lola_reward_final": mean_standard_error(agent_curve[:, -1]),
        "naive_reward_final": mean_standard_error(naive_curve[:, -1]),
        "naive_cooperation_final": mean_standard_error(naive_cooperation[:, -1]),
    }
    arrays["naive_eval/lola_reward"] = agent_curve
    arrays["naive_eval/naive_reward"] = naive_curve
    arrays["naive_eval/naive_cooperation"] = naive_cooperation

    def final_mean(variant, look_ahead):
        return summary[f"{variant}/k={look_ahead}"]["reward_final"]["mean"]

    few = [k for k in look_aheads if k <= 2]
    many = [k for k in look_aheads if k >= 10]
    checks.append(
        _check(
            "LOLA with 1-2 look-ahead steps cooperates (Fig. 4A)",
            "mean final reward > 0.7 for k <= 2",
            ", ".join(f"k={k}: {final_mean('pure', k):.3f}" for k in few),
            all(final_mean("pure", k) > 0.7 for k in few),
        )
    )
    checks.append(
        _check(
            "LOLA with 10-20 look-ahead steps earns low reward (Fig. 4A)",
            "mean final reward < 0.5 for k >= 10",
            ", ".join(f"k={k}: {final_mean('pure', k):.3f}" for k in many),
            all(final_mean("pure", k) < 0.5 for k in many),
        )
    )
    chi = summary[f"pure/k={longest}"]["zd_chi"]["median"]
    error = summary[f"pure/k={longest}"]["zd_error"]["median"]
    checks.append(
        _check(
            f"... by mutual extortion: k = {longest} policies are ZD extortioners (Fig. 4A)",
            "median ZD fit error < 0.02 and median χ > 1 (p4 ≈ 0, no unconditional defection)",
            f"error {error:.4f}, χ {chi:.3f}, policy {summary[f'pure/k={longest}']['policy_median']}",
            error < 0.02 and chi > 1.0,
        )
    )
    lola_final = summary[f"naive_vs_lola_k={longest}"]["lola_reward_final"]["mean"]
    naive_final = summary[f"naive_vs_lola_k={longest}"]["naive_reward_final"]["mean"]
    naive_cooperation_final = summary[f"naive_vs_lola_k={longest}"]["naive_cooperation_final"]["mean"]
    checks.append(
        _check(
            f"a fresh naive learner trained against LOLA k = {longest} is extorted (Fig. 4B)",
            "mean LOLA reward > mean naive reward, and the naive learner cooperates > 50%",
            f"LOLA {lola_final:.3f}, naive {naive_final:.3f}, naive cooperation {naive_cooperation_final:.3f}",
            lola_final > naive_final and naive_cooperation_final > 0.5,
        )
    )
    mixed = [k for k, w in zip(look_aheads, settings.lola_weights, strict=True) if w < 1]
    for k in mixed:
        checks.append(
            _check(
                f"adding the naive partial gradient restores cooperation, k = {k} (Fig. 4C)",
                "mean final reward > 0.7",
                f"{final_mean('mixed', k):.3f} (pure LOLA: {final_mean('pure', k):.3f})",
                final_mean("mixed", k) > 0.7,
            )
        )
    return FigureResult("fig4", summary, checks, arrays)


RUNNERS: dict[str, Callable[[ml_collections.ConfigDict, int | None], FigureResult]] = {
    "fig3a": run_fig3a,
    "fig3b": run_fig3b,
    "fig3c": run_fig3c,
    "fig9": run_fig9,
    "fig10": run_fig10,
    "fig4": run_fig4,
}
