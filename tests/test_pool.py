"""Pairing sampler: naive with probability p_naive, uniform within each pool, never self (paper App. B.2)."""

import jax
import jax.numpy as jnp
import numpy as np

from coala_dist.pool import coplayer_params, sample_pairing


def _draw(num, ego_id, population_size_meta, population_size_naive, p_naive):
    keys = jax.random.split(jax.random.PRNGKey(0), num)
    sample = jax.jit(
        jax.vmap(
            lambda k: sample_pairing(
                k,
                jnp.int32(ego_id),
                population_size_meta=population_size_meta,
                population_size_naive=population_size_naive,
                p_naive=p_naive,
            )
        )
    )
    return jax.device_get(sample(keys))


def test_mixed_pool_statistics():
    num, p_naive = 40_000, 0.75
    pairing = _draw(num, ego_id=2, population_size_meta=4, population_size_naive=10, p_naive=p_naive)
    naive = pairing.coplayer_is_naive
    # Fraction naive within 4 standard errors of p_naive.
    se = np.sqrt(p_naive * (1 - p_naive) / num)
    assert abs(naive.mean() - p_naive) < 4 * se
    meta_ids = pairing.coplayer_id[~naive]
    assert 2 not in set(meta_ids.tolist()), "never self"
    counts = np.bincount(meta_ids, minlength=4)[[0, 1, 3]]
    expected = len(meta_ids) / 3
    assert np.all(np.abs(counts - expected) < 4 * np.sqrt(expected)), counts
    naive_counts = np.bincount(pairing.coplayer_id[naive], minlength=10)
    expected = naive.sum() / 10
    assert np.all(np.abs(naive_counts - expected) < 4 * np.sqrt(expected)), naive_counts
    np.testing.assert_array_equal(pairing.ego_id, 2)


def test_pure_shaping_and_meta_only():
    assert _draw(500, 0, 1, 10, 1.0).coplayer_is_naive.all()
    meta_only = _draw(500, 1, 3, 10, 0.0)
    assert not meta_only.coplayer_is_naive.any()
    assert set(meta_only.coplayer_id.tolist()) == {0, 2}


def test_coplayer_params_picks_the_right_tree():
    meta = {"w": jnp.arange(3.0)[:, None] * jnp.ones((3, 2))}  # agent i has all entries i
    naive = {"w": 10.0 + jnp.arange(5.0)[:, None] * jnp.ones((5, 2))}
    pairing_naive = sample_pairing(jax.random.PRNGKey(0), jnp.int32(0), population_size_meta=3,
                                   population_size_naive=5, p_naive=1.0)
    picked = coplayer_params(meta, naive, pairing_naive)
    np.testing.assert_array_equal(picked["w"], 10.0 + float(pairing_naive.coplayer_id))
    pairing_meta = sample_pairing(jax.random.PRNGKey(0), jnp.int32(0), population_size_meta=3,
                                  population_size_naive=5, p_naive=0.0)
    picked = coplayer_params(meta, naive, pairing_meta)
    np.testing.assert_array_equal(picked["w"], float(pairing_meta.coplayer_id))
    assert int(pairing_meta.coplayer_id) != 0


def test_cross_estimator_pairing_meets_only_the_other_rule():
    """App. H.3: with rules (coala, coala, mfos, mfos), a meta co-player always follows the other rule, uniformly."""
    from coala_dist.config import default_config, meta_coplayer_mask

    config = default_config()
    config.population_size_meta = 4
    config.agent_estimators = ("coala", "coala", "mfos", "mfos")
    config.cross_estimator_pairing = True
    mask = meta_coplayer_mask(config)
    assert mask == ((False, False, True, True),) * 2 + ((True, True, False, False),) * 2
    keys = jax.random.split(jax.random.PRNGKey(1), 20_000)
    for ego_id, allowed in ((0, {2, 3}), (3, {0, 1})):
        pairing = jax.device_get(
            jax.jit(
                jax.vmap(
                    lambda k, ego=ego_id: sample_pairing(
                        k,
                        jnp.int32(ego),
                        population_size_meta=4,
                        population_size_naive=10,
                        p_naive=0.0,
                        meta_coplayer_mask=jnp.asarray(mask),
                    )
                )
            )(keys)
        )
        ids = pairing.coplayer_id[~pairing.coplayer_is_naive]
        assert set(np.unique(ids).tolist()) == allowed
        # Uniform over the two allowed agents: within 4 standard errors of 1/2.
        share = np.mean(ids == min(allowed))
        assert abs(share - 0.5) < 4 * np.sqrt(0.25 / ids.size)
