"""The paper's claims about the analytic IPD figures (Sec. 4, App. C; Figs. 3, 4, 8–10) as data, and their check.

A figure (`coala_dist.analytic.figures`) measures what its claims need and hands them over as `Case`s: one set of
named values (the case's parameters, e.g. p_naive, and its measurements, e.g. a median over seeds) per start,
p_naive or look-ahead it ran. Every `Claim` of the figure whose `case` names that kind of case and whose `when`
conditions hold is checked on it: it is reproduced when each of its `requires` conditions holds. `check_claims` is
the one function that does so; the checks it returns are what the figure's JSON and results/analytic/README.md list.

The paper states these outcomes in words and shows them in its figures; the thresholds that decide "reproduced" are
ours. R = 1 is the reward of mutual cooperation per round, (1 − γ)·J of the normalised return (Eq. 15–16).
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from coala_dist.envs.analytic_ipd import REWARD

COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
    "!=": operator.ne,
}


class EveryLookAhead(dict):
    """A measurement per LOLA look-ahead k ({k: value}): a condition on it must hold for every k; it formats as
    "k=1: 0.812, k=2: 0.823" with the format spec applied to each value."""

    def __format__(self, spec: str) -> str:
        return ", ".join(f"k={k}: {format(value, spec)}" for k, value in self.items())


@dataclasses.dataclass(frozen=True)
class Condition:
    """`values[measured] <comparison> threshold`.

    Attributes:
      measured: the name of a value of the case.
      comparison: one of `COMPARISONS`.
      threshold: a number, or the name of another value of the case.
    """

    measured: str
    comparison: str
    threshold: float | str

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition holds on a case's values (for an `EveryLookAhead` value: for every k)."""
        compare = COMPARISONS[self.comparison]
        threshold = values[self.threshold] if isinstance(self.threshold, str) else self.threshold
        return all(compare(value, threshold) for value in _each(values[self.measured]))


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of the paper about one figure and the criterion that decides whether it is reproduced.

    Attributes:
      figure: the figure's name in `coala_dist.analytic.figures.FIGURES`.
      case: the kind of case the claim is checked on (a figure's cases of one kind carry the same value names).
      claim: what the paper claims; formatted with the case's values.
      criterion: the test, in words; formatted with the case's values.
      value: what is reported as measured; formatted with the case's values.
      requires: the conditions that must all hold for the claim to count as reproduced.
      when: the conditions under which the claim applies to a case at all (e.g. p_naive = 0).
    """

    figure: str
    case: str
    claim: str
    criterion: str
    value: str
    requires: tuple[Condition, ...]
    when: tuple[Condition, ...] = ()


@dataclasses.dataclass(frozen=True)
class Case:
    """What a figure measured for one of its settings.

    Attributes:
      kind: which claims apply (`Claim.case`).
      values: the setting's parameters and measurements by name.
    """

    kind: str
    values: Mapping[str, Any]


def _each(value: Any) -> Iterable[Any]:
    return value.values() if isinstance(value, EveryLookAhead) else (value,)


CLAIMS: tuple[Claim, ...] = (
    # Fig. 3A + Fig. 8: against naive learners, one learning-aware agent learns ZD-like extortion.
    Claim(
        figure="fig3a",
        case="start",
        claim="extortion from {start} logits (Fig. 3A)",
        criterion="after naive learning, median agent reward > R = 1 > median naive reward, "
        "and naive learners cooperate > 50% of rounds",
        value="agent {agent_after:.3f}, naive {naive_after:.3f}, naive cooperation {naive_cooperation:.3f}",
        requires=(
            Condition("agent_after", ">", REWARD),
            Condition("naive_after", "<", REWARD),
            Condition("naive_cooperation", ">", 0.5),
        ),
    ),
    Claim(
        figure="fig3a",
        case="start",
        claim="ZD-extortion fit, {start} start (Fig. 8)",
        criterion="median squared fit error < 1/5 of that of uniformly random policies",
        value="{zd_error:.4f} vs {random_zd_error:.4f} (ratio {zd_error_ratio:.3f})",
        requires=(Condition("zd_error_ratio", "<", 0.2),),
    ),
    # Fig. 3B: extortioners trained against each other (or in self-play) turn cooperative.
    Claim(
        figure="fig3b",
        case="pair",
        claim="extortioners trained {pairing} turn cooperative (Fig. 3B)",
        criterion="median mutual reward < 0.5 at the start and > 0.9 after {turn} updates",
        value="{before:.3f} -> {turned:.3f} after {turn} updates; after {updates} updates "
        "{end:.3f} (IQR {end_q25:.3f}-{end_q75:.3f})",
        requires=(Condition("before", "<", 0.5), Condition("turned", ">", 0.9)),
    ),
    # Fig. 3C: from random logits, a mixed group (0 < p_naive < 1) cooperates, a pure learning-aware group defects.
    Claim(
        figure="fig3c",
        case="p_naive",
        claim="a pure learning-aware group stays in mutual defection (Fig. 3C)",
        criterion="p_naive = 0: median final meta-vs-meta reward < 0.1",
        value="{final:.3f}",
        requires=(Condition("final", "<", 0.1),),
        when=(Condition("p_naive", "==", 0),),
    ),
    Claim(
        figure="fig3c",
        case="p_naive",
        claim="a mixed group cooperates, p_naive = {p_naive} (Fig. 3C)",
        criterion="median final meta-vs-meta reward > 0.9",
        value="{final:.3f} (IQR {final_q25:.3f}-{final_q75:.3f})",
        requires=(Condition("final", ">", 0.9),),
        when=(Condition("p_naive", "!=", 0), Condition("p_naive", "<", 1)),
    ),
    # Fig. 9: from mutual defection, a mixed group (p_naive > 0) jumps to cooperation: a phase transition.
    Claim(
        figure="fig9",
        case="p_naive",
        claim="from defection, a pure learning-aware group stays in defection (Fig. 9)",
        criterion="p_naive = 0: median final meta-vs-meta reward < 0.1",
        value="{final:.3f}",
        requires=(Condition("final", "<", 0.1),),
        when=(Condition("p_naive", "==", 0),),
    ),
    Claim(
        figure="fig9",
        case="p_naive",
        claim="from defection, a mixed group jumps to cooperation, p_naive = {p_naive} (Fig. 9)",
        criterion="median final reward > 0.9, and the median rise from 0.1 to 0.9 takes < 1/4 of the "
        "updates spent below 0.1 (a phase transition)",
        value="final {final:.3f}; below 0.1 for {rise} updates; 0.1->0.9 in {widths} updates",
        requires=(Condition("final", ">", 0.9), Condition("width_median", "<", "rise_median_quarter")),
        when=(Condition("p_naive", "!=", 0),),
    ),
    # Fig. 10: from mutual TFT, the group leaves TFT, shapes naive learners better, and keeps cooperating.
    Claim(
        figure="fig10",
        case="group",
        claim="agents leave strict TFT (Fig. 10)",
        criterion="median ‖σ(φ) − σ(φ_TFT)‖ over the 5 probabilities > 0.1 at the end",
        value="{distance:.3f}",
        requires=(Condition("distance", ">", 0.1),),
    ),
    Claim(
        figure="fig10",
        case="group",
        claim="leaving TFT shapes naive learners better (Fig. 10)",
        criterion="median shaping reward (vs naive learners) increases over training",
        value="{shaping_initial:.3f} -> {shaping_final:.3f}",
        requires=(Condition("shaping_final", ">", "shaping_initial"),),
    ),
    Claim(
        figure="fig10",
        case="group",
        claim="the learned policies still cooperate with each other (Fig. 10)",
        criterion="median final meta-vs-meta reward > 0.95, and once above 0.95 it never falls below 0.9",
        value="final {final:.3f}, lowest after reaching 0.95: {lowest_after_cooperation:.3f}",
        requires=(Condition("final", ">", 0.95), Condition("lowest_after_cooperation", ">", 0.9)),
    ),
    # Fig. 4: LOLA (Eq. 4) with few look-ahead steps cooperates, with many it extorts (4A, 4B); mixing in the naive
    # partial gradient restores cooperation (4C).
    Claim(
        figure="fig4",
        case="pure LOLA",
        claim="LOLA with 1-2 look-ahead steps cooperates (Fig. 4A)",
        criterion="mean final reward > 0.7 for k <= 2",
        value="{few:.3f}",
        requires=(Condition("few", ">", 0.7),),
    ),
    Claim(
        figure="fig4",
        case="pure LOLA",
        claim="LOLA with 10-20 look-ahead steps earns low reward (Fig. 4A)",
        criterion="mean final reward < 0.5 for k >= 10",
        value="{many:.3f}",
        requires=(Condition("many", "<", 0.5),),
    ),
    Claim(
        figure="fig4",
        case="pure LOLA",
        claim="... by mutual extortion: k = {longest} policies are ZD extortioners (Fig. 4A)",
        criterion="median ZD fit error < 0.02 and median χ > 1 (p4 ≈ 0, no unconditional defection)",
        value="error {zd_error:.4f}, χ {zd_chi:.3f}, policy {policy}",
        requires=(Condition("zd_error", "<", 0.02), Condition("zd_chi", ">", 1.0)),
    ),
    Claim(
        figure="fig4",
        case="pure LOLA",
        claim="a fresh naive learner trained against LOLA k = {longest} is extorted (Fig. 4B)",
        criterion="mean LOLA reward > mean naive reward, and the naive learner cooperates > 50%",
        value="LOLA {lola_reward:.3f}, naive {naive_reward:.3f}, naive cooperation {naive_cooperation:.3f}",
        requires=(Condition("lola_reward", ">", "naive_reward"), Condition("naive_cooperation", ">", 0.5)),
    ),
    Claim(
        figure="fig4",
        case="look-ahead",
        claim="adding the naive partial gradient restores cooperation, k = {k} (Fig. 4C)",
        criterion="mean final reward > 0.7",
        value="{mixed:.3f} (pure LOLA: {pure:.3f})",
        requires=(Condition("mixed", ">", 0.7),),
        when=(Condition("lola_weight", "<", 1),),
    ),
)


def check(claim: Claim, values: Mapping[str, Any]) -> dict[str, Any]:
    """One claim checked on one case: {"claim", "criterion", "value", "passed"}."""
    return {
        "claim": claim.claim.format(**values),
        "criterion": claim.criterion.format(**values),
        "value": claim.value.format(**values),
        "passed": all(condition.holds(values) for condition in claim.requires),
    }


def check_claims(figure: str, cases: Sequence[Case], claims: Sequence[Claim] = CLAIMS) -> list[dict[str, Any]]:
    """Every claim of `figure` on every case it applies to, in the order of the cases and then of `claims`."""
    return [
        check(claim, case.values)
        for case in cases
        for claim in claims
        if claim.figure == figure
        and claim.case == case.kind
        and all(condition.holds(case.values) for condition in claim.when)
    ]
