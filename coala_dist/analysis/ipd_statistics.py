"""IPD statistics of evaluation episodes: the meta agent's cooperation per observed state, defection rates per inner
episode (paper Fig. 5B), and the fit of its conditional cooperation to the zero-determinant extortion family (paper
Eq. 18, Fig. 8). Pure numpy on host arrays (evaluation is not a hot path), apart from the jitted ZD fit.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from coala_dist.envs.analytic_ipd import fit_zero_determinant_rows
from coala_dist.envs.ipd import COOPERATE, NUM_STATES

IPD_STATE_NAMES = ("start", "CC", "CD", "DC", "DD")


def cooperation_by_state(
    obs: np.ndarray, actions: np.ndarray, behaviour_logp: np.ndarray, inner_episode_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """The meta agent's probability of cooperating per observed IPD state and inner episode.

    At every step l = m·T + t the agent's policy gives π(C | hₗ); this averages it over the visits of each
    observed state s (the one-hot observation: start, CC, CD, DC, DD, own action first):

        P̄(C | s, m) = Σ_{n,b,t: sₙᵇₘₜ = s} π(C | hₙᵇₘₜ) / #{n,b,t: sₙᵇₘₜ = s}.

    The policy is recurrent, so π(C | h) depends on the whole history; P̄ is its memory-one summary. π(C | h) is
    recovered from the log-probability of the action taken: exp(log π(a)) if a = C, else 1 − exp(log π(a)).

    Args:
      obs: [n, B, L, 5] one-hot observations of n meta-episodes, L = M·T.
      actions: [n, B, L] int, 0 = cooperate.
      behaviour_logp: [n, B, L] log-probability of the action taken.
      inner_episode_length: T.

    Returns:
      probability [M, 5] (NaN where a state was never observed in that inner episode) and visits [M, 5] (counts).
    """
    num_steps = obs.shape[2]
    num_inner_episodes = num_steps // inner_episode_length
    taken = np.exp(np.asarray(behaviour_logp, np.float64))
    p_cooperate = np.where(np.asarray(actions) == COOPERATE, taken, 1.0 - taken)
    state = np.argmax(np.asarray(obs), axis=-1)
    inner_episode = np.broadcast_to(np.arange(num_steps) // inner_episode_length, state.shape)
    cell = (inner_episode * NUM_STATES + state).ravel()
    size = num_inner_episodes * NUM_STATES
    visits = np.bincount(cell, minlength=size).reshape(num_inner_episodes, NUM_STATES)
    sums = np.bincount(cell, weights=p_cooperate.ravel(), minlength=size).reshape(num_inner_episodes, NUM_STATES)
    with np.errstate(invalid="ignore", divide="ignore"):
        probability = np.where(visits > 0, sums / np.maximum(visits, 1), np.nan)
    return probability, visits


def pooled_probability(probability: np.ndarray, visits: np.ndarray) -> np.ndarray:
    """Visit-weighted mean over inner episodes of `cooperation_by_state`'s [M, S] table: the [S] table of the whole
    meta-episode (NaN for a state never observed)."""
    total = visits.sum(axis=0)
    weighted = np.where(visits > 0, np.nan_to_num(probability) * visits, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weighted / np.maximum(total, 1), np.nan)


def defection_rates(cooperation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over episodes of the defection rate per inner-episode index (what Fig. 5B shows).

    Defection rate = 1 − cooperation rate (IPD has two actions).

    Args:
      cooperation: [n, M] cooperation rates, one row per evaluation meta-episode (each entry already a mean over
        the B trajectories and T steps of inner episode m).

    Returns:
      (mean, std), each [M].
    """
    defection = 1.0 - np.asarray(cooperation, dtype=np.float64)
    return defection.mean(axis=0), defection.std(axis=0)


def fit_extortion(cooperate_after: np.ndarray, payoffs: tuple[float, float, float, float]) -> dict[str, list]:
    """Least-squares fit of rows of (P(C|CC), P(C|CD), P(C|DC), P(C|DD)) to the ZD extortion family (paper
    Eq. 18), with `coala_dist.envs.analytic_ipd.fit_zero_determinant_rows`; rows with an unobserved state give NaN.

    Args:
      cooperate_after: [k, 4] conditional cooperation probabilities, own action first.
      payoffs: (T, R, P, S) of the game.

    Returns:
      {"chi": [k], "phi": [k], "squared_error": [k]} lists.
    """
    rows = np.asarray(cooperate_after, np.float64).reshape(-1, 4)
    complete = np.all(np.isfinite(rows), axis=1)
    # Incomplete rows are fitted on a placeholder (same shape every call: one compilation) and then discarded.
    fit = fit_zero_determinant_rows(jnp.asarray(np.where(complete[:, None], rows, 0.5), jnp.float32), payoffs)
    return {
        name: np.where(complete, np.asarray(getattr(fit, name), np.float64), np.nan).tolist()
        for name in ("chi", "phi", "squared_error")
    }
