"""Helpers of the tests that launch `local` runs on a Ray instance (test_ray_local.py, test_ray_replay_node.py,
test_ray_learners.py): run sizes, reading a run's files, killing one of its node processes mid-run, and a port scan of
the machine. Their fixtures (the shared compilation cache, the module's Ray instance, the plain loop's final state)
are in conftest.py.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import jax
import numpy as np
import psutil
from helpers import with_command_line_part, with_fields

from coala_dist.distributed.replay import reverb_installed

# Iterations of each launched run below: enough for a node to die mid-run (after the first update, after the third,
# after the first save) with iterations left to go; each one costs about a second of sync round trips on 2 cores.
ITERATIONS = 10


# Networked backends: Ray's object store with a queue actor everywhere, Reverb where the profile has it.
NETWORK_BACKENDS = ("ray", "reverb") if reverb_installed() else ("ray",)


def quick(config, **fields):
    return with_fields(config, distributed__rpc_timeout_s=1.0, distributed__poll_interval_s=0.01, **fields)


def assert_same_state(expected, actual) -> None:
    for x, y in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(actual), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))


def metrics_rows(path) -> int:
    if not os.path.exists(path):
        return 0
    with open(path, newline="") as f:
        return sum(1 for _ in csv.DictReader(f))


def saved_steps(workdir) -> list[int]:
    """Steps of the finished checkpoints in `workdir` (Orbax renames a save's folder to its step when it is done)."""
    names = os.listdir(workdir / "checkpoints") if (workdir / "checkpoints").exists() else []
    return sorted(int(name) for name in names if name.isdigit())


def our_processes(name: str) -> list[psutil.Process]:
    """Descendants of this test process whose command line names `name` (Ray titles actor processes)."""
    return with_command_line_part(psutil.Process().children(recursive=True), name)


def all_gone(name: str, timeout_s: float = 15.0) -> bool:
    """Whether every descendant process titled `name` exits within `timeout_s`."""
    _, alive = psutil.wait_procs(our_processes(name), timeout=timeout_s)
    return not alive


@contextlib.contextmanager
def sigkill_when(ready: Callable[[], bool], title: str, count: int = 1) -> Iterator[dict[str, float]]:
    """While the block runs, a thread waits until `ready()` and then SIGKILLs one of this test's descendant processes
    titled `title`, if there are at least `count` of them. Yields a dict that then holds the "pid" it killed and the
    monotonic time "at" which it did; it stays empty if the block ended first."""
    killed: dict[str, float] = {}
    over = threading.Event()

    def kill() -> None:
        while not over.is_set() and not ready():
            time.sleep(0.02)
        found = [] if over.is_set() else our_processes(title)
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


def column_sum(path, column: str) -> float:
    with open(path, newline="") as f:
        return sum(float(row[column] or 0) for row in csv.DictReader(f))


def last_row(path) -> dict[str, str]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))[-1]


# A port scan of this machine (a local run on the shared network is reachable, one in its own namespace is not)

LISTEN = "0A"  # TCP state in /proc/net/tcp


def host_addresses() -> list[str]:
    """The machine's IPv4 addresses outside 127/8: what a scan from the network would target."""
    return sorted(
        {
            a.address
            for addresses in psutil.net_if_addrs().values()
            for a in addresses
            if a.family == socket.AF_INET and not a.address.startswith("127.")
        }
    )


def socket_inodes(pid: int) -> set[str]:
    """The inodes of the sockets process `pid` holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports on which the processes `pids` listen, read in their own network namespace (/proc/PID/net)."""
    inodes, ports = set(), set()
    for pid in pids:
        try:
            inodes |= socket_inodes(pid)
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


def ports_listening_here() -> set[int]:
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


def reachable(addresses: list[str], ports: set[int]) -> list[tuple[str, int]]:
    """The (address, port) pairs that accept a TCP connection from here."""
    found = []
    for address in addresses:
        for port in sorted(ports):
            try:
                with socket.create_connection((address, port), timeout=1.0):
                    found.append((address, port))
            except OSError:
                pass
    return found
