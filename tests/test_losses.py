"""Tests of the PPO and A2C losses (paper App. A.4): element-wise numpy oracles, gradient equivalence
at ratio 1, and the ×B realisation of Eq. 5's Σ over b."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.rl.losses import LossOutput, a2c_loss, ppo_loss

PPO_HYPERPARAMETERS = dict(
    clip_epsilon=0.2,
    value_coefficient=0.5,
    clip_value=True,
    value_clip_epsilon=0.2,
    entropy_coefficient=0.01,
)


@pytest.fixture(autouse=True)
def _strict_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="module")
def jitted_ppo():
    return jax.jit(ppo_loss, static_argnames=("clip_epsilon", "value_clip_epsilon"))


def _episode(batch_size=3, length=4, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch_size, length)
    behaviour_logp = np.log(rng.uniform(0.2, 0.8, size=shape))
    behaviour_values = rng.normal(size=shape)
    return dict(
        # Ratios spread over [e^-0.5, e^0.5] so that some elements are clipped and some are not.
        logp=behaviour_logp + rng.uniform(-0.5, 0.5, size=shape),
        behaviour_logp=behaviour_logp,
        entropy=rng.uniform(0.1, 0.7, size=shape),
        values=behaviour_values + rng.uniform(-0.5, 0.5, size=shape),
        behaviour_values=behaviour_values,
        advantages=rng.normal(size=shape),
        value_targets=rng.normal(size=shape),
    )


def _as_jax(episode):
    return {k: jnp.asarray(v, jnp.float32) for k, v in episode.items()}


def ppo_oracle(
    episode,
    *,
    sum_over_batch,
    clip_epsilon,
    value_coefficient,
    clip_value,
    value_clip_epsilon,
    entropy_coefficient,
):
    """PPO (Schulman et al. 2017) written element by element with Python floats."""
    batch_size, length = episode["logp"].shape
    policy_terms, value_terms, kl_terms, clipped = [], [], [], []
    for b in range(batch_size):
        for t in range(length):
            ratio = math.exp(episode["logp"][b, t] - episode["behaviour_logp"][b, t])
            advantage = episode["advantages"][b, t]
            clipped_ratio = min(max(ratio, 1 - clip_epsilon), 1 + clip_epsilon)
            policy_terms.append(min(ratio * advantage, clipped_ratio * advantage))
            value, old_value = episode["values"][b, t], episode["behaviour_values"][b, t]
            target = episode["value_targets"][b, t]
            error = (value - target) ** 2
            if clip_value:
                step = min(max(value - old_value, -value_clip_epsilon), value_clip_epsilon)
                error = max(error, (old_value + step - target) ** 2)
            value_terms.append(error)
            kl_terms.append(ratio - 1 - math.log(ratio))
            clipped.append(abs(ratio - 1) > clip_epsilon)
    policy_loss = -np.mean(policy_terms) * (batch_size if sum_over_batch else 1)
    value_loss = 0.5 * np.mean(value_terms)
    entropy = np.mean(episode["entropy"])
    loss = policy_loss + value_coefficient * value_loss - entropy_coefficient * entropy
    return LossOutput(loss, policy_loss, value_loss, entropy, np.mean(kl_terms), np.mean(clipped))


@pytest.mark.parametrize("sum_over_batch", [False, True])
@pytest.mark.parametrize("clip_value", [False, True])
def test_ppo_matches_elementwise_oracle(jitted_ppo, sum_over_batch, clip_value):
    episode = _episode(seed=1)
    hyper = dict(PPO_HYPERPARAMETERS, clip_value=clip_value)
    got = jitted_ppo(**_as_jax(episode), sum_over_batch=sum_over_batch, **hyper)
    expected = ppo_oracle(episode, sum_over_batch=sum_over_batch, **hyper)
    for name, g, e in zip(LossOutput._fields, got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=name)
    # The random episode must exercise both clipping branches, or the test proves little.
    assert 0.0 < float(got.clip_fraction) < 1.0


def test_ppo_hand_computed_single_element():
    # ρ = e^{0.5} ≈ 1.6487 clipped to 1.2 with A = 2: surrogate min(3.297, 2.4) = 2.4.
    # V = 1.5, V_μ = 1, G = 0: unclipped 2.25, clipped (1 + 0.2)² = 1.44; max 2.25 → value loss
    # 1.125.
    # loss = −2.4 + 0.5·1.125 − 0.1·0.3 = −1.8675.
    one = lambda x: jnp.array([[x]], jnp.float32)
    out = ppo_loss(
        one(0.5),
        one(0.0),
        one(0.3),
        one(1.5),
        one(1.0),
        one(2.0),
        one(0.0),
        sum_over_batch=False,
        clip_epsilon=0.2,
        value_coefficient=0.5,
        clip_value=True,
        value_clip_epsilon=0.2,
        entropy_coefficient=0.1,
    )
    np.testing.assert_allclose(out.policy_loss, -2.4, rtol=1e-6)
    np.testing.assert_allclose(out.value_loss, 1.125, rtol=1e-6)
    np.testing.assert_allclose(out.loss, -1.8675, rtol=1e-6)
    np.testing.assert_allclose(out.clip_fraction, 1.0)
    np.testing.assert_allclose(out.approx_kl, math.exp(0.5) - 1.5, rtol=1e-5)


@pytest.mark.parametrize("sum_over_batch", [False, True])
def test_a2c_matches_elementwise_oracle(sum_over_batch):
    episode = _episode(seed=2)
    batch_size = episode["logp"].shape[0]
    got = a2c_loss(
        **{
            k: jnp.asarray(episode[k], jnp.float32)
            for k in ("logp", "entropy", "values", "advantages", "value_targets")
        },
        sum_over_batch=sum_over_batch,
        value_coefficient=0.5,
        entropy_coefficient=0.01,
    )
    policy = -np.mean(episode["logp"] * episode["advantages"])
    policy *= batch_size if sum_over_batch else 1
    value = 0.5 * np.mean((episode["values"] - episode["value_targets"]) ** 2)
    entropy = np.mean(episode["entropy"])
    np.testing.assert_allclose(got.policy_loss, policy, rtol=1e-5)
    np.testing.assert_allclose(got.value_loss, value, rtol=1e-5)
    np.testing.assert_allclose(got.loss, policy + 0.5 * value - 0.01 * entropy, rtol=1e-5)
    assert float(got.approx_kl) == 0.0 and float(got.clip_fraction) == 0.0


@pytest.mark.parametrize("sum_over_batch", [False, True])
def test_ppo_gradient_at_ratio_one_equals_a2c_gradient(sum_over_batch):
    # At ρ = 1 (current = behaviour policy) and V = V_μ, ∇ of the PPO loss is the A2C gradient:
    # ∇ρ = ∇log π there, and neither clip is active.
    episode = _as_jax(_episode(seed=3))
    episode["logp"] = episode["behaviour_logp"]
    episode["values"] = episode["behaviour_values"]

    def ppo_total(logp, values, entropy):
        return ppo_loss(
            logp,
            episode["behaviour_logp"],
            entropy,
            values,
            episode["behaviour_values"],
            episode["advantages"],
            episode["value_targets"],
            sum_over_batch=sum_over_batch,
            **PPO_HYPERPARAMETERS,
        ).loss

    def a2c_total(logp, values, entropy):
        return a2c_loss(
            logp,
            entropy,
            values,
            episode["advantages"],
            episode["value_targets"],
            sum_over_batch=sum_over_batch,
            value_coefficient=0.5,
            entropy_coefficient=0.01,
        ).loss

    arguments = (episode["logp"], episode["values"], episode["entropy"])
    ppo_grads = jax.grad(ppo_total, argnums=(0, 1, 2))(*arguments)
    a2c_grads = jax.grad(a2c_total, argnums=(0, 1, 2))(*arguments)
    for p, a in zip(ppo_grads, a2c_grads, strict=True):
        np.testing.assert_allclose(p, a, rtol=1e-5, atol=1e-7)
    # And both equal the hand-derived policy gradient −n·A/(B·L).
    batch_size, length = episode["logp"].shape
    scale = batch_size if sum_over_batch else 1
    np.testing.assert_allclose(
        a2c_grads[0], -scale * episode["advantages"] / (batch_size * length), rtol=1e-5
    )


def test_sum_over_batch_scales_only_the_policy_term_by_batch_size():
    batch_size = 4
    episode = _as_jax(_episode(batch_size=batch_size, seed=4))
    mean_out = ppo_loss(**episode, sum_over_batch=False, **PPO_HYPERPARAMETERS)
    sum_out = ppo_loss(**episode, sum_over_batch=True, **PPO_HYPERPARAMETERS)
    np.testing.assert_allclose(sum_out.policy_loss, batch_size * mean_out.policy_loss, rtol=1e-6)
    np.testing.assert_allclose(sum_out.value_loss, mean_out.value_loss, rtol=1e-6)
    np.testing.assert_allclose(sum_out.entropy, mean_out.entropy, rtol=1e-6)
    np.testing.assert_allclose(
        sum_out.loss - mean_out.loss,
        (batch_size - 1) * mean_out.policy_loss,
        rtol=1e-5,
    )


def test_traced_sum_over_batch_under_vmap():
    # A meta-batch mixing a naive-opponent episode (Σ over b) with a meta-opponent one (mean).
    episodes = [_as_jax(_episode(seed=s)) for s in (5, 6)]
    stacked = {k: jnp.stack([e[k] for e in episodes]) for k in episodes[0]}
    is_naive = jnp.array([True, False])
    batched = jax.jit(
        jax.vmap(lambda ep, naive: ppo_loss(**ep, sum_over_batch=naive, **PPO_HYPERPARAMETERS))
    )
    got = batched(stacked, is_naive)
    for n, naive in enumerate([True, False]):
        expected = ppo_loss(**episodes[n], sum_over_batch=naive, **PPO_HYPERPARAMETERS)
        np.testing.assert_allclose(got.loss[n], expected.loss, rtol=1e-6)
        np.testing.assert_allclose(got.policy_loss[n], expected.policy_loss, rtol=1e-6)


def test_advantages_and_targets_carry_no_gradient():
    episode = _as_jax(_episode(seed=7))

    def loss_of(advantages, value_targets):
        return ppo_loss(
            **dict(episode, advantages=advantages, value_targets=value_targets),
            sum_over_batch=True,
            **PPO_HYPERPARAMETERS,
        ).loss

    grads = jax.grad(loss_of, argnums=(0, 1))(episode["advantages"], episode["value_targets"])
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)
