"""The paper's Clean Up metrics against their per-step definitions."""

from __future__ import annotations

import numpy as np
import pytest

from coala_dist.analysis.cleanup_metrics import cleanup_paper_metrics


def test_cleanup_metrics_match_the_per_step_definitions():
    from coala_dist.envs.cleanup_lite import INFO_KEYS

    rng = np.random.default_rng(1)
    n, num_inner, batch, length = 3, 4, 2, 6
    info = {k: rng.integers(0, 2, size=(n, num_inner, batch, length)).astype(float) for k in INFO_KEYS}
    info["pollution"] = rng.uniform(size=(n, num_inner, batch, length))
    info["apples"] = rng.uniform(size=(n, num_inner, batch, length))
    rewards = {"ego_reward": info["apple_player_1"], "coplayer_reward": info["apple_player_2"]}
    # What the rollout reports: means over the B games and T steps of each inner episode.
    per_episode = {k: v.mean(axis=(2, 3)) for k, v in (info | rewards).items()}
    result = cleanup_paper_metrics(per_episode, length)
    for m in range(num_inner):
        own = np.mean([info["apple_player_1"][i, m].sum() / batch for i in range(n)])  # apples per game and episode
        assert result["per_inner_episode"]["own_return"][m] == pytest.approx(own)
    own_total = np.mean([info["apple_player_1"][i].sum() / (batch * num_inner) for i in range(n)])
    assert result["overall"]["own_return"] == pytest.approx(own_total)
    discrepancy = np.mean(
        [abs(info["cleaned_player_1"][i].mean() - info["cleaned_player_2"][i].mean()) for i in range(n)]
    )
    assert result["overall"]["cleaning_discrepancy"] == pytest.approx(discrepancy)
    assert result["overall"]["zap_rate"] == pytest.approx(info["zapped_player_1"].mean())
    assert result["overall"]["pollution"] == pytest.approx(info["pollution"].mean())
    assert result["overall"]["coplayer_return"] == pytest.approx(info["apple_player_2"].sum() / (n * batch * num_inner))
