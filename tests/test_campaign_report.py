"""The campaign's claim table: readings, verdicts and progress from run folders written here by hand."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys

import pytest

from coala_dist.analysis.campaign_report import CLAIMS, Claim, judge, read_seed_runs, write_campaign_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIG5C = next(c for c in CLAIMS if c.experiment == "ipd-fig5c" and c.estimator == "coala")
H3_COALA = next(c for c in CLAIMS if c.experiment == "ipd-h3" and c.rule == "coala")
H3_MFOS = next(c for c in CLAIMS if c.experiment == "ipd-h3" and c.rule == "mfos")


def _write_run(root, experiment, estimator, seed, between, naive, result=None):
    """A run folder: metrics.csv with the given per-iteration rewards, and result.json if `result`."""
    directory = os.path.join(root, experiment, estimator, f"seed_{seed}")
    os.makedirs(directory)
    with open(os.path.join(directory, "metrics.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "vs_meta/ego_reward", "vs_naive/ego_reward"])
        for i, (b, n) in enumerate(zip(between, naive, strict=True), start=1):
            writer.writerow([i, b, n])
    if result is not None:
        with open(os.path.join(directory, "result.json"), "w") as f:
            json.dump(result, f)


def _fig5c_result(final_between, iterations=500):
    return {"iterations": iterations, "final": {"vs_meta/ego_reward": final_between}, "train_time_s": 3600.0}


def test_fig5c_verdict_is_pending_until_every_planned_seed_finished_then_reads_the_mean(tmp_path):
    root = str(tmp_path)
    finals = [0.95, 0.91, 0.97, 0.85]
    for seed, value in enumerate(finals):
        _write_run(root, "ipd-fig5c", "coala", seed, [0.5] * 3, [1.0] * 3, _fig5c_result(value))
    _write_run(root, "ipd-fig5c", "coala", 4, [0.2, 0.4, 0.6], [1.0, 1.1, 1.2])  # unfinished

    row = judge(FIG5C, read_seed_runs(root, FIG5C))
    assert row["reproduced"] == "pending (4 of 5 seeds)"
    assert row["per_seed"] == dict(enumerate(finals))
    assert row["summary"]["mean"] == pytest.approx(statistics.mean(finals))
    assert row["summary"]["std"] == pytest.approx(statistics.stdev(finals))

    # The fifth seed finishes: 0.99 puts the mean of five at 0.934 ≥ 0.9; 0.80 puts it at 0.896 < 0.9.
    for last, verdict in ((0.99, "yes"), (0.80, "no")):
        with open(os.path.join(root, "ipd-fig5c", "coala", "seed_4", "result.json"), "w") as f:
            json.dump(_fig5c_result(last), f)
        row = judge(FIG5C, read_seed_runs(root, FIG5C))
        assert row["summary"]["mean"] == pytest.approx(statistics.mean([*finals, last]))
        assert row["reproduced"] == verdict


def test_targets_on_either_side_and_intervals():
    assert Claim("c", "p", "ipd-fig5c", "mfos", 3, high=0.1).met(0.1)
    assert not Claim("c", "p", "ipd-fig5c", "mfos", 3, high=0.1).met(0.1001)
    assert Claim("c", "p", "ipd-fig5c", "coala", 5, low=0.9).met(0.9)
    assert not Claim("c", "p", "ipd-fig5c", "coala", 5, low=0.9).met(0.8999)
    assert H3_COALA.met(0.75) and H3_COALA.met(0.95) and not H3_COALA.met(0.96) and not H3_COALA.met(0.7)
    # The targets: within 0.1 of the paper's 0.850 (COALA-PG) and 0.853 (M-FOS).
    assert (H3_COALA.low, H3_COALA.high) == pytest.approx((0.75, 0.95))
    assert (H3_MFOS.low, H3_MFOS.high) == pytest.approx((0.753, 0.953))


def test_h3_reads_each_rules_reward_against_the_other_rule_from_the_evaluation(tmp_path):
    # Agents 0, 1 are COALA-PG, 2, 3 M-FOS; entry [i][j] is agent i's reward per step against agent j.
    matrix = [
        [None, 0.5, 0.80, 0.90],
        [0.5, None, 0.70, 0.60],
        [0.81, 0.83, None, 0.2],
        [0.85, 0.87, 0.2, None],
    ]
    result = {
        "iterations": 500,
        "final": {"vs_meta/ego_reward": 0.0},
        "meta_evaluation": {"ego_reward": matrix, "cooperate_player_1": matrix},
        "evaluation": {"ego_reward": [[1.0, 1.0]] * 4},
    }
    root = str(tmp_path)
    _write_run(root, "ipd-h3", "coala", 0, [0.1], [0.8], result)
    runs = read_seed_runs(root, H3_COALA)
    # By hand: COALA-PG against M-FOS is the mean of [0][2], [0][3], [1][2], [1][3]; M-FOS against COALA-PG of
    # [2][0], [2][1], [3][0], [3][1]. The COALA-PG pair's 0.5 and the M-FOS pair's 0.2 never enter.
    assert judge(H3_COALA, runs)["per_seed"][0] == pytest.approx((0.80 + 0.90 + 0.70 + 0.60) / 4)
    assert judge(H3_MFOS, runs)["per_seed"][0] == pytest.approx((0.81 + 0.83 + 0.85 + 0.87) / 4)


def test_report_lists_every_run_with_its_status_time_and_numbers_and_draws_the_curves(tmp_path):
    root, out = str(tmp_path / "runs"), str(tmp_path / "out")
    between = [i / 100 for i in range(1, 31)]  # iterations 1..30
    _write_run(root, "ipd-fig5c", "coala", 1, between, [1.0] * 30)
    finished = _fig5c_result(0.97) | {"train_time_s": 9000.0}  # 2.5 h
    finished["final"]["vs_naive/ego_reward"] = 1.4
    _write_run(root, "ipd-fig5c", "coala", 0, [0.9] * 3, [1.4] * 3, finished)
    _write_run(root, "ipd-h3", "coala", 0, [0.0] * 5, [0.8] * 5)

    rows = write_campaign_report(root, out)
    assert all(row["reproduced"].startswith("pending") for row in rows)
    with open(os.path.join(out, "claims.json")) as f:
        runs = json.load(f)["runs"]
    fig5c = runs["ipd-fig5c: COALA-PG"]
    assert [(entry["seed"], entry["status"], entry["iteration"]) for entry in fig5c] == [
        (0, "finished", 500),
        (1, "running", 30),
    ]
    # The running seed: iterations 21..30, (0.21 + … + 0.30) / 10.
    assert fig5c[1]["between_meta"] == pytest.approx(0.255)
    with open(os.path.join(out, "claims.md")) as f:
        table = f.read()
    assert "| ipd-fig5c: COALA-PG | 0 | finished | 500 | 2.50 h | 0.970 | 1.400 |" in table
    assert "| ipd-fig5c: COALA-PG | 1 | running | 30 | 0.00 h | 0.255 | 1.000 |" in table
    assert table.count("| pending (") == len(CLAIMS)
    with open(os.path.join(out, "campaign.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_script_refuses_a_missing_workdir_root_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "campaign_report.py"),
         f"--workdir_root={tmp_path / 'nowhere'}", f"--out={tmp_path / 'out'}"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "is not a folder" in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_claim_names_a_shipped_experiment():
    from coala_dist.experiments.definitions import EXPERIMENTS

    for claim in CLAIMS:
        experiment = EXPERIMENTS[claim.experiment]
        assert claim.estimator in experiment.estimators
        if claim.rule is not None:
            assert claim.rule in experiment.agent_estimators


def test_a_run_stopped_early_is_finished_and_marked_in_the_table(tmp_path):
    root, out = str(tmp_path / "runs"), str(tmp_path / "out")
    mfos = next(c for c in CLAIMS if c.estimator == "mfos" and c.experiment == "ipd-fig5c")
    stopped = {"iteration": 362, "rule": "reward per step between meta agents ≤ 0.1 in each of 300 iterations in a row"}
    for seed, final in enumerate((0.01, 0.02, 0.03)):
        result = _fig5c_result(final, iterations=362 if seed == 1 else 500)
        result["stopped_early"] = stopped if seed == 1 else None
        _write_run(root, "ipd-fig5c", "mfos", seed, [0.0] * 3, [1.0] * 3, result)
    rows = {row["claim"]: row for row in write_campaign_report(root, out)}
    row = rows[mfos.name]
    assert row["reproduced"] == "yes" and row["stopped_early"] == {1: 362}
    with open(os.path.join(out, "claims.md")) as f:
        table = f.read()
    assert "0: 0.010, 1: 0.020 (stopped at 362), 2: 0.030" in table
    assert "| ipd-fig5c: M-FOS | 1 | stopped early at 362 | 362 | 1.00 h | 0.020 |" in table
