"""Ending an experiment's run before its budget once its outcome is settled (`coala experiment --stop_after_defection`).

The reproduction campaign lets the Fig. 5C baselines that are expected to fall into defection (M-FOS,
batch-unaware) stop once they have been at defection for a while, so their remaining budget goes to other runs
(results/ipd/README.md, "How each claim is judged"). A run stopped this way is finished: its `result.json` records
the budget, the iteration it stopped at and the rule, and its final numbers average its last trained iterations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

BETWEEN_META = "vs_meta/ego_reward"
# Reward per step between meta agents at or below which they count as defecting (the campaign's target for
# "falls into defection"; mutual defection pays 0, mutual cooperation 1).
DEFECTION_LEVEL = 0.1


@dataclasses.dataclass
class DefectionStop:
    """Reached once the reward per step between meta agents (`vs_meta/ego_reward`, each iteration's mean over its
    meta-batch) has been ≤ `level` in each of the last `patience` iterations. An iteration without such episodes
    (NaN) ends the streak.

    A `coala_dist.train.StopRule`: `resume` counts the streak over the iterations a resumed run already did.
    """

    patience: int
    level: float = DEFECTION_LEVEL
    streak: int = 0

    def __post_init__(self):
        if self.patience < 1:
            raise ValueError(f"patience={self.patience} must be at least 1")

    def _record(self, value: float) -> None:
        self.streak = self.streak + 1 if not math.isnan(value) and value <= self.level else 0

    def resume(self, rows: Sequence[Mapping[str, str | float]]) -> None:
        self.streak = 0
        for row in rows:
            cell = row.get(BETWEEN_META, "")
            self._record(float(cell) if cell not in ("", None) else math.nan)

    def on_iteration(self, iteration: int, state, metrics: Mapping[str, float]) -> None:
        self._record(float(metrics.get(BETWEEN_META, math.nan)))

    def close(self) -> None:
        pass

    @property
    def reached(self) -> bool:
        return self.streak >= self.patience

    def describe(self) -> str:
        return f"reward per step between meta agents ≤ {self.level} in each of {self.patience} iterations in a row"
