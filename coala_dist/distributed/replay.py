"""Reverb: the replay node's tables, a writer for actors and the learner's publisher, and a client.

This is the ONLY module that imports reverb (and with it TensorFlow); TensorFlow is told to leave GPUs/TPUs alone
(the learner's JAX owns the accelerators). Everything here speaks flat lists of numpy arrays and `(shape, dtype)`
specs (`codec.LeafSpec`), never JAX types.

Tables (Acme's IMPALA queue, DESIGN.md §5):

* one **episode queue** per (meta agent, learner process): FIFO sampler and remover, `max_times_sampled=1` and a
  `Queue` rate limiter of `queue_capacity_work_units` work units — an insert blocks while the table is full, so
  actors cannot run unboundedly ahead of the learner;
* **params** and **params_version**: the latest published `PublishedParams` and its version alone (one item each,
  read any number of times, replaced by the next publication). Actors poll the small version table and fetch the
  parameters only when it changes.

Every call here that can block takes a timeout; callers loop on it and check their stop event in between.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np
import reverb
import tensorflow as tf

from coala_dist.distributed.codec import LeafSpec

try:  # TF must not grab the accelerators JAX uses; harmless on CPU-only machines.
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
except (RuntimeError, ValueError):  # already initialised, or no such device type in this build
    pass

DeadlineExceededError = reverb.errors.DeadlineExceededError


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One Reverb table.

    Attributes:
      name: the table's name.
      signature: the flat item signature.
      queue_capacity: items a queue table holds (inserts block beyond); None for a latest-value table.
    """

    name: str
    signature: tuple[LeafSpec, ...]
    queue_capacity: int | None = None

    def build(self) -> reverb.Table:
        signature = [tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype)) for spec in self.signature]
        if self.queue_capacity is not None:
            return reverb.Table.queue(self.name, max_size=self.queue_capacity, signature=signature)
        return reverb.Table(
            name=self.name,
            sampler=reverb.selectors.Fifo(),
            remover=reverb.selectors.Fifo(),
            max_size=1,  # a new publication evicts the previous one
            rate_limiter=reverb.rate_limiters.MinSize(1),
            max_times_sampled=0,  # read by every actor, any number of times
            signature=signature,
        )


class ReplayServer:
    """A Reverb server holding `tables`, listening on `port` (0: any free port)."""

    def __init__(self, tables: Sequence[TableSpec], port: int = 0):
        self._server = reverb.Server(tables=[table.build() for table in tables], port=port or None)

    @property
    def port(self) -> int:
        return self._server.port

    def stop(self) -> None:
        self._server.stop()


class ItemWriter:
    """Writes single-step items (one flat list of arrays each) to tables; one per writing thread."""

    def __init__(self, client: reverb.Client):
        self._client = client
        self._writers: dict[str, reverb.TrajectoryWriter] = {}  # one per table: items of a table share a structure

    def add(self, table: str, item: Sequence[np.ndarray]) -> None:
        """Queues `item` for `table`; `flush` sends it."""
        if table not in self._writers:
            self._writers[table] = self._client.trajectory_writer(num_keep_alive_refs=1)
        writer = self._writers[table]
        writer.append(list(item))
        writer.create_item(table, 1.0, [column[-1] for column in writer.history])

    def flush(self, timeout_s: float, should_stop: Callable[[], bool]) -> bool:
        """Blocks until every queued item is in its table (retrying every `timeout_s`) or `should_stop()`.

        Returns:
          True if everything was written, False if stopped first.
        """
        for writer in self._writers.values():
            while True:
                try:
                    writer.flush(timeout_ms=max(1, int(timeout_s * 1000)))
                    break
                except DeadlineExceededError:  # a full queue (the rate limiter) or a slow server: retry
                    if should_stop():
                        return False
        return True

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class ReplayClient:
    """The learner's and actors' view of the replay node.

    `take` removes items from a queue table and must only be called by that table's single consumer with a count
    it has seen in `sizes()`, so it never blocks.
    """

    def __init__(self, address: str, rpc_timeout_s: float):
        self.address = address
        self.rpc_timeout_s = rpc_timeout_s
        self._client = reverb.Client(address)
        self._published: set[str] = set()

    def sizes(self) -> dict[str, int]:
        """{table name: items in it}; raises DeadlineExceededError after `rpc_timeout_s`."""
        info = self._client.server_info(timeout=max(1, int(np.ceil(self.rpc_timeout_s))))
        return {name: int(table.current_size) for name, table in info.items()}

    def take(self, table: str, count: int) -> list[list[np.ndarray]]:
        """Removes and returns `count` items (flat lists of arrays) from queue `table`, oldest first."""
        if count <= 0:
            return []
        return [list(sample.data) for sample in self._client.sample(table, count, emit_timesteps=False)]

    def latest(self, table: str) -> list[np.ndarray] | None:
        """The item of a latest-value table, or None while nothing was published.

        Sampling an empty table would block, so the first calls check its size; once it holds an item it is never
        empty again (a publication replaces the item), and later calls sample directly.
        """
        if table not in self._published:
            if self.sizes().get(table, 0) == 0:
                return None
            self._published.add(table)
        return list(next(iter(self._client.sample(table, 1, emit_timesteps=False))).data)

    def writer(self) -> ItemWriter:
        return ItemWriter(self._client)


def wait_for_server(address: str, timeout_s: float, should_stop: Callable[[], bool]) -> None:
    """Blocks until the server at `address` answers (retrying every second) or raises TimeoutError."""
    deadline = time.monotonic() + timeout_s
    client = reverb.Client(address)
    while True:
        try:
            client.server_info(timeout=1)
            return
        except (DeadlineExceededError, RuntimeError, ConnectionError):
            if should_stop() or time.monotonic() > deadline:
                raise TimeoutError(f"no Reverb server answered at {address} within {timeout_s:.0f} s") from None
            time.sleep(0.5)
