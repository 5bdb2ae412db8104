"""Tests of the exact analytic IPD (paper Sec. 4, App. C, Eq. 4, 15–18) and of its experiment pipeline.

Every quantity is checked against an independent computation written here from the paper's definitions: a Monte
Carlo simulation of the two tabular policies, a truncated power series Σ γᵗ Mᵗ s0 built with explicit loops over
joint actions, finite differences, Python loops of naive steps, the Press–Dyson payoff relation and a brute-force
grid search.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import results_snapshot

from coala_dist.compat import enable_x64
from coala_dist.envs import analytic_ipd as ipd
from coala_dist.rl import analytic_rules as rules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 1 written out by hand: (own action, other action) -> own payoff; 0 = cooperate, 1 = defect.
PAYOFF = {(0, 0): 1.0, (0, 1): -1.0, (1, 0): 2.0, (1, 1): 0.0}


# ---------------------------------------------------------------------------------------------------------------
# Independent numpy oracles (float64), written from paper Sec. 4, App. C.


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def oracle_transition(logits_1, logits_2):
    """[4, 4] M[next, previous] by explicit loops; each player reads the previous joint action as (own, other)."""
    markov = np.zeros((4, 4))
    for a1 in (0, 1):
        for a2 in (0, 1):
            previous = 2 * a1 + a2
            cooperate_1 = _sigmoid(logits_1[1 + 2 * a1 + a2])
            cooperate_2 = _sigmoid(logits_2[1 + 2 * a2 + a1])  # player 2's own action first
            for b1 in (0, 1):
                for b2 in (0, 1):
                    p1 = cooperate_1 if b1 == 0 else 1 - cooperate_1
                    p2 = cooperate_2 if b2 == 0 else 1 - cooperate_2
                    markov[2 * b1 + b2, previous] = p1 * p2
    return markov


def oracle_start(logits_1, logits_2):
    c1, c2 = _sigmoid(logits_1[0]), _sigmoid(logits_2[0])
    return np.array([c1 * c2, c1 * (1 - c2), (1 - c1) * c2, (1 - c1) * (1 - c2)])


def oracle_average_reward(logits_1, logits_2, gamma, horizon=None):
    """(1 − γ) Σ_{t<horizon} γᵗ r·Mᵗ s0 for both players, by a truncated power series (no linear solve)."""
    horizon = horizon or int(math.ceil(np.log(1e-13) / np.log(gamma)))
    markov, state = oracle_transition(logits_1, logits_2), oracle_start(logits_1, logits_2)
    reward_1 = np.array([PAYOFF[(a1, a2)] for a1 in (0, 1) for a2 in (0, 1)])
    reward_2 = np.array([PAYOFF[(a2, a1)] for a1 in (0, 1) for a2 in (0, 1)])
    total, discount = np.zeros(4), 1.0
    for _ in range(horizon):
        total += discount * state
        state, discount = markov @ state, discount * gamma
    return (1 - gamma) * reward_1 @ total, (1 - gamma) * reward_2 @ total


def oracle_gradient(function, x, step=1e-6):
    """Central finite differences of a scalar numpy function of a 1-D float64 array."""
    x = np.asarray(x, np.float64)
    gradient = np.zeros_like(x)
    for i in range(x.size):
        offset = np.zeros_like(x)
        offset[i] = step
        gradient[i] = (function(x + offset) - function(x - offset)) / (2 * step)
    return gradient


def oracle_naive_trajectory(logits_agent, logits_naive, gamma, learning_rate, num_steps):
    """Naive learner as a Python loop of finite-difference gradient steps on its own average reward."""
    trajectory = [np.asarray(logits_naive, np.float64)]
    for _ in range(num_steps):
        own = lambda x: oracle_average_reward(x, logits_agent, gamma)[0]  # the naive learner in seat 1
        trajectory.append(trajectory[-1] + learning_rate * oracle_gradient(own, trajectory[-1]))
    return trajectory


def oracle_shaping_objective(logits_agent, logits_naive, gamma, learning_rate, num_steps):
    trajectory = oracle_naive_trajectory(logits_agent, logits_naive, gamma, learning_rate, num_steps)
    return np.mean([oracle_average_reward(logits_agent, naive, gamma)[0] for naive in trajectory])


def oracle_lola_objective(logits_agent, logits_other, gamma, learning_rate, look_ahead):
    trajectory = oracle_naive_trajectory(logits_agent, logits_other, gamma, learning_rate, look_ahead)
    return oracle_average_reward(logits_agent, trajectory[-1], gamma)[0]


def _random_logits(seed, shape=(5,), scale=1.5):
    return np.random.default_rng(seed).normal(0.0, scale, shape)


# ---------------------------------------------------------------------------------------------------------------
# The model.


def test_exact_return_matches_monte_carlo_simulation():
    # Given two random tabular policies, simulate N games of H rounds and discount the payoffs.
    logits_1, logits_2, gamma = _random_logits(0), _random_logits(1), 0.9
    num_games, horizon = 20_000, 120  # γ^120 ≈ 3e-6: truncation far below the Monte Carlo error
    rng = np.random.default_rng(2)
    returns = np.zeros((num_games, 2))
    cooperate_1 = rng.random(num_games) < _sigmoid(logits_1[0])
    cooperate_2 = rng.random(num_games) < _sigmoid(logits_2[0])
    for t in range(horizon):
        a1, a2 = (~cooperate_1).astype(int), (~cooperate_2).astype(int)
        returns[:, 0] += gamma**t * np.where(a1 == 0, np.where(a2 == 0, 1.0, -1.0), np.where(a2 == 0, 2.0, 0.0))
        returns[:, 1] += gamma**t * np.where(a2 == 0, np.where(a1 == 0, 1.0, -1.0), np.where(a1 == 0, 2.0, 0.0))
        next_1 = rng.random(num_games) < _sigmoid(logits_1[1 + 2 * a1 + a2])
        next_2 = rng.random(num_games) < _sigmoid(logits_2[1 + 2 * a2 + a1])
        cooperate_1, cooperate_2 = next_1, next_2
    # When the exact discounted returns are computed, Then they lie within 4 standard errors of the simulation.
    exact = np.array(ipd.discounted_return(jnp.asarray(logits_1), jnp.asarray(logits_2), gamma))
    standard_error = returns.std(0) / np.sqrt(num_games)
    np.testing.assert_array_less(np.abs(exact - returns.mean(0)), 4 * standard_error + 1e-4)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99])
def test_average_reward_matches_power_series_and_transition_loop(gamma):
    for seed in range(4):
        logits_1, logits_2 = _random_logits(seed), _random_logits(seed + 10)
        np.testing.assert_allclose(
            np.asarray(ipd.transition_matrix(jnp.asarray(logits_1), jnp.asarray(logits_2))),
            oracle_transition(logits_1, logits_2),
            atol=1e-6,
        )
        exact = ipd.average_reward(jnp.asarray(logits_1), jnp.asarray(logits_2), gamma)
        np.testing.assert_allclose(np.array(exact), oracle_average_reward(logits_1, logits_2, gamma), atol=2e-5)


def test_deterministic_pairs_earn_the_stage_payoffs():
    defect, cooperate = jnp.full(5, -30.0), jnp.full(5, 30.0)
    for gamma in (0.5, 0.95, 0.999):
        # float32: 1 − γ itself carries a relative error of ~1e-5 at γ = 0.999.
        np.testing.assert_allclose(ipd.average_reward(defect, defect, gamma), (0.0, 0.0), atol=1e-6)
        np.testing.assert_allclose(ipd.average_reward(cooperate, cooperate, gamma), (1.0, 1.0), atol=1e-4)
        np.testing.assert_allclose(ipd.average_reward(cooperate, defect, gamma), (-1.0, 2.0), atol=1e-4)
        # Unnormalised Eq. 15–16: mutual cooperation is worth Σ γᵗ = 1 / (1 − γ).
        np.testing.assert_allclose(ipd.discounted_return(cooperate, cooperate, gamma)[0], 1 / (1 - gamma), rtol=1e-4)


def test_tit_for_tat_against_defector_loses_only_the_first_round():
    tit_for_tat = ipd.logits_from_probabilities(jnp.array([1.0, 1.0, 0.0, 1.0, 0.0]), clip=1e-9)
    defect = jnp.full(5, -30.0)
    gamma = 0.9
    # Closed form: sucker payoff in round 0, then mutual defection: (1 − γ)·(−1).
    np.testing.assert_allclose(
        ipd.average_reward(tit_for_tat, defect, gamma), (-(1 - gamma), 2 * (1 - gamma)), atol=1e-5
    )


def test_seats_are_symmetric_and_visitation_is_a_distribution():
    for seed in range(3):
        a, b = jnp.asarray(_random_logits(seed)), jnp.asarray(_random_logits(seed + 5))
        first, second = ipd.average_reward(a, b, 0.95)
        swapped_first, swapped_second = ipd.average_reward(b, a, 0.95)
        np.testing.assert_allclose((first, second), (swapped_second, swapped_first), atol=1e-5)
        visitation = (1 - 0.95) * ipd.discounted_state_visitation(a, b, 0.95)
        np.testing.assert_allclose(jnp.sum(visitation), 1.0, atol=1e-5)
        cooperation_a, cooperation_b = ipd.cooperation_rates(a, b, 0.95)
        np.testing.assert_allclose(cooperation_a, ipd.cooperation_rates(b, a, 0.95)[1], atol=1e-5)
        assert 0 <= cooperation_a <= 1 and 0 <= cooperation_b <= 1


def test_solver_matches_lapack_on_diagonally_dominant_systems():
    rng = np.random.default_rng(3)
    for gamma in (0.5, 0.999):
        markov = rng.random((4, 4))
        markov /= markov.sum(0, keepdims=True)
        matrix = np.eye(4) - gamma * markov
        rhs = rng.random(4)
        solution = ipd.solve_diagonally_dominant(jnp.asarray(matrix, jnp.float32), jnp.asarray(rhs, jnp.float32))
        np.testing.assert_allclose(np.asarray(solution), np.linalg.solve(matrix, rhs), rtol=2e-3)


def test_partial_gradient_and_naive_step_match_finite_differences():
    gamma, learning_rate = 0.9, 3.0
    with enable_x64():
        for seed in range(3):
            own, other = _random_logits(seed), _random_logits(seed + 20)
            expected = oracle_gradient(lambda x, o=other: oracle_average_reward(x, o, gamma)[0], own)
            gradient = rules.partial_gradient(jnp.asarray(own), jnp.asarray(other), gamma)
            np.testing.assert_allclose(np.asarray(gradient), expected, atol=1e-7)
            stepped = rules.naive_step(jnp.asarray(own), jnp.asarray(other), gamma, learning_rate)
            np.testing.assert_allclose(np.asarray(stepped), own + learning_rate * expected, atol=1e-6)


def test_naive_learner_against_defector_learns_to_defect():
    # Against unconditional defection every cooperation costs S = −1, so gradient ascent lowers every logit.
    logits = jnp.asarray(_random_logits(4))
    trajectory = rules.naive_learning_trajectory(jnp.full(5, -5.0), logits, 0.9, 5.0, 50)
    assert trajectory.shape == (51, 5)
    rewards = jax.vmap(ipd.own_average_reward, in_axes=(0, None, None))(trajectory, jnp.full(5, -5.0), 0.9)
    assert np.all(np.diff(np.asarray(rewards)) > -1e-6)
    assert ipd.cooperation_rates(trajectory[-1], jnp.full(5, -5.0), 0.9)[0] < 0.05


def test_shaping_objective_and_gradient_match_loop_oracle():
    gamma, learning_rate, num_steps = 0.8, 2.0, 3
    agent, naive = _random_logits(5), _random_logits(6)
    with enable_x64():
        value = rules.shaping_objective(jnp.asarray(agent), jnp.asarray(naive), gamma, learning_rate, num_steps)
        expected = oracle_shaping_objective(agent, naive, gamma, learning_rate, num_steps)
        np.testing.assert_allclose(float(value), expected, atol=1e-8)
        # The gradient flows through the M naive updates: compare with finite differences of the loop oracle.
        gradient = rules.shaping_gradient(jnp.asarray(agent), jnp.asarray(naive[None]), gamma, learning_rate, num_steps)
        expected_gradient = oracle_gradient(
            lambda x: oracle_shaping_objective(x, naive, gamma, learning_rate, num_steps), agent, step=1e-4
        )
        np.testing.assert_allclose(np.asarray(gradient), expected_gradient, atol=2e-5)
        # Differentiating through the naive steps matters: the partial gradient alone is different.
        partial = np.mean(
            [
                oracle_gradient(lambda x, n=n: oracle_average_reward(x, n, gamma)[0], agent)
                for n in oracle_naive_trajectory(agent, naive, gamma, learning_rate, num_steps)
            ],
            axis=0,
        )
        assert np.max(np.abs(partial - expected_gradient)) > 1e-3


def test_lola_gradient_matches_finite_differences_and_reduces_to_partial_gradient():
    gamma, learning_rate = 0.95, 5.0
    agent, other = _random_logits(7), _random_logits(8)
    with enable_x64():
        for look_ahead in (1, 2):
            gradient = rules.lola_gradient(jnp.asarray(agent), jnp.asarray(other), gamma, learning_rate, look_ahead)
            expected = oracle_gradient(
                lambda x, k=look_ahead: oracle_lola_objective(x, other, gamma, learning_rate, k), agent, step=1e-4
            )
            np.testing.assert_allclose(np.asarray(gradient), expected, atol=2e-5)
        zero = rules.lola_gradient(jnp.asarray(agent), jnp.asarray(other), gamma, learning_rate, 0)
        np.testing.assert_allclose(zero, rules.partial_gradient(jnp.asarray(agent), jnp.asarray(other), gamma))


def test_mixed_group_gradient_is_the_convex_mixture():
    gamma, learning_rate, num_steps = 0.8, 2.0, 2
    agent, naive, coplayers = _random_logits(9), _random_logits(10, (2, 5)), _random_logits(11, (2, 5))
    with enable_x64():
        shaping = oracle_gradient(
            lambda x: np.mean([oracle_shaping_objective(x, n, gamma, learning_rate, num_steps) for n in naive]),
            agent,
            step=1e-4,
        )
        partial = np.mean(
            [oracle_gradient(lambda x, c=c: oracle_average_reward(x, c, gamma)[0], agent) for c in coplayers], axis=0
        )
        agent, naive, coplayers = (jnp.asarray(x) for x in (agent, naive, coplayers))
        mixed_gradient = jax.jit(rules.mixed_group_gradient, static_argnums=6)
        for p_naive in (0.0, 0.3, 1.0):
            mixed = mixed_gradient(agent, naive, coplayers, p_naive, gamma, learning_rate, num_steps)
            np.testing.assert_allclose(np.asarray(mixed), p_naive * shaping + (1 - p_naive) * partial, atol=3e-5)


# ---------------------------------------------------------------------------------------------------------------
# Zero-determinant strategies (Eq. 18).


def test_tit_for_tat_is_the_zd_member_with_chi_one():
    phi_max = ipd.zero_determinant_phi_max(1.0)
    np.testing.assert_allclose(phi_max, 1 / 3, rtol=1e-6)
    np.testing.assert_allclose(ipd.zero_determinant_strategy(1.0, phi_max), [1.0, 0.0, 1.0, 0.0], atol=1e-6)
    fit = ipd.fit_zero_determinant(jnp.array([1.0, 0.0, 1.0, 0.0]))
    np.testing.assert_allclose((fit.chi, fit.phi, fit.squared_error), (1.0, 1 / 3, 0.0), atol=1e-5)


@pytest.mark.parametrize("chi, phi", [(2.0, 0.1), (3.0, 0.14), (5.0, 0.05)])
def test_zd_extortioner_enforces_the_press_dyson_relation(chi, phi):
    # A ZD extortioner X fixes s_X − P = χ (s_Y − P) for every co-player Y (in the undiscounted limit γ → 1).
    with enable_x64():
        cooperate = np.asarray(ipd.zero_determinant_strategy(chi, phi))
        assert np.all((cooperate >= 0) & (cooperate <= 1))
        extortioner = ipd.logits_from_probabilities(jnp.asarray(np.concatenate([[0.5], cooperate])), clip=1e-12)
        for seed in range(3):
            coplayer = jnp.asarray(_random_logits(seed + 30))
            own, other = ipd.average_reward(extortioner, coplayer, 1 - 1e-7)
            np.testing.assert_allclose(own - ipd.PUNISHMENT, chi * (other - ipd.PUNISHMENT), atol=1e-4)


def test_zd_fit_recovers_members_and_beats_a_brute_force_grid():
    rng = np.random.default_rng(12)
    for chi, fraction in ((1.5, 0.5), (4.0, 0.9), (10.0, 0.3)):
        phi = fraction * float(ipd.zero_determinant_phi_max(chi))
        fit = ipd.fit_zero_determinant(ipd.zero_determinant_strategy(chi, phi))
        np.testing.assert_allclose((fit.chi, fit.phi), (chi, phi), rtol=2e-3)
        assert fit.squared_error < 1e-8
    # Brute force over χ ∈ [1, 60] × φ ∈ [0, φ_max(χ)], written from Eq. 18 with (T, R, P, S) = (2, 1, 0, −1).
    chis = np.concatenate([np.linspace(1, 10, 901), np.linspace(10, 60, 501)])[:, None]
    phis = np.linspace(0, 1, 801)[None, :] / (1 + 2 * chis)
    grid = np.stack([1 - phis * (chis - 1), 1 - phis * (1 + 2 * chis), phis * (chis + 2), 0 * phis], -1)
    for _ in range(5):
        cooperate = rng.random(4)
        brute = np.min(np.sum((grid - cooperate) ** 2, -1))
        fit = ipd.fit_zero_determinant(jnp.asarray(cooperate, jnp.float32))
        assert fit.squared_error <= brute + 1e-5
        assert fit.chi >= 1 and 0 <= fit.phi <= ipd.zero_determinant_phi_max(fit.chi) + 1e-6


# ---------------------------------------------------------------------------------------------------------------
# The experiment pipeline (tiny settings: it must run end to end; the science is in results/analytic/).


def _tiny_config() -> ml_collections.ConfigDict:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "analytic_ipd_config", os.path.join(REPO, "configs", "analytic_ipd.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.shaping.num_naive_steps = 2
    config.shaping.meta_batch_size = 2
    config.shaping.meta_learning_rate = 0.1  # visible progress within the 40 updates of Fig. 3A below
    config.fig3a.num_steps = 40
    config.fig3a.log_every = 2
    config.fig3a.num_random_policies = 2  # as many as seeds: one compiled ZD fit
    config.fig3b.num_shaping_steps = 3
    config.fig3b.num_mutual_steps = 3
    config.fig3b.turn_steps = 1
    config.fig3c.num_steps = 4
    config.fig3c.log_every = 2
    config.fig3c.p_naive = (0.0, 0.5)
    config.fig9.num_steps = 4
    config.fig9.log_every = 2
    config.fig9.p_naive = (0.0, 0.5)
    config.fig10.num_steps = 4
    config.fig10.log_every = 2
    config.fig4.num_steps = 3
    config.fig4.look_aheads = (1,)
    config.fig4.naive_learning_rates = (10.0,)
    config.fig4.lola_weights = (1.0,)  # the mixed variant reuses the pure run: one LOLA compile
    config.fig4.eval_num_naive = 2
    config.fig4.eval_naive_steps = 3
    return config


@pytest.fixture(scope="module")
def tiny_config():
    return _tiny_config()


def test_scan_with_logging_measures_before_every_chunk():
    from coala_dist.analytic import trainers

    keys = jnp.arange(12.0)
    # update adds the key; measure records (carry, key): a Python loop gives the expected log.
    carry, log = trainers.scan_with_logging(lambda c, k: c + k, lambda c, k: (c, k), 0.0, keys, 4)
    expected_carry, expected_log = 0.0, []
    for index, key in enumerate(np.arange(12.0)):
        if index % 4 == 0:
            expected_log.append((expected_carry, key))
        expected_carry += key
    assert float(carry) == expected_carry
    np.testing.assert_array_equal(np.stack(log, -1), np.array(expected_log))
    with pytest.raises(ValueError, match="multiple of log_every"):
        trainers.scan_with_logging(lambda c, k: c, lambda c, k: c, 0.0, keys, 5)


@pytest.mark.parametrize("figure", ["fig3a", "fig4"])
@pytest.mark.slow
def test_experiment_runs_and_plots(figure, tiny_config, tmp_path):
    from coala_dist.analysis import analytic_plots, analytic_report
    from coala_dist.analytic import figures

    result = figures.RUNNERS[figure](tiny_config, 2)
    assert result.name == figure and result.checks
    for check in result.checks:
        assert set(check) == {"claim", "criterion", "value", "passed"}
    numbers = [v for v in jax.tree_util.tree_leaves(result.summary) if isinstance(v, float)]
    assert numbers and np.all(np.isfinite(numbers))
    analytic_plots.PLOTTERS[figure](result, tmp_path / f"{figure}.png")
    assert (tmp_path / f"{figure}.png").stat().st_size > 1000
    analytic_report.write_result(result, tmp_path, f"coala analytic {figure}", 1.0, {"seed": 0})
    readme = analytic_report.write_readme(tmp_path).read_text()
    assert f"coala analytic {figure}" in readme and "| reproduced |" in readme
    if figure == "fig3a":
        # 40 meta updates must raise the agent's reward against naive learners: the updates ascend Eq. 17.
        curve = np.median(result.arrays["random/agent_reward"], 0)
        assert curve[-3:].mean() > curve[:3].mean() + 0.05


@pytest.mark.slow
def test_command_line_writes_results(tmp_path):
    overrides = [
        "--config.shaping.num_naive_steps=2",
        "--config.shaping.meta_batch_size=2",
        "--config.fig10.num_steps=4",
        "--config.fig10.log_every=2",
    ]
    before = results_snapshot()
    # Without --out, from a folder that is not the repository: the figures go to ./workdirs/analytic.
    completed = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "analytic", "fig10", "--seeds=2", *overrides],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = tmp_path / "workdirs" / "analytic"
    record = json.loads((out / "fig10.json").read_text())
    assert record["command"].startswith("coala analytic fig10 --seeds=2 --out=workdirs/analytic")
    assert record["settings"]["shaping"]["num_naive_steps"] == 2
    assert (out / "fig10.png").exists() and "fig10.png" in (out / "README.md").read_text()
    assert completed.stdout.strip().splitlines()[-1] == "wrote workdirs/analytic/README.md"
    assert results_snapshot() == before
    bad = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "analytic", "fig99"], capture_output=True, text=True, cwd=REPO
    )
    assert bad.returncode != 0 and "fig3a" in bad.stderr
