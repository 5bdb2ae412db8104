"""Gradient signal-to-noise diagnostic (`coala snr`): is one meta-batch's policy gradient worth following?

Before spending compute on a budget, run K independent meta-batches at fixed parameters (a config's initial ones or
a run's newest checkpoint) and compare the policy gradients each would give, per estimator:

* the policy gradient is the one the learner follows at its first PPO step (ratio 1: PPO's surrogate and A2C's have
  the same gradient): gᵏ = ∇θ meanₙ[−cₙ · mean_{b,l} log π(aᵇₗ | hᵇₗ) · Aᵇₗ] on meta-batch k, with the estimator's
  advantages exactly as the learner computes them (`Learner.advantages`: GAE on the recorded critic values, the
  reward scale, the centring and scaling the config asks for) and cₙ = B for naive-opponent episodes of a
  Σ-over-b rule (Eq. 5), else 1;
* split by where the advantage comes from: the action's own inner episode (`current_episode_advantages`) and the
  later inner episodes (the rest), the part through which an action shapes the co-player's learning;
* statistics over the K gradients (`gradient_statistics`): the mean pairwise cosine, the signal power ‖E g‖², the
  noise power tr Cov g of one meta-batch, their ratio (the SNR of one meta-batch of N meta-episodes) and the
  meta-batch size at which the SNR reaches a target (noise power falls as 1/N).

Choices (the paper has no such tool): the value and entropy terms are left out (they are not what the estimators
change); the advantage centring and the optional division by the standard deviation apply to both parts alike (the
division by the full advantages' standard deviation), so the two parts add up to what the learner uses.
Batches are fresh meta-batches of the training rollout from the `GRADIENT_DIAGNOSTIC` key stream.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from coala_dist import keys
from coala_dist.analysis import style
from coala_dist.builder import Components
from coala_dist.learner import TrainState, episodes_per_gradient_chunk
from coala_dist.rl import estimators
from coala_dist.rl.losses import policy_gradient_scale
from coala_dist.rollout import MetaEpisode

PARTS = ("total", "current_episode", "future_episodes")


def gradient_statistics(gradients: np.ndarray, meta_batch_size: int, target_snr: float) -> dict[str, Any]:
    """Signal and noise of a stochastic gradient from K independent samples of it.

    With samples g₁ … g_K of a gradient estimate g (one per meta-batch of N meta-episodes), mean ḡ and unbiased
    noise power σ² = tr Cov g = Σₖ ‖gₖ − ḡ‖² / (K − 1):

        signal power  S = ‖E g‖² ≈ ‖ḡ‖² − σ² / K   (unbiased; may come out ≤ 0 when the signal is below the noise
                                                    floor of K samples)
        SNR of one meta-batch     = S / σ²
        meta-batch for SNR s      = N · s · σ² / S  (the noise power of a mean of N' episodes is σ² · N / N')
        expected pairwise cosine  ≈ S / (S + σ²) for high-dimensional g (reported as measured, from the pairs)

    Args:
      gradients: [K, D] the K gradient samples, flattened; K ≥ 2.
      meta_batch_size: N, meta-episodes behind each sample.
      target_snr: s > 0.

    Returns:
      A dict of floats: cosine_mean, cosine_std (over the K(K−1)/2 pairs), norm_mean (mean ‖gₖ‖), signal_power,
      noise_power, snr, snr_stderr (jackknife standard error of the SNR estimate; None for K = 2),
      meta_batch_for_target (None when the signal is not resolved: S ≤ 0), resolved (S > 0), and
      meta_batch_lower_bound (N · s · K when not resolved: a signal below the K-sample floor σ²/K needs at least
      that many meta-episodes; None when resolved).
    """
    g = np.asarray(gradients, np.float64)
    if g.ndim != 2 or g.shape[0] < 2:
        raise ValueError(f"gradient_statistics needs [K >= 2, D] samples, got shape {g.shape}")
    if target_snr <= 0:
        raise ValueError(f"target_snr must be > 0, got {target_snr}")
    count = g.shape[0]
    signal, noise = _signal_and_noise(g)
    norms = np.linalg.norm(g, axis=1)
    upper = np.triu_indices(count, k=1)
    cosines = (g @ g.T)[upper] / np.maximum(norms[upper[0]] * norms[upper[1]], 1e-300)
    resolved = signal > 0 and noise > 0
    if count > 2:  # jackknife: the SNR estimate of each leave-one-out set of K − 1 samples
        leave_one_out = [_signal_and_noise(np.delete(g, i, axis=0)) for i in range(count)]
        ratios = np.array([s / n if n > 0 else math.inf for s, n in leave_one_out])
        snr_stderr = float(np.sqrt((count - 1) / count * np.sum((ratios - ratios.mean()) ** 2)))
    else:
        snr_stderr = None
    return {
        "cosine_mean": float(cosines.mean()),
        "cosine_std": float(cosines.std()),
        "norm_mean": float(norms.mean()),
        "signal_power": signal,
        "noise_power": noise,
        "snr": signal / noise if noise > 0 else math.inf,
        "snr_stderr": snr_stderr,
        "resolved": bool(signal > 0),
        "meta_batch_for_target": meta_batch_size * target_snr * noise / signal if resolved else None,
        "meta_batch_lower_bound": None if signal > 0 else meta_batch_size * target_snr * count,
    }


def _signal_and_noise(g: np.ndarray) -> tuple[float, float]:
    """(unbiased ‖E g‖², unbiased tr Cov g) of samples g [K, D] (see `gradient_statistics`)."""
    count = g.shape[0]
    mean = g.mean(axis=0)
    noise = float(np.sum((g - mean) ** 2) / (count - 1))
    return float(mean @ mean - noise / count), noise


@dataclasses.dataclass(frozen=True)
class SnrSettings:
    """What `measure` runs.

    Attributes:
      num_batches: K independent meta-batches (≥ 2).
      estimators: names in `rl.estimators.REGISTRY` to compare (default: the paper's three).
      target_snr: the SNR the meta-batch size is sized for.
      seed: seed of the `GRADIENT_DIAGNOSTIC` key stream.
    """

    num_batches: int = 6
    estimators: tuple[str, ...] = estimators.PAPER_ESTIMATORS
    target_snr: float = 1.0
    seed: int = 0

    def validate(self) -> None:
        """Raises a one-line ValueError for a setting `measure` cannot run with."""
        if self.num_batches < 2:
            raise ValueError(f"the diagnostic needs at least 2 meta-batches, got {self.num_batches}")
        if not self.estimators:
            raise ValueError("no estimator to compare")
        for name in self.estimators:
            if estimators.get_estimator(name).lola_dice:
                raise ValueError("the diagnostic compares Algorithm 1 rules; lola_dice has no advantage-based gradient")
        if not self.target_snr > 0:
            raise ValueError(f"the target SNR must be > 0, got {self.target_snr}")


def advantage_parts(components: Components, batch: MetaEpisode, estimator: str) -> tuple[jax.Array, jax.Array]:
    """The learner's advantages of one agent's meta-batch [N, B, L] under `estimator` (`Learner.advantages`) and
    their current-episode part (`estimators.current_episode_advantages`), treated alike.

    The learner's centring is linear and its optional division uses the full advantages' standard deviation: the
    current part is centred by its own group mean and divided by that same standard deviation, so the advantages
    minus their current-episode part are exactly the (centred, scaled) future-episode part.
    """
    learner = components.learner
    s = learner.settings
    flags = estimators.rule_flags(estimator)
    naive = batch.coplayer_is_naive

    def current(r, v, against_naive):
        return estimators.current_episode_advantages(
            r,
            v,
            normalize_current_episode=jnp.logical_and(against_naive, flags[1]),
            discount=s.discount,
            gae_lambda=s.gae_lambda,
            inner_episode_length=s.inner_episode_length,
        )

    part = jax.vmap(current)(learner.scale_rewards(batch.rewards), batch.behaviour_values, naive)
    if s.advantage_normalization:
        part = estimators.center_advantages(part, naive)
        if s.advantage_divide_by_std:  # by the whole's per-group std, as `center_advantages` divides the whole
            whole = estimators.center_advantages(learner.raw_advantages(batch, flags), naive)
            part = part / (jnp.sqrt(_group_means(whole**2, naive)) + 1e-8)
    return learner.advantages(batch, flags), part


def _group_means(x: jax.Array, naive: jax.Array) -> jax.Array:
    """[N, B, L]: each element replaced by the mean of its co-player group (naive or meta) over the meta-batch."""
    return x - estimators.center_advantages(x, naive)


def policy_gradients(
    components: Components, params: Any, batch: MetaEpisode, estimator_names: Sequence[str]
) -> jax.Array:
    """Policy gradients of one agent's meta-batch [N, B, L]: [E, 2, D] for E estimators × (total, current-episode
    part), flattened parameters. Backward passes run over chunks of whole meta-episodes (the learner's
    `compute.gradient_chunk_trajectories`), all 2E of a chunk at once."""
    learner = components.learner
    num_episodes, batch_size, length = batch.actions.shape
    cotangents = []
    for name in estimator_names:
        rule = estimators.get_estimator(name)
        sums = jnp.logical_and(batch.coplayer_is_naive, rule.sum_over_batch)
        scale = policy_gradient_scale(sums, batch_size, jnp.float32)
        # d/dlogp of meanₙ[−cₙ · mean_{b,l} logp · A]
        weight = -scale[:, None, None] / (num_episodes * batch_size * length)
        cotangents.extend(weight * part for part in advantage_parts(components, batch, name))
    cotangents = jnp.stack(cotangents)  # [2E, N, B, L]
    chunk = episodes_per_gradient_chunk(num_episodes, batch_size, learner.settings.gradient_chunk_trajectories)
    chunks = jax.tree_util.tree_map(
        lambda x: x.reshape((num_episodes // chunk, chunk) + x.shape[1:]), (batch, jnp.swapaxes(cotangents, 0, 1))
    )

    def accumulate(total: jax.Array, chunk_data: tuple[MetaEpisode, jax.Array]) -> tuple[jax.Array, None]:
        chunk_batch, chunk_cotangents = chunk_data
        _, vjp = jax.vjp(lambda p: learner.evaluate_actions(p, chunk_batch)[0], params)
        grads = jax.vmap(lambda c: ravel_pytree(vjp(c)[0])[0])(jnp.swapaxes(chunk_cotangents, 0, 1))
        return total + grads, None

    size = ravel_pytree(params)[0].size
    total, _ = jax.lax.scan(accumulate, jnp.zeros((cotangents.shape[0], size), jnp.float32), chunks)
    return total.reshape(len(estimator_names), 2, size)


def measure(components: Components, state: TrainState, settings: SnrSettings) -> dict[str, Any]:
    """Runs the diagnostic: K fresh meta-batches at `state`'s parameters, the policy gradients of every meta agent
    under each estimator, and their statistics (per agent, and the mean over agents).

    Returns:
      A JSON-able dict: settings, config summary, and `estimators[name][part]` → statistics (mean over agents) with
      `per_agent` lists.
    """
    settings.validate()
    config = components.config
    num_agents, meta_batch = config.population_size_meta, config.meta_batch_size
    names = tuple(settings.estimators)
    gradients_of_agents = jax.jit(jax.vmap(lambda params, batch: policy_gradients(components, params, batch, names)))
    key = keys.evaluation_key(settings.seed, keys.GRADIENT_DIAGNOSTIC)
    naive = components.learner.naive_initialisations(state)
    indices = components.rollout.iteration_indices()
    samples = []  # K × [P, E, 2, D]
    for k in range(settings.num_batches):
        batch = components.rollout_episodes(state.meta_params, naive, key, jnp.int32(k), indices)
        per_agent = jax.tree_util.tree_map(lambda x: x.reshape((num_agents, meta_batch) + x.shape[1:]), batch)
        samples.append(np.asarray(gradients_of_agents(state.meta_params, per_agent), np.float64))
    stacked = np.stack(samples)  # [K, P, E, 2, D]
    parts = {
        "total": stacked[:, :, :, 0],
        "current_episode": stacked[:, :, :, 1],
        "future_episodes": stacked[:, :, :, 0] - stacked[:, :, :, 1],
    }
    result: dict[str, Any] = {}
    for e, name in enumerate(names):
        result[name] = {}
        for part, values in parts.items():
            per_agent = [
                gradient_statistics(values[:, p, e], meta_batch, settings.target_snr) for p in range(num_agents)
            ]
            summary = {key: _mean([a[key] for a in per_agent]) for key in per_agent[0] if key != "resolved"}
            summary["resolved"] = all(a["resolved"] for a in per_agent)
            if not summary["resolved"]:  # one unresolved agent: the bound holds for the pool
                summary["meta_batch_for_target"] = None
                summary["meta_batch_lower_bound"] = meta_batch * settings.target_snr * settings.num_batches
            summary["per_agent"] = per_agent
            result[name][part] = summary
    return {
        "settings": dataclasses.asdict(settings),
        "meta_batch_size": meta_batch,
        "batch_size": config.batch_size,
        "num_inner_episodes": config.num_inner_episodes,
        "population_size_meta": num_agents,
        "p_naive": config.p_naive,
        "version": int(state.version),
        "estimators": result,
    }


def _mean(values: list[Any]) -> Any:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def format_report(result: dict[str, Any]) -> str:
    """A text table: per estimator and gradient part, the pairwise cosine, SNR and the meta-batch for the target."""
    s = result["settings"]
    lines = [
        f"gradient SNR at version {result['version']}: {s['num_batches']} meta-batches of"
        f" N={result['meta_batch_size']} (B={result['batch_size']}, M={result['num_inner_episodes']}),"
        f" target SNR {s['target_snr']:g}, seed {s['seed']}",
        f"{'estimator':<14} {'part':<16} {'‖g‖':>9} {'cosine':>15} {'SNR (one batch)':>20} {'N for target':>13}",
    ]
    for name, parts in result["estimators"].items():
        for part in PARTS:
            r = parts[part]
            needed = (
                f"{r['meta_batch_for_target']:.3g}"
                if r["meta_batch_for_target"] is not None
                else f"> {r['meta_batch_lower_bound']:.3g}"
            )
            cosine = f"{r['cosine_mean']:+.3f} ± {r['cosine_std']:.3f}"
            ratio = f"{r['snr']:.3g}" + ("" if r["snr_stderr"] is None else f" ± {r['snr_stderr']:.2g}")
            lines.append(
                f"{style.label(name):<14} {part:<16} {r['norm_mean']:>9.3g} {cosine:>15} {ratio:>20} {needed:>13}"
            )
    lines.append(
        "‖g‖: mean gradient norm; cosine: mean ± std over pairs of meta-batches; SNR = ‖E g‖² / tr Cov g of one "
        "meta-batch ± its jackknife standard error; '> x': signal not resolved with these batches"
    )
    return "\n".join(lines)


def plot(result: dict[str, Any], out_path: str, title: str | None = None) -> None:
    """Two panels per estimator and gradient part: the pairwise cosine (mean ± std over pairs of meta-batches) and the
    SNR of one meta-batch (± jackknife standard error, symmetric-log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["estimators"])
    width = 0.8 / len(PARTS)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    for i, part in enumerate(PARTS):
        x = np.arange(len(names)) + (i - (len(PARTS) - 1) / 2) * width
        rows = [result["estimators"][name][part] for name in names]
        left.bar(x, [r["cosine_mean"] for r in rows], width, yerr=[r["cosine_std"] for r in rows], label=part)
        right.bar(x, [r["snr"] for r in rows], width, yerr=[r["snr_stderr"] or 0.0 for r in rows], label=part)
    for ax, label in ((left, "cosine between meta-batches"), (right, "SNR of one meta-batch")):
        ax.set_xticks(np.arange(len(names)), [style.label(n) for n in names])
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel(label)
    right.set_yscale("symlog", linthresh=0.1)
    right.axhline(result["settings"]["target_snr"], color="grey", linestyle="--", linewidth=0.8)
    left.set_ylim(-1.05, 1.05)
    left.legend(fontsize=8)
    settings = result["settings"]
    fig.suptitle(
        (title + ": " if title else "")
        + f"K={settings['num_batches']} meta-batches of N={result['meta_batch_size']}, B={result['batch_size']}, "
        f"M={result['num_inner_episodes']}, version {result['version']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
