"""The replay node's transport: one narrow interface, three backends (docs/transport.md).

Everything that crosses between nodes goes through **tables** of items, each item a flat list of numpy arrays
(`codec.TreeCodec`); nothing here knows JAX types. Two kinds of table:

* an **episode queue** per (meta agent, learner process): FIFO, a capacity in items; a writer blocks while the
  table is full (backpressure: actors cannot run unboundedly ahead of the learner); `take` removes items, oldest
  first. Each queue has exactly one consumer, which takes at most what `sizes()` showed it, so `take` never waits
  (Reverb's would, for items not there yet);
* a **latest-value** table (`params`, `params_version`): holds one item, replaced by the next write, read any number
  of times. Parameters are published as "parameters first, version second" on top of these (params.py).

The interface (what every backend provides):

* a server, started by `start_server(backend, tables, ...)`: `.address` (its backend is named by the address's
  scheme) and `.stop()`;
* a client, `connect(address, rpc_timeout_s)`: `sizes()`, `take(table, count)`, `latest(table)`, `writer()`;
* a writer, one per writing thread: `add(table, item)` queues, `flush(timeout_s, should_stop)` blocks until every
  queued item is in its table (retrying every `timeout_s`) or `should_stop()`, `close()`.

Every call that can block takes a timeout and raises `ReplayTimeoutError` past it; callers loop and check their stop
event in between. A server that died is a timeout too (`ReplayUnavailableError` for `ray`, which knows at once;
Reverb's calls time out): no node crashes on it, and the launcher, which watches the replay node, stops the run.

Backends (`distributed.replay` / `coala train --replay=`):

| name | address | where the tables live | profile |
| --- | --- | --- | --- |
| `reverb` | `reverb://host:port` | a Reverb server (`replay_reverb.py`) | reverb |
| `ray` | `ray-queue://<actor name>` | a named Ray actor holding a `QueueStore` (`replay_queues.py`) | both |
| `queues` | `queues://<id>` | a `QueueStore` in this process (launch `inprocess` only) | both |

`auto` (the default) is `queues` for launch `inprocess` and `ray` for launch `local`/`ray`, on both profiles.
Security decides it (docs/transport.md, "Who can reach the replay"): `queues` opens no socket at all, and `ray`
travels only through Ray's own servers, which authenticate every peer with Ray's token (on by default in Ray 2.60;
never turned off here). Reverb 0.14 (its last release) binds its gRPC server to every interface and has no
authentication and no bind-address option, so it runs only when asked for (`--replay=reverb`), and the command
says so in one line. Why Ray's object store with a queue actor and not id-echo for the TF-free networked backend:
measured in `scripts/bench_transport.py` and written down in docs/transport.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from coala_dist.config import REPLAY_CHOICES

if TYPE_CHECKING:  # the driver resolves backends without importing JAX
    from coala_dist.distributed.codec import LeafSpec

SCHEMES = {"reverb": "reverb://", "ray": "ray-queue://", "queues": "queues://"}
# Which launch types each backend can serve: `queues` lives in one process; `ray` needs a Ray cluster.
BACKEND_LAUNCHES = {"reverb": ("inprocess", "local", "ray"), "ray": ("local", "ray"), "queues": ("inprocess",)}


class ReplayTimeoutError(Exception):
    """A replay call did not complete within its timeout (a full queue, a slow or absent server)."""


UNAVAILABLE_PAUSE_S = 0.5  # a call to a dead server fails after this pause, as a timeout would after waiting


class ReplayUnavailableError(ReplayTimeoutError):
    """The replay server is gone (its process died). A timeout to every caller: each waits, checks its stop event
    and retries, so a node whose replay died stops (and the learner saves) when the launcher asks it to."""


class ReplayBackendError(ValueError):
    """The requested backend cannot run here (not installed, or not for this launch type); one line says why."""


@dataclasses.dataclass(frozen=True)
class TableSpec:
    """One table.

    Attributes:
      name: the table's name.
      signature: the flat item signature.
      queue_capacity: items a queue table holds (writers block beyond); None for a latest-value table.
    """

    name: str
    signature: tuple[LeafSpec, ...]
    queue_capacity: int | None = None


class ItemWriter(Protocol):
    def add(self, table: str, item: Sequence[np.ndarray]) -> None: ...

    def flush(self, timeout_s: float, should_stop: Callable[[], bool]) -> bool: ...

    def close(self) -> None: ...


class ReplayClient(Protocol):
    address: str
    rpc_timeout_s: float

    def sizes(self) -> dict[str, int]: ...

    def take(
        self, table: str, count: int, give_up: Callable[[], bool] | None = None
    ) -> list[list[np.ndarray]]:
        """Up to `count` items of `table` (only what `sizes()` counted is asked for). A backend whose call can block
        with no timeout of its own (Reverb's sampler) polls `give_up` (a stop, or a new incarnation of the replay
        node) while it waits and then raises ReplayUnavailableError; the others time out after `rpc_timeout_s`."""
        ...

    def latest(self, table: str) -> list[np.ndarray] | None: ...

    def writer(self) -> ItemWriter: ...


class ReplayServer(Protocol):
    address: str

    def stop(self) -> None: ...


def reverb_installed() -> bool:
    """Whether this environment has Reverb (the reverb profile), without importing it (and TensorFlow)."""
    return importlib.util.find_spec("reverb") is not None


def resolve_backend(requested: str, launch: str) -> str:
    """The backend a run uses; raises ReplayBackendError (one line) if it cannot run here.

    Args:
      requested: `auto` or one of BACKENDS.
      launch: inprocess | local | ray.
    """
    if requested not in REPLAY_CHOICES:
        raise ReplayBackendError(f"replay={requested!r} is invalid: must be one of {', '.join(REPLAY_CHOICES)}")
    if requested == "auto":
        return "queues" if launch == "inprocess" else "ray"
    if requested == "reverb" and not reverb_installed():
        raise ReplayBackendError(
            "replay=reverb needs the reverb profile (Python 3.11): pip install -c constraints/reverb.txt -e "
            '".[reverb]" (README "Set up"); on this install use --replay=queues (inprocess) or --replay=ray'
        )
    if launch not in BACKEND_LAUNCHES[requested]:
        raise ReplayBackendError(
            f"replay={requested} cannot serve launch {launch}: it serves {', '.join(BACKEND_LAUNCHES[requested])}"
        )
    return requested


REVERB_EXPOSURE_WARNING = (
    "--replay=reverb: the Reverb server listens on every network interface and authenticates no one (Reverb 0.14 "
    "has neither a bind address nor authentication): anyone who reaches its port can write episodes or read the "
    "parameters; use it only on a trusted network (the default --replay=auto does not listen beyond Ray's "
    "authenticated servers)"
)


def backend_of(address: str) -> str:
    """The backend named by an address's scheme."""
    for name, scheme in SCHEMES.items():
        if address.startswith(scheme):
            return name
    raise ValueError(f"replay address {address!r} names no backend (expected one of {', '.join(SCHEMES.values())})")


def start_server(backend: str, tables: Sequence[TableSpec], *, port: int = 0, host: str = "localhost") -> ReplayServer:
    """Starts a replay server of `backend` holding `tables` (`port` and `host` only matter to Reverb)."""
    if backend == "reverb":
        from coala_dist.distributed.replay_reverb import ReverbServer

        return ReverbServer(tables, port=port, host=host)
    from coala_dist.distributed import replay_queues

    if backend == "ray":
        return replay_queues.RayQueueServer(tables)
    if backend == "queues":
        return replay_queues.LocalQueueServer(tables)
    raise ValueError(f"unknown replay backend {backend!r}")


def connect(address: str, rpc_timeout_s: float) -> ReplayClient:
    """A client of the server at `address` (any backend)."""
    backend = backend_of(address)
    if backend == "reverb":
        from coala_dist.distributed.replay_reverb import ReverbClient

        return ReverbClient(address, rpc_timeout_s)
    from coala_dist.distributed import replay_queues

    if backend == "ray":
        return replay_queues.RayQueueClient(address, rpc_timeout_s)
    return replay_queues.LocalQueueClient(address, rpc_timeout_s)


# ---------------------------------------------------------------------------------------------------------------------
# Where the replay node is: it may be restarted (launch local/ray) at a new address, with empty tables.
MOVE_CHECK_INTERVAL_S = 1.0  # a node asks where the replay node is at most this often


class ReplayLocation(Protocol):
    """Says where the replay node is now. The Ray launcher's (`ray_nodes.RayReplayLocation`) asks Ray for the current
    replay process, so a node that starts after a replay restart (a restarted actor) finds the new one."""

    def lookup(self) -> tuple[str, str] | None:
        """(address, incarnation) of the replay node answering now, or None while none answers (being restarted).
        A restarted node has a new incarnation even where its address is the same (a fixed Reverb port)."""
        ...


@dataclasses.dataclass(frozen=True)
class FixedReplayLocation:
    """A replay node that never moves: in-process launches, tests."""

    address: str

    def lookup(self) -> tuple[str, str]:
        return self.address, "fixed"


class ReplayLink:
    """A node's client of the replay node, which follows the node to its new incarnation when the launcher restarts
    it. `moved()` is cheap enough to poll (it asks the location at most every `check_interval_s`); a node that sees
    it True stops what it was doing, calls `reconnect()` and starts its current work again (what the old node held
    is lost: sync episodes are rolled out again, parameters published again).

    Args:
      location: where the replay node is.
      rpc_timeout_s: the clients' call timeout.
      should_stop: ends the wait for a first answer (NodeStoppedError, params.py).
      check_interval_s: how often `moved()` asks the location.

    Attributes:
      client: a client of the current incarnation.
      address: its address.
    """

    def __init__(
        self,
        location: ReplayLocation,
        rpc_timeout_s: float,
        should_stop: Callable[[], bool] = lambda: False,
        check_interval_s: float = MOVE_CHECK_INTERVAL_S,
    ):
        self.location, self.rpc_timeout_s, self.check_interval_s = location, rpc_timeout_s, check_interval_s
        self._incarnation: str | None = None
        self._successor: tuple[str, str] | None = None
        self._next_check = 0.0
        self.reconnect(should_stop)

    def moved(self) -> bool:
        """Whether a new incarnation of the replay node answers (the one this link is connected to is gone)."""
        now = time.monotonic()
        if self._successor is None and now >= self._next_check:
            self._next_check = now + self.check_interval_s
            found = self.location.lookup()
            if found is not None and found[1] != self._incarnation:
                self._successor = found
        return self._successor is not None

    def reconnect(self, should_stop: Callable[[], bool]) -> ReplayClient:
        """Connects to the replay node answering now (waiting for one); returns the new client."""
        from coala_dist.distributed.params import NodeStoppedError

        while True:
            found, self._successor = self._successor or self.location.lookup(), None
            if found is not None and found[1] != self._incarnation:
                try:
                    self.client = connect(found[0], self.rpc_timeout_s)
                except ValueError:  # its store is not reachable (gone again): ask again
                    pass
                else:
                    self.address, self._incarnation = found
                    return self.client
            if should_stop():
                raise NodeStoppedError
            time.sleep(min(self.check_interval_s, UNAVAILABLE_PAUSE_S))


def flush_with_retries(
    put: Callable[[str, list[list[np.ndarray]], float], int],
    pending: dict[str, list[list[np.ndarray]]],
    timeout_s: float,
    should_stop: Callable[[], bool],
) -> bool:
    """The writer loop of the queue backends: put each table's pending items, in order, until all are in.

    Args:
      put: `put(table, items, timeout_s)` inserts a prefix of `items` (blocking up to `timeout_s` for room) and
        returns how many it inserted; raises ReplayTimeoutError if the server did not answer.
      pending: {table: items not yet written}; emptied as items go in.
      timeout_s: how long one attempt may block before `should_stop` is checked again.
      should_stop: ends the loop early.

    Returns:
      True if everything was written, False if stopped first.
    """
    for table, items in pending.items():
        while items:
            try:
                inserted = put(table, items, timeout_s)
            except ReplayTimeoutError:
                inserted = 0
            del items[:inserted]
            if items and should_stop():
                return False
    pending.clear()
    return True
