"""`coala league`: the zoo's exact payoffs in every seating, the match engine against the training rollout, the
command's files and its one-line refusals."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_coala, train_tiny_run

from coala_dist.analysis.ipd_statistics import fit_extortion
from coala_dist.league import exploiter, league, mismatch, report, zoo
from coala_dist.league.match import FrozenHawk, Game, MemoryOne, NaiveHawk, match_batch_size, play
from coala_dist.pool import select_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T = 3
GAME = {"env": "ipd", "inner_episode_length": T, "env_kwargs": {}, "num_inner_episodes": 2, "batch_size": 2}
# Reward per step of the row player against the column player over one inner episode of T steps (paper Table 1:
# R = 1, S = −1, T = 2, P = 0): tit-for-tat is exploited once by always-defect, then both defect.
EXACT_REWARD = {
    ("always_cooperate", "always_cooperate"): 1.0,
    ("always_cooperate", "always_defect"): -1.0,
    ("always_cooperate", "tit_for_tat"): 1.0,
    ("always_defect", "always_cooperate"): 2.0,
    ("always_defect", "always_defect"): 0.0,
    ("always_defect", "tit_for_tat"): 2.0 / T,
    ("tit_for_tat", "always_cooperate"): 1.0,
    ("tit_for_tat", "always_defect"): -1.0 / T,
    ("tit_for_tat", "tit_for_tat"): 1.0,
}
EXACT_COOPERATION = {"always_cooperate": 1.0, "always_defect": 0.0}


@pytest.fixture(scope="module")
def fixed_league():
    reference = dict(league.reference_description([]), game=GAME)
    players = zoo.ipd_zoo(["always_cooperate", "always_defect", "tit_for_tat", "random", "zd_extortion"], reference)
    return league.run_league(players, GAME, meta_episodes=8, seed=3, log=lambda line: None)


def test_fixed_strategies_have_exact_rewards_in_every_seating(fixed_league):
    names = [p.name for p in fixed_league.players]
    for (a, b), reward in EXACT_REWARD.items():
        seated = fixed_league.seatings[(a, b)]  # a in seat 1, b in seat 2
        np.testing.assert_allclose(seated["reward_1"], reward, rtol=0, atol=1e-6, err_msg=f"{a} vs {b}")
        np.testing.assert_allclose(seated["reward_2"], EXACT_REWARD[(b, a)], rtol=0, atol=1e-6)
        if a != b:  # and the other seating, which plays the other seat of the environment
            other = fixed_league.seatings[(b, a)]
            np.testing.assert_allclose(other["reward_2"], reward, rtol=0, atol=1e-6)
        cell = fixed_league.cell("reward", names.index(a), names.index(b))
        assert abs(cell["mean"] - reward) < 1e-6 and cell["se"] < 1e-7
        assert cell["n"] == 16
    for a, rate in EXACT_COOPERATION.items():
        for b in names:
            assert abs(fixed_league.cell("cooperate", names.index(a), names.index(b))["mean"] - rate) < 1e-6
    tft, alld = names.index("tit_for_tat"), names.index("always_defect")
    assert abs(fixed_league.cell("cooperate", tft, alld)["mean"] - 1.0 / T) < 1e-6


def test_random_player_matches_its_expectation(fixed_league):
    """Against always-cooperate a uniform random player earns ½·R + ½·T = 1.5 per step, its co-player ½·R + ½·S = 0."""
    names = [p.name for p in fixed_league.players]
    rand, allc = names.index("random"), names.index("always_cooperate")
    for row, expected in ((rand, 1.5), (allc, 0.0)):
        cell = fixed_league.cell("reward", row, allc if row == rand else rand)
        assert abs(cell["mean"] - expected) < 5 * cell["se"] + 1e-3, cell
    coop = fixed_league.cell("cooperate", rand, allc)
    assert abs(coop["mean"] - 0.5) < 5 * coop["se"] + 1e-3


def test_zd_extortioner_fits_chi_3():
    table = zoo.zd_extortion_table()
    np.testing.assert_allclose(table[1:], [6 / 7, 1 / 2, 5 / 14, 0.0], atol=1e-6)
    fit = fit_extortion(table[None, 1:], (2.0, 1.0, 0.0, -1.0))
    assert abs(fit["chi"][0] - 3.0) < 0.01 and fit["squared_error"][0] < 1e-8


def test_per_player_table_and_files(fixed_league, tmp_path):
    rows = league.per_player_table(fixed_league)
    alld = next(r for r in rows if r["player"] == "always_defect")
    names = [p.name for p in fixed_league.players]
    cells = [fixed_league.cell("reward", names.index("always_defect"), j)["mean"] for j in range(len(names))]
    assert abs(alld["reward_mean"] - np.mean(cells)) < 1e-12
    assert alld["reward_iqm_low"] <= alld["reward_iqm"] <= alld["reward_iqm_high"]
    assert rows[0]["player"] == "always_defect"  # defection wins a round robin of these five
    summary = report.write_league(fixed_league, str(tmp_path))
    for name in ("league.json", "reward.csv", "cooperate.csv", "pairs.csv", "players.csv", "players.md", "league.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    with open(tmp_path / "league.json") as f:
        assert json.load(f)["matrices"]["reward"]["mean"] == summary["matrices"]["reward"]["mean"]
    assert not os.path.exists(tmp_path / "groups.md")  # no trained agents


def test_match_engine_is_the_training_rollout(tiny_components, tiny_state):
    """A frozen agent in seat 1 against a naive learner from given parameters in seat 2 is, action for action, the
    training rollout's meta-episode with the same key."""
    rollout = tiny_components.rollout
    ego = select_params(tiny_state.meta_params, 0)
    naive = select_params(tiny_state.naive_params, 1)
    key = jax.random.PRNGKey(7)
    expected, expected_metrics = jax.jit(rollout.play)(ego, naive, jnp.array(True), key)
    game = Game(rollout.env, rollout.num_inner_episodes, rollout.batch_size)
    kind_2 = NaiveHawk(rollout.policy, rollout.naive_learner, rollout.env.obs_dim, fresh_init=False)

    @jax.jit
    def ours(ego, naive, key):
        return play(FrozenHawk(rollout.policy), kind_2, game, rollout.batch_size, ego, naive, key)

    trajectory, metrics = ours(ego, naive, key)
    np.testing.assert_array_equal(trajectory["actions_1"], expected["actions"])
    np.testing.assert_array_equal(trajectory["actions_2"], expected["coplayer_actions"])
    np.testing.assert_array_equal(trajectory["rewards_1"], expected["rewards"])
    np.testing.assert_array_equal(metrics["reward_2"], expected_metrics["coplayer_reward"])
    np.testing.assert_array_equal(metrics["cooperate_player_2"], expected_metrics["cooperate_player_2"])


def test_two_learners_of_different_batch_sizes_cannot_meet(tiny_components):
    policy, learner = tiny_components.policy, tiny_components.naive_learner
    assert match_batch_size(MemoryOne(), NaiveHawk(policy, learner, 5, batch_size=8), 16) == 8
    assert match_batch_size(MemoryOne(), MemoryOne(), 16) == 16
    with pytest.raises(ValueError, match="different batch sizes"):
        match_batch_size(NaiveHawk(policy, learner, 5, batch_size=4), NaiveHawk(policy, learner, 5, batch_size=8), 16)


def test_agent_folders_are_found_below_an_experiment_folder(tmp_path):
    for run in ("coala/seed_0", "coala/seed_1", "mfos/seed_0"):
        os.makedirs(tmp_path / "exp" / run / "checkpoints")
    os.makedirs(tmp_path / "exp" / "league")
    found = league.find_agent_folders(str(tmp_path / "exp"))
    assert [os.path.relpath(f, tmp_path / "exp") for f in found] == ["coala/seed_0", "coala/seed_1", "mfos/seed_0"]
    with pytest.raises(league.AgentSourceError, match="is not an agent"):
        league.find_agent_folders(str(tmp_path / "exp" / "league"))
    assert league._unique(["a", "b", "a"]) == ["a", "b", "a~2"]


@pytest.fixture(scope="module")
def workdir(tiny_config, tiny_components, tmp_path_factory):
    return train_tiny_run(tiny_config, tiny_components, str(tmp_path_factory.mktemp("run") / "tiny"), 1)


@pytest.mark.slow
def test_league_command(workdir, tmp_path):
    out = tmp_path / "league"
    done = run_coala(
        "league", f"--agents={workdir}", "--zoo=always_defect,tit_for_tat", "--meta_episodes=2", f"--out={out}"
    )
    assert done.returncode == 0, done.stderr
    with open(out / "league.json") as f:
        summary = json.load(f)
    names = [p["name"] for p in summary["players"]]
    assert names == ["tiny:0", "tiny:1", "always_defect", "tit_for_tat"]
    assert summary["matrices"]["reward"]["n"] == [[4] * 4] * 4
    alld, tft = names.index("always_defect"), names.index("tit_for_tat")
    assert abs(summary["matrices"]["reward"]["mean"][alld][tft] - 2 / 3) < 1e-6
    assert [g["group"] for g in summary["groups_table"]] == ["COALA-PG"]
    assert summary["groups_table"][0]["agents"] == 2
    assert os.path.getsize(out / "league.png") > 10_000 and os.path.exists(out / "groups.md")
    assert "| rank | player |" in done.stdout


def test_league_refuses_bad_input_in_one_line(workdir, tmp_path):
    (tmp_path / "empty").mkdir()
    for args, words in (
        ((f"--agents={tmp_path / 'missing'}",), "is not a folder"),
        ((f"--agents={tmp_path / 'empty'}",), "is not an agent"),
        ((f"--agents={workdir}", "--zoo=always_sometimes"), "unknown player(s) always_sometimes"),
        ((f"--agents={workdir}", "--meta_episodes=1"), "--meta_episodes must be >= 2"),
        (("--zoo=none",), "at least two players"),
        ((f"--agents={workdir}", "--mismatch", "--naive_rules=ppo"), "--naive_rules: unknown ppo"),
        ((f"--agents={workdir}", "--mismatch", "--naive_batch_sizes=0"), "values > 0"),
        ((f"--agents={workdir}", "--mismatch", "--exploiter"), "separate studies"),
    ):
        done = run_coala("league", *args, f"--out={tmp_path / 'out'}")
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, done.stderr)


def test_mismatch_settings_vary_one_factor_at_a_time():
    got = mismatch.settings(16, (1, 16, 64), (0.3, 1.0), ("a2c", "pg"))
    assert got == [
        {"factor": "training", "batch_size": 16, "lr_multiplier": 1.0, "rule": "a2c"},
        {"factor": "batch_size", "batch_size": 1, "lr_multiplier": 1.0, "rule": "a2c"},
        {"factor": "batch_size", "batch_size": 64, "lr_multiplier": 1.0, "rule": "a2c"},
        {"factor": "lr_multiplier", "batch_size": 16, "lr_multiplier": 0.3, "rule": "a2c"},
        {"factor": "rule", "batch_size": 16, "lr_multiplier": 1.0, "rule": "pg"},
    ]


def test_pg_naive_learner_has_no_critic(tiny_components):
    """Rule "pg": the value loss has weight 0, so the zero-initialised value head never moves (REINFORCE with the
    batch-normalised return as advantage), while the policy does."""
    reference = dict(league.reference_description([]))
    reference["policy"] = {"num_actions": 2, "obs_dim": 5, **tiny_components.config.policy.to_dict()}
    player = zoo.naive_player(reference, rule="pg", lr_multiplier=3.0, batch_size=4)
    assert player.name == "naive-B4-lr×3-pg" and player.kind.learner.value_coefficient == 0.0
    learner = player.kind.learner
    params = player.kind.start((), jax.random.PRNGKey(0), 4)[0]
    obs = jax.nn.one_hot(jax.random.randint(jax.random.PRNGKey(1), (4, 3), 0, 5), 5)
    actions = jax.random.randint(jax.random.PRNGKey(2), (4, 3), 0, 2)
    rewards = jax.random.normal(jax.random.PRNGKey(3), (4, 3))
    new, _ = jax.jit(learner.update)(params, learner.init(params), obs, actions, rewards)
    np.testing.assert_array_equal(new["value_head"]["kernel"], 0.0)
    assert float(jnp.abs(new["policy_head"]["kernel"]).sum()) > 0.0


@pytest.mark.slow
def test_mismatch_study_on_a_tiny_agent(workdir, tmp_path):
    players, descriptions = league.load_players([workdir], log=lambda line: None)
    result = mismatch.run_mismatch(
        players[:1],
        descriptions[:1],
        batch_sizes=(2,),
        lr_multipliers=(1.0,),
        rules=("pg",),
        meta_episodes=2,
        log=lambda line: None,
    )
    assert [(r["factor"], r["batch_size"], r["rule"]) for r in result["rows"]] == [
        ("training", 4, "a2c"),
        ("batch_size", 2, "a2c"),
        ("rule", 4, "pg"),
    ]
    for row in result["rows"]:
        assert -1.0 <= row["shaper_reward"] <= 2.0 and -1.0 <= row["naive_reward"] <= 2.0
        assert row["shaper_reward_se"] >= 0.0
    assert [g["agents"] for g in result["groups"]] == [1, 1, 1]
    mismatch.write_mismatch(result, str(tmp_path))
    for name in ("mismatch.json", "mismatch.csv", "mismatch.md", "mismatch.png"):
        assert os.path.getsize(tmp_path / name) > 0
    assert "(training)" in (tmp_path / "mismatch.md").read_text()


@pytest.mark.slow
def test_exploiter_trains_against_the_frozen_agent_only(workdir, tmp_path):
    players, descriptions = league.load_players([workdir], log=lambda line: None)
    target = players[0]
    reference = dict(descriptions[0])
    result = exploiter.exploitability(
        [target],
        [reference],
        zoo.ipd_zoo(["always_defect"], reference),
        iterations=2,
        meta_batch_size=2,
        meta_episodes=2,
        log=lambda line: None,
    )
    row = result["rows"][0]
    assert [h["iteration"] for h in row["history"]] == [1, 2]
    assert set(row["reward_vs_each_zoo_player"]) == {"always_defect"}
    # Against always-defect a player earns at most 0 (mutual defection) per step.
    assert row["reward_vs_zoo"] <= 1e-6
    for key in ("reward_vs_exploiter", "exploiter_reward"):
        assert -1.0 <= row[key] <= 2.0
    exploiter.write_exploitability(result, str(tmp_path))
    assert os.path.getsize(tmp_path / "exploitability.png") > 0
    assert "| agent |" in (tmp_path / "exploitability.md").read_text()


def test_cleanup_bots_do_what_their_names_say():
    """Clean Up-lite's scripted bots, both seats: the cleaner cleans and harvests at most the one apple that can spawn
    under it before it leaves the orchard; the harvester cleans at most the dirt it starts on."""
    game = {
        "env": "cleanup_lite",
        "inner_episode_length": 8,
        "env_kwargs": {},
        "num_inner_episodes": 2,
        "batch_size": 4,
    }
    env = league.make_game(game).env
    players = zoo.cleanup_zoo(["always_clean", "never_clean", "random"], {}, env)
    result = league.run_league(players, game, meta_episodes=4, log=lambda line: None)
    names = [p.name for p in result.players]
    clean, harvest = names.index("always_clean"), names.index("never_clean")
    per_step_bound = 1.0 / game["inner_episode_length"]
    for opponent in range(len(names)):
        assert result.cell("reward", clean, opponent)["mean"] <= per_step_bound + 1e-6
        assert result.cell("cleaned", harvest, opponent)["mean"] <= per_step_bound + 1e-6
        assert result.cell("cleaned", clean, opponent)["mean"] > 0.05
        assert result.cell("zapped", opponent, clean)["mean"] == 0.0  # scripted bots never zap
    assert result.cell("reward", harvest, clean)["mean"] > result.cell("reward", clean, harvest)["mean"]
    assert set(result.samples) == {"reward", "apple", "cleaned", "frozen", "zapped"}
