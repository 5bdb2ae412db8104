"""The rollout against an independent step-by-step oracle (docs/choices.md#time-scales)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.keys import episode_key
from coala_dist.pool import coplayer_params, sample_pairing, select_params


def _oracle_episode(components, config, state, episode_index):
    """Re-plays one meta-episode with Python loops and *full-sequence* policy passes over the history.

    Nothing is carried between steps but the raw observations: the ego sees its whole meta-trajectory history
    (segment start only at l = 0); a naive co-player sees only the current inner episode and learns after each
    inner episode but the last; a meta co-player sees its whole history and never learns. The randomness follows
    the documented key contract (episode_key → split into pairing/play keys → fold_in(m) → fold_in(t) → split).
    """
    env, policy, naive = components.env, components.policy, components.naive_learner
    M, T, B = config.num_inner_episodes, config.env.inner_episode_length, config.batch_size
    key = episode_key(state.run_key, state.version, jnp.int32(episode_index))
    pairing_key, play_key = jax.random.split(key)
    ego_id = episode_index // config.meta_batch_size
    pairing = sample_pairing(
        pairing_key,
        jnp.int32(ego_id),
        population_size_meta=config.population_size_meta,
        population_size_naive=config.population_size_naive,
        p_naive=config.p_naive,
    )
    is_naive = bool(pairing.coplayer_is_naive)
    ego_params = select_params(state.meta_params, ego_id)
    co_params = coplayer_params(state.meta_params, state.naive_params, pairing)
    co_opt = naive.init(co_params)

    @jax.jit
    def full_sequence(params, obs):
        pos = jnp.broadcast_to(jnp.arange(obs.shape[1], dtype=jnp.int32), obs.shape[:2])
        out, _ = policy.apply({"params": params}, obs, pos)
        return out.logits[:, -1], out.value[:, -1]

    def last_step(params, obs_history):
        return full_sequence(params, jnp.stack(obs_history, axis=1))  # obs [B, l, o]

    ego_history, co_history = [], []
    record = {"actions": [], "rewards": [], "logp": [], "values": []}
    for m in range(M):
        key_m = jax.random.fold_in(play_key, m)
        out = env.reset(jax.random.fold_in(key_m, T), B)
        co_episode = {"obs": [], "actions": [], "rewards": []}
        for t in range(T):
            ego_key, co_key = jax.random.split(jax.random.fold_in(key_m, t))
            ego_history.append(out.obs_player_1)
            co_history.append(out.obs_player_2)
            co_episode["obs"].append(out.obs_player_2)
            ego_logits, ego_value = last_step(ego_params, ego_history)
            co_logits, _ = last_step(co_params, co_episode["obs"] if is_naive else co_history)
            ego_action = jax.random.categorical(ego_key, ego_logits).astype(jnp.int32)
            co_action = jax.random.categorical(co_key, co_logits).astype(jnp.int32)
            out = env.step(out.state, ego_action, co_action)
            record["actions"].append(ego_action)
            record["rewards"].append(out.reward_player_1)
            record["logp"].append(jax.nn.log_softmax(ego_logits)[jnp.arange(B), ego_action])
            record["values"].append(ego_value)
            co_episode["actions"].append(co_action)
            co_episode["rewards"].append(out.reward_player_2)
        if is_naive and m < M - 1:
            co_params, co_opt = jax.jit(naive.update)(
                co_params,
                co_opt,
                jnp.stack(co_episode["obs"], 1),
                jnp.stack(co_episode["actions"], 1),
                jnp.stack(co_episode["rewards"], 1),
            )
    return is_naive, {k: np.stack(v, axis=1) for k, v in record.items()}


@pytest.fixture(scope="module")
def batch(tiny_episodes, tiny_state, tiny_components):
    return tiny_episodes(
        tiny_state.meta_params,
        tiny_state.naive_params,
        tiny_state.run_key,
        tiny_state.version,
        tiny_components.rollout.iteration_indices(),
    )


def test_shapes_and_ego_ids(batch, tiny_config):
    c = tiny_config
    n = c.population_size_meta * c.meta_batch_size
    length = c.num_inner_episodes * c.env.inner_episode_length
    assert batch.obs.shape == (n, c.batch_size, length, 5)
    for name in ("actions", "rewards", "behaviour_logp", "behaviour_values"):
        assert getattr(batch, name).shape == (n, c.batch_size, length), name
    assert batch.actions.dtype == jnp.int32
    np.testing.assert_array_equal(batch.ego_id, np.arange(n) // c.meta_batch_size)
    np.testing.assert_array_equal(batch.episode_index, np.arange(n))
    for values in batch.metrics.values():
        assert values.shape == (n, c.num_inner_episodes)
    # Inner-episode starts are the IPD start state for the ego.
    starts = np.asarray(batch.obs[:, :, :: c.env.inner_episode_length, 0])
    np.testing.assert_array_equal(starts, 1.0)
    # Every other step is not the start state.
    assert np.asarray(batch.obs[:, :, 1, 0]).max() == 0.0


def test_batch_has_both_coplayer_kinds(batch):
    kinds = set(np.asarray(batch.coplayer_is_naive).tolist())
    assert kinds == {True, False}, "tiny config should draw naive and meta co-players (p_naive=0.5)"
    ego, co = np.asarray(batch.ego_id), np.asarray(batch.coplayer_id)
    meta = ~np.asarray(batch.coplayer_is_naive)
    assert np.all(ego[meta] != co[meta]), "a meta co-player is never the ego itself"


@pytest.mark.slow
def test_matches_step_by_step_oracle(batch, tiny_components, tiny_config, tiny_state):
    naive_index = int(np.argmax(np.asarray(batch.coplayer_is_naive)))
    meta_index = int(np.argmax(~np.asarray(batch.coplayer_is_naive)))
    for index in (naive_index, meta_index):
        is_naive, expected = _oracle_episode(tiny_components, tiny_config, tiny_state, index)
        assert is_naive == bool(batch.coplayer_is_naive[index])
        np.testing.assert_array_equal(batch.actions[index], expected["actions"])
        np.testing.assert_array_equal(batch.rewards[index], expected["rewards"])
        np.testing.assert_allclose(batch.behaviour_logp[index], expected["logp"], atol=1e-5)
        np.testing.assert_allclose(batch.behaviour_values[index], expected["values"], atol=1e-5)


def test_episode_does_not_depend_on_which_batch_generated_it(batch, tiny_episodes, tiny_state):
    # Same block shape (no recompilation), other order: as if other actors had generated the episodes.
    order = jnp.array([[5, 7, 6, 4], [2, 0, 1, 3]], dtype=jnp.int32)
    alone = tiny_episodes(
        tiny_state.meta_params, tiny_state.naive_params, tiny_state.run_key, tiny_state.version, order
    )
    for i, index in enumerate(np.asarray(order).reshape(-1)):
        np.testing.assert_array_equal(alone.actions[i], batch.actions[index])
        np.testing.assert_allclose(alone.behaviour_logp[i], batch.behaviour_logp[index], atol=1e-6)


def test_new_version_gives_new_episodes(batch, tiny_episodes, tiny_state, tiny_components):
    indices = tiny_components.rollout.iteration_indices()
    next_version = tiny_episodes(
        tiny_state.meta_params, tiny_state.naive_params, tiny_state.run_key, tiny_state.version + 1, indices
    )
    assert not np.array_equal(next_version.actions, batch.actions)


def test_metrics_are_means_of_rewards(batch, tiny_config):
    c = tiny_config
    rewards = np.asarray(batch.rewards).reshape(
        batch.rewards.shape[0], c.batch_size, c.num_inner_episodes, c.env.inner_episode_length
    )
    np.testing.assert_allclose(batch.metrics["ego_reward"], rewards.mean(axis=(1, 3)), atol=1e-6)
    cooperate = 1.0 - np.asarray(batch.actions).reshape(rewards.shape)
    np.testing.assert_allclose(batch.metrics["cooperate_player_1"], cooperate.mean(axis=(1, 3)), atol=1e-6)
