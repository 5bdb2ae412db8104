"""The experiment runner: numbers against hand computations, and a smoke run of every experiment command.

The smoke runs train one tiny iteration (configs/ipd_tiny.py sizes) of one estimator per experiment into a tmp dir
and check the files each experiment writes; ipd-fig5b re-uses the ipd-fig5a run, as the real command does. A smoke
run never writes into the repository's published results/ (checked on the files themselves).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
from helpers import results_snapshot

from coala_dist.analysis.experiment_report import METRIC_LABELS, final_window_mean
from coala_dist.analysis.experiment_report import report_json as json_safe
from coala_dist.analysis.runs import read_metrics_csv
from coala_dist.configs import load_shipped as load_config_file
from coala_dist.experiments import EXPERIMENTS, experiment_config, run_experiment
from coala_dist.experiments.definitions import apply_overrides
from coala_dist.experiments.early_stop import DefectionStop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results")


# ---------------------------------------------------------------------------------------------------------------
# Numbers


def test_final_window_mean_skips_nan_and_clips_window():
    values = [5.0, 1.0, math.nan, 2.0, 4.0]
    assert final_window_mean(values, 3) == pytest.approx((2.0 + 4.0) / 2)
    assert final_window_mean(values, 100) == pytest.approx((5 + 1 + 2 + 4) / 4)
    assert math.isnan(final_window_mean([1.0, math.nan], 1))


def test_read_metrics_csv_keeps_the_last_row_of_a_repeated_iteration(tmp_path):
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "vs_naive/ego_reward", "vs_meta/ego_reward"])
        writer.writerows([[1, 0.1, ""], [2, 0.2, ""], [1, 0.5, ""], [2, 0.6, ""], [3, 0.7, 0.3]])
    rows = read_metrics_csv(str(path))
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert [r["vs_naive/ego_reward"] for r in rows] == [0.5, 0.6, 0.7]
    assert math.isnan(rows[0]["vs_meta/ego_reward"]) and rows[2]["vs_meta/ego_reward"] == 0.3


def test_json_safe_writes_strict_json():
    assert (
        json.dumps(json_safe({"a": [math.nan, 1.234567891], "b": math.inf}))
        == '{"a": [null, 1.2346], "b": null}'
    )


# ---------------------------------------------------------------------------------------------------------------
# Configs


def test_experiment_configs_are_the_claims():
    fig5a = experiment_config(EXPERIMENTS["ipd-fig5a"], "mfos", 3)
    assert (fig5a.estimator, fig5a.seed, fig5a.p_naive, fig5a.population_size_meta) == (
        "mfos",
        3,
        1.0,
        1,
    )
    # The paper's sizes that the estimators' 1/B scaling depends on are kept (Table 2).
    assert (fig5a.batch_size, fig5a.num_inner_episodes, fig5a.env.inner_episode_length) == (
        16,
        20,
        10,
    )
    assert (fig5a.meta.discount, fig5a.meta.td_lambda, fig5a.meta.gae_lambda) == (1.0, 1.0, 1.0)
    fig5c = experiment_config(EXPERIMENTS["ipd-fig5c"], "coala", 0)
    assert (fig5c.p_naive, fig5c.population_size_meta) == (0.75, 4)
    ablation = experiment_config(EXPERIMENTS["ipd-ablation-pnaive0"], "coala", 0)
    assert (ablation.p_naive, ablation.population_size_meta) == (0.0, 4)
    # The mixed pools keep the paper's meta-batch and learning rate (Tables 2-3) and shorten training only; App.
    # H.3 and the ablation are Fig. 5C's allocation with their own pool.
    assert (fig5c.meta_batch_size, fig5c.meta.learning_rate, fig5c.training_iterations) == (128, 3e-4, 500)
    h3 = experiment_config(EXPERIMENTS["ipd-h3"], "coala", 0).to_dict()
    assert tuple(h3.pop("agent_estimators")) == ("coala", "coala", "mfos", "mfos")
    assert h3.pop("cross_estimator_pairing") is True
    expected = fig5c.to_dict()
    expected.pop("agent_estimators"), expected.pop("cross_estimator_pairing")
    assert {k: v for k, v in h3.items()} == expected
    assert {k: v for k, v in ablation.to_dict().items() if k != "p_naive"} == {
        k: v for k, v in fig5c.to_dict().items() if k != "p_naive"
    }
    with pytest.raises(ValueError, match="estimators"):
        experiment_config(EXPERIMENTS["ipd-ablation-pnaive0"], "mfos", 0)


def test_defection_stop_counts_iterations_in_a_row_at_or_below_the_level():
    rule = DefectionStop(patience=3)
    values = [0.5, 0.05, 0.1, math.nan, 0.0, 0.1, 0.02, 0.3]
    streaks, reached = [], []
    for iteration, value in enumerate(values, start=1):
        rule.on_iteration(iteration, None, {"vs_meta/ego_reward": value})
        streaks.append(rule.streak)
        reached.append(rule.reached)
    # 0.1 counts (at the level); NaN (no episode between meta agents) and anything above it end the streak.
    assert streaks == [0, 1, 2, 0, 1, 2, 3, 0]
    assert reached == [False] * 6 + [True, False]


def test_defection_stop_resumes_from_the_csv_rows_of_the_iterations_already_done():
    rule = DefectionStop(patience=2)
    rule.streak = 5  # resume starts over from the rows, whatever the rule held
    rows = [{"vs_meta/ego_reward": "0.01"}, {"vs_meta/ego_reward": ""}, {"vs_meta/ego_reward": "0.0"},
            {"vs_meta/ego_reward": "0.05"}]
    rule.resume(rows)
    assert rule.streak == 2 and rule.reached  # the empty cell (NaN) ended the first streak
    rule.resume([])
    assert rule.streak == 0 and not rule.reached
    with pytest.raises(ValueError, match="patience=0"):
        DefectionStop(patience=0)


def test_apply_overrides_rejects_unknown_fields_and_copies():
    config = load_config_file("ipd_cpu_pure_shaping.py")
    changed = apply_overrides(config, {"meta.learning_rate": 0.01})
    assert changed.meta.learning_rate == 0.01 and config.meta.learning_rate == 3e-3
    with pytest.raises(ValueError, match="unknown config field"):
        apply_overrides(config, {"meta.learning_rat": 0.01})


# ---------------------------------------------------------------------------------------------------------------
# Smoke: every experiment command, one tiny iteration


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("experiments"))


def _smoke(name: str, root: str, **kwargs) -> tuple[dict, str]:
    out = os.path.join(root, "results", name)
    summary = run_experiment(
        name,
        num_seeds=1,
        out_dir=out,
        # Where `coala experiment --smoke --workdir_root=ROOT/workdirs` trains, so the command tests reuse these runs.
        workdir_root=os.path.join(root, "workdirs", "smoke"),
        smoke=True,
        estimators=("coala",),
        log=lambda line: None,
        **kwargs,
    )
    return summary, out


def _check_outputs(name: str, out: str) -> None:
    files = (
        "summary.json",
        "table.md",
        f"{name}.png",
        "per_seed/coala_seed0.csv",
        "per_seed/coala_seed0.json",
    )
    for file_name in files:
        assert os.path.getsize(os.path.join(out, file_name)) > 0, file_name
    with open(os.path.join(out, "summary.json")) as f:
        json.load(f, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


@pytest.mark.slow
def test_smoke_fig5a_then_fig5b_reuses_its_runs(smoke_root):
    summary, out = _smoke("ipd-fig5a", smoke_root)
    _check_outputs("ipd-fig5a", out)
    reward = summary["estimators"]["coala"]["final"]["vs_naive/ego_reward"]["mean"]
    assert -1.0 <= reward <= 2.0  # IPD payoffs bound the reward per step
    run_dir = os.path.join(smoke_root, "workdirs", "smoke", "ipd-fig5a", "coala", "seed_0")
    result_mtime = os.path.getmtime(os.path.join(run_dir, "result.json"))

    summary, out = _smoke("ipd-fig5b", smoke_root)
    _check_outputs("ipd-fig5b", out)
    # Fig. 5B evaluated the Fig. 5A run without retraining it.
    assert os.path.getmtime(os.path.join(run_dir, "result.json")) == result_mtime
    evaluation = summary["estimators"]["coala"]["evaluation"]
    for key in (
        "defection_meta_first",
        "defection_meta_last",
        "defection_naive_first",
        "defection_naive_last",
    ):
        assert 0.0 <= evaluation[key]["mean"] <= 1.0
    with open(os.path.join(out, "table.md")) as f:
        assert "defection naive, episode M" in f.read()


@pytest.mark.slow
def test_smoke_fig5c_and_ablation(smoke_root):
    summary, out = _smoke("ipd-fig5c", smoke_root)
    _check_outputs("ipd-fig5c", out)
    assert set(summary["estimators"]["coala"]["final"]) == set(
        EXPERIMENTS["ipd-fig5c"].headline_metrics
    )
    summary, out = _smoke("ipd-ablation-pnaive0", smoke_root)
    _check_outputs("ipd-ablation-pnaive0", out)
    # p_naive = 0: every co-player is a meta agent, so there are no naive-opponent numbers.
    with open(os.path.join(out, "per_seed", "coala_seed0.csv")) as f:
        rows = list(csv.DictReader(f))
    assert all(not math.isnan(float(r["vs_meta/ego_reward"])) for r in rows)


@pytest.mark.parametrize(("name", "other_rule"), [("ipd-h3", "mfos"), ("ipd-h3-mfos-mean", "mfos_mean")])
@pytest.mark.slow
def test_smoke_head_to_head(smoke_root, name, other_rule):
    summary, out = _smoke(name, smoke_root)
    _check_outputs(name, out)
    head_to_head = summary["estimators"]["coala"]["head_to_head"]
    assert set(head_to_head) == {"coala", other_rule}
    for numbers in head_to_head.values():
        assert -1.0 <= numbers["reward_vs_other_rule"]["mean"] <= 2.0
        assert 0.0 <= numbers["cooperation_vs_other_rule"]["mean"] <= 1.0


@pytest.mark.parametrize("name", ["cleanup-fig6", "cleanup-fig7"])
@pytest.mark.slow
def test_smoke_cleanup(smoke_root, name):
    summary, out = _smoke(name, smoke_root)
    _check_outputs(name, out)
    final = summary["estimators"]["coala"]["final"]
    assert set(final) == set(EXPERIMENTS[name].headline_metrics)
    group = "vs_naive" if name == "cleanup-fig6" else "vs_meta"
    assert 0.0 <= final[f"{group}/cleaning_discrepancy"]["mean"] <= 1.0
    assert 0.0 <= final[f"{group}/pollution"]["mean"] <= 1.0
    with open(os.path.join(out, "per_seed", "coala_seed0.json")) as f:
        result = json.load(f)
    # The run records what it changed from the paper's Clean Up config (Table 5 values), not from the IPD defaults.
    changed = result["changed_from_paper"]
    assert "env.name" not in changed and changed["training_iterations"] == 1
    assert "zapped_player_1" in result["evaluation"]


@pytest.mark.slow
def test_first_seed_selects_the_seeds_of_this_process(smoke_root):
    # After the Fig. 5A smoke run, seed 0 of COALA-PG is finished; a process given seeds 1-2 must neither report
    # it nor train anything when only reporting.
    _smoke("ipd-fig5a", smoke_root)
    summary, _ = _smoke("ipd-fig5a", smoke_root, first_seed=0, train_missing=False)
    assert summary["estimators"]["coala"]["seeds"] == [0]
    out = os.path.join(smoke_root, "results", "first-seed")
    common = dict(
        out_dir=out, workdir_root=os.path.join(smoke_root, "workdirs", "smoke"), smoke=True, log=lambda line: None
    )
    summary = run_experiment("ipd-fig5a", num_seeds=3, first_seed=1, train_missing=False, **common)
    assert summary["estimators"] == {}
    with pytest.raises(ValueError, match="first_seed"):
        run_experiment("ipd-fig5a", num_seeds=2, first_seed=2, **common)


def test_a_run_stopped_by_a_signal_is_neither_evaluated_nor_reported(monkeypatch, tmp_path):
    import types

    from coala_dist.experiments import runner

    # `train` returns early when SIGTERM / Ctrl-C stops it (after saving a checkpoint).
    monkeypatch.setattr(runner, "train", lambda config, workdir, **kwargs: (types.SimpleNamespace(step=7), []))
    config = experiment_config(
        EXPERIMENTS["ipd-fig5a"], "coala", 0, smoke=True, extra_overrides={"training_iterations": 20}
    )
    run_dir = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="iteration 7 of 20"):
        runner.train_and_evaluate(config, run_dir, components=None, evaluators=(None, None), log=lambda line: None)
    assert not os.path.exists(os.path.join(run_dir, runner.RESULT_FILE))
    assert not os.path.exists(os.path.join(run_dir, runner.PARAMS_FILE))


@pytest.mark.slow
def test_stop_after_defection_finishes_a_run_early_and_a_rerun_counts_it_finished(tmp_path, monkeypatch):
    import functools

    from coala_dist.experiments import runner

    # Every iteration counts as defection (a level above any IPD reward), so patience 2 ends a 4-iteration run at 2.
    monkeypatch.setattr(runner, "DefectionStop", functools.partial(DefectionStop, level=10.0))
    lines = []
    common = dict(
        num_seeds=1,
        out_dir=str(tmp_path / "report"),
        workdir_root=str(tmp_path / "workdirs"),
        smoke=True,
        estimators=("coala",),
        extra_overrides={"training_iterations": 4},
        log=lines.append,
    )
    summary = run_experiment("ipd-fig5c", stop_after_defection=2, **common)
    run_dir = tmp_path / "workdirs" / "ipd-fig5c" / "coala" / "seed_0"
    with open(run_dir / runner.RESULT_FILE) as f:
        result = json.load(f)
    assert (result["iterations"], result["budget"]) == (2, 4)
    assert result["stopped_early"]["iteration"] == 2 and "2 iterations in a row" in result["stopped_early"]["rule"]
    assert [int(row["iteration"]) for row in read_metrics_csv(str(run_dir / "metrics.csv"))] == [1, 2]
    assert any("stopped early at iteration 2" in line for line in lines)
    assert summary["estimators"]["coala"]["stopped_early"] == {0: 2}
    with open(tmp_path / "report" / "table.md") as f:
        assert "Stopped early" in f.read()

    # The same budget again, without the flag: the run is finished, not resumed to 4.
    lines.clear()
    run_experiment("ipd-fig5c", **common)
    assert any("already finished" in line for line in lines)
    with open(run_dir / runner.RESULT_FILE) as f:
        assert json.load(f)["iterations"] == 2


def test_command_line_report_only(smoke_root):
    """`coala experiment` parses its flags and, with --report_only, rewrites results from the finished runs."""
    from absl import flags

    from coala_dist.commands import experiment

    out = os.path.join(smoke_root, "results", "cli-fig5a")
    argv = [
        "coala experiment",
        "ipd-fig5a",
        "--smoke",
        "--report_only",
        "--estimators=coala",
        f"--workdir_root={os.path.join(smoke_root, 'cli')}",
        f"--out={out}",
    ]
    try:
        experiment.main(flags.FLAGS(argv))
    finally:
        flags.FLAGS.unparse_flags()
    # No finished run under this root and --report_only: nothing was trained, an empty table was written.
    assert not os.path.exists(os.path.join(smoke_root, "cli"))
    with open(os.path.join(out, "table.md")) as f:
        assert "| estimator |" in f.read()


@pytest.mark.parametrize(("name", "other_rule"), [("ipd-h3", "mfos"), ("ipd-h3-mfos-mean", "mfos_mean")])
def test_head_to_head_builds_the_app_h3_pool(name, other_rule):
    experiment = EXPERIMENTS[name]
    config = experiment_config(experiment, "coala", 0)
    assert tuple(config.agent_estimators) == ("coala", "coala", other_rule, other_rule)
    assert config.cross_estimator_pairing and config.p_naive == 0.75


def test_head_to_head_numbers_average_the_right_pairs():
    from coala_dist.analysis.experiment_report import head_to_head_numbers

    nan = math.nan
    # Agent i's reward against agent j; rules: 0, 1 = coala, 2, 3 = mfos.
    rewards = [
        [nan, 9.0, 0.8, 1.0],
        [9.0, nan, 0.6, 0.6],
        [0.5, 0.7, nan, 9.0],
        [0.9, 0.9, 9.0, nan],
    ]
    cooperation = [
        [nan, 0.0, 1.0, 1.0],
        [0.0, nan, 0.5, 0.5],
        [1.0, 1.0, nan, 0.0],
        [0.0, 0.0, 0.0, nan],
    ]
    # vs naive: 2 rows per agent, grouped by agent.
    naive = [[0.1], [0.3], [0.5], [0.7], [1.0], [1.2], [1.4], [1.6]]
    result = {
        "meta_evaluation": {"ego_reward": rewards, "cooperate_player_1": cooperation},
        "evaluation": {"ego_reward": naive},
    }
    numbers = head_to_head_numbers(result, ("coala", "coala", "mfos", "mfos"))
    assert numbers["coala"]["reward_vs_other_rule"] == pytest.approx((0.8 + 1.0 + 0.6 + 0.6) / 4)
    assert numbers["mfos"]["reward_vs_other_rule"] == pytest.approx((0.5 + 0.7 + 0.9 + 0.9) / 4)
    assert numbers["coala"]["cooperation_vs_other_rule"] == pytest.approx(0.75)
    assert numbers["mfos"]["cooperation_vs_other_rule"] == pytest.approx(0.5)
    assert numbers["coala"]["reward_vs_naive"] == pytest.approx((0.1 + 0.3 + 0.5 + 0.7) / 4)
    assert numbers["mfos"]["reward_vs_naive"] == pytest.approx((1.0 + 1.2 + 1.4 + 1.6) / 4)


def test_report_prints_the_iqm_and_its_interval_beside_mean_and_std():
    from coala_dist.analysis import statistics
    from coala_dist.analysis.experiment_report import summarize_runs, table_markdown

    experiment = EXPERIMENTS["ipd-fig5a"]
    metric = experiment.headline_metrics[0]
    values = [0.2, 0.9, 1.0, 1.1, -3.0]  # one outlying seed: the IQM drops it, the mean does not
    runs = [
        {
            "estimator": "coala",
            "seed": seed,
            "result": {"final": {metric: value}, "evaluation": {}, "iterations": 10, "train_time_s": 1.0},
        }
        for seed, value in enumerate(values)
    ]
    summary = summarize_runs(experiment, runs)
    numbers = summary["estimators"]["coala"]["final"][metric]
    assert (numbers["mean"], numbers["std"]) == statistics.mean_std(values)  # what old readers of summary.json read
    assert numbers == statistics.seed_summary(values)
    assert numbers["iqm"] == pytest.approx((0.2 + 0.9 + 1.0) / 3)  # the lowest and the highest value cut
    assert numbers["iqm_low"] <= numbers["iqm"] <= numbers["iqm_high"]
    table = table_markdown(experiment, summary, final_window=1)
    header = next(line for line in table.splitlines() if line.startswith("| estimator |"))
    row = next(line for line in table.splitlines() if line.startswith("| COALA-PG |"))
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    label = METRIC_LABELS[metric]
    assert cells[label] == f"{numbers['mean']:+.3f} ± {numbers['std']:.3f}"
    assert cells[f"{label}: IQM [95% CI]"] == (
        f"{numbers['iqm']:+.3f} [{numbers['iqm_low']:+.3f}, {numbers['iqm_high']:+.3f}]"
    )
    assert "n/a" in row  # the metrics no run has


@pytest.mark.slow
def test_command_smoke_report_goes_under_the_workdir_root(smoke_root, capsys):
    """`coala experiment NAME --smoke` without --out: its report goes to WORKDIR_ROOT/smoke/NAME/report."""
    from absl import flags

    from coala_dist.commands import experiment

    before = results_snapshot()
    root = os.path.join(smoke_root, "workdirs")
    argv = ["coala experiment", "ipd-fig5a", "--smoke", "--estimators=coala", f"--workdir_root={root}"]
    try:
        # Reuses the Fig. 5A smoke run when test_smoke_fig5a_then_fig5b_reuses_its_runs trained it; trains it otherwise.
        experiment.main(flags.FLAGS(argv))
    finally:
        flags.FLAGS.unparse_flags()
    report = os.path.join(root, "smoke", "ipd-fig5a", "report")
    _check_outputs("ipd-fig5a", report)
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == f"report: {report}"
    assert os.path.exists(os.path.join(root, "smoke", "ipd-fig5a", "coala", "seed_0", "result.json"))
    assert results_snapshot() == before


def test_smoke_refuses_an_out_inside_results(tmp_path, monkeypatch):
    from coala_dist.experiments import runner

    # Folders that do not exist yet: if the refusal ever broke, a new folder would appear (and be removed below)
    # instead of a committed table being overwritten.
    (tmp_path / "link").symlink_to(RESULTS)
    outs = [
        os.path.join(RESULTS, "coala-test-refused"),
        os.path.join(RESULTS, "ipd", "..", "coala-test-refused", "ipd-fig5a"),
        str(tmp_path / "link" / "coala-test-refused"),
        RESULTS,
    ]
    monkeypatch.setattr(runner, "write_report", lambda *args: pytest.fail("a refused smoke run wrote a report"))
    before = results_snapshot()
    try:
        for out in outs:
            with pytest.raises(ValueError, match="--smoke never writes into the published results"):
                run_experiment(
                    "ipd-fig5a", num_seeds=1, out_dir=out, workdir_root=str(tmp_path / "w"), smoke=True,
                    log=lambda line: pytest.fail(f"a refused smoke run started: {line}"),
                )
        # The command line: one line on stderr, a non-zero exit, nothing trained or written.
        completed = subprocess.run(
            [sys.executable, "-m", "coala_dist.cli", "experiment", "ipd-fig5a", "--smoke",
             "--out=results/coala-test-refused/ipd-fig5a", f"--workdir_root={tmp_path / 'cli'}"],
            cwd=REPO, capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(os.path.join(RESULTS, "coala-test-refused"), ignore_errors=True)
    assert completed.returncode != 0
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("coala experiment: --smoke never writes"), completed.stderr
    assert "results/coala-test-refused/ipd-fig5a" in lines[0]
    assert not (tmp_path / "w").exists() and not (tmp_path / "cli").exists()
    assert results_snapshot() == before


def test_experiment_help_names_every_experiment():
    from coala_dist.commands import experiment as experiment_command

    missing = [name for name in EXPERIMENTS if name not in experiment_command.__doc__]
    assert not missing, f"`coala experiment --help` does not name {missing}"


def test_command_refuses_a_negative_stop_after_defection_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "experiment", "ipd-fig5c", "--stop_after_defection=-1",
         f"--workdir_root={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--stop_after_defection=-1" in lines[0]
    assert not os.listdir(tmp_path)  # refused before any run folder was made
