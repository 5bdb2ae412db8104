"""Tests of the RL IPD environment (paper App. B.1.1, Table 1)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.envs.ipd import CC, CD, DC, DD, IPD, START

# Table 1, written out by hand: (own action, other action) -> own payoff; 0 = cooperate, 1 = defect.
TABLE_1 = {(0, 0): 1.0, (0, 1): -1.0, (1, 0): 2.0, (1, 1): 0.0}


def test_reset_emits_start_state_for_both_players():
    env = IPD()
    out = env.reset(jax.random.PRNGKey(0), 3)
    for obs in (out.obs_player_1, out.obs_player_2):
        assert obs.shape == (3, 5) and obs.dtype == jnp.float32
        np.testing.assert_array_equal(np.argmax(obs, -1), [START] * 3)
        np.testing.assert_array_equal(obs.sum(-1), 1.0)
    np.testing.assert_array_equal(out.reward_player_1, 0.0)
    assert out.state.t.dtype == jnp.int32


def test_every_action_pair_pays_table_1():
    env = IPD()
    pairs = list(itertools.product([0, 1], repeat=2))
    a1 = jnp.array([p[0] for p in pairs])
    a2 = jnp.array([p[1] for p in pairs])
    out = env.step(env.reset(jax.random.PRNGKey(0), 4).state, a1, a2)
    for i, (x, y) in enumerate(pairs):
        assert out.reward_player_1[i] == TABLE_1[(x, y)]
        assert out.reward_player_2[i] == TABLE_1[(y, x)]


def test_observations_are_own_then_other():
    env = IPD()
    a1 = jnp.array([0, 0, 1, 1])
    a2 = jnp.array([0, 1, 0, 1])
    out = env.step(env.reset(jax.random.PRNGKey(0), 4).state, a1, a2)
    np.testing.assert_array_equal(np.argmax(out.obs_player_1, -1), [CC, CD, DC, DD])
    np.testing.assert_array_equal(np.argmax(out.obs_player_2, -1), [CC, DC, CD, DD])


def test_swapping_players_swaps_views_and_rewards():
    env = IPD()
    key = jax.random.PRNGKey(1)
    a1 = jax.random.bernoulli(key, 0.5, (16,)).astype(jnp.int32)
    a2 = jax.random.bernoulli(jax.random.fold_in(key, 1), 0.5, (16,)).astype(jnp.int32)
    state = env.reset(key, 16).state
    out = env.step(state, a1, a2)
    swapped = env.step(state, a2, a1)
    np.testing.assert_array_equal(out.obs_player_1, swapped.obs_player_2)
    np.testing.assert_array_equal(out.obs_player_2, swapped.obs_player_1)
    np.testing.assert_array_equal(out.reward_player_1, swapped.reward_player_2)


def test_custom_payoffs_and_counter():
    env = IPD(inner_episode_length=3, temptation=5.0, reward=3.0, punishment=1.0, sucker=0.0)
    state = env.reset(jax.random.PRNGKey(0), 1).state
    for t in range(3):
        out = env.step(state, jnp.array([1]), jnp.array([0]))
        state = out.state
        assert int(state.t[0]) == t + 1
    assert float(out.reward_player_1[0]) == 5.0 and float(out.reward_player_2[0]) == 0.0


def test_invalid_payoffs_raise_one_line_error():
    with pytest.raises(ValueError, match="temptation > reward"):
        IPD(temptation=0.5)
    with pytest.raises(ValueError, match="inner_episode_length"):
        IPD(inner_episode_length=0)


def test_jit_and_vmap():
    env = IPD()

    def play(key):
        out = env.reset(key, 8)
        k1, k2 = jax.random.split(key)
        a1 = jax.random.bernoulli(k1, 0.5, (8,)).astype(jnp.int32)
        a2 = jax.random.bernoulli(k2, 0.5, (8,)).astype(jnp.int32)
        step = env.step(out.state, a1, a2)
        return step.reward_player_1 + step.reward_player_2, step.info["cooperate_player_1"], a1

    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    total, coop, a1 = jax.jit(jax.vmap(play))(keys)
    assert total.shape == (5, 8)
    # Sum of payoffs: CC 2, CD/DC 1, DD 0 — all in {0, 1, 2}.
    assert set(np.unique(np.asarray(total)).tolist()) <= {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(coop, 1.0 - a1)
