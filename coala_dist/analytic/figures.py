"""The analytic IPD experiments of the paper's Sec. 4 and App. C: one `run_*` function per figure.

A `run_*` function trains with `coala_dist.analytic.trainers` (seeds batched by `jax.vmap` in one `jax.jit`) and
returns a `FigureResult`: JSON-able summary numbers (quantiles over seeds, or mean ± SE for Fig. 4, from
`coala_dist.analysis.statistics`), the checks of the paper's claims (the table of `coala_dist.analytic.claims`,
checked on what the figure measured), and the arrays the plots need.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from coala_dist.analysis.statistics import mean_and_standard_error, quantiles
from coala_dist.analytic.claims import Case, EveryLookAhead, check_claims
from coala_dist.analytic.trainers import (
    GroupMetrics,
    ShapingMetrics,
    make_group_trainer,
    make_lola_trainer,
    make_mutual_trainer,
    make_shaping_trainer,
    naive_learning_curves,
    sample_naive,
)
from coala_dist.envs import analytic_ipd as ipd

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


# ---------------------------------------------------------------------------------------------------------------
# Packing for the JSON summaries and the plots.


def rounded(values: np.ndarray, digits: int = 3) -> list[float]:
    """A 1-D array as a JSON-friendly list of Python floats rounded to `digits` (no float32 noise)."""
    return [round(float(value), digits) for value in np.asarray(values, np.float64)]


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
    cases, arrays = [], {}
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
        zd_error, random_zd_error = np.median(fit.squared_error), np.median(random_fit.squared_error)
        cases.append(
            Case(
                "start",
                {
                    "start": start,
                    "agent_after": np.median(final["agent_reward_final"]),
                    "naive_after": np.median(final["naive_reward_final"]),
                    "naive_cooperation": np.median(final["naive_cooperation_final"]),
                    "zd_error": zd_error,
                    "random_zd_error": random_zd_error,
                    "zd_error_ratio": zd_error / random_zd_error,
                },
            )
        )
        for name in ("agent_reward", "naive_reward", "agent_reward_final", "naive_reward_final"):
            steps, arrays[f"{start}/{name}"] = subsample_curve(getattr(history, name), settings.log_every)
        arrays[f"{start}/steps"] = steps
        arrays[f"{start}/cooperate"] = cooperate
        arrays[f"{start}/zd_error"] = fit.squared_error
    arrays["baseline/zd_error"] = random_fit.squared_error
    return FigureResult("fig3a", summary, check_claims("fig3a", cases), arrays)


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
    turn = settings.turn_steps
    cases = [
        Case(
            "pair",
            {
                "pairing": pairing,
                "turn": turn,
                "updates": curve.shape[1],
                "before": np.median(curve[:, 0]),
                "turned": np.median(curve[:, turn]),
                "end": np.median(curve[:, -1]),
                "end_q25": np.percentile(curve[:, -1], 25),
                "end_q75": np.percentile(curve[:, -1], 75),
            },
        )
        for pairing, curve in (("against each other", mutual_reward), ("in self-play", self_reward))
    ]
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
    return FigureResult("fig3b", summary, check_claims("fig3b", cases), arrays)


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
    cases = []
    for index, p_naive in enumerate(p_values):
        final = history.meta_reward[index, :, -1]
        summary[f"p_naive={p_naive}"] = {
            "meta_reward_final": quantiles(final),
            "fraction_of_seeds_cooperating(>0.9)": float(np.mean(final > 0.9)),
            "meta_cooperation_final": quantiles(history.meta_cooperation[index, :, -1]),
            "shaping_reward_final": quantiles(history.shaping_reward[index, :, -1]),
            "policy_median": rounded(np.median(_cooperation(logits[index].reshape(-1, 5)), 0)),
        }
        values = {
            "p_naive": p_naive,
            "final": np.median(final),
            "final_q25": np.percentile(final, 25),
            "final_q75": np.percentile(final, 75),
        }
        cases.append(Case("p_naive", values))
    steps, curves = subsample_curve(history.meta_reward, settings.log_every)
    arrays = {
        "p_naive": np.asarray(p_values),
        "steps": steps,
        "meta_reward": curves,
        "meta_reward_final": history.meta_reward[:, :, -1],
    }
    return FigureResult("fig3c", summary, check_claims("fig3c", cases), arrays)


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
    cases = []
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
        started = [r for r in rise if r >= 0]
        values = {
            "p_naive": p_naive,
            "final": np.median(rewards[:, -1]),
            "rise": rise,
            "widths": widths,
            "width_median": np.median(widths) if widths else math.nan,
            "rise_median_quarter": 0.25 * np.median(started) if started else math.nan,
        }
        cases.append(Case("p_naive", values))
    steps, curves = subsample_curve(history.meta_reward, settings.log_every)
    _, shaping_curves = subsample_curve(history.shaping_reward, settings.log_every)
    arrays = {
        "p_naive": np.asarray(p_values),
        "steps": steps,
        "meta_reward": curves,
        "shaping_reward": shaping_curves,
    }
    return FigureResult("fig9", summary, check_claims("fig9", cases), arrays)


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
    naive = sample_naive(
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
    measured = {
        "distance": np.median(distance),
        "shaping_initial": np.median(history.shaping_reward[:, 0]),
        "shaping_final": np.median(history.shaping_reward[:, -1]),
        "final": np.median(history.meta_reward[:, -1]),
        "lowest_after_cooperation": np.median(lowest_after_cooperation),
    }
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
    return FigureResult("fig10", summary, check_claims("fig10", [Case("group", measured)]), arrays)


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
                "reward_final": mean_and_standard_error(rewards[:, -1]),
                "policy_median": rounded(np.median(cooperate, 0)),
                "zd_error": quantiles(fit.squared_error),
                "zd_chi": quantiles(fit.chi),
            }
            steps, arrays[f"{variant}/k={look_ahead}/reward"] = subsample_curve(rewards)
            arrays["steps"] = steps
            arrays[f"{variant}/k={look_ahead}/reward_final"] = rewards[:, -1]
    # Fig. 4B: fresh naive learners against the final policy of the longest look-ahead (player 1 of each seed).
    longest = look_aheads[-1]
    naive = sample_naive(
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
        "lola_reward_final": mean_and_standard_error(agent_curve[:, -1]),
        "naive_reward_final": mean_and_standard_error(naive_curve[:, -1]),
        "naive_cooperation_final": mean_and_standard_error(naive_cooperation[:, -1]),
    }
    arrays["naive_eval/lola_reward"] = agent_curve
    arrays["naive_eval/naive_reward"] = naive_curve
    arrays["naive_eval/naive_cooperation"] = naive_cooperation

    def final_mean(variant, look_ahead):
        return summary[f"{variant}/k={look_ahead}"]["reward_final"]["mean"]

    pure = summary[f"pure/k={longest}"]
    naive_vs_lola = summary[f"naive_vs_lola_k={longest}"]
    longest_look_ahead = {
        # Fig. 4A's claims are about few (k <= 2) and many (k >= 10) look-ahead steps.
        "few": EveryLookAhead({k: final_mean("pure", k) for k in look_aheads if k <= 2}),
        "many": EveryLookAhead({k: final_mean("pure", k) for k in look_aheads if k >= 10}),
        "longest": longest,
        "zd_error": pure["zd_error"]["median"],
        "zd_chi": pure["zd_chi"]["median"],
        "policy": pure["policy_median"],
        "lola_reward": naive_vs_lola["lola_reward_final"]["mean"],
        "naive_reward": naive_vs_lola["naive_reward_final"]["mean"],
        "naive_cooperation": naive_vs_lola["naive_cooperation_final"]["mean"],
    }
    per_look_ahead = [
        {"k": k, "lola_weight": weight, "mixed": final_mean("mixed", k), "pure": final_mean("pure", k)}
        for k, weight in zip(look_aheads, settings.lola_weights, strict=True)
    ]
    cases = [Case("pure LOLA", longest_look_ahead), *(Case("look-ahead", values) for values in per_look_ahead)]
    return FigureResult("fig4", summary, check_claims("fig4", cases), arrays)


RUNNERS: dict[str, Callable[[ml_collections.ConfigDict, int | None], FigureResult]] = {
    "fig3a": run_fig3a,
    "fig3b": run_fig3b,
    "fig3c": run_fig3c,
    "fig9": run_fig9,
    "fig10": run_fig10,
    "fig4": run_fig4,
}
