"""IPD statistics of evaluation episodes against loops over their definitions and a known ZD strategy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coala_dist.analysis.ipd_statistics import cooperation_by_state, defection_rates, fit_extortion, pooled_probability
from coala_dist.envs import analytic_ipd


def test_cooperation_by_state_matches_a_loop():
    rng = np.random.default_rng(0)
    n, batch, num_inner, length = 3, 2, 4, 5
    steps = num_inner * length
    states = rng.integers(0, 5, size=(n, batch, steps))
    late = states[:, :, 2 * length :]
    states[:, :, 2 * length :] = np.where(late == 4, 3, late)  # DD is never seen in the last two inner episodes
    obs = np.eye(5)[states]
    actions = rng.integers(0, 2, size=(n, batch, steps))
    logp = np.log(rng.uniform(0.05, 0.95, size=(n, batch, steps)))
    probability, visits = cooperation_by_state(obs, actions, logp, length)
    for m in range(num_inner):
        for s in range(5):
            chosen = []
            for i in range(n):
                for b in range(batch):
                    for t in range(length):
                        step = m * length + t
                        if states[i, b, step] == s:
                            taken = math.exp(logp[i, b, step])
                            chosen.append(taken if actions[i, b, step] == 0 else 1 - taken)
            assert visits[m, s] == len(chosen)
            if chosen:
                assert probability[m, s] == pytest.approx(sum(chosen) / len(chosen))
            else:
                assert math.isnan(probability[m, s])
    assert np.isnan(probability[2:, 4]).all()  # DD never observed in the last two inner episodes
    # Pooled over the meta-episode: every visit counts once.
    pooled = pooled_probability(probability, visits)
    taken = np.exp(logp)
    everything = np.where(actions == 0, taken, 1 - taken)
    for s in range(5):
        assert pooled[s] == pytest.approx(everything[states == s].mean())


def test_extortion_fit_recovers_a_zero_determinant_strategy():
    chi = 3.0
    phi = 0.5 * float(analytic_ipd.zero_determinant_phi_max(chi))
    strategy = np.asarray(analytic_ipd.zero_determinant_strategy(chi, phi))
    always_cooperate = np.ones(4)
    fit = fit_extortion(np.stack([strategy, always_cooperate, np.full(4, np.nan)]), (2.0, 1.0, 0.0, -1.0))
    assert fit["chi"][0] == pytest.approx(chi, rel=1e-2) and fit["phi"][0] == pytest.approx(phi, rel=1e-2)
    assert fit["squared_error"][0] < 1e-6
    assert fit["squared_error"][1] > 0.1  # unconditional cooperation is far from every extortioner
    assert math.isnan(fit["chi"][2])  # an unobserved state: no fit


def test_defection_rates_per_inner_episode():
    cooperation = np.array([[1.0, 0.25, 0.0], [0.5, 0.75, 0.0]])
    mean, std = defection_rates(cooperation)
    np.testing.assert_allclose(mean, [0.25, 0.5, 1.0])
    np.testing.assert_allclose(std, [0.25, 0.25, 0.0])
