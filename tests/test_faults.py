"""Faults lose nothing: unreadable checkpoints, updates that keep failing, signals, the ETA after a resume.

In-process checks share the session's compiled tiny experiment (`tiny_components`); the `coala train` checks run the
real command in a subprocess (sharing the session's compilation cache) and look at its exit status, its last line,
its checkpoints and its files.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
import pathlib
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from helpers import coala_train_command, with_fields

from coala_dist.checkpoint import (
    Checkpointer,
    UnreadableCheckpointsError,
    abstract_train_state,
    check_compatible,
)
from coala_dist.config import validate
from coala_dist.metrics import ProgressReporter
from coala_dist.train import (
    CONSECUTIVE_SKIPPED_KEY,
    Ending,
    InProcessSource,
    SkippedUpdatesError,
    learner_loop,
    prepare_learner,
    train,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(log=lambda line: None)


def _run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _iterations(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["iteration"]) for row in csv.DictReader(f)]


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _restore(workdir, config, components):
    checkpointer = Checkpointer(str(workdir), save_every=1, max_to_keep=10)
    try:
        abstract = abstract_train_state(components.learner.init, jax.random.PRNGKey(config.seed))
        return checkpointer.restore_latest(abstract, config)
    finally:
        checkpointer.close()


def _assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _corrupt(directory, *, only: str | None = None) -> int:
    """Truncates every file under `directory` (only under subfolders named `only`, if given); returns how many."""
    count = 0
    for root, _, files in os.walk(directory):
        if only is not None and f"{os.sep}{only}" not in root:
            continue
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(0)
            count += 1
    return count


@pytest.fixture(scope="module")
def finished_run(tiny_config, tiny_components, tmp_path_factory):
    """A finished 3-iteration tiny run with a checkpoint after every iteration: (workdir, config, final state)."""
    config = with_fields(tiny_config, checkpoint__save_every=1)
    workdir = tmp_path_factory.mktemp("finished")
    state, _ = train(config, str(workdir), components=tiny_components, **QUIET)
    assert Checkpointer(str(workdir), save_every=1, max_to_keep=3).all_steps() == [1, 2, 3]
    return workdir, config, state


def _copy_of(finished_run, tmp_path):
    import shutil

    workdir, config, state = finished_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    return copy, config, state


# ---------------------------------------------------------------------------------------------------------------------
# Unreadable checkpoints.
@pytest.mark.slow
def test_an_older_checkpoint_resumes_and_the_replaced_metrics_rows_are_kept(finished_run, tiny_components, tmp_path):
    workdir, config, _ = _copy_of(finished_run, tmp_path)
    before = (workdir / "metrics.csv").read_bytes()
    assert _corrupt(workdir / "checkpoints" / "3") > 0
    lines = []
    state, history = train(config, str(workdir), components=tiny_components, log=lines.append)
    assert lines[0].startswith("resumed from") and "iteration 2" in lines[0]
    assert [row["iteration"] for row in history] == [3] and int(state.step) == 3
    # The rows 1..3 of the interrupted run are not truncated away: the whole file is kept as it was.
    (aside,) = glob.glob(str(workdir / "metrics.csv.*.bak"))
    assert pathlib.Path(aside).read_bytes() == before
    assert _iterations(workdir / "metrics.csv") == [1, 2, 3]
    old, new = _rows(aside), _rows(workdir / "metrics.csv")
    assert [r["learner/loss"] for r in new[:2]] == [r["learner/loss"] for r in old[:2]]  # kept rows unchanged


def test_every_checkpoint_unreadable_is_refused_unless_starting_over(finished_run, tiny_components, tmp_path):
    # The configs still read, the arrays do not: the case the CLI's early check cannot see, met by the learner.
    workdir, config, final = _copy_of(finished_run, tmp_path)
    assert _corrupt(workdir / "checkpoints", only="state") > 0
    before = (workdir / "metrics.csv").read_bytes()
    with pytest.raises(UnreadableCheckpointsError) as error:
        train(config, str(workdir), components=tiny_components, **QUIET)
    message = str(error.value)
    assert "\n" not in message and "unreadable" in message and "--start_over" in message
    assert (workdir / "metrics.csv").read_bytes() == before  # nothing written
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3"]

    state, history = train(config, str(workdir), components=tiny_components, start_over=True, **QUIET)
    assert [row["iteration"] for row in history] == [1, 2, 3]
    _assert_same(state, final)  # starting over is a fresh run
    (checkpoints_aside,) = glob.glob(str(workdir / "checkpoints.*.bak"))
    assert sorted(os.listdir(checkpoints_aside)) == ["1", "2", "3"]  # moved, not deleted
    (metrics_aside,) = glob.glob(str(workdir / "metrics.csv.*.bak"))
    assert pathlib.Path(metrics_aside).read_bytes() == before
    assert _iterations(workdir / "metrics.csv") == [1, 2, 3]
    _assert_same(_restore(workdir, config, tiny_components), final)


@pytest.mark.slow
def test_coala_train_refuses_unreadable_checkpoints_in_one_line_then_starts_over(
    finished_run, tiny_components, tmp_path
):
    workdir, config, final = _copy_of(finished_run, tmp_path)
    assert _corrupt(workdir / "checkpoints") > 0  # every file of every checkpoint
    before = (workdir / "metrics.csv").read_bytes()
    refused = _run(coala_train_command(workdir, "--config.checkpoint.save_every=1"))
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()], refused.stderr  # one line, no traceback
    assert refused.stderr.startswith("coala train: every checkpoint in ") and "--start_over" in refused.stderr
    assert (workdir / "metrics.csv").read_bytes() == before

    # --start_over: the actor-thread launch trains from iteration 1 and keeps what it replaces.
    started = _run(coala_train_command(workdir, "--config.checkpoint.save_every=1", "--start_over"))
    assert started.returncode == 0, started.stderr[-3000:]
    (metrics_aside,) = glob.glob(str(workdir / "metrics.csv.*.bak"))
    assert pathlib.Path(metrics_aside).read_bytes() == before
    assert len(glob.glob(str(workdir / "checkpoints.*.bak" / "3" / "state"))) == 1  # moved aside, not deleted
    assert _iterations(workdir / "metrics.csv") == [1, 2, 3]
    _assert_same(_restore(workdir, config, tiny_components), final)  # sync mode: the same run as before


# ---------------------------------------------------------------------------------------------------------------------
# Updates that keep failing. A meta-batch whose rewards are NaN makes the real update's loss non-finite.
def _poisoned_from(components, first_bad_iteration: int, last_bad_iteration: int = 10**9):
    class PoisonedSource(InProcessSource):
        def next(self, state):
            batch, metrics = super().next(state)
            if first_bad_iteration <= int(state.step) + 1 <= last_bad_iteration:
                batch = batch._replace(rewards=batch.rewards * jnp.nan)
            return batch, metrics

    return PoisonedSource(components)


def _run_loop(config, components, workdir, source_from, *, should_stop=lambda: False):
    components = dataclasses.replace(components, config=ml_collections.FrozenConfigDict(config))
    prepared = prepare_learner(config, str(workdir), components=components, **QUIET)
    return prepared, learner_loop(prepared, source_from(prepared.components), should_stop=should_stop)


def test_consecutive_skipped_updates_stop_with_the_last_good_state_saved(tiny_config, tiny_components, tmp_path):
    config = with_fields(
        tiny_config, training_iterations=20, max_consecutive_skipped_updates=3, checkpoint__save_every=2
    )
    _, (_, outcome) = _run_loop(config, tiny_components, tmp_path, lambda c: _poisoned_from(c, 4))
    assert outcome.ending is Ending.SKIPPED_STREAK and outcome.iteration == 6
    with pytest.raises(SkippedUpdatesError) as error:  # what the process exits with, once every node has stopped
        outcome.raise_for_exit()
    message = str(error.value.code)
    assert message == outcome.message and message.endswith(f"saved as {tmp_path / 'checkpoints' / '3'}")
    assert "\n" not in message and "iteration 6" in message and "3 iterations in a row" in message
    assert "last good state is iteration 3" in message
    rows = _rows(tmp_path / "metrics.csv")
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r[CONSECUTIVE_SKIPPED_KEY]) for r in rows] == [0, 0, 0, 1, 2, 3]
    assert [float(r["learner/skipped_updates"]) for r in rows] == [0, 0, 0, 2, 4, 6]  # both agents, every time
    # Periodic save 4 fell inside the streak (deferred), 6 likewise; the stop saved the last good state, 3.
    checkpointer = Checkpointer(str(tmp_path), save_every=2, max_to_keep=3)
    assert checkpointer.all_steps() == [2, 3]
    assert checkpointer.saved_meta(3)["consecutive_skipped_updates"] == 0
    restored = _restore(tmp_path, config, tiny_components)
    assert int(restored.step) == 3 and int(restored.skipped_updates) == 0


def test_a_resumed_run_keeps_counting_consecutive_skipped_updates(tiny_config, tiny_components, tmp_path):
    config = with_fields(
        tiny_config, training_iterations=20, max_consecutive_skipped_updates=3, checkpoint__save_every=100
    )
    # Stopped (as by Ctrl-C) after iteration 5, inside a streak of 2.
    components = dataclasses.replace(tiny_components, config=ml_collections.FrozenConfigDict(config))
    prepared = prepare_learner(config, str(tmp_path), components=components, **QUIET)
    latest = {"step": 0}

    class Watch:
        def on_iteration(self, iteration, state, metrics):
            latest["step"] = iteration

        def close(self):
            pass

    prepared.callbacks.append(Watch())
    learner_loop(prepared, _poisoned_from(components, 4), should_stop=lambda: latest["step"] >= 5)
    checkpointer = Checkpointer(str(tmp_path), save_every=100, max_to_keep=3)
    assert checkpointer.all_steps() == [5]
    assert checkpointer.saved_meta(5)["consecutive_skipped_updates"] == 2
    checkpointer.close()
    # The resumed run starts with the streak of 2: one more skipped iteration reaches 3.
    lines = []
    prepared = prepare_learner(config, str(tmp_path), components=components, log=lines.append)
    assert prepared.streak.count == 2 and "2 iterations in a row" in lines[0]
    _, outcome = learner_loop(prepared, _poisoned_from(components, 4))
    assert outcome.ending is Ending.SKIPPED_STREAK
    assert "stopped at iteration 6: 3 iterations in a row" in outcome.message
    assert outcome.message.endswith("from before this process resumed (an older checkpoint)")


def test_a_streak_that_ends_is_forgotten_and_its_deferred_save_happens(tiny_config, tiny_components, tmp_path):
    config = with_fields(
        tiny_config, training_iterations=8, max_consecutive_skipped_updates=3, checkpoint__save_every=4
    )
    _, (state, outcome) = _run_loop(config, tiny_components, tmp_path, lambda c: _poisoned_from(c, 4, 5))
    assert outcome.ending is Ending.FINISHED
    assert int(state.step) == 8 and int(state.skipped_updates) == 4
    rows = _rows(tmp_path / "metrics.csv")
    assert [float(r[CONSECUTIVE_SKIPPED_KEY]) for r in rows] == [0, 0, 0, 1, 2, 0, 0, 0]
    # Due at 4 (inside the streak): saved at 6, the first good state after it; then 8 as usual.
    assert Checkpointer(str(tmp_path), save_every=4, max_to_keep=3).all_steps() == [6, 8]


@pytest.mark.slow
def test_coala_train_stops_when_every_update_is_non_finite(tiny_config, tiny_components, tmp_path):
    # A finite but absurd reward scale: every advantage overflows, every update is skipped.
    workdir = tmp_path / "run"
    overrides = [
        "--num_actors=0",
        "--config.meta.reward_scale=1e30",
        "--config.max_consecutive_skipped_updates=2",
        "--config.training_iterations=50",
    ]
    result = _run(coala_train_command(workdir, *overrides))
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("coala train: training stopped at iteration 2: 2 iterations in a row skipped an update")
    assert f"saved as {workdir / 'checkpoints' / '0'}" in last
    assert "Traceback" not in result.stderr
    assert "skipped 2 (1 in a row)" in result.stdout and "skipped 4 (2 in a row)" in result.stdout
    assert _iterations(workdir / "metrics.csv") == [1, 2]
    # The checkpoint is the last good state: the initial one (step 0), nothing after it.
    config = with_fields(tiny_config, training_iterations=50, max_consecutive_skipped_updates=2)
    config.meta.reward_scale = 1e30
    assert Checkpointer(str(workdir), save_every=50, max_to_keep=3).all_steps() == [0]
    _assert_same(_restore(workdir, config, tiny_components), tiny_components.learner.init(jax.random.PRNGKey(0)))


def test_max_consecutive_skipped_updates_is_validated_and_may_change_on_resume(tiny_config):
    for bad in (-1, True):
        with pytest.raises(ValueError, match=r"config.max_consecutive_skipped_updates=.* integer >= 0"):
            validate(with_fields(tiny_config, max_consecutive_skipped_updates=bad))
    validate(with_fields(tiny_config, max_consecutive_skipped_updates=0))
    # A checkpoint saved before the field existed, or with another value, resumes.
    saved = tiny_config.to_dict()
    del saved["max_consecutive_skipped_updates"]
    check_compatible(saved, with_fields(tiny_config, max_consecutive_skipped_updates=0), "ckpt")


# ---------------------------------------------------------------------------------------------------------------------
# Signals: a real `coala train` process, stopped after its current iteration, saved, exit status 128 + signal.
@pytest.mark.parametrize(
    "signum, num_actors", [(signal.SIGINT, 0), (signal.SIGTERM, 1)], ids=["sigint-plain-loop", "sigterm-actor-thread"]
)
@pytest.mark.slow
def test_a_signal_saves_then_exits_with_128_plus_its_number(signum, num_actors, tmp_path):
    """Preemption (SIGTERM) or Ctrl-C (SIGINT): the run ends within seconds, after its current iteration, with a
    checkpoint of it and exit status 128 + signal (so `coala train ... && next` stops)."""
    workdir = tmp_path / "run"
    command = coala_train_command(
        workdir,
        f"--num_actors={num_actors}",
        "--config.training_iterations=100000",
        "--config.checkpoint.save_every=100000",
    )
    log_path = tmp_path / "stderr.txt"  # a file, not a pipe: nobody reads while it runs
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file)
        csv_path = workdir / "metrics.csv"
        deadline = time.time() + 240
        try:
            while time.time() < deadline and proc.poll() is None:
                if csv_path.exists() and len(csv_path.read_text().splitlines()) >= 3:  # header + 2 iterations
                    break
                time.sleep(0.05)
            assert proc.poll() is None, log_path.read_text()[-3000:]
            proc.send_signal(signum)
            signalled = time.monotonic()
            proc.wait(timeout=120)
            stop_seconds = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
    stderr = log_path.read_text()
    assert proc.returncode == 128 + signum, stderr[-3000:]  # 130 / 143
    assert "received signal" in stderr and "Traceback" not in stderr
    assert stop_seconds < 30
    saved = Checkpointer(str(workdir), save_every=1, max_to_keep=3).all_steps()
    assert saved == [_iterations(csv_path)[-1]]  # only the final save (save_every is huge), of the last iteration done


# ---------------------------------------------------------------------------------------------------------------------
# The console.
class _Clock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def test_the_first_eta_after_a_resume_ignores_the_compiling_iteration():
    lines: list[str] = []
    # Resumed at 50 of 100: iteration 51 took 30 s (compiling), then 1 s each.
    progress = ProgressReporter(100, 1, start_iteration=50, log=lines.append, clock=_Clock([30.0, 31.0, 32.0]))
    for iteration in (51, 52, 53):
        progress.on_iteration(
            iteration, None, {"learner/loss": 0.1, "time/iteration_s": 30.0 if iteration == 51 else 1}
        )
    assert lines[0].endswith("eta ?")  # not 49 × 30 s
    assert lines[1].endswith("eta 0:00:48") and lines[2].endswith("eta 0:00:47")


def test_the_progress_line_shows_skipped_updates_only_when_there_are_some():
    progress = ProgressReporter(10, 1, log=lambda line: None)
    assert "skipped" not in progress.log_line(1, {"learner/skipped_updates": 0.0, CONSECUTIVE_SKIPPED_KEY: 0.0})
    line = progress.log_line(3, {"learner/skipped_updates": 4.0, CONSECUTIVE_SKIPPED_KEY: 2.0})
    assert "skipped 4 (2 in a row)" in line
    line = progress.log_line(4, {"learner/skipped_updates": 4.0, CONSECUTIVE_SKIPPED_KEY: 0.0})
    assert "skipped 4" in line and "in a row" not in line
    assert "skipped 4 (2 in a row)" in progress.tty_line(
        3, {"learner/skipped_updates": 4.0, CONSECUTIVE_SKIPPED_KEY: 2.0}
    )
