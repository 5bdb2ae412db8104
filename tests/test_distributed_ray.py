"""Launch `local`: Ray processes on this machine. Same parameters as the plain loop; a SIGKILLed actor process is
restarted and the run completes; SIGTERM to `coala train` stops every node and leaves no process behind.

One Ray instance serves the module (the SIGTERM check starts its own through the CLI). Node processes share the
session's persistent JAX compilation cache, so the rollout and update compile at most once.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
import psutil
import pytest
from helpers import with_command_line_part, with_fields
from replay_contract import CONTRACT, SMALL

from coala_dist import compat, xla_flags
from coala_dist.config import episodes_per_iteration
from coala_dist.distributed.control import request_scale
from coala_dist.distributed.program import make_program
from coala_dist.distributed.ray_run import run_on_ray
from coala_dist.distributed.reaper import REAP_BOUND_S
from coala_dist.distributed.replay import (
    ReplayTimeoutError,
    ReplayUnavailableError,
    TableSpec,
    connect,
    reverb_installed,
    start_server,
)
from coala_dist.distributed.work import work_units
from coala_dist.train import NodeFailedError, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ray starts its own server processes with fork+exec (subprocess), which never runs JAX code in the child.
pytestmark = [pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning"), pytest.mark.slow]


def _quick(config, **fields):
    return with_fields(config, distributed__rpc_timeout_s=1.0, distributed__poll_interval_s=0.01, **fields)


def _assert_same_state(expected, actual) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(actual), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def _rows(path) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def _saved_steps(workdir) -> list[int]:
    """Steps of the finished checkpoints in `workdir` (Orbax renames a save's folder to its step when it is done)."""
    names = os.listdir(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
    return sorted(int(name) for name in names if name.isdigit())


def _our_processes(name: str) -> list[psutil.Process]:
    """Descendants of this test process whose command line names `name` (Ray titles actor processes)."""
    return with_command_line_part(psutil.Process().children(recursive=True), name)


def _all_gone(name: str, timeout_s: float = 15.0) -> bool:
    """Whether every descendant process titled `name` exits within `timeout_s`."""
    _, alive = psutil.wait_procs(_our_processes(name), timeout=timeout_s)
    return not alive


@contextlib.contextmanager
def _sigkill_when(ready: Callable[[], bool], title: str, count: int = 1) -> Iterator[dict[str, float]]:
    """While the block runs, a thread waits until `ready()` and then SIGKILLs one of this test's descendant processes
    titled `title`, if there are at least `count` of them. Yields a dict that then holds the "pid" it killed and the
    monotonic time "at" which it did; it stays empty if the block ended first."""
    killed: dict[str, float] = {}
    over = threading.Event()

    def kill() -> None:
        while not over.is_set() and not ready():
            time.sleep(0.02)
        found = [] if over.is_set() else _our_processes(title)
        if len(found) >= count:
            found[-1].send_signal(signal.SIGKILL)
            killed.update(pid=found[-1].pid, at=time.monotonic())

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield killed
    finally:
        over.set()
        killer.join()


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """Node processes (which inherit these variables) share compiled executables: the session's cache (conftest.py),
    which already holds the programs the in-process launch compiled for the same config, else a temporary one."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        yield


@pytest.fixture(scope="module")
def ray_instance(compilation_cache):
    import ray

    xla_flags.configure()
    ray.init(
        address="local",
        num_cpus=6,
        include_dashboard=False,
        object_store_memory=128 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}},
    )
    yield
    ray.shutdown()


# Iterations of each launched run below: enough for a node to die mid-run (after the first update, after the third,
# after the first save) with iterations left to go; each one costs about a second of sync round trips on 2 cores.
ITERATIONS = 10


@pytest.fixture(scope="module")
def reference(tiny_config, tiny_components):
    """The final state of the plain in-process loop after ITERATIONS iterations."""
    config = with_fields(tiny_config, training_iterations=ITERATIONS)
    state, _ = train(config, None, components=tiny_components, log=lambda line: None)
    return jax.device_get(state)


# Networked backends: Ray's object store with a queue actor everywhere, Reverb where the profile has it.
NETWORK_BACKENDS = ("ray", "reverb") if reverb_installed() else ("ray",)


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_replay_contract_on_ray(ray_instance, check):
    check("ray")


def test_clients_of_a_dead_ray_store_say_it_is_gone(ray_instance):
    """(A Reverb client of a stopped server times out on `sizes()`, and its sampler has no timeout: see
    ReverbClient.take; the launcher's watch of the replay node covers both backends.)"""
    server = start_server("ray", [TableSpec("q", SMALL, queue_capacity=2), TableSpec("latest", SMALL)])
    client = connect(server.address, rpc_timeout_s=1.0)
    writer = client.writer()
    for table in ("q", "latest"):
        writer.add(table, [np.zeros((3,), np.float32), np.asarray(0, np.int32)])
    assert writer.flush(1.0, lambda: False)
    writer.close()
    assert client.sizes() == {"q": 1, "latest": 1} and client.latest("latest") is not None
    server.stop()
    # Every call of a client of the dead store fails as a timeout would (ReplayUnavailableError), so its caller checks
    # its stop event and retries rather than crashing. The store dies with its server (ray.kill is asynchronous: calls
    # answer until the process is gone).
    assert issubclass(ReplayUnavailableError, ReplayTimeoutError)
    for call in (client.sizes, lambda: client.take("q", 1), lambda: client.latest("latest")):
        start = time.monotonic()
        with pytest.raises(ReplayUnavailableError, match="is gone"):
            while time.monotonic() - start < 10:
                call()
    with pytest.raises(ValueError, match="no replay store actor at ray-queue://"):  # a new client is refused
        connect(server.address, rpc_timeout_s=1.0)


def test_a_peer_without_the_clusters_token_cannot_reach_the_replay(ray_instance):
    """The `ray` transport is only reachable through Ray's servers, which refuse a driver with a wrong token (Ray
    2.60's token authentication, on by default and never turned off here); the same driver with the token gets in."""
    import ray

    assert os.environ.get("RAY_AUTH_MODE", "token") != "disabled"
    server = start_server("ray", [TableSpec("q", SMALL, queue_capacity=2)])
    gcs = ray.get_runtime_context().gcs_address
    reach = (
        "import sys, ray; ray.init(address=sys.argv[1], namespace=sys.argv[3], log_to_driver=False); "
        "from coala_dist.distributed.replay import connect; print(connect(sys.argv[2], 1.0).sizes())"
    )
    argv = [sys.executable, "-c", reach, gcs, server.address, ray.get_runtime_context().namespace]
    tries: dict[bool, subprocess.Popen] = {}
    try:
        # Both drivers at once: each spends most of its time starting up.
        tries = {
            reached: subprocess.Popen(
                argv,
                env=dict(os.environ, **({} if reached else {"RAY_AUTH_TOKEN": "0" * 64})),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for reached in (True, False)
        }
        for reached, process in tries.items():
            stdout, stderr = process.communicate(timeout=180)
            assert (process.returncode == 0 and "{'q': 0}" in stdout) == reached, stderr[-2000:]
            if not reached:
                assert "ConnectionError" in stderr
    finally:
        for process in tries.values():
            if process.poll() is None:
                process.kill()
        server.stop()


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
def test_local_ray_with_two_actor_processes_gives_the_plain_loop_parameters_even_after_a_sigkill(
    ray_instance, tiny_config, reference, tmp_path, backend
):
    """Two actor processes (not this one) give the plain loop's parameters; one of them SIGKILLed after the first
    update is restarted by Ray, the run completes with the same parameters, and no node process outlives it.

    One run checks both (each run starts four fresh node processes): the first update is made by the two processes
    undisturbed, and the surviving actor runs undisturbed to the end."""
    workdir = tmp_path / "run"
    program = make_program(
        _quick(tiny_config, training_iterations=ITERATIONS),
        launch="local",
        num_actors=2,
        workdir=str(workdir),
        replay=backend,
    )
    assert program.config.distributed.replay == backend
    lines: list[str] = []
    with _sigkill_when(lambda: _rows(workdir / "metrics.csv") >= 1, "ActorProcess", count=2) as killed:
        result = run_on_ray(program, log=lines.append)
    assert "pid" in killed, "no actor process was found to kill"
    # The launcher says what happened in its own words, counting the actor's restarts (not Ray's task retries).
    restarted = [line for line in lines if f"(process {killed['pid']} was killed or crashed)" in line]
    assert len(restarted) == 1 and restarted[0].endswith("restarted, 1 of 3 restarts used"), lines
    assert _rows(workdir / "metrics.csv") == ITERATIONS  # (sync) the dead actor's units were needed to go on
    assert int(result.state.step) == ITERATIONS
    _assert_same_state(reference, result.state)  # a restart changes nothing in sync mode
    pids = [stats["pid"] for stats in result.actor_stats]
    assert len(set(pids)) == 2 and os.getpid() not in pids  # two actor processes, not this one
    assert killed["pid"] not in pids  # the restarted process finished the killed actor's work
    assert _all_gone("ActorProcess") and _all_gone("LearnerProcess") and _all_gone("ReplayProcess")


def _column_sum(path, column: str) -> float:
    with open(path, newline="") as f:
        return sum(float(row[column] or 0) for row in csv.DictReader(f))


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
def test_a_killed_replay_node_is_restarted_and_the_run_ends_as_an_uninterrupted_one(
    ray_instance, tiny_config, reference, tmp_path, backend
):
    """SIGKILL of the replay node's process mid-run (after the third update): the launcher starts a new replay node
    under the same Ray name within seconds; the learner and the actor find it, the learner publishes again and the
    actor rolls out the lost episodes of the current version again (each a pure function of run key, version and
    index), so the same run ends with the parameters of an uninterrupted one, every iteration once in metrics.csv."""
    workdir = tmp_path / "run"
    # A node that failed to follow the new replay node would wait for data: fail in a minute, not in ten.
    config = _quick(tiny_config, training_iterations=ITERATIONS, distributed__data_timeout_s=60.0)
    program = make_program(config, launch="local", num_actors=1, workdir=str(workdir), replay=backend)
    assert program.config.distributed.replay_max_restarts > 0  # the default restarts it
    lines: list[str] = []
    with _sigkill_when(lambda: _rows(workdir / "metrics.csv") >= 3, "ReplayProcess") as killed:
        result = run_on_ray(program, log=lines.append)
    assert "at" in killed, "no replay process was found to kill"
    restarts = [line for line in lines if "replay node's process died: restarted it" in line]
    assert len(restarts) == 1, lines
    assert int(result.state.step) == ITERATIONS
    _assert_same_state(reference, result.state)  # the lost episodes were rolled out again, bit for bit
    assert _rows(workdir / "metrics.csv") == ITERATIONS
    assert _column_sum(workdir / "metrics.csv", "replay/restarts") == 1  # the learner followed it once
    assert [stats["replay_restarts"] for stats in result.actor_stats] == [1]  # and so did the actor
    assert _all_gone("ActorProcess") and _all_gone("LearnerProcess") and _all_gone("ReplayProcess")


def test_a_replay_node_killed_with_no_restarts_left_stops_the_run_in_one_line_and_the_same_command_finishes_it(
    ray_instance, tiny_config, reference, tmp_path
):
    """With `distributed.replay_max_restarts=0`, SIGKILL of the replay node's process: within seconds the launcher
    stops every node, the learner saves its last whole iteration (no periodic save is due) and the run ends with one
    line (NodeFailedError, exit status 1), never waiting for data_timeout_s. Nothing is lost: the checkpoint holds
    every iteration metrics.csv shows, and the same command finishes the run with the parameters of an uninterrupted
    one. (The launcher's watch of the replay node is the same for every backend: the test above covers Reverb.)"""
    workdir = tmp_path / "run"

    def program():
        config = _quick(
            tiny_config,
            training_iterations=ITERATIONS,
            checkpoint__save_every=1000,
            distributed__replay_max_restarts=0,
        )
        return make_program(config, launch="local", num_actors=1, workdir=str(workdir), replay="ray")

    with (
        _sigkill_when(lambda: _rows(workdir / "metrics.csv") >= 3, "ReplayProcess") as killed,
        pytest.raises(NodeFailedError) as stopped,
    ):
        run_on_ray(program(), log=lambda line: None)
    assert "at" in killed, "no replay process was found to kill"
    assert time.monotonic() - killed["at"] < 60  # noticed and stopped in seconds, not after data_timeout_s (600 s)
    message = str(stopped.value.code)
    assert "\n" not in message and "replay node's process died" in message and "run the same command" in message
    assert "replay_max_restarts=0" in message
    done = _rows(workdir / "metrics.csv")
    assert 3 <= done < ITERATIONS and f"after iteration {done} and saved it" in message
    assert _saved_steps(workdir)[-1] == done  # every iteration the run reported is in the checkpoint
    assert _all_gone("ActorProcess") and _all_gone("LearnerProcess") and _all_gone("ReplayProcess")

    result = run_on_ray(program(), log=lambda line: None)
    assert int(result.state.step) == ITERATIONS
    _assert_same_state(reference, result.state)
    assert _rows(workdir / "metrics.csv") == ITERATIONS  # each iteration once: continued, never truncated


def _last_row(path) -> dict[str, str]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[-1]


# Room for a new actor process to start and build (its JAX import and compilation: minutes on a loaded 2-core machine)
# while the learner keeps training; a tiny iteration takes a fraction of a second.
SCALE_ITERATIONS = 150


def test_a_running_sync_job_scaled_up_and_down_ends_with_the_plain_loops_parameters(
    ray_instance, tiny_config, tiny_components, tmp_path
):
    """`coala scale` while `local` trains (sync, 1 actor): to 2 actors as soon as the job runs, then back to 1 once
    the new actor has rolled out two versions. The learner never stops; the second actor starts, takes half of the work
    units of every version published for 2 actors, and retires when the count drops; the run ends with the plain
    loop's parameters (every episode is a pure function of run key, version and index, whoever rolls it out)."""
    config = with_fields(tiny_config, training_iterations=SCALE_ITERATIONS)
    expected, _ = train(config, None, components=tiny_components, log=lambda line: None)
    workdir = tmp_path / "run"
    metrics = workdir / "metrics.csv"
    program = make_program(_quick(config), launch="local", num_actors=1, workdir=str(workdir))
    requests: dict[str, int] = {}

    def scale() -> None:
        def until(condition) -> bool:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not condition():
                time.sleep(0.05)
            return condition()

        # As soon as the job can be asked: a new actor process takes seconds to start and build its rollout.
        if until(lambda: (workdir / "control" / "driver.json").exists()):
            requests["up_from"] = request_scale(str(workdir), 2, timeout_s=600)
            requests["up_at"] = _rows(metrics)
        if until(lambda: _column_sum(metrics, "replay/num_actors") >= _rows(metrics) + 2):  # two versions with 2
            requests["down_from"] = request_scale(str(workdir), 1, timeout_s=600)

    scaler = threading.Thread(target=scale)
    scaler.start()
    lines: list[str] = []
    result = run_on_ray(program, log=lines.append)
    scaler.join()
    assert requests.get("up_from") == 1 and requests.get("down_from") == 2, requests
    assert requests["up_at"] < SCALE_ITERATIONS - 4  # both changes happened while the learner was training
    assert [line.split(":")[0] for line in lines if "the learner's next version is split" in line] == [
        "now 2 actors (was 1)",
        "now 1 actor (was 2)",
    ]
    with open(metrics, newline="") as f:
        counts = [int(float(row["replay/num_actors"])) for row in csv.DictReader(f)]
    changes = [count for i, count in enumerate(counts) if i == 0 or count != counts[i - 1]]
    assert changes in ([1, 2, 1], [2, 1]) and counts.count(2) >= 2, counts  # (the first version may already have 2)
    assert int(result.state.step) == SCALE_ITERATIONS and _rows(metrics) == SCALE_ITERATIONS
    _assert_same_state(jax.device_get(expected), result.state)
    stats = sorted(result.actor_stats, key=lambda s: s["actor_id"])
    assert [s["actor_id"] for s in stats] == [0, 1]
    assert stats[1]["retired"] == 1 and stats[1]["versions"] >= 2 and stats[0]["retired"] == 0
    assert stats[0]["versions"] == SCALE_ITERATIONS  # actor 0 worked on every version, alone or with actor 1
    # Each version's work units were split between the actors its publication named: none rolled out twice.
    assert len(work_units(config)) >= 2 and result.dropped_duplicates == 0
    assert sum(s["episodes"] for s in stats) == SCALE_ITERATIONS * episodes_per_iteration(config)
    assert not (workdir / "control" / "driver.json").exists()  # the ended run can no longer be scaled
    assert _all_gone("ActorProcess") and _all_gone("LearnerProcess") and _all_gone("ReplayProcess")


def test_two_learner_processes_of_four_devices_save_resume_after_a_sigkill_and_match_the_plain_loop(
    ray_instance, tiny_config, reference, tmp_path, monkeypatch
):
    """Multi-host readiness: 2 learner processes × 4 CPU devices (one jax.distributed group, an 8-device data-parallel
    mesh) save checkpoints together (Orbax, collectively); one process is SIGKILLed after a save; the run stops in one
    line; the same command resumes both processes from the group's checkpoint and ends with the plain one-device
    loop's parameters (to float rounding of the 8-way gradient reduction, as in test_distributed_sharding.py).

    On the reverb profile each process has one CPU device: jaxlib 0.4.34's CPU collectives abort with several
    (compat.SEVERAL_CPU_DEVICES_PER_GROUP_PROCESS)."""
    workdir = tmp_path / "run"
    devices = 4 if compat.SEVERAL_CPU_DEVICES_PER_GROUP_PROCESS else 1
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    monkeypatch.setenv("XLA_FLAGS", flags)  # what every node process of the run gets (ray_nodes.node_environment)

    def program():
        config = _quick(
            tiny_config,
            training_iterations=ITERATIONS,
            checkpoint__save_every=2,
            distributed__num_learner_processes=2,
            distributed__stop_grace_s=3.0,  # the survivor waits in a collective for its dead peer: it cannot stop
        )
        return make_program(config, launch="local", num_actors=1, workdir=str(workdir))

    with (
        _sigkill_when(lambda: bool(_saved_steps(workdir)), "LearnerProcess", count=2) as killed,
        pytest.raises(NodeFailedError, match=r"learner process \d died") as stopped,
    ):
        run_on_ray(program(), log=lambda line: None)
    assert "pid" in killed, "two learner processes were not found"
    assert "\n" not in str(stopped.value.code)
    assert _saved_steps(workdir) and _saved_steps(workdir)[-1] < ITERATIONS
    assert _all_gone("LearnerProcess") and _all_gone("ActorProcess") and _all_gone("ReplayProcess")

    result = run_on_ray(program(), log=lambda line: None)
    assert int(result.state.step) == ITERATIONS
    for x, y in zip(jax.tree_util.tree_leaves(reference), jax.tree_util.tree_leaves(result.state), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)


def _start_a_local_driver(workdir, log_path) -> subprocess.Popen:
    """`coala train --launch=local` with one actor and no end in sight; its stderr goes to `log_path` (a file, not a
    pipe: nobody reads while it runs, and a full pipe blocks)."""
    command = [
        sys.executable,
        "-m",
        "coala_dist.cli",
        "train",
        "--config=configs/ipd_tiny.py",
        f"--workdir={workdir}",
        "--launch=local",
        "--num_actors=1",
        "--config.training_iterations=1000000",
        "--config.distributed.stop_grace_s=5",
    ]
    with open(log_path, "w") as log_file:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file)


def test_a_stopped_and_a_killed_local_driver_leave_no_process_behind(compilation_cache, tmp_path):
    """Two drivers side by side (each starts its own Ray instance), both training. SIGTERM to one: every node stops
    within seconds after the learner saved, exit 143. SIGKILL to the other (nothing in the driver can act): its reaper
    kills what Ray's fate sharing leaves (its agents lingered about 60 s) within REAP_BOUND_S."""
    signals = {"stopped": signal.SIGTERM, "killed": signal.SIGKILL}
    drivers = {name: _start_a_local_driver(tmp_path / name, tmp_path / f"{name}.txt") for name in signals}
    try:
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and any(
            driver.poll() is None and _rows(tmp_path / name / "metrics.csv") < 2 for name, driver in drivers.items()
        ):
            time.sleep(0.1)
        trees = {}
        for name, driver in drivers.items():
            assert driver.poll() is None, (tmp_path / f"{name}.txt").read_text()[-3000:]
            trees[name] = psutil.Process(driver.pid).children(recursive=True)
            titles = " ".join(" ".join(p.cmdline()) for p in trees[name] if p.is_running())
            for part in ("ReplayProcess", "LearnerProcess", "ActorProcess", "raylet", "gcs_server", "reaper"):
                assert part in titles, (name, part)
        start = time.monotonic()
        for name, driver in drivers.items():
            driver.send_signal(signals[name])
        drivers["stopped"].wait(timeout=120)
        stopped_after = time.monotonic() - start
        drivers["killed"].wait(timeout=120)
    finally:
        for driver in drivers.values():
            if driver.poll() is None:
                driver.kill()

    assert drivers["killed"].returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs(trees["killed"], timeout=REAP_BOUND_S)
    assert not alive, [(p.pid, p.name()) for p in alive if p.is_running()]

    log = (tmp_path / "stopped.txt").read_text()[-3000:]
    assert drivers["stopped"].returncode == 128 + signal.SIGTERM, log  # 143: stopped, not finished
    assert stopped_after < 30
    # The reaper too: told of the clean exit, it kills nothing.
    _, alive = psutil.wait_procs(trees["stopped"], timeout=15)
    assert not alive, [p.pid for p in alive]
    # The learner stopped after a whole iteration and saved it (the checkpoint callback runs on stop).
    assert any(name.isdigit() for name in os.listdir(tmp_path / "stopped" / "checkpoints"))
