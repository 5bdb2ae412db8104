"""The TensorFlow-free backends of the replay interface (replay.py): one `QueueStore`, reached two ways.

`QueueStore` holds the tables in Python: a bounded FIFO deque per episode queue, one slot per latest-value table,
one lock and one condition. It is the single definition of the tables' semantics for both TF-free backends:

* `queues` (launch `inprocess`): the store lives in this process; clients call it directly (thread-safe). Address
  `queues://<id>`, valid only inside the process that started the server.
* `ray` (launch `local`/`ray`): the store is a named, threaded Ray actor started by the replay node; clients find
  it by name and call its methods; items travel through Ray's object store. Address `ray-queue://<actor name>`.

Backpressure: `put` inserts as many items as fit, waiting up to its timeout for room, and returns how many it
inserted; writers retry the rest (`replay.flush_with_retries`), so an actor blocks while its queue is full and
memory never grows past the tables' capacities.
"""

from __future__ import annotations

import collections
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from coala_dist.distributed.replay import (
    SCHEMES,
    UNAVAILABLE_PAUSE_S,
    ReplayTimeoutError,
    ReplayUnavailableError,
    TableSpec,
    flush_with_retries,
)

Item = list[np.ndarray]


class QueueStore:
    """Thread-safe tables: bounded FIFO queues and latest-value slots.

    Args:
      tables: the tables' specs (their signatures are checked on every insert: a wrong item is refused at once,
        not discovered by the learner).
    """

    def __init__(self, tables: Sequence[TableSpec]):
        self._specs = {spec.name: spec for spec in tables}
        self._queues = {spec.name: collections.deque() for spec in tables if spec.queue_capacity is not None}
        self._latest: dict[str, Item | None] = {spec.name: None for spec in tables if spec.queue_capacity is None}
        self._changed = threading.Condition()
        self._stopped = False

    def _check(self, table: str, item: Sequence[np.ndarray], copy: bool) -> Item:
        spec = self._specs.get(table)
        if spec is None:
            raise KeyError(f"no table {table!r}")
        # Own the memory unless the caller already does: a writer's arrays may be views of device buffers.
        arrays = [np.array(leaf, copy=True) if copy else np.asarray(leaf) for leaf in item]
        signature = tuple((array.shape, array.dtype.name) for array in arrays)
        if signature != tuple((tuple(leaf.shape), leaf.dtype) for leaf in spec.signature):
            raise ValueError(f"item {signature} does not match table {table!r}: {spec.signature}")
        return arrays

    def put(self, table: str, items: Sequence[Sequence[np.ndarray]], timeout_s: float) -> int:
        """Inserts a prefix of `items` into `table`, waiting up to `timeout_s` for room; returns how many went in.

        A latest-value table takes every item at once (each replaces the one before).
        """
        return self._insert(table, [self._check(table, item, copy=True) for item in items], timeout_s)

    def put_stacked(self, table: str, leaves: Sequence[np.ndarray], timeout_s: float) -> int:
        """`put` of the items `[leaf[i] for leaf in leaves]`: one array per leaf with a leading item axis, the
        cheap form for a transport (a work unit travels as its leaves, not as one message per episode)."""
        owned = [np.array(leaf, copy=True) for leaf in leaves]  # one copy per leaf; the items are views of it
        count = owned[0].shape[0] if owned else 0
        items = [self._check(table, [x[i] for x in owned], copy=False) for i in range(count)]
        return self._insert(table, items, timeout_s)

    def take_stacked(self, table: str, count: int) -> list[np.ndarray]:
        """`take`, returned as one array per leaf with a leading item axis ([] when nothing was taken)."""
        items = self.take(table, count)
        return [np.stack(column) for column in zip(*items, strict=True)] if items else []

    def _insert(self, table: str, checked: list[Item], timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            if table in self._latest:
                if checked and not self._stopped:
                    self._latest[table] = checked[-1]
                    self._changed.notify_all()
                return 0 if self._stopped else len(checked)
            queue, capacity = self._queues[table], self._specs[table].queue_capacity
            inserted = 0
            while inserted < len(checked) and not self._stopped:
                if len(queue) < capacity:
                    queue.append(checked[inserted])
                    inserted += 1
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.notify_all()
                self._changed.wait(remaining)
            if inserted:
                self._changed.notify_all()
            return inserted

    def take(self, table: str, count: int) -> list[Item]:
        """Removes and returns up to `count` items of queue `table`, oldest first; never blocks."""
        with self._changed:
            queue = self._queues[table]
            items = [queue.popleft() for _ in range(min(count, len(queue)))]
            if items:
                self._changed.notify_all()  # wakes writers waiting for room
            return items

    def latest(self, table: str) -> Item | None:
        """The item of latest-value `table`, or None while nothing was written."""
        with self._changed:
            return self._latest[table]

    def sizes(self) -> dict[str, int]:
        """{table: items in it}."""
        with self._changed:
            sizes = {name: len(queue) for name, queue in self._queues.items()}
            sizes.update({name: int(item is not None) for name, item in self._latest.items()})
            return sizes

    def stop(self) -> None:
        """Refuses further inserts and wakes every waiting writer."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()


class _QueueWriter:
    """A writer over a `put(table, items, timeout_s) -> inserted` function."""

    def __init__(self, put: Callable[[str, list[Item], float], int]):
        self._put = put
        self._pending: dict[str, list[Item]] = {}

    def add(self, table: str, item: Sequence[np.ndarray]) -> None:
        self._pending.setdefault(table, []).append(list(item))

    def flush(self, timeout_s: float, should_stop: Callable[[], bool]) -> bool:
        return flush_with_retries(self._put, self._pending, timeout_s, should_stop)

    def close(self) -> None:
        self._pending.clear()


# ---------------------------------------------------------------------------------------------------------------------
# queues://: the store in this process.
_LOCAL_STORES: dict[str, QueueStore] = {}
_LOCAL_SCHEME = SCHEMES["queues"]


class LocalQueueServer:
    """A `QueueStore` in this process, reachable by `LocalQueueClient`s of this process."""

    def __init__(self, tables: Sequence[TableSpec]):
        self.store = QueueStore(tables)
        name = secrets.token_hex(6)
        _LOCAL_STORES[name] = self.store
        self.address = f"{_LOCAL_SCHEME}{name}"

    def stop(self) -> None:
        self.store.stop()
        _LOCAL_STORES.pop(self.address.removeprefix(_LOCAL_SCHEME), None)


class LocalQueueClient:
    """Direct calls into this process's store at `address`."""

    def __init__(self, address: str, rpc_timeout_s: float):
        store = _LOCAL_STORES.get(address.removeprefix(_LOCAL_SCHEME))
        if store is None:
            raise ValueError(f"no in-process replay store at {address} (queues:// works inside one process only)")
        self.address, self.rpc_timeout_s, self._store = address, rpc_timeout_s, store

    def sizes(self) -> dict[str, int]:
        return self._store.sizes()

    def take(self, table: str, count: int, give_up: Callable[[], bool] | None = None) -> list[Item]:
        return self._store.take(table, count) if count > 0 else []

    def latest(self, table: str) -> Item | None:
        return self._store.latest(table)

    def writer(self) -> _QueueWriter:
        return _QueueWriter(self._store.put)


# ---------------------------------------------------------------------------------------------------------------------
# ray-queue://: the store as a named Ray actor. Items cross as stacked leaves (one array per leaf and call): Ray
# serialises a few large arrays far faster than thousands of small ones (scripts/bench_transport.py).
def _stack(items: Sequence[Item]) -> list[np.ndarray]:
    return [np.stack(column) for column in zip(*items, strict=True)]


def _unstack(leaves: Sequence[np.ndarray]) -> list[Item]:
    count = leaves[0].shape[0] if len(leaves) else 0
    return [[leaf[i] for leaf in leaves] for i in range(count)]


_RAY_SCHEME = SCHEMES["ray"]
RAY_STORE_CONCURRENCY = 64  # concurrent calls the store actor serves (blocked writers each hold one)


class RayQueueServer:
    """Starts the store as a named, threaded Ray actor (owned by this process: it dies with it).

    Must run in a process connected to Ray (the replay node's process under launch `local`/`ray`).
    """

    def __init__(self, tables: Sequence[TableSpec]):
        import ray

        if not ray.is_initialized():
            raise RuntimeError("replay=ray needs a Ray cluster: use it with launch local or ray")
        name = f"coala-replay-{secrets.token_hex(6)}"
        self._actor = (
            ray.remote(QueueStore)
            .options(name=name, num_cpus=0, max_concurrency=RAY_STORE_CONCURRENCY)
            .remote(list(tables))
        )
        ray.get(self._actor.sizes.remote())  # started and answering
        self.address = f"{_RAY_SCHEME}{name}"

    def stop(self) -> None:
        import ray

        with contextlib.suppress(Exception):  # already gone: nothing to stop
            ray.get(self._actor.stop.remote(), timeout=5)
        ray.kill(self._actor, no_restart=True)


class RayQueueClient:
    """Calls the store actor named in `address`; a call that takes longer than `rpc_timeout_s` raises
    ReplayTimeoutError.

    Exactly once: a timed-out `take` or `put` is not abandoned (the store may still execute it). Its result is
    collected by the next call of the same kind on that table, so no taken item is lost and no item is put twice.
    """

    def __init__(self, address: str, rpc_timeout_s: float):
        import ray

        self._ray = ray
        self.address, self.rpc_timeout_s = address, rpc_timeout_s
        try:
            self._actor = ray.get_actor(address.removeprefix(_RAY_SCHEME))
        except ValueError:
            raise ValueError(f"no replay store actor at {address} in this Ray cluster") from None
        self._unfinished: dict[tuple[str, str], object] = {}  # (kind, table) -> ref of a timed-out call

    def _get(self, ref, timeout_s: float, unfinished_key: tuple[str, str] | None = None):
        ready, _ = self._ray.wait([ref], timeout=timeout_s)
        if not ready:
            if unfinished_key is not None:
                self._unfinished[unfinished_key] = ref
            raise ReplayTimeoutError(f"the replay store at {self.address} did not answer within {timeout_s:g} s")
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayActorError:
            # The store died with its replay node: what it held is gone. Callers retry as after a timeout, so pause
            # as one would rather than spin.
            time.sleep(min(timeout_s, UNAVAILABLE_PAUSE_S))
            raise ReplayUnavailableError(f"the replay store at {self.address} is gone (its process died)") from None

    def sizes(self) -> dict[str, int]:
        return self._get(self._actor.sizes.remote(), self.rpc_timeout_s)

    def take(self, table: str, count: int, give_up: Callable[[], bool] | None = None) -> list[Item]:
        ref = self._unfinished.pop(("take", table), None)
        if ref is None:
            if count <= 0:
                return []
            ref = self._actor.take_stacked.remote(table, count)
        return _unstack(self._get(ref, self.rpc_timeout_s, ("take", table)))

    def latest(self, table: str) -> Item | None:
        return self._get(self._actor.latest.remote(table), self.rpc_timeout_s)

    def _put(self, table: str, items: list[Item], timeout_s: float) -> int:
        # The writer retries with the same remaining items, so an unfinished put covers a prefix of `items`.
        ref = self._unfinished.pop(("put", table), None)
        if ref is None:
            ref = self._actor.put_stacked.remote(table, _stack(items), timeout_s)
        # The store blocks up to timeout_s for room; the call itself may take rpc_timeout_s more.
        return self._get(ref, timeout_s + self.rpc_timeout_s, ("put", table))

    def writer(self) -> _QueueWriter:
        return _QueueWriter(self._put)
