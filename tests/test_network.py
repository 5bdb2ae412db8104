"""A one-machine run's private network (coala_dist/distributed/netns.py): a port scan of the machine's own addresses
finds nothing of a `local` run, while the same run on the shared network is found (so the scan can see)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from coala_dist import cli
from coala_dist.distributed import netns

LISTEN = "0A"  # TCP state in /proc/net/tcp


def _host_addresses() -> list[str]:
    """The machine's IPv4 addresses outside 127/8: what a scan from the network would target."""
    return sorted(
        {
            a.address
            for addresses in psutil.net_if_addrs().values()
            for a in addresses
            if a.family == socket.AF_INET and not a.address.startswith("127.")
        }
    )


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _listening_ports(pids: list[int]) -> set[int]:
    """TCP ports on which the processes `pids` listen, read in their own network namespace (/proc/PID/net)."""
    inodes, ports = set(), set()
    for pid in pids:
        try:
            inodes |= _socket_inodes(pid)
        except OSError:  # the process ended meanwhile
            continue
    for pid in pids[:1]:
        for table in ("tcp", "tcp6"):
            with open(f"/proc/{pid}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[3] == LISTEN and fields[9] in inodes:
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _ports_listening_here() -> set[int]:
    """TCP ports on which some process of this (the test's) network namespace listens: another run on the shared
    network (a parallel test) may hold the same port number, e.g. Ray's fixed dashboard-agent port, and a scan of
    such a port would find that process, not the isolated run."""
    ports = set()
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{os.getpid()}/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == LISTEN:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _reachable(addresses: list[str], ports: set[int]) -> list[tuple[str, int]]:
    found = []
    for address in addresses:
        for port in sorted(ports):
            try:
                with socket.create_connection((address, port), timeout=1.0):
                    found.append((address, port))
            except OSError:
                pass
    return found


@pytest.mark.slow
@pytest.mark.parametrize("network", ["auto", "shared"])
def test_a_port_scan_of_the_machine_finds_a_local_run_only_on_the_shared_network(network, tmp_path):
    addresses = _host_addresses()
    assert addresses, "this machine has no non-loopback IPv4 address: the scan could prove nothing"
    run = subprocess.Popen(
        [sys.executable, "-m", "coala_dist.cli", "train", "--config=ipd_tiny", "--launch=local", "--num_actors=1",
         f"--workdir={tmp_path / 'run'}", "--config.training_iterations=100000", f"--network={network}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    try:
        metrics, deadline = tmp_path / "run" / "metrics.csv", time.monotonic() + 240
        while time.monotonic() < deadline and run.poll() is None:  # until the learner has logged an iteration
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(1.0)
        assert run.poll() is None, run.communicate()[1]
        pids = [run.pid] + [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
        assert {"gcs_server", "raylet"} <= {psutil.Process(p).name() for p in pids if psutil.pid_exists(p)}
        ports = _listening_ports(pids)
        own_network = os.readlink(f"/proc/{run.pid}/ns/net") == os.readlink("/proc/self/ns/net")
        if not own_network:  # scan only the ports that no process of the shared network holds as well
            ports -= _ports_listening_here()
        assert ports, "the run listens on no port: nothing to scan"
        found = _reachable(addresses, ports)
        if network == "auto":
            assert not own_network  # the driver and everything it started live in another namespace
            assert found == [], f"reachable from {addresses}: {found}"
        else:
            assert own_network and found, f"the shared run listens on {sorted(ports)} yet the scan found none"
    finally:
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=120)
    assert run.returncode == 128 + signal.SIGTERM, stderr


@pytest.mark.parametrize(
    ("mode", "launch", "workdir", "isolate"),
    [
        ("auto", "inprocess", "run", True),
        ("auto", "local", None, True),
        ("auto", "ray", "run", False),
        ("auto", "local", "gs://bucket/run", False),
        ("shared", "local", "run", False),
        ("isolated", "local", "run", True),
    ],
)
def test_auto_isolates_the_one_machine_launches_with_a_local_workdir(mode, launch, workdir, isolate):
    assert netns.choose(mode, launch, workdir) is isolate


def test_auto_keeps_the_shared_network_quietly_where_there_are_no_namespaces(monkeypatch):
    monkeypatch.setattr(netns.sys, "platform", "darwin")
    assert netns.choose("auto", "local", "run") is False
    assert netns.choose("isolated", "local", "run") is True  # asked for: isolate_network then says it cannot
    with pytest.raises(netns.IsolationUnavailableError, match="Linux-only"):
        netns.isolate_network()


@pytest.mark.parametrize(
    ("launch", "workdir", "reason"), [("ray", "run", "Ray cluster"), ("local", "gs://b/r", "remote")]
)
def test_isolated_refuses_what_needs_the_network(launch, workdir, reason):
    with pytest.raises(ValueError, match=f"--network=isolated is impossible here: .*{reason}"):
        netns.choose("isolated", launch, workdir)


def test_flags_are_read_from_the_raw_arguments_as_absl_would():
    args = ["--config=ipd_tiny", "--launch", "local", "--network=shared", "--network=isolated", "--workdir=w"]
    assert cli._flag_value(args, "launch") == "local"
    assert cli._flag_value(args, "network") == "isolated"  # the last one wins
    assert cli._flag_value(args, "workdir") == "w" and cli._flag_value(args, "mode", "sync") == "sync"


def test_isolation_in_a_threaded_process_is_refused_and_leaves_the_network_alone():
    # pytest's process has threads (JAX started its own): the kernel would refuse a user namespace, and a network
    # namespace would only apply to one thread, so nothing is attempted.
    before = os.readlink("/proc/self/ns/net")
    with pytest.raises(netns.IsolationUnavailableError, match="already runs"):
        netns.isolate_network()
    assert os.readlink("/proc/self/ns/net") == before and not netns.is_isolated()
