"""Aggregation across seeds (and other repeated measurements): the one place every report takes its statistics from.

The paper reports mean ± std over seeds (ddof = 1, paper App. B.4); the reports print that and, beside it, the
interquartile mean with a 95 % stratified-bootstrap interval (Agarwal et al. 2021, "Deep RL at the edge of the
statistical precipice"): the field's aggregate that is robust to one outlying seed and honest about few seeds.
The bootstrap here is ours (numpy only), not `rliable`'s: rliable requires `arch < 8`, seaborn and pandas, none of
which either install profile pins (docs/choices.md, "Statistics across seeds").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the finite values; (nan, nan) if none."""
    arr = np.asarray(values, np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def standard_error(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean, std (ddof = 1) / √n of the finite values; 0 for one value, nan for none."""
    arr = np.asarray(values, np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan
    return float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else 0.0


def mean_and_standard_error(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """{"mean", "se"}: the mean and its standard error over the finite values (the analytic Fig. 4's "mean ± SE")."""
    mean, _ = mean_std(values)
    return {"mean": mean, "se": standard_error(values)}


def aggregate_over_seeds(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`mean_std` at every iteration of a set of training curves, vectorised (the paper's RL figures, App. B.4).

    Args:
      curves: [S, I] one row per seed, NaN where a seed has no value (not reached, or no episode of that kind).

    Returns:
      mean [I] over the finite values (NaN where none); std [I], the sample standard deviation (ddof = 1) where at
      least two seeds have a value, 0 where one has, NaN where none; count [I] int, the seeds with a value.
    """
    curves = np.asarray(curves, dtype=np.float64)
    finite = np.isfinite(curves)
    count = finite.sum(axis=0)
    filled = np.where(finite, curves, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, filled.sum(axis=0) / np.maximum(count, 1), np.nan)
        squares = np.where(finite, (curves - mean) ** 2, 0.0).sum(axis=0)
        std = np.where(count > 1, np.sqrt(squares / np.maximum(count - 1, 1)), np.where(count == 1, 0.0, np.nan))
    return mean, std, count


def quantiles(values: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Median and interquartile range (25th and 75th percentiles, linear interpolation) of a sample, as floats."""
    q25, median, q75 = np.percentile(np.asarray(values, np.float64), [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def interquartile_mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the middle half of the values, rliable's IQM: sorted, ⌊n/4⌋ values cut from each end.

    The same cut as `scipy.stats.trim_mean(values, 0.25)`, which rliable calls (n = 5: the middle 3; n = 1, 2, 3:
    the plain mean).
    """
    arr = np.sort(np.asarray(values, np.float64).ravel())
    if arr.size == 0:
        return math.nan
    cut = arr.size // 4
    return float(arr[cut : arr.size - cut].mean())


def stratified_bootstrap_interval(
    strata: Sequence[Sequence[float] | np.ndarray],
    statistic: Callable[[np.ndarray], float] = interquartile_mean,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of `statistic` of the pooled values, resampling each stratum with replacement on its own.

    Strata are what must keep their size under resampling (rliable: one per task; here one per metric or
    co-player, or a single stratum of seeds). Deterministic given `seed`.

    Args:
      strata: one 1-D sample per stratum (the seeds' values).
      statistic: maps the pooled resample [Σ n_k] to a number (default: the interquartile mean).

    Returns:
      (low, high), the (1 − confidence)/2 and (1 + confidence)/2 percentiles of the bootstrap distribution.
    """
    samples = [np.asarray(s, np.float64).ravel() for s in strata]
    if not samples or any(s.size == 0 for s in samples):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    draws = [s[rng.integers(0, s.size, size=(resamples, s.size))] for s in samples]
    pooled = np.concatenate(draws, axis=1)
    values = np.array([statistic(row) for row in pooled])
    alpha = (1.0 - confidence) / 2
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return float(low), float(high)


def seed_summary(values: Sequence[float] | np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """What a report prints for one metric across seeds: n, mean ± std (the paper's), IQM and its 95 % interval."""
    arr = np.asarray(values, np.float64).ravel()
    arr = arr[np.isfinite(arr)]
    mean, std = mean_std(arr)
    low, high = stratified_bootstrap_interval([arr], seed=seed) if arr.size else (math.nan, math.nan)
    return {
        "n": int(arr.size),
        "mean": mean,
        "std": std,
        "iqm": interquartile_mean(arr),
        "iqm_low": low,
        "iqm_high": high,
    }
