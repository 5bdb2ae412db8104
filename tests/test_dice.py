"""DiCE and LOLA-DiCE against exact answers in the tabular IPD.

Every trajectory of T rounds between two memory-one policies is enumerated (4^T joint-action sequences), so the
expectation of a DiCE surrogate under the (stop-gradient) sampling distribution is an exact weighted sum. Its value
and derivatives must equal those of the exact finite-horizon return (a Markov-chain propagation, no DiCE), and the
LOLA gradient built from it must equal the analytic game's `lola_gradient` (infinite horizon: equal up to γ^T).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.compat import enable_x64
from coala_dist.envs import analytic_ipd as ipd
from coala_dist.rl import analytic_rules, dice

HORIZON = 7


@pytest.fixture(scope="module", autouse=True)
def _float64():
    with enable_x64():  # jax.enable_x64 on current jax, jax.experimental.enable_x64 on 0.4.34
        yield


def _all_trajectories(horizon: int) -> np.ndarray:
    """[4^T, T] every sequence of joint actions (player 1's order: 2·a¹ + a², 0 = cooperate)."""
    return np.array(list(itertools.product(range(4), repeat=horizon)), dtype=np.int32)


def _log_probs(logits: jax.Array, joint: jax.Array, player: int) -> jax.Array:
    """[N, T] log-probability of `player`'s own action at each step of each trajectory, under memory-one `logits`
    (logits[0] first round, logits[1 + s] after joint action s seen from the player's side)."""
    previous = jnp.concatenate([jnp.full((joint.shape[0], 1), -1), joint[:, :-1]], axis=1)
    if player == 1:
        own_action, state = joint // 2, previous
    else:
        own_action = joint % 2
        state = jnp.where(previous >= 0, jnp.asarray(ipd.PLAYER_2_VIEW)[jnp.maximum(previous, 0)], -1)
    logit = jnp.where(state >= 0, logits[1:][jnp.maximum(state, 0)], logits[0])
    return jnp.where(own_action == 0, jax.nn.log_sigmoid(logit), jax.nn.log_sigmoid(-logit))


def _expected_dice(logits_1, logits_2, gamma, player: int, baselines=None) -> jax.Array:
    """E over all trajectories of the player's normalised DiCE surrogate, weighted by their probability under the
    current parameters held fixed (what sampling would give)."""
    joint = jnp.asarray(_all_trajectories(HORIZON))
    log_probs = _log_probs(logits_1, joint, 1) + _log_probs(logits_2, joint, 2)
    weights = jax.lax.stop_gradient(jnp.exp(jnp.sum(log_probs, axis=1)))
    payoff = jnp.asarray(ipd.PAYOFF_PLAYER_1 if player == 1 else ipd.PAYOFF_PLAYER_2)
    rewards = (1 - gamma) * payoff[joint]
    per_trajectory = jax.vmap(
        lambda lp, r, b: dice.dice_objective(lp[None], r[None], gamma, None if b is None else b[None])
    )(log_probs, rewards, baselines)
    return jnp.sum(weights * per_trajectory)


def _exact_finite_return(logits_1, logits_2, gamma, player: int) -> jax.Array:
    """(1 − γ) Σ_{t<T} γᵗ rᵀ s_t with s_{t+1} = M s_t: the normalised return of the first T rounds, no sampling."""
    markov = ipd.transition_matrix(logits_1, logits_2)
    state = ipd.initial_state_distribution(logits_1, logits_2)
    payoff = jnp.asarray(ipd.PAYOFF_PLAYER_1 if player == 1 else ipd.PAYOFF_PLAYER_2)
    total = 0.0
    for t in range(HORIZON):
        total = total + gamma**t * payoff @ state
        state = markov @ state
    return (1 - gamma) * total


def _logits(seed: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=5)), jnp.asarray(rng.normal(size=5))


def test_magic_box_is_one_and_carries_every_derivative():
    x = jnp.asarray(0.7)
    assert dice.magic_box(x) == 1.0
    f = lambda v: dice.magic_box(3.0 * v**2)  # noqa: E731  d/dv = 6v·□, d²/dv² = (6 + 36v²)·□ at □ = 1
    np.testing.assert_allclose(jax.grad(f)(x), 6 * 0.7)
    np.testing.assert_allclose(jax.grad(jax.grad(f))(x), 6 + 36 * 0.7**2)


@pytest.mark.parametrize("player", [1, 2])
def test_expected_dice_has_the_exact_value_gradient_and_cross_hessian(player):
    logits_1, logits_2 = _logits(0)
    gamma = 0.6
    expected = lambda a, b: _expected_dice(a, b, gamma, player)  # noqa: E731
    exact = lambda a, b: _exact_finite_return(a, b, gamma, player)  # noqa: E731
    np.testing.assert_allclose(expected(logits_1, logits_2), exact(logits_1, logits_2), rtol=1e-10)
    for argnum in (0, 1):
        np.testing.assert_allclose(
            jax.grad(expected, argnum)(logits_1, logits_2), jax.grad(exact, argnum)(logits_1, logits_2), rtol=1e-9,
            atol=1e-12,
        )
    # The second-order term LOLA needs: ∂²J / ∂φ¹ ∂φ².
    cross = lambda f: jax.jacfwd(jax.grad(f, 0), 1)(logits_1, logits_2)  # noqa: E731
    np.testing.assert_allclose(cross(expected), cross(exact), rtol=1e-8, atol=1e-11)


def test_the_baseline_term_is_zero_and_leaves_the_expected_gradient_alone():
    logits_1, logits_2 = _logits(1)
    gamma = 0.6
    # A baseline may depend on the history before step t only: here a random value per (t, previous joint action).
    joint = _all_trajectories(HORIZON)
    previous = np.concatenate([np.full((joint.shape[0], 1), -1), joint[:, :-1]], axis=1)
    table = np.random.default_rng(2).normal(size=(HORIZON, 5))
    baselines = jnp.asarray(table[np.arange(HORIZON), previous + 1])
    plain = lambda a: _expected_dice(a, logits_2, gamma, 1)  # noqa: E731
    with_baseline = lambda a: _expected_dice(a, logits_2, gamma, 1, baselines)  # noqa: E731
    np.testing.assert_allclose(with_baseline(logits_1), plain(logits_1), rtol=1e-12)
    np.testing.assert_allclose(jax.grad(with_baseline)(logits_1), jax.grad(plain)(logits_1), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("steps", [0, 1, 2])
def test_lola_dice_gradient_is_the_analytic_lola_gradient(steps):
    # γ = 0.2: the T = 7 rounds hold all but 0.2⁷ ≈ 1.3e-5 of the infinite-horizon return.
    logits_1, logits_2 = _logits(3)
    gamma, learning_rate = 0.2, 2.0
    own = lambda a, b: _expected_dice(a, b, gamma, 1)  # noqa: E731
    # The co-player's objective is its own return with the seats swapped back (it is player 2 here).
    other = lambda a, b: _expected_dice(a, b, gamma, 2)  # noqa: E731
    got = dice.lola_dice_gradient(logits_1, logits_2, own, other, learning_rate, steps)
    analytic = analytic_rules.lola_gradient(logits_1, logits_2, gamma, learning_rate, steps)
    np.testing.assert_allclose(got, analytic, rtol=1e-3, atol=1e-4 * float(jnp.abs(analytic).max()))
    # Without the truncation: the same look-ahead on the exact T-round returns agrees to float precision.
    exact_own = lambda a, b: _exact_finite_return(a, b, gamma, 1)  # noqa: E731
    exact_other = lambda a, b: _exact_finite_return(a, b, gamma, 2)  # noqa: E731
    exact = dice.lola_dice_gradient(logits_1, logits_2, exact_own, exact_other, learning_rate, steps)
    np.testing.assert_allclose(got, exact, rtol=1e-8, atol=1e-12)
    # The look-ahead moved the co-player (k > 0), so the second-order term is not zero here.
    if steps:
        partial = analytic_rules.partial_gradient(logits_1, logits_2, gamma)
        assert float(jnp.abs(analytic - partial).max()) > 1e-2


def test_lola_look_ahead_refuses_negative_steps():
    with pytest.raises(ValueError, match="look-ahead steps must be >= 0"):
        dice.lola_look_ahead(jnp.zeros(5), jnp.zeros(5), lambda a, b: jnp.sum(a * b), 1.0, -1)
