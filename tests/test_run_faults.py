"""Faults around a run's files and its nodes: a second owner of a workdir, writes that fail, a damaged metrics.csv, a
stalled node, configs and sizes that cannot work, plots that would mix runs.

Each check reproduces the fault, then asserts the one line, the exit status, the files left behind and that the same
command then resumes with nothing lost. `coala train` checks run the real command in a subprocess.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import glob
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from helpers import coala_train_command, with_command_line_part, with_fields

from coala_dist import capacity, configs, workdir_lock
from coala_dist.analysis.curves import distinct_workdirs, group_runs
from coala_dist.analysis.runs import Run
from coala_dist.checkpoint import Checkpointer, WriteFailedError
from coala_dist.distributed.replay_source import ReplayBatchSource
from coala_dist.metrics import ProgressReporter, TensorBoardWriter
from coala_dist.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(command: list[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)


def _iterations(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(row["iteration"]) for row in csv.DictReader(f)]


def _last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1]


def _tree(directory) -> dict[str, tuple[int, int]]:
    """Every file under `directory` with its size and mtime: what "changing nothing" compares."""
    found = {}
    for root, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, directory)] = (os.stat(path).st_size, os.stat(path).st_mtime_ns)
    return found


# ---------------------------------------------------------------------------------------------------------------------
# One owner per workdir.
HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from coala_dist import workdir_lock
    workdir_lock.acquire(sys.argv[1])
    print("held", flush=True)
    time.sleep(600)
    """
)


def _holder(workdir) -> subprocess.Popen:
    """A live process owning `workdir` (as a running `coala train` does)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_workdir_lock_is_exclusive_and_a_killed_owner_does_not_leave_it_stuck(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(workdir_lock.WorkdirBusyError, match=rf"in use by another run \(pid {holder.pid} on "):
            workdir_lock.acquire(str(tmp_path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lock.hold(str(tmp_path)):  # the kernel dropped the dead owner's lock
        pass


@pytest.mark.slow
def test_a_second_coala_train_on_a_live_runs_workdir_changes_nothing_then_runs_once_the_owner_is_gone(tmp_path):
    workdir = tmp_path / "run"
    command = coala_train_command(workdir, "--num_actors=0", "--config.training_iterations=2")
    first = _run(command)
    assert first.returncode == 0, first.stderr[-3000:]
    holder = _holder(workdir)
    before = _tree(workdir)
    try:
        refused = _run([*command[:-1], "--config.training_iterations=4"])
    finally:
        holder.send_signal(signal.SIGKILL)  # an owner that dies without cleaning up
        holder.wait()
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    line = _last_line(refused)
    assert line.startswith(f"coala train: {workdir} is in use by another run (pid {holder.pid} on "), line
    assert line.endswith("wait for it, stop it, or use another --workdir")
    assert _tree(workdir) == before
    resumed = _run([*command[:-1], "--config.training_iterations=4"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at iteration 2" in resumed.stdout
    assert _iterations(workdir / "metrics.csv") == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------------------------------
# Configs that cannot work.
@pytest.mark.parametrize(
    "body, found",
    [
        ("return None", "returned NoneType, not an ml_collections.ConfigDict"),
        ("return {'seed': 0}", "returned dict, not an ml_collections.ConfigDict"),
        ("return [1, 2]", "returned list, not an ml_collections.ConfigDict"),
        (
            "import ml_collections\n    c = ml_collections.ConfigDict()\n    c.seed = 3\n    return c",
            "returned a config without agent_estimators, batch_size, checkpoint",
        ),
    ],
    ids=["none", "dict", "list", "partial"],
)
def test_a_config_of_the_wrong_type_or_partial_is_one_line_and_exit_status_2(body, found, tmp_path):
    path = tmp_path / "bad_config.py"
    path.write_text(f"def get_config():\n    {body}\n")
    workdir = tmp_path / "run"
    result = _run([sys.executable, "-m", "coala_dist.cli", "train", f"--config={path}", f"--workdir={workdir}"])
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert result.stderr.startswith(f"coala train: config file {str(path)!r}: get_config() {found}")
    assert not workdir.exists()


# ---------------------------------------------------------------------------------------------------------------------
# Plots never mix runs.
def _plot_run(name: str, **config) -> Run:
    return Run(workdir=f"/x/{name}", config=config, rows=[{"iteration": 1.0, "vs_naive/ego_reward": 0.5}])


def test_runs_of_different_configs_are_separate_groups_and_seeds_of_one_config_one_group():
    runs = [
        _plot_run("ipd0", estimator="coala", seed=0, env={"name": "ipd"}),
        _plot_run("cleanup0", estimator="coala", seed=0, env={"name": "cleanup_lite"}),
        _plot_run("ipd1", estimator="coala", seed=1, env={"name": "ipd"}),
        # How long or how a run was executed does not define the experiment: still a seed of the IPD group.
        _plot_run("ipd2", estimator="coala", seed=2, env={"name": "ipd"}, training_iterations=7),
    ]
    groups = group_runs(runs)
    assert {name: [r.workdir for r in members] for name, members in groups.items()} == {
        "COALA-PG [env.name=cleanup_lite]": ["/x/cleanup0"],
        "COALA-PG [env.name=ipd]": ["/x/ipd0", "/x/ipd1", "/x/ipd2"],
    }


def test_a_folder_given_twice_counts_once(tmp_path):
    (tmp_path / "run").mkdir()
    os.symlink(tmp_path / "run", tmp_path / "link")
    given = [str(tmp_path / "run"), f"{tmp_path}/./run", str(tmp_path / "link")]
    assert distinct_workdirs(given) == ([given[0]], given[1:])


# ---------------------------------------------------------------------------------------------------------------------
# A damaged metrics.csv on resume.
@pytest.fixture(scope="module")
def three_iterations(tiny_config, tiny_components, tmp_path_factory):
    """A finished 3-iteration tiny run, checkpointed after every iteration: (workdir, config)."""
    config = with_fields(tiny_config, checkpoint__save_every=1)
    workdir = tmp_path_factory.mktemp("three")
    train(config, str(workdir), components=tiny_components, log=lambda line: None)
    return workdir, config


def _tear(text: str) -> str:
    return text + "4,0.5,0.12"  # iteration 4's row, cut short by a kill (a later checkpoint never came)


def _gap(text: str) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:2] + lines[3:])  # iteration 2's row deleted


def _append_garbage(text: str) -> str:
    return text + "\x00\x00garbage, not a row\n"


DAMAGES = {
    "torn-last-row": (_tear, "ends in a torn row (a write was interrupted), dropped", [1, 2, 3, 4], True),
    "deleted-middle-row": (_gap, "lacks the rows of iterations 2 of the checkpoint", [1, 3, 4], False),
    "emptied": (lambda text: "", "is empty; lacks the rows of iterations 1-3 of the checkpoint", [4], False),
    "garbage": (
        lambda text: "\x7fELF\x00\x01 binary garbage\n" * 3,
        "cannot be read as this run's metrics (no 'iteration' header); lacks the rows of iterations 1-3",
        [4],
        True,
    ),
    "garbage-appended": (_append_garbage, "holds 1 unreadable line, dropped", [1, 2, 3, 4], True),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_metrics_csv_is_named_repaired_where_it_can_be_and_the_resume_loses_no_row(
    damage, three_iterations, tiny_components, tmp_path, capsys
):
    damage_text, said, final_iterations, set_aside = DAMAGES[damage]
    workdir = tmp_path / "run"
    shutil.copytree(three_iterations[0], workdir)
    csv_path = workdir / "metrics.csv"
    original = csv_path.read_text()
    damaged = damage_text(original)
    csv_path.write_text(damaged)
    capsys.readouterr()
    config = with_fields(three_iterations[1], training_iterations=4)
    train(config, str(workdir), components=tiny_components, log=lambda line: None)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "metrics.csv" in line]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"warning: {csv_path} ") and said in warnings[0], warnings[0]
    assert _iterations(csv_path) == final_iterations
    backups = glob.glob(f"{csv_path}.*.bak")
    if set_aside:  # whatever was dropped is still in the file moved aside
        assert [pathlib.Path(path).read_text() for path in backups] == [damaged]
        assert warnings[0].endswith(f"; the previous file is kept as {backups[0]}")
    else:
        assert backups == []
    # The rows kept are the run's own, byte for byte.
    kept = [line for line in original.splitlines()[1:] if int(line.split(",")[0]) in final_iterations]
    assert [line for line in csv_path.read_text().splitlines()[1:] if not line.startswith("4,")] == kept


# ---------------------------------------------------------------------------------------------------------------------
# Writes that fail.
UNDER_FILE_SIZE_LIMIT = textwrap.dedent(
    """
    import os, resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
    """
)


@pytest.mark.slow
def test_a_checkpoint_save_past_a_file_size_limit_stops_in_one_line_and_the_same_command_resumes(tmp_path):
    workdir = tmp_path / "run"
    first = _run(
        coala_train_command(
            workdir, "--num_actors=0", "--config.checkpoint.save_every=2", "--config.training_iterations=4"
        )
    )
    assert first.returncode == 0, first.stderr[-3000:]
    # The next checkpoint's files are larger than the limit; metrics.csv and the events are not. No compilation
    # cache: its entries would be written truncated.
    command = coala_train_command(
        workdir, "--num_actors=0", "--config.checkpoint.save_every=2", "--config.training_iterations=8"
    )
    command.insert(3, "--compilation_cache=off")
    failed = _run([sys.executable, "-c", UNDER_FILE_SIZE_LIMIT, "30000", *command[1:]])
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "Traceback" not in failed.stderr
    line = _last_line(failed)
    checkpoints = workdir / "checkpoints"
    assert line == (
        f"coala train: writing {checkpoints / '6'} failed (File too large); the run stopped; the newest whole "
        f"checkpoint is {checkpoints / '4'}; free space and rerun the same command"
    )
    assert sorted(os.listdir(checkpoints)) == ["2", "4"]  # the last good one kept, no unfinished save left
    assert max(_iterations(workdir / "metrics.csv")) <= 7  # stopped within an iteration of the failed save
    resumed = _run(command)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at iteration 4" in resumed.stdout
    assert _iterations(workdir / "metrics.csv") == list(range(1, 9))


def test_a_metrics_csv_write_that_fails_stops_the_run_in_one_line_and_a_rerun_loses_nothing(
    three_iterations, tiny_components, tmp_path, monkeypatch
):
    workdir = tmp_path / "run"
    shutil.copytree(three_iterations[0], workdir)
    config = with_fields(three_iterations[1], training_iterations=6, checkpoint__save_every=100)
    real_writerow = csv.DictWriter.writerow

    def full_disk(self, row):
        if row.get("iteration") == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_writerow(self, row)

    monkeypatch.setattr(csv.DictWriter, "writerow", full_disk)
    with pytest.raises(WriteFailedError) as stopped:
        train(config, str(workdir), components=tiny_components, log=lambda line: None)
    assert str(stopped.value.code) == (
        f"writing {workdir / 'metrics.csv'} failed (No space left on device); the run stopped; the newest whole "
        f"checkpoint is {workdir / 'checkpoints' / '3'}; free space and rerun the same command"
    )
    assert _iterations(workdir / "metrics.csv") == [1, 2, 3, 4]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["1", "2", "3"]  # no save after a failed write
    monkeypatch.undo()
    train(config, str(workdir), components=tiny_components, log=lambda line: None)
    assert _iterations(workdir / "metrics.csv") == [1, 2, 3, 4, 5, 6]


class _FullDisk:
    """A file whose every write fails as on a full disk."""

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
        pass


def test_a_tensorboard_write_that_fails_raises_in_the_learners_thread_instead_of_hanging(tmp_path):
    writer = TensorBoardWriter(str(tmp_path))
    writer._file = _FullDisk()
    for _ in range(3):  # a background writer thread that died would block the third put of a bounded queue
        with pytest.raises(WriteFailedError, match=r"^writing .*events\.out\.tfevents.* failed \(No space left"):
            writer.on_iteration(1, None, {f"metric/{i}": float(i) for i in range(100)})
    writer.close()


def test_the_first_skipped_update_is_said_once_with_the_learning_rate_as_the_likely_cause():
    lines: list[str] = []
    progress = ProgressReporter(10, 100, log=lines.append, learning_rate=1e30)
    for iteration, in_a_row in ((1, 0.0), (2, 1.0), (3, 2.0), (4, 0.0), (5, 1.0)):
        progress.on_iteration(iteration, None, {"learner/consecutive_skipped_updates": in_a_row})
    told = [line for line in lines if "skipped" in line]
    assert told == [
        "iteration 2: an update was skipped because its loss or a gradient was not finite; the likely cause is a "
        "learning rate too large (config.meta.learning_rate=1e+30), else a reward scale too large"
    ]


def test_a_meta_batch_that_cannot_fit_this_machine_is_refused_with_its_estimate_before_any_work(tmp_path):
    workdir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "coala_dist.cli",
        "train",
        "--config=ipd_pure_shaping",
        f"--workdir={workdir}",
        "--num_actors=0",
        "--config.meta_batch_size=100000",
    ]
    result = _run(command)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0, result.stderr
    gb = capacity.meta_batch_memory_bytes(with_fields(configs.load("ipd_pure_shaping"), meta_batch_size=100000))
    assert gb > capacity.machine_memory_bytes()  # what the refusal rests on, on this machine
    assert result.stderr.startswith(
        f"coala train: one iteration needs at least {gb / capacity.GB:.1f} GB (meta_batch_size=100000 x "
        "population_size_meta=1 meta-episodes of batch_size=16 x 200 steps), more than this machine's memory"
    )
    assert not workdir.exists()


def test_more_local_actor_processes_than_this_machine_can_host_are_refused_with_the_reason(tmp_path):
    workdir = tmp_path / "run"
    result = _run(coala_train_command(workdir, "--launch=local", "--num_actors=1000"))
    assert result.returncode == 1
    by_memory = int(capacity.machine_memory_bytes() * 0.8) // capacity.ACTOR_PROCESS_BYTES
    cap = min(capacity.ACTORS_PER_CPU * os.cpu_count(), by_memory)
    assert _last_line(result).startswith(
        f"coala train: --num_actors=1000 with --launch=local starts that many processes here, but this machine "
        f"({os.cpu_count()} CPUs, "
    )
    assert f"hosts at most {cap} " in _last_line(result) and "Traceback" not in result.stderr
    assert not workdir.exists()


# ---------------------------------------------------------------------------------------------------------------------
# A stalled node.
class _SilentReplay:
    """A replay node whose actors have stopped: every table stays empty."""

    def sizes(self) -> dict[str, int]:
        return {}

    def take(self, table: str, count: int, give_up=None) -> list:
        return []


class _Link:
    client = _SilentReplay()

    def moved(self) -> bool:
        return False


class _Publisher:
    published_num_actors = 2


def test_a_learner_waiting_for_a_stalled_actor_says_what_it_waits_for_then_times_out_in_one_line(
    tiny_config, tiny_components
):
    config = with_fields(
        tiny_config,
        distributed__start_timeout_s=2.0,  # a new source: its first batch is bounded by start_timeout_s
        distributed__poll_interval_s=0.02,
        distributed__work_units_per_agent=2,
    )
    lines: list[str] = []
    source = ReplayBatchSource(
        config,
        tiny_components,
        _Link(),
        learner_process=0,
        publisher=_Publisher(),
        should_stop=lambda: False,
        log=lines.append,
    )
    with pytest.raises(TimeoutError) as stopped:
        source._collect_sync(version=3)
    # 2 agents x 4 episodes in 4 work units of 2 episodes; units go round robin to the 2 actors.
    waiting = "episodes [0, 1, 2, 3, 4, 5, 6, 7] of version 3 (work units [0, 1, 2, 3], rolled out by actor 0, 1)"
    assert lines and all(line.startswith("learner: waiting ") for line in lines), lines
    assert lines[0].endswith(f" s for {waiting} (the run stops after 2 s without any)"), lines[0]
    assert str(stopped.value) == (
        f"the learner received no episode for 2 s while the run starts (distributed.start_timeout_s; still missing: "
        f"{waiting}); are the actors alive?"
    )


def test_an_unfinished_save_left_by_a_dead_writer_is_removed_by_the_next_owner_only(tmp_path):
    unfinished = tmp_path / "checkpoints" / "7.orbax-checkpoint-tmp-1796601904"
    (unfinished / "state").mkdir(parents=True)
    Checkpointer(str(tmp_path), save_every=1, max_to_keep=3).close()  # a reader (coala eval on a live run)
    assert unfinished.exists()
    Checkpointer(str(tmp_path), save_every=1, max_to_keep=3, owner=True).close()
    assert os.listdir(tmp_path / "checkpoints") == []


@pytest.mark.slow
def test_a_sigstopped_actor_is_named_while_the_learner_waits_and_the_timeout_ends_the_run_in_one_line(tmp_path):
    workdir = tmp_path / "run"
    command = coala_train_command(
        workdir,
        "--launch=local",
        "--num_actors=1",
        "--config.distributed.data_timeout_s=10",  # the first batch is bounded by start_timeout_s
        "--config.training_iterations=100000",
        "--config.checkpoint.save_every=100000",
    )
    log_path = tmp_path / "log.txt"  # a file, not a pipe: nobody reads while it runs
    with open(log_path, "w") as log_file:
        driver = subprocess.Popen(command, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT)
        stopped: list[psutil.Process] = []
        try:
            deadline = time.time() + 400
            while time.time() < deadline and driver.poll() is None and not stopped:
                csv_path = workdir / "metrics.csv"
                if csv_path.exists() and len(csv_path.read_text().splitlines()) > 2:  # two iterations done
                    nodes = psutil.Process(driver.pid).children(recursive=True)
                    stopped = with_command_line_part(nodes, "ActorProcess")
                time.sleep(0.2)
            assert stopped, log_path.read_text()[-3000:]
            for actor in stopped:
                actor.send_signal(signal.SIGSTOP)
            driver.wait(timeout=300)
        finally:
            if driver.poll() is None:
                driver.kill()
            for actor in stopped:
                with contextlib.suppress(psutil.Error):
                    actor.send_signal(signal.SIGCONT)
    text = log_path.read_text()
    assert driver.returncode == 1, text[-3000:]
    assert "Traceback" not in text
    # (A wait for the first batch, while the nodes start, names start_timeout_s's 600 s instead.)
    waiting = [line for line in text.splitlines() if "learner: waiting " in line and "of version 0 " not in line]
    assert waiting and "rolled out by actor 0) (the run stops after 10 s without any)" in waiting[0], text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("coala train: the learner received no episode for 10 s (still missing: episodes "), last
    assert last.endswith("are the actors alive? The last whole iteration was saved: rerun the same command to resume.")
    saved = sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
    assert saved == [_iterations(workdir / "metrics.csv")[-1]]  # the last whole iteration, its row written
