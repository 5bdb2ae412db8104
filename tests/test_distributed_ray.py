"""Launch `local`: Ray processes on this machine. Same parameters as the plain loop; a SIGKILLed actor process is
restarted and the run completes; SIGTERM to `coala train` stops every node and leaves no process behind.

One Ray instance serves the module (the SIGTERM check starts its own through the CLI). Node processes share the
session's persistent JAX compilation cache, so the rollout and update compile at most once.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import psutil
import pytest
from helpers import with_fields
from replay_contract import CONTRACT, SMALL

from coala_dist import xla_flags
from coala_dist.distributed.launch import run_on_ray
from coala_dist.distributed.program import make_program
from coala_dist.distributed.replay import TableSpec, connect, reverb_installed, start_server
from coala_dist.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ray starts its own server processes with fork+exec (subprocess), which never runs JAX code in the child.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")


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


def _our_processes(name: str) -> list[psutil.Process]:
    """Descendants of this test process whose command line names `name` (Ray titles actor processes)."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            if any(name in part for part in process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found


def _all_gone(name: str, timeout_s: float = 15.0) -> bool:
    """Whether every descendant process titled `name` exits within `timeout_s`."""
    _, alive = psutil.wait_procs(_our_processes(name), timeout=timeout_s)
    return not alive


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


@pytest.fixture(scope="module")
def reference(tiny_config, tiny_components):
    """Final states of the plain in-process loop, by number of iterations."""
    cache = {}

    def get(iterations: int):
        if iterations not in cache:
            config = with_fields(tiny_config, training_iterations=iterations)
            state, _ = train(config, None, components=tiny_components, log=lambda line: None)
            cache[iterations] = jax.device_get(state)
        return cache[iterations]

    return get


# Networked backends: Ray's object store with a queue actor everywhere, Reverb where the profile has it.
NETWORK_BACKENDS = ("ray", "reverb") if reverb_installed() else ("ray",)


@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_replay_contract_on_ray(ray_instance, check):
    check("ray")


def test_ray_store_dies_with_its_server_and_clients_say_so(ray_instance):
    server = start_server("ray", [TableSpec("q", SMALL, queue_capacity=2)])
    client = connect(server.address, rpc_timeout_s=1.0)
    assert client.sizes() == {"q": 0}
    server.stop()
    with pytest.raises(ValueError, match="no replay store actor at ray-queue://"):
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
    try:
        for token, reached in ((None, True), ("0" * 64, False)):
            env = dict(os.environ, **({"RAY_AUTH_TOKEN": token} if token else {}))
            result = subprocess.run(
                [sys.executable, "-c", reach, gcs, server.address, ray.get_runtime_context().namespace],
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert (result.returncode == 0 and "{'q': 0}" in result.stdout) == reached, result.stderr[-2000:]
            if not reached:
                assert "ConnectionError" in result.stderr
    finally:
        server.stop()


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
def test_local_ray_with_two_actor_processes_gives_the_plain_loop_parameters(
    ray_instance, tiny_config, reference, tmp_path, backend
):
    program = make_program(
        _quick(tiny_config), launch="local", num_actors=2, workdir=str(tmp_path / "run"), replay=backend
    )
    assert program.config.distributed.replay == backend
    result = run_on_ray(program, log=lambda line: None)
    assert int(result.state.step) == tiny_config.training_iterations
    _assert_same_state(reference(tiny_config.training_iterations), result.state)
    pids = {stats["pid"] for stats in result.actor_stats}
    assert len(pids) == 2 and os.getpid() not in pids  # two actor processes, not this one
    assert _rows(tmp_path / "run" / "metrics.csv") == tiny_config.training_iterations
    assert _all_gone("ActorProcess") and _all_gone("LearnerProcess") and _all_gone("ReplayProcess")


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
def test_sigkilled_actor_process_is_restarted_and_the_run_completes(
    ray_instance, tiny_config, reference, tmp_path, backend
):
    iterations = 30
    workdir = tmp_path / "run"
    program = make_program(
        _quick(tiny_config, training_iterations=iterations),
        launch="local",
        num_actors=2,
        workdir=str(workdir),
        replay=backend,
    )
    killed: dict[str, int] = {}

    def kill_an_actor_after_the_first_update() -> None:
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and _rows(workdir / "metrics.csv") < 1:
            time.sleep(0.02)
        actors = _our_processes("ActorProcess")
        if actors:
            killed["pid"] = actors[0].pid
            actors[0].send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_an_actor_after_the_first_update)
    killer.start()
    result = run_on_ray(program, log=lambda line: None)
    killer.join()
    assert "pid" in killed, "no actor process was found to kill"
    assert _rows(workdir / "metrics.csv") == iterations  # (sync) the dead actor's units were needed to go on
    assert int(result.state.step) == iterations
    _assert_same_state(reference(iterations), result.state)  # a restart changes nothing in sync mode
    pids = [stats["pid"] for stats in result.actor_stats]
    assert len(pids) == 2 and killed["pid"] not in pids  # the restarted process finished the killed actor's work


def test_sigterm_stops_every_local_node_within_seconds(compilation_cache, tmp_path):
    workdir = tmp_path / "run"
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
    log_path = tmp_path / "stderr.txt"  # a file, not a pipe: nobody reads while it runs, and a full pipe blocks
    log_file = open(log_path, "w")  # noqa: SIM115  (closed below)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and process.poll() is None and _rows(workdir / "metrics.csv") < 2:
            time.sleep(0.1)
        assert process.poll() is None, log_path.read_text()[-3000:]
        tree = psutil.Process(process.pid).children(recursive=True)
        titles = " ".join(" ".join(p.cmdline()) for p in tree if p.is_running())
        assert "ReplayProcess" in titles and "LearnerProcess" in titles and "ActorProcess" in titles
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
        stopped_after = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
        log_file.close()
    assert process.returncode == 128 + signal.SIGTERM, log_path.read_text()[-3000:]  # 143: stopped, not finished
    assert stopped_after < 30
    _, alive = psutil.wait_procs(tree, timeout=15)
    assert not alive, [p.pid for p in alive]
    # The learner stopped after a whole iteration and saved it (the checkpoint callback runs on stop).
    assert any(name.isdigit() for name in os.listdir(workdir / "checkpoints"))
