"""The replay interface's contract (coala_dist/distributed/replay.py), checked the same way on every backend.

Test modules call these with a backend name: test_distributed.py for the in-process ones (`queues`, and `reverb`
in the reverb profile), test_ray_local.py for `ray` (it needs the module's Ray instance).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from coala_dist.distributed.codec import LeafSpec, PublishedParams, TreeCodec
from coala_dist.distributed.params import NodeStoppedError, ParamsClient
from coala_dist.distributed.replay import TableSpec, connect, start_server
from coala_dist.distributed.work import PARAMS_TABLE, PARAMS_VERSION_TABLE

SMALL = (LeafSpec((3,), "float32"), LeafSpec((), "int32"))


def never() -> bool:
    return False


def item(value: int) -> list[np.ndarray]:
    return [np.full((3,), value, np.float32), np.asarray(value, np.int32)]


def queue_is_fifo_and_blocks_writers_when_full_until_stopped(backend: str) -> None:
    server = start_server(backend, [TableSpec("q", SMALL, queue_capacity=2)])
    try:
        client = connect(server.address, rpc_timeout_s=1.0)
        writer = client.writer()
        for value in range(3):
            writer.add("q", item(value))
        calls = []

        def stop_after_two_timeouts() -> bool:
            calls.append(1)
            return len(calls) >= 2

        start = time.monotonic()
        assert writer.flush(0.2, stop_after_two_timeouts) is False  # the third item does not fit: blocked, stopped
        assert 0.3 < time.monotonic() - start < 5.0
        assert client.sizes()["q"] == 2
        assert [int(x[1]) for x in client.take("q", 2)] == [0, 1]  # oldest first, removed
        assert writer.flush(0.2, never) is True  # room again: the blocked item goes in
        assert [int(x[1]) for x in client.take("q", client.sizes()["q"])] == [2]
        writer.close()
    finally:
        server.stop()


def latest_table_holds_only_the_newest_item(backend: str) -> None:
    server = start_server(backend, [TableSpec("latest", SMALL)])
    try:
        client = connect(server.address, rpc_timeout_s=1.0)
        assert client.latest("latest") is None  # nothing published: no blocking read
        writer = client.writer()
        for value in (5, 6):
            writer.add("latest", item(value))
            assert writer.flush(1.0, never)
        assert client.sizes()["latest"] == 1
        for _ in range(3):  # read any number of times
            assert int(client.latest("latest")[1]) == 6
        writer.close()
    finally:
        server.stop()


def params_client_waits_for_a_newer_version_and_stops_on_request(backend: str) -> None:
    def published(version: int) -> PublishedParams:
        weights = {"w": np.array([1.0, 2.0], np.float32) * version}
        return PublishedParams(weights, weights, np.zeros(2, np.uint32), np.int32(version), np.int32(1))

    codec = TreeCodec.from_abstract(published(0))
    version_spec = (LeafSpec((), "int32"),)
    tables = [TableSpec(PARAMS_TABLE, codec.specs), TableSpec(PARAMS_VERSION_TABLE, version_spec)]
    server = start_server(backend, tables)
    try:
        params = ParamsClient(server.address, codec, rpc_timeout_s=0.5)
        stop = threading.Event()
        threading.Timer(0.5, stop.set).start()
        start = time.monotonic()
        with pytest.raises(NodeStoppedError):
            params.wait_for_newer(-1, 0.01, stop.is_set)  # nothing published
        assert time.monotonic() - start < 5.0
        writer = connect(server.address, 1.0).writer()
        writer.add(PARAMS_TABLE, codec.flatten(published(3)))
        writer.add(PARAMS_VERSION_TABLE, [np.asarray(3, np.int32)])
        assert writer.flush(1.0, never)
        params.wait_for_newer(-1, 0.01, never)
        assert params.version == 3
        np.testing.assert_array_equal(np.asarray(params.params.meta_params["w"]), [3.0, 6.0])
        params.update()  # non-blocking: nothing newer, the held parameters stay
        assert params.version == 3
        params.close()
        writer.close()
    finally:
        server.stop()


CONTRACT = (
    queue_is_fifo_and_blocks_writers_when_full_until_stopped,
    latest_table_holds_only_the_newest_item,
    params_client_waits_for_a_newer_version_and_stops_on_request,
)
