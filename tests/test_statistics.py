"""The statistics every report aggregates with, against closed forms and scipy (an independent implementation)."""

import math
import statistics as python_statistics

import numpy as np
import pytest
from scipy import stats as scipy_stats

from coala_dist.analysis import statistics


def test_mean_std_is_the_sample_std_and_ignores_missing_values():
    mean, std = statistics.mean_std([1.0, 2.0, 3.0, 6.0, math.nan])
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3))  # ddof = 1 by hand
    assert statistics.mean_std([4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in statistics.mean_std([math.nan]))


def test_mean_std_over_seeds_matches_pythons_statistics():
    seeds = [0.9, 1.1, 1.3, 0.7, 1.0]
    mean, std = statistics.mean_std(seeds + [math.nan])
    assert mean == pytest.approx(python_statistics.mean(seeds))
    assert std == pytest.approx(python_statistics.stdev(seeds))
    assert statistics.mean_std([2.0]) == (2.0, 0.0)


def test_mean_and_std_over_seeds_match_a_loop():
    curves = np.array([[1.0, 2.0, np.nan, 4.0], [3.0, np.nan, np.nan, 8.0], [5.0, 6.0, np.nan, np.nan]])
    mean, std, count = statistics.aggregate_over_seeds(curves)
    for i in range(curves.shape[1]):
        column = [v for v in curves[:, i] if not math.isnan(v)]
        assert count[i] == len(column)
        if not column:
            assert math.isnan(mean[i]) and math.isnan(std[i])
            continue
        mu = sum(column) / len(column)
        sigma = math.sqrt(sum((v - mu) ** 2 for v in column) / (len(column) - 1)) if len(column) > 1 else 0.0
        assert mean[i] == pytest.approx(mu) and std[i] == pytest.approx(sigma)


def test_aggregate_over_seeds_is_mean_std_per_iteration():
    curves = np.random.default_rng(5).standard_normal((4, 6))
    curves[1, 2] = curves[0, 5] = curves[2, 5] = curves[3, 5] = np.nan
    mean, std, _ = statistics.aggregate_over_seeds(curves)
    for i in range(curves.shape[1]):
        assert (mean[i], std[i]) == pytest.approx(statistics.mean_std(curves[:, i]))


def test_standard_error_is_std_over_root_n():
    values = [0.0, 1.0, 2.0, 3.0]
    assert statistics.standard_error(values) == pytest.approx(np.std(values, ddof=1) / 2.0)
    assert statistics.standard_error([5.0]) == 0.0


def test_mean_and_standard_error_is_the_analytic_figures_mean_and_se():
    values = np.array([0.2, 0.5, 0.9, 0.4], np.float32)
    summary = statistics.mean_and_standard_error(values)
    assert list(summary) == ["mean", "se"]
    as_float64 = values.astype(np.float64)
    assert summary["mean"] == as_float64.mean()
    assert summary["se"] == as_float64.std(ddof=1) / np.sqrt(4)  # bit for bit what results/analytic/fig4.json holds
    assert statistics.mean_and_standard_error([0.3]) == {"mean": 0.3, "se": 0.0}


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 10, 13])
def test_interquartile_mean_matches_scipy_trim_mean(n):
    values = np.random.default_rng(n).standard_normal(n) * 3 + 1
    assert statistics.interquartile_mean(values) == pytest.approx(scipy_stats.trim_mean(values, 0.25))


def test_interquartile_mean_ignores_one_outlying_seed():
    assert statistics.interquartile_mean([0.9, 0.92, 0.94, 0.96, -100.0]) == pytest.approx((0.9 + 0.92 + 0.94) / 3)


def test_bootstrap_of_a_constant_is_that_constant():
    assert statistics.stratified_bootstrap_interval([[0.85] * 5]) == pytest.approx((0.85, 0.85))


def test_bootstrap_interval_of_the_mean_matches_the_normal_closed_form():
    # The bootstrap distribution of a resampled mean has variance σ̂²/n exactly (σ̂ the ddof = 0 std); for n = 400 it
    # is close to normal, so the 95 % percentile interval is mean ± 1.96 σ̂/√n up to Monte Carlo error.
    values = np.random.default_rng(1).exponential(size=400)
    low, high = statistics.stratified_bootstrap_interval([values], np.mean, resamples=8000, seed=3)
    half = 1.959964 * values.std() / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert high == pytest.approx(values.mean() + half, abs=0.1 * half)


def test_stratified_bootstrap_keeps_each_stratum_whole():
    # Two strata with no spread inside each: resampling within strata can never mix them, so the pooled mean is
    # fixed; an unstratified bootstrap of the same 8 values would spread over (0, 1).
    low, high = statistics.stratified_bootstrap_interval([[0.0] * 4, [1.0] * 4], np.mean)
    assert (low, high) == pytest.approx((0.5, 0.5))
    # Closed form of the stratified variance: Σ_k (n_k/n)² σ̂_k²/n_k for the pooled mean.
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(300), 5 + 2 * rng.standard_normal(300)
    low, high = statistics.stratified_bootstrap_interval([a, b], np.mean, resamples=8000, seed=4)
    sd = math.sqrt(0.25 * a.var() / a.size + 0.25 * b.var() / b.size)
    centre = (a.mean() + b.mean()) / 2
    assert (low, high) == pytest.approx((centre - 1.959964 * sd, centre + 1.959964 * sd), abs=0.1 * 1.96 * sd)


def test_bootstrap_is_deterministic_given_its_seed():
    values = [0.1, 0.5, 0.7, 0.2, 0.9]
    assert statistics.stratified_bootstrap_interval([values], seed=7) == statistics.stratified_bootstrap_interval(
        [values], seed=7
    )


def test_seed_summary_fields():
    summary = statistics.seed_summary([0.2, 0.4, 0.6, 0.8, 1.0])
    assert summary["n"] == 5
    assert summary["mean"] == pytest.approx(0.6)
    assert summary["iqm"] == pytest.approx(0.6)
    assert summary["iqm_low"] <= summary["iqm"] <= summary["iqm_high"]
    assert summary["iqm_low"] >= 0.2 and summary["iqm_high"] <= 1.0
