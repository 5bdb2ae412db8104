"""The key scheme (coala_dist/keys.py): every stream distinct, each what its table row says."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
from helpers import with_fields

from coala_dist import keys
from coala_dist.config import validate


def _raw(key: jax.Array) -> tuple[int, ...]:
    return tuple(int(x) for x in np.asarray(jax.random.key_data(key) if key.dtype != np.uint32 else key).ravel())


def test_streams_of_a_small_run_never_collide():
    run_key = keys.init_keys(keys.seed_key(3))[2]
    versions, episodes = range(4), range(12)
    streams = {
        "episode": [keys.episode_key(run_key, v, e) for v, e in itertools.product(versions, episodes)],
        "update": [keys.update_key(run_key, v) for v in versions],
        "async": [
            keys.episode_key(keys.async_run_key(run_key, actor, incarnation, unit), v, e)
            for actor, incarnation, unit in itertools.product(range(2), range(2), range(2))
            for v, e in itertools.product(range(2), range(3))
        ],
        "evaluation": [keys.evaluation_key(3, s) for s in keys.EVALUATION_STREAMS],
        "init": list(keys.init_keys(keys.seed_key(3))),
    }
    every = [_raw(k) for ks in streams.values() for k in ks]
    assert len(set(every)) == len(every) == sum(len(ks) for ks in streams.values())


def test_each_stream_is_the_fold_in_chain_its_table_row_names():
    root = jax.random.PRNGKey(5)
    meta, naive, run = jax.random.split(root, 3)
    assert [_raw(k) for k in keys.init_keys(keys.seed_key(5))] == [_raw(meta), _raw(naive), _raw(run)]
    fold = jax.random.fold_in
    assert _raw(keys.episode_key(run, 7, 11)) == _raw(fold(fold(run, 7), 11))
    assert _raw(keys.update_key(run, 7)) == _raw(fold(fold(run, 7), 2**31 - 1))
    assert _raw(keys.async_run_key(run, 1, 2, 3)) == _raw(fold(fold(fold(fold(run, 2**31 - 2), 1), 2), 3))
    assert _raw(keys.evaluation_key(5, keys.EVALUATION_AGAINST_NAIVE)) == _raw(fold(root, 0x5EED_E7A1))


def test_published_evaluation_streams_keep_their_indices():
    # results/ was evaluated with these indices: changing one would make a re-evaluation disagree with it.
    assert keys.EVALUATION_STREAMS == (0x0E7A_1000, 0x5EED_E7A1, 0x5EED_E7A2, 0x5EED_D1A6)
    with pytest.raises(ValueError, match="unknown evaluation stream"):
        keys.evaluation_key(0, 1)


def test_learner_init_takes_its_run_key_from_the_scheme(tiny_components):
    state = tiny_components.learner.init(keys.seed_key(9))
    assert _raw(state.run_key) == _raw(jax.random.split(jax.random.PRNGKey(9), 3)[2])


@pytest.mark.parametrize(
    "fields, problem",
    [
        ({"training_iterations": keys.MAX_VERSION + 1}, "training_iterations=.* must be at most"),
        ({"meta_batch_size": keys.MAX_VERSION // 2 + 1}, "meta_batch_size=.* times population_size_meta must be"),
    ],
)
def test_config_keeps_versions_and_episode_indices_below_the_reserved_indices(tiny_config, fields, problem):
    with pytest.raises(ValueError, match=problem):
        validate(with_fields(tiny_config, **fields))
