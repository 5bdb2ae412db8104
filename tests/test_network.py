"""A one-machine run's private network (coala_dist/distributed/netns.py): which launches isolate, what is refused, and
where isolation is impossible. The port scan of a running `local` run on each network is in test_ray_local.py (it
shares the two drivers of the SIGTERM/SIGKILL check)."""

from __future__ import annotations

import os

import pytest

from coala_dist import cli
from coala_dist.distributed import netns


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
