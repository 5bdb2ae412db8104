"""The processes of a Ray run: each node of the program graph (program.py) lives in its own Ray actor process
(`ReplayProcess`, `LearnerProcess`, `ActorProcess`, as `ps` shows them), started from its factory with the
environment the driver passes on.

Actors get `JAX_PLATFORMS=cpu` and Ray restarts (`max_restarts`, and `max_task_retries` so the restarted process
resumes `run()`); the learner may ask for accelerators. The replay node is a named Ray actor: the other nodes find
its current incarnation by that name (`RayReplayLocation`), also after the driver restarted it (supervision.py).
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from coala_dist import xla_flags
from coala_dist.distributed.program import NodeSpec

# Environment variables a node process inherits from this driver when set (compilation cache, logging).
PASSED_ENVIRONMENT = (
    "JAX_THREEFRY_PARTITIONABLE",  # random streams must agree across every process of a run
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "TF_CPP_MIN_LOG_LEVEL",
)
STARTUP_TIMEOUT_S = 600.0  # a node process that takes longer than this to start is an error


class _NodeProcess:
    """A node living in its own Ray actor process: builds it from its factory, runs it, stops it."""

    def __init__(self, factory: Callable[..., Any], **runtime: Any):
        # JAX reads its flags from the runtime environment the launcher gave this process; this covers a process
        # started without it (it only sets variables JAX has not read yet: no backend exists before the factory).
        xla_flags.configure()
        self._stop = threading.Event()
        self._node = factory(should_stop=self._stop.is_set, **runtime)

    def run(self, **kwargs: Any) -> Any:
        return self._node.run(**kwargs)

    def stop(self) -> None:
        self._stop.set()

    def pid(self) -> int:
        return os.getpid()


class ReplayProcess(_NodeProcess):
    """The replay node's process; other nodes reach it at this machine's IP address. A named Ray actor: nodes find
    the current one by its name (`RayReplayLocation`), also after the launcher restarted it."""

    def __init__(self, factory: Callable[..., Any]):
        import ray

        super().__init__(factory, host=ray.util.get_node_ip_address())
        self._incarnation = secrets.token_hex(8)

    def address(self) -> str:
        return self._node.address

    def location(self) -> tuple[str, str]:
        """(address, incarnation): a restarted replay node is a new incarnation, even at the same address."""
        return self._node.address, self._incarnation

    def stop(self) -> None:
        super().stop()
        self._node.stop()


class LearnerProcess(_NodeProcess):
    """A learner process."""

    def coordinator_address(self) -> str | None:
        """`ip:port` for the learner group's `jax.distributed` coordinator (asked of learner process 0); None where
        the node sets `$JAX_COORDINATOR_ADDRESS` (Cloud TPU hosts: JAX finds the group itself)."""
        import portpicker
        import ray

        if os.environ.get("JAX_COORDINATOR_ADDRESS"):
            return None
        return f"{ray.util.get_node_ip_address()}:{portpicker.pick_unused_port()}"

    def set_num_actors(self, count: int) -> None:
        """The actor count the learner publishes from its next version on (`coala scale`)."""
        self._node.set_num_actors(count)


class ActorProcess(_NodeProcess):
    """An actor process."""


def restart_line(actor: int, old_pid: int, used: int, max_restarts: int) -> str:
    """coala's line for an actor process that Ray restarted (Ray cannot tell how it died: no signal is reported)."""
    allowed = "unlimited restarts" if max_restarts < 0 else f"{used} of {max_restarts} restarts used"
    return f"actor {actor} exited (process {old_pid} was killed or crashed); restarted, {allowed}"


def ray_console_environment(launch: str, tty: bool) -> dict[str, str]:
    """Ray's settings for a driver whose console the user reads: a `local` run's private Ray instance uses token
    authentication, said explicitly (Ray's default, whose hint otherwise offers to turn it off); without a terminal
    Ray's prefixes of forwarded lines carry no colour codes. Variables the user set are kept."""
    wanted = {"RAY_AUTH_MODE": "token"} if launch == "local" else {}
    if not tty:
        wanted["RAY_COLOR_PREFIX"] = "0"
    return {name: value for name, value in wanted.items() if name not in os.environ}


def node_environment(spec: NodeSpec) -> dict[str, str]:
    xla_flags.configure()
    env = {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    env.update({name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ})
    if spec.cpu_only:
        env["JAX_PLATFORMS"] = "cpu"  # only the learner may open accelerators (one libtpu user per host)
    return env


def _options(spec: NodeSpec) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_cpus": 1,
        "max_concurrency": 2,  # `stop` must get through while `run` is executing
        "runtime_env": {"env_vars": node_environment(spec)},
        **spec.ray_options,
    }
    if spec.max_restarts:
        options["max_restarts"] = spec.max_restarts
        # The restarted process runs `run()` again. Unlimited task retries: while Ray has not yet noticed a dead node
        # (its health checks take seconds, more on a loaded machine) a call fails as "temporarily unavailable" and
        # counts as a retry; a fixed count could run out before the actor is restarted elsewhere. The restarts stay
        # bounded by `max_restarts` (a call then fails with ActorDiedError); exceptions raised by `run()` itself
        # are never retried.
        options["max_task_retries"] = -1
    return options


def start_node(process_class: type, spec: NodeSpec, *, ray_name: str | None = None, **runtime: Any) -> Any:
    """Starts `spec`'s node in a new Ray actor process of `process_class` (a named Ray actor if `ray_name`); returns
    its handle."""
    import ray

    options = _options(spec) | ({"name": ray_name} if ray_name else {})
    return ray.remote(process_class).options(**options).remote(spec.factory, **runtime)


class RayReplayLocation:
    """Where the replay node of a Ray run is: the live Ray actor named `name` (a restarted replay node gets the same
    name), asked for its `ReplayProcess.location`. Handed to every other node (`replay.ReplayLocation`)."""

    def __init__(self, name: str, timeout_s: float):
        self.name, self.timeout_s = name, timeout_s

    def lookup(self) -> tuple[str, str] | None:
        import ray

        try:
            address, incarnation = ray.get(ray.get_actor(self.name).location.remote(), timeout=self.timeout_s)
        except (ValueError, TimeoutError, ray.exceptions.RayError):  # none by that name yet, dead, or no answer
            return None
        return address, incarnation


def wait_for(ref: Any, signalled: threading.Event, what: str, timeout_s: float = STARTUP_TIMEOUT_S) -> Any:
    """`ray.get(ref)`, in short waits that notice a stop signal."""
    import ray

    from coala_dist.distributed.params import NodeStoppedError

    deadline = time.monotonic() + timeout_s
    while True:
        ready, _ = ray.wait([ref], timeout=0.2)
        if ready:
            return ray.get(ready[0])
        if signalled.is_set():
            raise NodeStoppedError
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not answer within {timeout_s:.0f} s")
