"""The table of the analytic figures' claims and its check, on hand-made measurements (nothing is trained here)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coala_dist.analytic.claims import CLAIMS, COMPARISONS, Case, Claim, Condition, EveryLookAhead, check_claims
from coala_dist.analytic.figures import FIGURES


def _group_case(p_naive: float, final: float) -> Case:
    return Case("p_naive", {"p_naive": p_naive, "final": final, "final_q25": final - 0.1, "final_q75": final})


def test_every_claim_names_a_figure_and_known_comparisons():
    assert {claim.figure for claim in CLAIMS} == set(FIGURES)
    for claim in CLAIMS:
        assert claim.requires
        for condition in claim.requires + claim.when:
            assert condition.comparison in COMPARISONS


def test_a_claim_holds_only_when_every_condition_does():
    claim = Claim(
        "fig", "case", "c", "crit", "{a:.2f} vs {b:.2f}", (Condition("a", ">", 0.5), Condition("a", "<", "b"))
    )
    passed = check_claims("fig", [Case("case", {"a": 0.7, "b": 0.9})], [claim])
    assert passed == [{"claim": "c", "criterion": "crit", "value": "0.70 vs 0.90", "passed": True}]
    assert not check_claims("fig", [Case("case", {"a": 0.7, "b": 0.6})], [claim])[0]["passed"]  # a threshold by name
    assert not check_claims("fig", [Case("case", {"a": math.nan, "b": 0.9})], [claim])[0]["passed"]  # NaN never passes


def test_every_look_ahead_must_hold_and_formats_per_k():
    few = EveryLookAhead({1: 0.81234, 2: 0.6})
    assert f"{few:.3f}" == "k=1: 0.812, k=2: 0.600"
    assert not Condition("few", ">", 0.7).holds({"few": few})
    assert Condition("few", ">", 0.5).holds({"few": few})
    assert Condition("few", ">", 0.7).holds({"few": EveryLookAhead()})  # no such look-ahead run: nothing fails


def test_fig3c_checks_pure_and_mixed_groups_but_not_naive_only():
    cases = [_group_case(0.0, 0.02), _group_case(0.5, 0.95), _group_case(1.0, 0.0)]
    checks = check_claims("fig3c", cases)
    assert [c["claim"] for c in checks] == [
        "a pure learning-aware group stays in mutual defection (Fig. 3C)",
        "a mixed group cooperates, p_naive = 0.5 (Fig. 3C)",
    ]
    assert [c["passed"] for c in checks] == [True, True]
    assert checks[1]["value"] == "0.950 (IQR 0.850-0.950)"


def test_fig9_checks_every_positive_p_naive_for_a_sharp_jump():
    def case(p_naive, width_median, rise_median_quarter):
        values = {"p_naive": p_naive, "final": 0.95, "rise": [400, 800], "widths": [20, 40]}
        return Case("p_naive", values | {"width_median": width_median, "rise_median_quarter": rise_median_quarter})

    checks = check_claims("fig9", [case(0.5, 30.0, 150.0), case(1.0, 30.0, 5.0), case(0.25, math.nan, math.nan)])
    assert [c["passed"] for c in checks] == [True, False, False]  # sharp; too slow; never rose (no widths)
    assert checks[0]["value"] == "final 0.950; below 0.1 for [400, 800] updates; 0.1->0.9 in [20, 40] updates"


def test_float32_measurements_compare_as_the_figures_did():
    # A float32 median compared with a Python threshold compares in float32 (NumPy 2's promotion rules): the table
    # must see the measurement itself, not a float64 copy, to give the verdicts the figures always gave.
    median = np.float32(0.1)  # 0.10000000149 as a float64
    assert float(median) > 0.1
    assert Condition("x", ">", 0.1).holds({"x": median}) == bool(median > 0.1)


@pytest.mark.parametrize("weight, checked", [(1.0, False), (0.6, True)])
def test_fig4c_is_checked_only_where_something_is_mixed_in(weight, checked):
    case = Case("look-ahead", {"k": 10, "lola_weight": weight, "mixed": 0.8, "pure": 0.3})
    checks = check_claims("fig4", [case])
    assert bool(checks) == checked
    if checked:
        assert checks[0]["value"] == "0.800 (pure LOLA: 0.300)" and checks[0]["passed"]
