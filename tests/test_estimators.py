"""Tests of the estimators: TD errors, GAE advantages (Eq. 11–14), value targets, centring.

Oracles are Python loops written from the paper's equations (paper Eq. 10, Eq. 11–14, App. A.3, A.4), not from
Algorithm 1's recursion.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.rl.estimators import (
    ESTIMATORS,
    advantages,
    center_advantages,
    get_estimator,
    rule_flags,
    td_errors,
    value_targets,
)

SHAPES = [(1, 4, 2), (2, 6, 3), (3, 6, 2), (4, 5, 1)]


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="module")
def jitted_advantages():
    return jax.jit(advantages, static_argnames=("inner_episode_length", "stop_target_gradients"))


@pytest.fixture(scope="module")
def jitted_value_targets():
    return jax.jit(value_targets, static_argnames=("inner_episode_length", "stop_target_gradients"))


def _random_inputs(batch_size, length, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(batch_size, length)).astype(np.float32)
    values = rng.normal(size=(batch_size, length)).astype(np.float32)
    return rewards, values


def _value_or_terminal(values, b, step):
    """V̂(h_step) of trajectory b; 0 beyond the end of the meta-trajectory."""
    return values[b, step] if step < values.shape[1] else 0.0


def eq13_14_oracle(rewards, values, inner_episode_length):
    """COALA advantage against a naive learner, Eq. 13–14 (γ = λ_gae = 1), as explicit sums.

    Aᵇₗ = (1/B) Σ_{k=l}^{e} rᵇₖ + (1/B) Σ_{b'} Σ_{k>e} rᵇ'ₖ − (1/B) V̂(hᵇₗ)
          − (1/B) Σ_{b'≠b} V̂(hᵇ'_{e+1}),   e = last step of l's inner episode, V̂ beyond L = 0.
    """
    batch_size, length = rewards.shape
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            end = (step // inner_episode_length + 1) * inner_episode_length - 1
            own_current = sum(rewards[b, k] for k in range(step, end + 1))
            all_future = sum(
                rewards[other, k] for other in range(batch_size) for k in range(end + 1, length)
            )
            others_next_start = sum(
                _value_or_terminal(values, other, end + 1)
                for other in range(batch_size)
                if other != b
            )
            out[b, step] = (
                own_current + all_future - values[b, step] - others_next_start
            ) / batch_size
    return out


def gae_oracle(rewards, values, discount, gae_lambda):
    """Per-trajectory GAE (Schulman et al. 2016): Aₜ = Σ_{k≥t} (γλ)^{k−t} δₖ, V̂ beyond L = 0."""
    batch_size, length = rewards.shape
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            for k in range(step, length):
                delta = (
                    rewards[b, k] + discount * _value_or_terminal(values, b, k + 1) - values[b, k]
                )
                out[b, step] += (discount * gae_lambda) ** (k - step) * delta
    return out


def td_lambda_target_oracle(rewards, values, discount, lambda_):
    """Forward-view TD(λ) targets for V̂(hₜ): (1−λ) Σ_n λ^{n−1} G^{(n)}_t + λ^{N−1} G^{(N)}_t."""
    batch_size, length = rewards.shape
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            horizon = length - step

            def n_step(n, b=b, step=step):
                reward_sum = sum(discount**k * rewards[b, step + k] for k in range(n))
                return reward_sum + discount**n * _value_or_terminal(values, b, step + n)

            mixture = sum((1 - lambda_) * lambda_ ** (n - 1) * n_step(n) for n in range(1, horizon))
            out[b, step] = mixture + lambda_ ** (horizon - 1) * n_step(horizon)
    return out


# ----------------------------------------------------------------------------- rule_flags


def test_rule_flags_follow_the_table():
    # (average future episodes, own current episode / B, Σ over the B trajectories): Algorithm 1's switches and Eq. 5
    # for COALA-PG; Eq. 7 for M-FOS, which sums over B in the M-FOS code's reading and averages in the other.
    table = {
        "coala": (True, True, True),
        "mfos": (True, False, True),
        "batch_unaware": (False, False, False),
        "mfos_mean": (True, False, False),
    }
    for name, flags in table.items():
        assert tuple(bool(f) for f in rule_flags(name)) == flags
    per_agent = rule_flags(["coala", "mfos", "batch_unaware"])  # one rule per meta agent: [P] arrays
    assert [f.shape for f in per_agent] == [(3,)] * 3
    np.testing.assert_array_equal(np.stack(per_agent, axis=1), [table[n] for n in ("coala", "mfos", "batch_unaware")])
    assert set(ESTIMATORS) == {"coala", "mfos", "batch_unaware", "mfos_mean", "lola_dice"}
    assert [n for n in ESTIMATORS if get_estimator(n).lola_dice] == ["lola_dice"]


def test_unknown_estimator_lists_valid_names():
    with pytest.raises(ValueError, match="coala.*mfos.*batch_unaware"):
        rule_flags("lola")


# ----------------------------------------------------------------------------- td_errors


def test_td_errors_cross_inner_boundaries_and_end_at_zero():
    # One trajectory, two inner episodes of length 2, γ = 0.5. Hand-computed:
    # δ₀ = 1 + 0.5·20 − 10 = 1, δ₁ = 2 + 0.5·30 − 20 = −3 (bootstraps into the next inner episode),
    # δ₂ = 3 + 0.5·40 − 30 = −7, δ₃ = 4 + 0.5·0 − 40 = −36 (terminal).
    rewards = jnp.array([[1.0, 2.0, 3.0, 4.0]])
    values = jnp.array([[10.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(td_errors(rewards, values, 0.5), [[1.0, -3.0, -7.0, -36.0]])


# ----------------------------------------------------------------------------- advantages


@pytest.mark.parametrize("batch_size,length,inner_episode_length", SHAPES)
def test_coala_advantages_equal_eq13_14(
    jitted_advantages, batch_size, length, inner_episode_length
):
    rewards, values = _random_inputs(batch_size, length, seed=batch_size * 13 + length)
    got = jitted_advantages(
        jnp.asarray(rewards),
        jnp.asarray(values),
        average_future_episodes=True,
        normalize_current_episode=True,
        discount=1.0,
        gae_lambda=1.0,
        inner_episode_length=inner_episode_length,
    )
    np.testing.assert_allclose(
        got, eq13_14_oracle(rewards, values, inner_episode_length), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("batch_size,length,inner_episode_length", SHAPES)
def test_batch_unaware_advantages_are_per_trajectory_gae(
    jitted_advantages, batch_size, length, inner_episode_length
):
    rewards, values = _random_inputs(batch_size, length, seed=batch_size * 17 + length)
    discount, gae_lambda = 0.95, 0.8
    got = jitted_advantages(
        jnp.asarray(rewards),
        jnp.asarray(values),
        average_future_episodes=False,
        normalize_current_episode=False,
        discount=discount,
        gae_lambda=gae_lambda,
        inner_episode_length=inner_episode_length,
    )
    np.testing.assert_allclose(
        got, gae_oracle(rewards, values, discount, gae_lambda), rtol=1e-5, atol=1e-5
    )


def test_advantages_with_traced_flags_under_vmap(jitted_advantages):
    # One meta-batch: episode 0 against a naive learner (COALA), episode 1 against a meta agent.
    batch_size, length, inner_episode_length = 3, 6, 2
    rng = np.random.default_rng(21)
    rewards = rng.normal(size=(2, batch_size, length)).astype(np.float32)
    values = rng.normal(size=(2, batch_size, length)).astype(np.float32)
    is_naive = jnp.array([True, False])
    batched = jax.jit(
        jax.vmap(
            lambda r, v, naive: advantages(
                r,
                v,
                average_future_episodes=naive,
                normalize_current_episode=naive,
                discount=1.0,
                gae_lambda=1.0,
                inner_episode_length=inner_episode_length,
            )
        )
    )
    got = batched(jnp.asarray(rewards), jnp.asarray(values), is_naive)
    np.testing.assert_allclose(
        got[0], eq13_14_oracle(rewards[0], values[0], inner_episode_length), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        got[1], gae_oracle(rewards[1], values[1], 1.0, 1.0), rtol=1e-5, atol=1e-5
    )


def test_advantages_carry_no_gradient_by_default():
    rewards, values = _random_inputs(2, 4, seed=2)

    def total(v):
        return jnp.sum(
            advantages(
                jnp.asarray(rewards),
                v,
                average_future_episodes=True,
                normalize_current_episode=True,
                discount=1.0,
                gae_lambda=1.0,
                inner_episode_length=2,
            )
        )

    np.testing.assert_array_equal(jax.grad(total)(jnp.asarray(values)), 0.0)


# ----------------------------------------------------------------------------- value_targets


@pytest.mark.parametrize("batch_size,length,inner_episode_length", SHAPES)
def test_value_targets_are_forward_view_td_lambda(
    jitted_value_targets, batch_size, length, inner_episode_length
):
    rewards, values = _random_inputs(batch_size, length, seed=batch_size * 19 + length)
    discount, td_lambda = 0.9, 0.6
    got = jitted_value_targets(
        jnp.asarray(rewards),
        jnp.asarray(values),
        discount=discount,
        td_lambda=td_lambda,
        inner_episode_length=inner_episode_length,
    )
    np.testing.assert_allclose(
        got, td_lambda_target_oracle(rewards, values, discount, td_lambda), rtol=1e-5, atol=1e-5
    )


def test_value_targets_with_batch_averaged_future():
    # γ = λ_td = 1: own rest of the current inner episode + batch mean of the future episodes
    # (Eq. 9's merged expectation); with λ = 1 and a terminal value 0 the values drop out.
    batch_size, length, inner_episode_length = 3, 6, 2
    rewards, values = _random_inputs(batch_size, length, seed=23)
    got = value_targets(
        jnp.asarray(rewards),
        jnp.asarray(values),
        discount=1.0,
        td_lambda=1.0,
        inner_episode_length=inner_episode_length,
        average_future_episodes=True,
    )
    expected = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            end = (step // inner_episode_length + 1) * inner_episode_length - 1
            expected[b, step] = rewards[b, step : end + 1].sum() + rewards[:, end + 1 :].sum() / 3
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- centring


def _centering_oracle(adv, is_naive, divide_by_std):
    out = np.array(adv, dtype=np.float64)
    for group in (is_naive, ~is_naive):
        if group.any():
            members = adv[group]
            out[group] = members - members.mean()
            if divide_by_std:
                out[group] /= members.std() + 1e-8
    return out


@pytest.mark.parametrize("divide_by_std", [False, True])
@pytest.mark.parametrize(
    "is_naive", [[True, False, True, False, False], [True] * 5, [False] * 5], ids=str
)
def test_center_advantages_per_opponent_type(divide_by_std, is_naive):
    rng = np.random.default_rng(3)
    is_naive = np.array(is_naive)
    # Different offsets per group so a single global mean would be visibly wrong.
    adv = rng.normal(size=(5, 2, 3)) + np.where(is_naive, 5.0, -3.0)[:, None, None]
    got = center_advantages(
        jnp.asarray(adv, jnp.float32), jnp.asarray(is_naive), divide_by_std=divide_by_std
    )
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(
        got, _centering_oracle(adv, is_naive, divide_by_std), rtol=1e-5, atol=1e-5
    )
    for group in (is_naive, ~is_naive):
        if group.any():
            np.testing.assert_allclose(np.mean(np.asarray(got)[group]), 0.0, atol=1e-5)
