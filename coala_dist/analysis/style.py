"""How reports name and colour each estimator, kept in one place so every table and figure agrees."""

from __future__ import annotations

# Estimator name (`rl.estimators.REGISTRY`) -> (label printed in reports, matplotlib colour).
ESTIMATOR_STYLE: dict[str, tuple[str, str]] = {
    "coala": ("COALA-PG", "tab:blue"),
    "mfos": ("M-FOS", "tab:orange"),
    "batch_unaware": ("batch-unaware", "tab:green"),
    "mfos_mean": ("M-FOS (mean over B)", "tab:red"),
    "lola_dice": ("LOLA-DiCE", "tab:purple"),
}


def label(name: str) -> str:
    """The report label of estimator `name` (the name itself when it has none, e.g. a group of runs)."""
    return ESTIMATOR_STYLE[name][0] if name in ESTIMATOR_STYLE else name


def color(name: str) -> str | None:
    """The estimator's colour in every plot; None (matplotlib's cycle) for a name without one."""
    return ESTIMATOR_STYLE[name][1] if name in ESTIMATOR_STYLE else None

