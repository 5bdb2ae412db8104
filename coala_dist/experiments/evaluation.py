"""After training: meta agents against fresh naive learners (paper Fig. 5B) and against each other (App. H.3).

A fresh naive learner starts from one of the static naive initialisations (the ones it trained against, paper.md
§1.6) and learns by A2C after each of the M inner episodes, exactly as in training: the evaluation calls the same
`Rollout.play`. What Fig. 5B shows is how the two players' defection rates evolve over the M inner episodes of one
meta-episode. Between meta agents nobody learns inside a meta-episode (paper.md §2.7); the head-to-head numbers of
App. H.3 are the reward per step of every ordered pair of meta agents.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from coala_dist import keys
from coala_dist.builder import Components
from coala_dist.pool import select_params

# Folded into the run's seed so evaluation episodes never reuse a training episode's key.


def defection_rates(cooperation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over episodes of the defection rate per inner-episode index.

    Defection rate = 1 − cooperation rate (IPD has two actions).

    Args:
      cooperation: [n, M] cooperation rates, one row per evaluation meta-episode (each entry already a mean over
        the B trajectories and T steps of inner episode m).

    Returns:
      (mean, std), each [M].
    """
    defection = 1.0 - np.asarray(cooperation, dtype=np.float64)
    return defection.mean(axis=0), defection.std(axis=0)


def make_naive_evaluator(components: Components, episodes_per_initialisation: int):
    """A jitted function playing one meta agent against every naive initialisation.

    Args:
      components: the built experiment.
      episodes_per_initialisation: meta-episodes per naive initialisation (each of B trajectories).

    Returns:
      `evaluate(meta_params, naive_params, ego_id, key) -> metrics`, metrics a dict of [K·r, M] arrays (K naive
      initialisations, r = episodes_per_initialisation) with the keys of `MetaEpisode.metrics`.
    """
    rollout = components.rollout
    num_naive = components.config.population_size_naive
    naive_ids = jnp.repeat(jnp.arange(num_naive), episodes_per_initialisation)

    def evaluate(
        meta_params: Any, naive_params: Any, ego_id: jax.Array, key: jax.Array
    ) -> dict[str, jax.Array]:
        ego_params = select_params(meta_params, ego_id)
        keys = jax.random.split(key, naive_ids.shape[0])

        def one(naive_id, episode_key):
            _, metrics = rollout.play(
                ego_params, select_params(naive_params, naive_id), jnp.array(True), episode_key
            )
            return metrics

        return jax.vmap(one)(naive_ids, keys)

    return jax.jit(evaluate)


def evaluate_against_naive(
    evaluator, meta_params: Any, naive_params: Any, seed: int, population_size_meta: int
) -> dict[str, list[list[float]]]:
    """Every meta agent of a run against fresh naive learners; per-inner-episode metrics.

    Args:
      evaluator: from `make_naive_evaluator`.
      meta_params: trained meta agents, stacked on [P].
      naive_params: the static naive initialisations, stacked on [K].
      seed: the run's seed (evaluation keys derive from it).
      population_size_meta: P.

    Returns:
      metric name -> [P·K·r][M] nested lists (JSON-ready): rows grouped by meta agent.
    """
    base = keys.evaluation_key(seed, keys.EVALUATION_AGAINST_NAIVE)
    per_agent = [
        jax.device_get(
            evaluator(meta_params, naive_params, jnp.int32(i), jax.random.fold_in(base, i))
        )
        for i in range(population_size_meta)
    ]
    return {name: np.concatenate([m[name] for m in per_agent]).tolist() for name in per_agent[0]}


def make_meta_evaluator(components: Components, num_episodes: int):
    """A jitted function playing meta agent i (ego) against meta agent j (co-player, not learning).

    Returns:
      `evaluate(meta_params, ego_id, coplayer_id, key) -> metrics`, a dict of [num_episodes, M] arrays.
    """
    rollout = components.rollout

    def evaluate(
        meta_params: Any, ego_id: jax.Array, coplayer_id: jax.Array, key: jax.Array
    ) -> dict[str, jax.Array]:
        ego_params = select_params(meta_params, ego_id)
        coplayer = select_params(meta_params, coplayer_id)
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(lambda k: rollout.play(ego_params, coplayer, jnp.array(False), k)[1])(keys)

    return jax.jit(evaluate)


def evaluate_between_meta_agents(
    evaluator, meta_params: Any, seed: int, population_size_meta: int
) -> dict[str, list[list[float | None]]]:
    """Every metric (reward per step, cooperation rate, ...) of every ordered pair (i, j ≠ i) of meta agents.

    Args:
      evaluator: from `make_meta_evaluator`.
      meta_params: trained meta agents, stacked on [P].
      seed: the run's seed (evaluation keys derive from it).
      population_size_meta: P.

    Returns:
      metric name (every key of `MetaEpisode.metrics`, e.g. "ego_reward", "cooperate_player_1") -> [P][P]: entry
      [i][j] is agent i's mean over the evaluation meta-episodes when it plays agent j; None on the diagonal.
    """
    base = keys.evaluation_key(seed, keys.EVALUATION_BETWEEN_META_AGENTS)
    out: dict[str, list[list[float | None]]] = {}
    for i in range(population_size_meta):
        for j in range(population_size_meta):
            if i == j:
                continue
            key = jax.random.fold_in(base, i * population_size_meta + j)
            metrics = jax.device_get(evaluator(meta_params, jnp.int32(i), jnp.int32(j), key))
            for name, values in metrics.items():
                matrix = out.setdefault(name, [[None] * population_size_meta for _ in range(population_size_meta)])
                matrix[i][j] = float(np.mean(values))
    return out
