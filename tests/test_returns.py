"""Tests of Algorithm 1, `batch_lambda_returns` (paper Algorithm 1, Eq. 5).

Every oracle below is a double Python loop over (trajectory b, step l) written from an equation —
Eq. 5, the M-FOS rule, the forward view of TD(λ) — never from the backward recursion under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.rl.returns import batch_lambda_returns

# (batch size B, meta-trajectory length L, inner episode length T), L a multiple of T.
SHAPES = [(1, 4, 2), (2, 6, 3), (3, 6, 2), (4, 5, 1), (3, 4, 4)]


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="module")
def jitted_returns():
    return jax.jit(
        batch_lambda_returns, static_argnames=("inner_episode_length", "stop_target_gradients")
    )


@pytest.fixture(params=["no_jit", "jit"])
def returns_fn(request, jitted_returns):
    """Runs each test with and without jit (chex.all_variants in rlax's tests)."""
    return batch_lambda_returns if request.param == "no_jit" else jitted_returns


def _random_inputs(batch_size, length, seed):
    rng = np.random.default_rng(seed)
    rewards = rng.normal(size=(batch_size, length)).astype(np.float32)
    next_values = rng.normal(size=(batch_size, length)).astype(np.float32)
    return rewards, next_values


def _last_step_of_episode(step, inner_episode_length):
    """0-based index of the last step of the inner episode containing `step` (T·m_l − 1)."""
    return (step // inner_episode_length + 1) * inner_episode_length - 1


def eq5_oracle(rewards, inner_episode_length, *, normalize_current_episode):
    """Eq. 5's return weight with γ = λ = 1, written as sums over (b', l').

    COALA: (1/B) Σ_{l'=l}^{T m_l} r^b_{l'} + (1/B) Σ_{b'} Σ_{l' > T m_l} r^{b'}_{l'};
    M-FOS: the same without the 1/B on the first (own, current-episode) sum.
    """
    batch_size, length = rewards.shape
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            end = _last_step_of_episode(step, inner_episode_length)
            current = sum(rewards[b, k] for k in range(step, end + 1))
            future = sum(
                rewards[other, k] for other in range(batch_size) for k in range(end + 1, length)
            )
            current_weight = 1.0 / batch_size if normalize_current_episode else 1.0
            out[b, step] = current_weight * current + future / batch_size
    return out


def discounted_eq5_oracle(
    rewards, terminal_values, discount, inner_episode_length, *, normalize_current_episode
):
    """Eq. 5 with discounting (λ = 1, the GAE setting) and a bootstrap after the last step.

    Gᵇₗ = w Σ_{k=l}^{e} γ^{k−l} rᵇₖ + γ^{e+1−l} (1/B) Σ_{b'} [Σ_{k=e+1}^{L−1} γ^{k−e−1} rᵇ'ₖ
          + γ^{L−e−1} vᵇ'_{L−1}],  e = T m_l − 1 (0-based), w = 1/B (COALA) or 1 (M-FOS).
    The terminal bootstrap lies beyond the current episode, so it enters averaged over the batch.
    """
    batch_size, length = rewards.shape
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            end = _last_step_of_episode(step, inner_episode_length)
            current = sum(discount ** (k - step) * rewards[b, k] for k in range(step, end + 1))
            future = 0.0
            for other in range(batch_size):
                future += sum(
                    discount ** (k - end - 1) * rewards[other, k] for k in range(end + 1, length)
                )
                future += discount ** (length - end - 1) * terminal_values[other]
            current_weight = 1.0 / batch_size if normalize_current_episode else 1.0
            out[b, step] = (
                current_weight * current + discount ** (end + 1 - step) * future / batch_size
            )
    return out


def forward_view_td_lambda_oracle(rewards, next_values, discount, lambda_):
    """Per-trajectory TD(λ) returns from the forward view (Sutton & Barto §12.1).

    G^λ_t = (1−λ) Σ_{n=1}^{N−1} λ^{n−1} G^{(n)}_t + λ^{N−1} G^{(N)}_t with N = L − t and the n-step
    return G^{(n)}_t = Σ_{k=0}^{n−1} γ^k r_{t+k} + γ^n V(h_{t+n}), V(h_{t+n}) = next_values[t+n−1].
    """
    batch_size, length = rewards.shape
    out = np.zeros((batch_size, length))
    for b in range(batch_size):
        for step in range(length):
            horizon = length - step

            def n_step_return(n, b=b, step=step):
                reward_sum = sum(discount**k * rewards[b, step + k] for k in range(n))
                return reward_sum + discount**n * next_values[b, step + n - 1]

            mixture = sum(
                (1 - lambda_) * lambda_ ** (n - 1) * n_step_return(n) for n in range(1, horizon)
            )
            out[b, step] = mixture + lambda_ ** (horizon - 1) * n_step_return(horizon)
    return out


def test_hand_computed_two_by_two(returns_fn):
    # B = 2 trajectories, two 1-step inner episodes, γ = λ = 1, zero terminal value.
    # COALA, b = 0, l = 0: own current 1/2 + batch-mean future (2 + 4)/2 = 3.5; l = 1: 2/2 = 1.
    rewards = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    zeros = jnp.zeros_like(rewards)
    coala = returns_fn(rewards, zeros, 1.0, 1.0, True, True, inner_episode_length=1)
    np.testing.assert_allclose(coala, [[3.5, 1.0], [4.5, 2.0]])
    mfos = returns_fn(rewards, zeros, 1.0, 1.0, True, False, inner_episode_length=1)
    np.testing.assert_allclose(mfos, [[4.0, 2.0], [6.0, 4.0]])
    unaware = returns_fn(rewards, zeros, 1.0, 1.0, False, False, inner_episode_length=1)
    np.testing.assert_allclose(unaware, [[3.0, 2.0], [7.0, 4.0]])


@pytest.mark.parametrize("batch_size,length,inner_episode_length", SHAPES)
@pytest.mark.parametrize("normalize_current_episode", [True, False], ids=["coala", "mfos"])
def test_matches_eq5_with_unit_discount(
    returns_fn, batch_size, length, inner_episode_length, normalize_current_episode
):
    rewards, next_values = _random_inputs(batch_size, length, seed=batch_size * 100 + length)
    next_values[:, -1] = 0.0  # the meta-trajectory ends: terminal value 0
    got = returns_fn(
        jnp.asarray(rewards),
        jnp.asarray(next_values),
        1.0,
        1.0,
        True,
        normalize_current_episode,
        inner_episode_length=inner_episode_length,
    )
    expected = eq5_oracle(
        rewards, inner_episode_length, normalize_current_episode=normalize_current_episode
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size,length,inner_episode_length", SHAPES)
@pytest.mark.parametrize("normalize_current_episode", [True, False], ids=["coala", "mfos"])
def test_matches_discounted_eq5_with_bootstrap(
    returns_fn, batch_size, length, inner_episode_length, normalize_current_episode
):
    rewards, next_values = _random_inputs(batch_size, length, seed=batch_size * 7 + length)
    discount = 0.9
    got = returns_fn(
        jnp.asarray(rewards),
        jnp.asarray(next_values),
        discount,
        1.0,
        True,
        normalize_current_episode,
        inner_episode_length=inner_episode_length,
    )
    expected = discounted_eq5_oracle(
        rewards,
        next_values[:, -1],
        discount,
        inner_episode_length,
        normalize_current_episode=normalize_current_episode,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_size,length,inner_episode_length", SHAPES)
def test_unaware_flags_are_per_trajectory_td_lambda(
    returns_fn, batch_size, length, inner_episode_length
):
    rewards, next_values = _random_inputs(batch_size, length, seed=batch_size + 31 * length)
    discount, lambda_ = 0.9, 0.7
    got = returns_fn(
        jnp.asarray(rewards),
        jnp.asarray(next_values),
        discount,
        lambda_,
        False,
        False,
        inner_episode_length=inner_episode_length,
    )
    expected = forward_view_td_lambda_oracle(rewards, next_values, discount, lambda_)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags", [(True, True), (True, False), (False, False)])
def test_batch_of_one_reduces_to_td_lambda_for_every_rule(returns_fn, flags):
    # With B = 1 the batch average is the trajectory itself and 1/B = 1: all rules coincide.
    rewards, next_values = _random_inputs(1, 6, seed=5)
    discount, lambda_ = 0.95, 0.6
    got = returns_fn(
        jnp.asarray(rewards),
        jnp.asarray(next_values),
        discount,
        lambda_,
        *flags,
        inner_episode_length=2,
    )
    expected = forward_view_td_lambda_oracle(rewards, next_values, discount, lambda_)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_coala_differs_from_unaware_when_batch_exceeds_one():
    # Guards against an implementation that ignores the flags (the oracles above would then fail
    # too, but this names the failure directly).
    rewards, next_values = _random_inputs(3, 6, seed=9)
    args = (jnp.asarray(rewards), jnp.asarray(next_values), 1.0, 1.0)
    coala = batch_lambda_returns(*args, True, True, 3)
    unaware = batch_lambda_returns(*args, False, False, 3)
    assert not np.allclose(coala, unaware, atol=1e-3)


def test_traced_flags_under_vmap_equal_python_flags(jitted_returns):
    # The learner vmaps over a meta-batch whose episodes use different flags.
    flag_table = [(True, True), (True, False), (False, False), (False, True)]
    num_episodes, batch_size, length, inner_episode_length = len(flag_table), 3, 6, 2
    rng = np.random.default_rng(11)
    rewards = rng.normal(size=(num_episodes, batch_size, length)).astype(np.float32)
    next_values = rng.normal(size=(num_episodes, batch_size, length)).astype(np.float32)
    average_future = jnp.array([f[0] for f in flag_table])
    normalize_current = jnp.array([f[1] for f in flag_table])

    batched = jax.jit(
        jax.vmap(
            lambda r, v, avg, norm: batch_lambda_returns(
                r, v, 0.97, 0.8, avg, norm, inner_episode_length
            )
        )
    )
    got = batched(jnp.asarray(rewards), jnp.asarray(next_values), average_future, normalize_current)
    for n, (avg, norm) in enumerate(flag_table):
        expected = batch_lambda_returns(
            jnp.asarray(rewards[n]),
            jnp.asarray(next_values[n]),
            0.97,
            0.8,
            avg,
            norm,
            inner_episode_length,
        )
        np.testing.assert_allclose(got[n], expected, rtol=1e-6, atol=1e-6)


def test_traced_discount_and_lambda(jitted_returns):
    rewards, next_values = _random_inputs(2, 4, seed=3)
    got = jitted_returns(
        jnp.asarray(rewards),
        jnp.asarray(next_values),
        jnp.float32(0.8),
        jnp.float32(0.5),
        jnp.bool_(False),
        jnp.bool_(False),
        inner_episode_length=2,
    )
    expected = forward_view_td_lambda_oracle(rewards, next_values, 0.8, 0.5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stop_target_gradients", [True, False])
def test_stop_target_gradients(stop_target_gradients):
    rewards, next_values = _random_inputs(2, 4, seed=4)

    def total_return(r):
        return jnp.sum(
            batch_lambda_returns(
                r,
                jnp.asarray(next_values),
                1.0,
                1.0,
                True,
                True,
                2,
                stop_target_gradients=stop_target_gradients,
            )
        )

    grad = jax.grad(total_return)(jnp.asarray(rewards))
    assert np.all(grad == 0.0) == stop_target_gradients


def test_rejects_length_not_a_multiple_of_inner_episode_length():
    rewards = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match="inner_episode_length=2"):
        batch_lambda_returns(rewards, rewards, 1.0, 1.0, True, True, 2)


def test_rejects_time_major_vectors():
    with pytest.raises(AssertionError):
        batch_lambda_returns(jnp.zeros(4), jnp.zeros(4), 1.0, 1.0, True, True, 2)
