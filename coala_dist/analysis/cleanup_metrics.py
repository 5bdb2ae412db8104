"""The paper's Clean Up metrics (paper App. B.1.2, Sec. 5.2, App. H.2) of evaluation episodes, from the rollout's
per-inner-episode means. Pure numpy on host arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLEANUP_METRICS = (
    ("own_return", "own return / inner episode"),
    ("coplayer_return", "co-player return / inner episode"),
    ("cleaning_discrepancy", "cleaning discrepancy"),
    ("zap_rate", "zap rate (ego zapped / step)"),
    ("coplayer_zap_rate", "co-player zapped / step"),
    ("pollution", "pollution"),
    ("apples", "apples"),
)


def cleanup_paper_metrics(metrics: dict[str, np.ndarray], inner_episode_length: int) -> dict[str, Any]:
    """The paper's Clean Up metrics (paper App. B.1.2, Sec. 5.2, App. H.2) from per-inner-episode means.

    With ⟨x⟩ₙₘ the mean of `info[x]` over the B games and T steps of inner episode m of meta-episode n (what the
    rollout reports) and the ego as player 1:

        own return           = T · ego_reward (= T · apple_reward · ⟨apple_player_1⟩), per inner episode;
        co-player return     = T · coplayer_reward;
        cleaning discrepancy = |⟨cleaned_player_1⟩ − ⟨cleaned_player_2⟩|;
        zap rate             = ⟨zapped_player_1⟩ (how often the ego gets zapped, per step);
        co-player zap rate   = ⟨zapped_player_2⟩;  pollution = ⟨pollution⟩;  apples = ⟨apples⟩.

    Per inner episode each is averaged over the n meta-episodes. Over the whole meta-episode the means run over
    n and m (every inner episode has the same B·T steps), except the discrepancy, which is |difference of the
    meta-episode's mean cleaning rates|, averaged over n (the two players' share of the cleaning of a meta-episode).

    Args:
      metrics: [n, M] arrays: `ego_reward`, `coplayer_reward` and the Clean Up info keys.
      inner_episode_length: T.

    Returns:
      {"per_inner_episode": {name: [M] list}, "overall": {name: float}}, names as in `CLEANUP_METRICS`.
    """
    m = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
    per_step = {
        "own_return": inner_episode_length * m["ego_reward"],
        "coplayer_return": inner_episode_length * m["coplayer_reward"],
        "cleaning_discrepancy": np.abs(m["cleaned_player_1"] - m["cleaned_player_2"]),
        "zap_rate": m["zapped_player_1"],
        "coplayer_zap_rate": m["zapped_player_2"],
        "pollution": m["pollution"],
        "apples": m["apples"],
    }
    per_inner_episode = {name: values.mean(axis=0).tolist() for name, values in per_step.items()}
    overall = {name: float(values.mean()) for name, values in per_step.items()}
    overall["cleaning_discrepancy"] = float(
        np.abs(m["cleaned_player_1"].mean(axis=1) - m["cleaned_player_2"].mean(axis=1)).mean()
    )
    return {"per_inner_episode": per_inner_episode, "overall": overall}
