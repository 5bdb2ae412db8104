"""Every PRNG stream of a run, in one place (docs/architecture.md: "one key scheme").

A run has one seed. Its streams:

fold_in(k, a, b, ...) below is the chain fold_in(fold_in(k, a), b)...

| stream                       | key                                                | used by            |
|------------------------------|----------------------------------------------------|--------------------|
| initial parameters, run key  | (meta, naive, run) = split(seed_key(seed), 3)      | `Learner.init`     |
| sync episode e of version v  | fold_in(run, v, e),  0 ≤ e < P·N                   | `Rollout.episodes` |
| update of version v          | fold_in(run, v, UPDATE_INDEX)                      | `Learner.update`   |
| async actor's u-th work unit | fold_in(run, ASYNC_INDEX, actor, incarnation, u)   | async actors       |
| evaluation stream s          | fold_in(seed_key(seed), s), s ∈ EVALUATION_STREAMS | evaluation         |

Why no two streams collide (as fold_in chains: equal chains give equal keys, different chains different keys up to
a threefry collision):
* versions stay below `MAX_VERSION` < ASYNC_INDEX (config validation bounds `training_iterations`), so the first
  fold_in of a sync episode or update key never equals the async stream's;
* episode indices stay below P·N ≤ `MAX_VERSION` < UPDATE_INDEX, so the second fold_in of an episode key never equals
  the update key's;
* the async stream's keys have four fold_ins after the run key, sync keys two, so an async episode key
  fold_in(fold_in(async_unit_key, v), e) is never a sync episode key;
* evaluation streams start from the seed key, not the run key (which is a split of it), with indices that are no
  version: their keys are a different chain from every training key, so evaluating a run never replays its training
  episodes.
Inside an episode, `Rollout` derives its own sub-streams (pairing, inner episode m, step t) from the episode key.
"""

from __future__ import annotations

import jax

UPDATE_INDEX = 2**31 - 1
ASYNC_INDEX = 2**31 - 2
# The largest version and episode index a run may use (both stay below the two indices above).
MAX_VERSION = 2**31 - 3

# Evaluation streams (fold_in indices of the seed key). The values are the ones published results were made with.
EVALUATION_OF_TRAINING_ROLLOUT = 0x0E7A_1000  # `coala eval`: fresh meta-batches of the training rollout
EVALUATION_AGAINST_NAIVE = 0x5EED_E7A1  # experiments: each meta agent against fresh naive learners
EVALUATION_BETWEEN_META_AGENTS = 0x5EED_E7A2  # experiments: every ordered pair of meta agents
GRADIENT_DIAGNOSTIC = 0x5EED_D1A6  # `coala snr`: independent meta-batches at fixed parameters
EVALUATION_STREAMS = (
    EVALUATION_OF_TRAINING_ROLLOUT,
    EVALUATION_AGAINST_NAIVE,
    EVALUATION_BETWEEN_META_AGENTS,
    GRADIENT_DIAGNOSTIC,
)


def seed_key(seed: int) -> jax.Array:
    """The root key of a run with seed `seed`."""
    return jax.random.PRNGKey(seed)


def init_keys(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(meta-agent init, naive init, run key) from a run's root key."""
    meta_key, naive_key, run_key = jax.random.split(key, 3)
    return meta_key, naive_key, run_key


def episode_key(run_key: jax.Array, version: jax.Array, episode_index: jax.Array) -> jax.Array:
    """The key of one meta-episode: fold_in(fold_in(run_key, version), episode_index)."""
    return jax.random.fold_in(jax.random.fold_in(run_key, version), episode_index)


def update_key(run_key: jax.Array, version: jax.Array) -> jax.Array:
    """The key of the update of `version` (PPO minibatch permutations): an episode index no episode uses."""
    return episode_key(run_key, version, UPDATE_INDEX)


def async_run_key(run_key: jax.Array, actor_id: int, incarnation: int, unit_counter: int) -> jax.Array:
    """The run key an async actor passes to `Rollout.episodes` for its `unit_counter`-th work unit.

    Episode keys are then fold_in(async_run_key, version, episode_index): distinct for every (actor, incarnation,
    unit), so concurrent actors (and a restarted one) never produce the same episode twice.
    """
    key = jax.random.fold_in(run_key, ASYNC_INDEX)
    for data in (actor_id, incarnation, unit_counter):
        key = jax.random.fold_in(key, data)
    return key


def evaluation_key(seed: int, stream: int) -> jax.Array:
    """The root key of evaluation stream `stream` (one of `EVALUATION_STREAMS`) of the run with seed `seed`."""
    if stream not in EVALUATION_STREAMS:
        raise ValueError(f"unknown evaluation stream {stream:#x}; streams are {EVALUATION_STREAMS}")
    return jax.random.fold_in(seed_key(seed), stream)
