"""The Reverb backend of the replay interface (replay.py): the reverb profile's transport.

This is the ONLY module that imports reverb (and with it TensorFlow); TensorFlow is told to leave GPUs/TPUs alone
(the learner's JAX owns the accelerators) before anything else can touch them.

Tables (Acme's IMPALA queue): an episode queue is `reverb.Table.queue` (FIFO sampler and remover,
`max_times_sampled=1`, a `Queue` rate limiter of its capacity: an insert blocks while the table is full); a
latest-value table is a FIFO table of `max_size=1` whose items can be sampled any number of times.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's start-up chatter (CUDA/TensorRT probes) on CPU machines

import numpy as np  # noqa: E402
import reverb  # noqa: E402
import tensorflow as tf  # noqa: E402

from coala_dist.distributed.replay import (  # noqa: E402
    SCHEMES,
    UNAVAILABLE_PAUSE_S,
    ReplayTimeoutError,
    ReplayUnavailableError,
    TableSpec,
)

try:  # TF must not grab the accelerators JAX uses; harmless on CPU-only machines.
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
except (RuntimeError, ValueError):  # already initialised, or no such device type in this build
    pass

SCHEME = SCHEMES["reverb"]


def _build_table(spec: TableSpec) -> reverb.Table:
    signature = [tf.TensorSpec(leaf.shape, tf.as_dtype(leaf.dtype)) for leaf in spec.signature]
    if spec.queue_capacity is not None:
        return reverb.Table.queue(spec.name, max_size=spec.queue_capacity, signature=signature)
    return reverb.Table(
        name=spec.name,
        sampler=reverb.selectors.Fifo(),
        remover=reverb.selectors.Fifo(),
        max_size=1,  # a new publication evicts the previous one
        rate_limiter=reverb.rate_limiters.MinSize(1),
        max_times_sampled=0,  # read by every actor, any number of times
        signature=signature,
    )


class ReverbServer:
    """A Reverb server holding `tables`, listening on `port` (0: any free port); reached at `reverb://host:port`."""

    def __init__(self, tables: Sequence[TableSpec], port: int = 0, host: str = "localhost"):
        self._server = reverb.Server(tables=[_build_table(table) for table in tables], port=port or None)
        self.address = f"{SCHEME}{host}:{self._server.port}"

    def stop(self) -> None:
        self._server.stop()


class ReverbWriter:
    """Writes single-step items (one flat list of arrays each) to tables; one per writing thread."""

    def __init__(self, client: reverb.Client):
        self._client = client
        self._writers: dict[str, reverb.TrajectoryWriter] = {}  # one per table: items of a table share a structure

    def add(self, table: str, item: Sequence[np.ndarray]) -> None:
        if table not in self._writers:
            self._writers[table] = self._client.trajectory_writer(num_keep_alive_refs=1)
        writer = self._writers[table]
        writer.append(list(item))
        writer.create_item(table, 1.0, [column[-1] for column in writer.history])

    def flush(self, timeout_s: float, should_stop: Callable[[], bool]) -> bool:
        for writer in self._writers.values():
            while True:
                try:
                    writer.flush(timeout_ms=max(1, int(timeout_s * 1000)))
                    break
                except reverb.errors.DeadlineExceededError:  # a full queue (the rate limiter) or a slow server
                    if should_stop():
                        return False
                except RuntimeError:  # the server is gone (gRPC: connection reset, refused): wait to be stopped
                    time.sleep(UNAVAILABLE_PAUSE_S)
                    if should_stop():
                        return False
        return True

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class ReverbClient:
    """The learner's and actors' view of a Reverb replay server."""

    def __init__(self, address: str, rpc_timeout_s: float):
        self.address = address
        self.rpc_timeout_s = rpc_timeout_s
        self._client = reverb.Client(address.removeprefix(SCHEME))
        self._published: set[str] = set()

    def sizes(self) -> dict[str, int]:
        try:
            info = self._client.server_info(timeout=max(1, int(np.ceil(self.rpc_timeout_s))))
        except reverb.errors.DeadlineExceededError as error:
            raise ReplayTimeoutError(str(error)) from None
        except RuntimeError as error:  # gRPC could not reach the server (connection reset, refused): it is gone
            time.sleep(UNAVAILABLE_PAUSE_S)  # callers retry as after a timeout: pause as one would
            raise ReplayUnavailableError(f"the Reverb server at {self.address} is gone: {error}") from None
        return {name: int(table.current_size) for name, table in info.items()}

    def take(
        self, table: str, count: int, give_up: Callable[[], bool] | None = None
    ) -> list[list[np.ndarray]]:
        """Reverb 0.14's Python sampler takes no timeout (only its TensorFlow datasets do), and a sample from a queue
        removes the item, so a sample abandoned while its server lives would lose it. Each episode queue has one
        consumer, the learner process that owns it, which takes only as many items as `sizes()` counted: the call
        does not wait for writers. If the server dies meanwhile, the sampler retries its dead address forever; so it
        runs in a daemon thread, and the caller's `give_up()` (a stop, or the launcher's new replay node: the items
        died with the old one) ends the wait with ReplayUnavailableError, leaving that thread blocked on the dead
        address, where it can take nothing (tests/test_ray_replay_node.py, the killed-replay test on reverb)."""
        if count <= 0:
            return []
        items: list[list[np.ndarray]] = []
        failure: list[BaseException] = []
        done = threading.Event()

        def sample() -> None:
            try:
                items.extend(list(s.data) for s in self._client.sample(table, count, emit_timesteps=False))
            except BaseException as error:  # handed to the caller
                failure.append(error)
            finally:
                done.set()

        threading.Thread(target=sample, name=f"reverb-take-{table}", daemon=True).start()
        while not done.wait(self.rpc_timeout_s):
            if give_up is not None and give_up():
                raise ReplayUnavailableError(
                    f"gave up taking {count} items of {table} from the Reverb server at {self.address}"
                )
        if failure:
            raise failure[0]
        return items

    def latest(self, table: str) -> list[np.ndarray] | None:
        """Sampling an empty table would block, so the first calls check its size; once it holds an item it is
        never empty again (a publication replaces the item), and later calls sample directly."""
        if table not in self._published:
            if self.sizes().get(table, 0) == 0:
                return None
            self._published.add(table)
        try:
            return list(next(iter(self._client.sample(table, 1, emit_timesteps=False))).data)
        except reverb.errors.DeadlineExceededError as error:
            raise ReplayTimeoutError(str(error)) from None

    def writer(self) -> ReverbWriter:
        return ReverbWriter(self._client)
