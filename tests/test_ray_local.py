"""Launch `local`: Ray processes on this machine. The Ray replay's contract and its clients; SIGTERM to `coala
train` stops every node and SIGKILL of it leaves no process behind; a port scan of the machine finds a run on the
shared network and none in its private one (coala_dist/distributed/netns.py).

One Ray instance serves the module (the SIGTERM check starts its own through the CLI). Node processes share the
session's persistent JAX compilation cache, so the rollout and update compile at most once. The other `local` runs
are in test_ray_replay_node.py (two actor processes, an actor and the replay node killed) and test_ray_learners.py
(scaling, two learner processes): three modules, so the two workers of the test run share them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from ray_helpers import (
    host_addresses,
    listening_ports,
    metrics_rows,
    ports_listening_here,
    reachable,
)
from replay_contract import CONTRACT, SMALL

from coala_dist.distributed.reaper import REAP_BOUND_S
from coala_dist.distributed.replay import (
    ReplayTimeoutError,
    ReplayUnavailableError,
    TableSpec,
    connect,
    start_server,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Ray starts its own server processes with fork+exec (subprocess), which never runs JAX code in the child.
pytestmark = [pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning"), pytest.mark.slow]


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

def _start_a_local_driver(workdir, log_path, network: str) -> subprocess.Popen:
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
        f"--network={network}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(log_path, "w") as log_file:
        return subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log_file, env=env)


def _scan(driver: subprocess.Popen, tree: list[psutil.Process]) -> tuple[bool, set[int], list[tuple[str, int]]]:
    """(whether the driver shares this process's network, the ports its processes listen on, those a connection to
    one of the machine's own non-loopback addresses reaches)."""
    addresses = host_addresses()
    assert addresses, "this machine has no non-loopback IPv4 address: the scan could prove nothing"
    ports = listening_ports([driver.pid] + [p.pid for p in tree])
    own_network = os.readlink(f"/proc/{driver.pid}/ns/net") == os.readlink("/proc/self/ns/net")
    if not own_network:  # scan only the ports that no process of the shared network holds as well
        ports -= ports_listening_here()
    assert ports, "the run listens on no port: nothing to scan"
    return own_network, ports, reachable(addresses, ports)


def test_two_local_drivers_a_port_scan_finds_only_the_shared_one_and_neither_leaves_a_process_behind(
    compilation_cache, tmp_path
):
    """Two drivers side by side (each starts its own Ray instance), both training: one in its private network
    (`--network=auto`), one on the shared network. A port scan of the machine's own addresses reaches none of the
    private run's ports and some of the shared run's (the control that shows the scan can see). Then SIGTERM to the
    private one: every node stops within seconds after the learner saved, exit 143. SIGKILL to the shared one
    (nothing in the driver can act): its reaper kills what Ray's fate sharing leaves (its agents lingered about 60 s)
    within REAP_BOUND_S."""
    networks = {"stopped": "auto", "killed": "shared"}
    signals = {"stopped": signal.SIGTERM, "killed": signal.SIGKILL}
    drivers = {
        name: _start_a_local_driver(tmp_path / name, tmp_path / f"{name}.txt", networks[name]) for name in signals
    }
    try:
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline and any(
            driver.poll() is None and metrics_rows(tmp_path / name / "metrics.csv") < 2
            for name, driver in drivers.items()
        ):
            time.sleep(0.1)
        trees = {}
        for name, driver in drivers.items():
            assert driver.poll() is None, (tmp_path / f"{name}.txt").read_text()[-3000:]
            trees[name] = psutil.Process(driver.pid).children(recursive=True)
            titles = " ".join(" ".join(p.cmdline()) for p in trees[name] if p.is_running())
            for part in ("ReplayProcess", "LearnerProcess", "ActorProcess", "raylet", "gcs_server", "reaper"):
                assert part in titles, (name, part)
        own_network, ports, found = _scan(drivers["stopped"], trees["stopped"])
        assert not own_network  # the driver and everything it started live in another namespace
        assert found == [], f"the private run listens on {sorted(ports)}; reachable: {found}"
        own_network, ports, found = _scan(drivers["killed"], trees["killed"])
        assert own_network and found, f"the shared run listens on {sorted(ports)} yet the scan found none"
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
