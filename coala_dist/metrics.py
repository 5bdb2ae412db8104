"""Per-iteration summaries of a batch of meta-episodes (what a researcher looks at)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from coala_dist.rollout import MetaEpisode


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of values[n, ...] over the episodes where mask[n]; NaN when no episode qualifies."""
    per_episode = values.reshape((values.shape[0], -1)).mean(axis=1)
    count = mask.sum()
    total = jnp.sum(jnp.where(mask, per_episode, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def summarize_episodes(batch: MetaEpisode) -> dict[str, jax.Array]:
    """Scalar means of every per-episode metric, split by co-player type.

    Keys are `vs_naive/<metric>` and `vs_meta/<metric>`, e.g. `vs_naive/ego_reward` is the meta agents' reward per
    step against naive learners (unscaled), `vs_meta/cooperate_player_2` the meta co-players' cooperation rate.
    A group with no episode in this batch gives NaN.
    """
    out = {}
    for name, values in batch.metrics.items():
        out[f"vs_naive/{name}"] = _masked_mean(values, batch.coplayer_is_naive)
        out[f"vs_meta/{name}"] = _masked_mean(values, ~batch.coplayer_is_naive)
    out["episodes/fraction_naive"] = batch.coplayer_is_naive.mean()
    return out
