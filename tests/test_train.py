"""The in-process training loop and the `coala train` command."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
from helpers import with_fields

from coala_dist.train import train, whole_checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_writes_one_csv_row_per_iteration(tiny_config, tiny_components, tmp_path):
    lines = []
    state, history = train(tiny_config, str(tmp_path), components=tiny_components, log=lines.append)
    assert int(state.step) == tiny_config.training_iterations == len(history)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    for row in rows:
        assert np.isfinite(float(row["learner/loss"]))
        assert -1.0 <= float(row["vs_naive/ego_reward"]) <= 2.0  # IPD payoffs per step lie in [S, T]
    assert lines and lines[0].startswith("it     1")


class _ReachedAfterTwo:
    """A stop rule reached once it has seen two iterations, those of the run it resumes included."""

    def __init__(self):
        self.resumed: list[int] | None = None
        self.seen: list[int] = []

    def resume(self, rows):
        self.resumed = [int(row["iteration"]) for row in rows]
        self.seen = list(self.resumed)

    def on_iteration(self, iteration, state, metrics):
        self.seen.append(iteration)

    def close(self):
        pass

    @property
    def reached(self):
        return len(self.seen) >= 2


def test_a_stop_rule_ends_the_run_early_saves_it_and_sees_the_resumed_iterations(
    tiny_config, tiny_components, tmp_path
):
    config = with_fields(tiny_config, training_iterations=4)
    rule = _ReachedAfterTwo()
    state, history = train(config, str(tmp_path), components=tiny_components, log=lambda line: None, stop_rule=rule)
    assert int(state.step) == 2 and [row["iteration"] for row in history] == [1, 2] and rule.resumed == []
    assert whole_checkpoints(str(tmp_path / "checkpoints"))[-1] == 2  # saved as at a signal

    # Resumed with a new rule: it sees iterations 1-2 from metrics.csv and is reached before any new iteration.
    rule = _ReachedAfterTwo()
    state, history = train(config, str(tmp_path), components=tiny_components, log=lambda line: None, stop_rule=rule)
    assert int(state.step) == 2 and history == [] and rule.resumed == [1, 2]

    # Without a rule the run goes on to its budget.
    state, history = train(config, str(tmp_path), components=tiny_components, log=lambda line: None)
    assert int(state.step) == 4 and [row["iteration"] for row in history] == [3, 4]


def _coala(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_bad_config_value_is_one_line_naming_the_field():
    result = _coala("train", "--config=configs/ipd_tiny.py", "--config.p_naive=1.5")
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "config.p_naive=1.5" in message and "[0.0, 1.0]" in message
    assert "Traceback" not in result.stderr


def test_unknown_command_lists_valid_ones():
    result = _coala("trian")
    assert result.returncode != 0 and "valid commands" in result.stderr and "train" in result.stderr


def test_remote_workdir_keeps_metrics_in_a_local_mirror():
    from coala_dist.train import local_metrics_dir

    assert local_metrics_dir(None) is None
    assert local_metrics_dir("runs/a") == "runs/a"
    assert local_metrics_dir("gs://bucket/run1") == os.path.join("workdirs", "remote", "gs", "bucket", "run1")

