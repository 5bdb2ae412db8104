"""The agent pool: who plays whom (paper App. B.2).

A pool holds `population_size_meta` learning-aware (meta) agents and `population_size_naive` naive initialisations.
Each meta-episode pairs an ego meta agent with a co-player: a naive learner with probability `p_naive` (uniform over
the naive initialisations), else another meta agent (uniform, never the ego itself). Sampling is with replacement.
Pairings are drawn per meta-episode from that episode's own key, so a batch of episodes is the same whichever actor
generated which episode (docs/architecture.md#rules-that-keep-the-parts-apart).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Pairing(NamedTuple):
    """One meta-episode's players. Scalars (or [n] when batched).

    Attributes:
      ego_id: int32 index of the ego meta agent.
      coplayer_is_naive: bool, True for a naive learner.
      coplayer_id: int32 index into the naive initialisations if naive, else into the meta agents.
    """

    ego_id: jax.Array
    coplayer_is_naive: jax.Array
    coplayer_id: jax.Array


def sample_pairing(
    key: jax.Array,
    ego_id: jax.Array,
    *,
    population_size_meta: int,
    population_size_naive: int,
    p_naive: float,
    meta_coplayer_mask: jax.Array | None = None,
) -> Pairing:
    """Draws the co-player of one meta-episode.

    Args:
      key: this episode's pairing key.
      ego_id: int32 scalar, the ego meta agent.
      population_size_meta: P, number of meta agents.
      population_size_naive: number of naive initialisations.
      p_naive: probability that the co-player is naive.
      meta_coplayer_mask: optional [P, P] bool, row i = the agents agent i may meet (App. H.3 restricted pairing);
        a meta co-player is then uniform over row `ego_id`'s True entries. None: uniform over the other agents.

    Returns:
      A scalar `Pairing`.
    """
    kind_key, naive_key, meta_key = jax.random.split(key, 3)
    is_naive = jax.random.uniform(kind_key) < p_naive
    naive_id = jax.random.randint(naive_key, (), 0, population_size_naive)
    # Uniform over the P − 1 other agents: draw in [0, P − 1) and skip over the ego's own index.
    other = jax.random.randint(meta_key, (), 0, max(population_size_meta - 1, 1))
    meta_id = other + (other >= ego_id).astype(other.dtype)
    if meta_coplayer_mask is not None:
        allowed = jnp.asarray(meta_coplayer_mask, bool)[ego_id]
        meta_id = jax.random.categorical(meta_key, jnp.where(allowed, 0.0, -jnp.inf)).astype(other.dtype)
    if population_size_meta == 1:  # no other meta agent exists; config validation requires p_naive == 1 then
        is_naive = jnp.ones_like(is_naive)
    coplayer_id = jnp.where(is_naive, naive_id, meta_id).astype(jnp.int32)
    return Pairing(jnp.asarray(ego_id, jnp.int32), is_naive, coplayer_id)


def select_params(stacked: Any, index: jax.Array) -> Any:
    """Picks entry `index` of every leaf of a parameter tree stacked on a leading axis."""
    return jax.tree_util.tree_map(lambda leaf: leaf[index], stacked)


def coplayer_params(meta_params: Any, naive_params: Any, pairing: Pairing) -> Any:
    """The co-player's starting parameters for one (scalar) pairing.

    Args:
      meta_params: meta agents' parameters stacked on a leading [P] axis.
      naive_params: naive initialisations stacked on a leading [K] axis (same tree structure).
      pairing: a scalar `Pairing`.
    """
    naive = select_params(naive_params, jnp.minimum(pairing.coplayer_id, _leading(naive_params) - 1))
    meta = select_params(meta_params, jnp.minimum(pairing.coplayer_id, _leading(meta_params) - 1))
    return jax.tree_util.tree_map(lambda n, m: jnp.where(pairing.coplayer_is_naive, n, m), naive, meta)


def _leading(tree: Any) -> int:
    return jax.tree_util.tree_leaves(tree)[0].shape[0]
