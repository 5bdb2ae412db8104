"""Naive learners: Monte Carlo returns and the A2C step (paper App. B.2, Table 8)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from coala_dist.networks.policy import HawkPolicy, init_policy_params
from coala_dist.rl.naive import NaiveLearner, discounted_returns
from coala_dist.rl.returns import batch_lambda_returns


def test_discounted_returns_brute_force():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 7)).astype(np.float32)
    gamma = 0.9
    expected = np.zeros_like(rewards)
    for b in range(3):
        for t in range(7):
            expected[b, t] = sum(gamma ** (k - t) * rewards[b, k] for k in range(t, 7))
    np.testing.assert_allclose(discounted_returns(jnp.asarray(rewards), gamma), expected, rtol=1e-5, atol=1e-6)


def test_discounted_returns_are_algorithm_1_without_its_switches():
    # The naive learner's Monte Carlo returns are Algorithm 1's batch λ-returns with λ = 1, a zero terminal value and
    # both switches off. The closed form (one matrix product) is kept for the naive step because a scan sums in
    # another order, which would change the trained parameters in their last bits.
    rng = np.random.default_rng(1)
    rewards = jnp.asarray(rng.normal(size=(4, 10)).astype(np.float32))
    recursive = batch_lambda_returns(
        rewards,
        jnp.zeros_like(rewards),
        discount=0.99,
        lambda_=1.0,
        average_future_episodes=False,
        normalize_current_episode=False,
        inner_episode_length=10,
    )
    np.testing.assert_allclose(discounted_returns(rewards, 0.99), recursive, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a2c_steps_learn_to_defect_against_a_defector():
    """A naive learner facing unconditional defection in the IPD should learn to defect (its best response)."""
    policy = HawkPolicy(num_actions=2, embed_dim=8, lru_width=8, mlp_width=8)
    learner = NaiveLearner(
        policy=policy,
        optimizer=optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.05)),
        discount=0.99,
        reward_scale=0.05,
        value_coefficient=0.5,
        entropy_coefficient=0.0,
        advantage_normalization=True,
    )
    from coala_dist.envs.ipd import IPD

    env = IPD(inner_episode_length=5)
    params = init_policy_params(policy, jax.random.PRNGKey(0), env.obs_dim)
    opt_state = learner.init(params)
    batch, length = 32, env.inner_episode_length

    @jax.jit
    def episode_and_update(params, opt_state, key):
        def step(carry, t):
            out, cache = carry
            policy_out, cache = policy.apply(
                {"params": params}, out.obs_player_1[:, None], jnp.full((batch, 1), t, jnp.int32), cache
            )
            action = jax.random.categorical(jax.random.fold_in(key, t), policy_out.logits[:, 0])
            nxt = env.step(out.state, action, jnp.ones_like(action))  # co-player always defects
            return (nxt, cache), (out.obs_player_1, action, nxt.reward_player_1)

        init = (env.reset(key, batch), policy.init_cache(batch))
        _, (obs, actions, rewards) = jax.lax.scan(step, init, jnp.arange(length))
        obs, actions, rewards = (jnp.swapaxes(x, 0, 1) for x in (obs, actions, rewards))
        params, opt_state = learner.update(params, opt_state, obs, actions, rewards)
        return params, opt_state, actions.mean()

    defect_rates = []
    for i in range(40):
        params, opt_state, defect_rate = episode_and_update(params, opt_state, jax.random.PRNGKey(i))
        defect_rates.append(float(defect_rate))
    assert np.mean(defect_rates[:3]) < 0.65  # starts near uniform (zero readouts)
    assert np.mean(defect_rates[-5:]) > 0.9, defect_rates
