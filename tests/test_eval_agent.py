"""`coala eval --agent=DIR`: an exported agent against fresh naive learners, through the league's match engine."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import exported_tiny_agent, run_coala, tiny_run_workdir  # noqa: F401 (fixtures)

from coala_dist import keys
from coala_dist.agents import MANIFEST, PARAMS_FILE, Agent, describe, load_agent
from coala_dist.analysis.evaluation import (
    evaluate_agent,
    evaluate_agent_dir,
    play_agent_episodes,
    play_evaluation_episodes,
    summarize_episodes,
)
from coala_dist.analysis.evaluation_report import format_report
from coala_dist.analysis.runs import restore_workdir
from coala_dist.league.league import make_game
from coala_dist.league.zoo import naive_player
from coala_dist.networks.policy import init_policy_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The IPD's payoffs per step (paper Table 1), own action first: R (CC), S (CD), T (DC), P (DD).
R, S, T, P = 1.0, -1.0, 2.0, 0.0
pytestmark = pytest.mark.slow  # trains a run, starts `coala` processes


def assert_valid_png(path: str) -> None:
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300 and float(np.std(image[..., :3])) > 0.01



def test_the_agents_numbers_are_coala_eval_workdirs_for_the_same_episodes(exported, workdir, tiny_components):
    """`coala eval --workdir` plays the run's evaluation episodes; those of agent 1 against a naive learner, replayed
    through the agent path (the exported agent, the match engine, the same play keys and naive initialisations),
    give the same per-inner-episode numbers: rewards and cooperation rates bit for bit, P(C | state) and the ZD fit
    to float precision (π recomputed along the whole meta-trajectory, as the learner does)."""
    components, state = restore_workdir(workdir, tiny_components)
    config = components.config
    rounds = 3
    episodes = play_evaluation_episodes(components, state, rounds, config.seed)
    mine = np.asarray(episodes.ego_id == 1) & np.asarray(episodes.coplayer_is_naive)
    assert mine.sum() >= 2
    selected = jax.tree_util.tree_map(lambda x: x[mine], episodes)
    expected = summarize_episodes(selected, "ipd", components.env, config.env.inner_episode_length)

    # The play key of episode e of evaluation round r (`Rollout._pairing`): split(episode_key(eval, r, e))[1].
    eval_key = keys.evaluation_key(config.seed, keys.EVALUATION_OF_TRAINING_ROLLOUT)
    play_keys = jnp.stack(
        [
            jax.random.split(keys.episode_key(eval_key, jnp.int32(r), jnp.int32(e)))[1]
            for r, e in zip(selected.policy_version.tolist(), selected.episode_index.tolist(), strict=True)
        ]
    )
    naive_starts = jax.tree_util.tree_map(lambda x: x[np.asarray(selected.coplayer_id)], state.naive_params)
    agent = load_agent(exported)
    naive = dataclasses.replace(naive_player(agent.manifest).kind, fresh_init=False)
    game = make_game(agent.manifest["game"])
    replayed = play_agent_episodes(
        agent.policy, agent.params, naive, naive_starts, game, play_keys, batched_coplayer=True
    )
    np.testing.assert_array_equal(replayed.actions, selected.actions)
    np.testing.assert_allclose(replayed.behaviour_logp, selected.behaviour_logp, atol=1e-5)
    got = summarize_episodes(replayed, "ipd", game.env, game.env.inner_episode_length)

    assert got["episodes"] == expected["episodes"] == mine.sum()
    for name in ("ego_reward", "coplayer_reward", "cooperate_player_1", "cooperate_player_2"):
        assert got["per_inner_episode"][name] == expected["per_inner_episode"][name], name
    assert got["cooperation_by_state"]["visits"] == expected["cooperation_by_state"]["visits"]
    for part in ("per_inner_episode", "overall"):
        np.testing.assert_allclose(
            np.asarray(got["cooperation_by_state"][part], float),
            np.asarray(expected["cooperation_by_state"][part], float),
            atol=1e-5,
        )
        for name in ("phi", "squared_error"):
            np.testing.assert_allclose(
                np.asarray(got["zd_extortion_fit"][part][name], float),
                np.asarray(expected["zd_extortion_fit"][part][name], float),
                atol=1e-4,
            )


def _rewards_from_cooperation(own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """E[reward per step] from the two cooperation rates: R·CC + S·CD + T·DC + P·DD with CC + CD = own, CC + DC =
    other, DD = 1 − own − other + CC; the CC term's factor R − S − T + P is 0 in this IPD, so the joint rate drops
    out and the identity holds per inner episode of every meta-episode, and so for the means."""
    assert R - S - T + P == 0
    return P + (S - P) * own + (T - P) * other


def test_coala_eval_agent_command_and_python_call(exported, tmp_path, tiny_config):
    out = tmp_path / "by-command"
    done = run_coala("eval", f"--agent={exported}", f"--out={out}", "--rounds=2")
    assert done.returncode == 0, done.stderr
    assert "against fresh naive learners" in done.stdout and "ZD extortion fit" in done.stdout
    assert "between meta agents" not in done.stdout
    assert_valid_png(str(out / "eval.png"))
    with open(out / "eval.json") as f:
        written = json.load(f)

    lines: list[str] = []
    result = evaluate_agent_dir(exported, str(tmp_path / "by-python"), rounds=2, log=lines.append)
    assert "\n".join(lines).startswith(format_report(result))
    assert written.keys() == result.keys() and "vs_meta" not in result
    assert written["agent"] == result["agent"] and result["agent"]["agent_index"] == 1
    for name, values in result["vs_naive"]["per_inner_episode"].items():  # two processes, the same keys
        np.testing.assert_allclose(written["vs_naive"]["per_inner_episode"][name]["mean"], values["mean"], atol=1e-6)

    summary = result["vs_naive"]
    num_inner = tiny_config.num_inner_episodes
    assert summary["episodes"] == 2 * tiny_config.meta_batch_size  # --rounds of N meta-episodes (config.json)
    visits = np.asarray(summary["cooperation_by_state"]["visits"])
    assert visits.shape == (num_inner, 5)
    assert visits[:, 0].tolist() == [summary["episodes"] * tiny_config.batch_size] * num_inner  # one start per game
    assert (
        visits.sum() == summary["episodes"] * tiny_config.batch_size * tiny_config.env.inner_episode_length * num_inner
    )
    per = summary["per_inner_episode"]
    own, other = (np.asarray(per[f"cooperate_player_{i}"]["mean"]) for i in (1, 2))
    np.testing.assert_allclose(per["ego_reward"]["mean"], _rewards_from_cooperation(own, other), atol=1e-5)
    np.testing.assert_allclose(per["coplayer_reward"]["mean"], _rewards_from_cooperation(other, own), atol=1e-5)
    assert result["coplayer"]["learning_rate"] == tiny_config.naive.learning_rate
    assert result["step"] == 2 and result["batch_size"] == tiny_config.batch_size


def test_coala_eval_mistakes_are_one_line(exported, workdir, tmp_path):
    (tmp_path / "empty").mkdir()
    damaged = tmp_path / "damaged"
    shutil.copytree(exported, damaged)
    with np.load(damaged / PARAMS_FILE) as archive:
        flat = {k: archive[k] + 1.0 for k in archive.files}
    np.savez(damaged / PARAMS_FILE, **flat)
    cases = (
        ((), 2, "--workdir (a run) or --agent (an exported agent) is required"),
        ((f"--workdir={workdir}", f"--agent={exported}"), 2, "give exactly one of"),
        ((f"--agent={tmp_path / 'missing'}",), 2, "is not a folder"),
        ((f"--agent={tmp_path / 'empty'}",), 2, f"is not an exported agent (no {MANIFEST}"),
        ((f"--agent={workdir}",), 2, f"use --workdir={workdir}"),
        ((f"--workdir={exported}",), 2, f"use --agent={exported}"),
        ((f"--agent={exported}", "--rounds=0"), 2, "--rounds must be >= 1"),
        ((f"--agent={damaged}",), 1, "sha256"),
    )
    for args, status, words in cases:
        done = run_coala("eval", *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == status, (args, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("coala eval: ") and words in lines[0], (args, done.stderr)
    assert not os.path.exists(damaged / "eval")


def test_a_clean_up_agent_gets_the_papers_metrics(tiny_config, tmp_path):
    """A (perturbed, untrained) Clean Up-lite agent: the paper's metrics per inner episode, against fresh naive
    learners, from the match engine's per-player info."""
    from coala_dist.envs import make_env
    from coala_dist.networks.policy import HawkPolicy

    config = ml_collections.ConfigDict(tiny_config.to_dict())
    config.env.name = "cleanup_lite"
    config.env.inner_episode_length = 8
    config.num_inner_episodes = 2
    env = make_env("cleanup_lite", 8)
    manifest = {"name": "cleanup-untrained", "iteration": 0, **describe(config, env, 0)}
    fields = dict(manifest["policy"])
    obs_dim = fields.pop("obs_dim")
    params = init_policy_params(HawkPolicy(**fields), jax.random.PRNGKey(0), obs_dim)
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(lambda x: x + 0.5 * rng.standard_normal(x.shape).astype(x.dtype), params)
    agent = Agent(str(tmp_path), manifest, params)

    result = evaluate_agent(agent, rounds=1, episodes_per_round=3)
    assert result["env"] == "cleanup_lite" and "vs_meta" not in result
    paper = result["vs_naive"]["paper_metrics"]
    for name in ("zap_rate", "coplayer_zap_rate", "pollution", "cleaning_discrepancy"):
        values = np.asarray(paper["per_inner_episode"][name])
        assert values.shape == (2,) and np.all((values >= 0) & (values <= 1)), name
    per = result["vs_naive"]["per_inner_episode"]
    np.testing.assert_allclose(paper["per_inner_episode"]["own_return"], 8 * np.asarray(per["ego_reward"]["mean"]))
    assert "own_return" in format_report(result)
