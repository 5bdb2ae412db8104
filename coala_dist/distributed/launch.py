"""Runs a `Program` (program.py): as threads of this process, or as Ray processes on this machine or a cluster.

* `run_inprocess`: the replay node embeds its server (Reverb or in-process queues) in this process; actors are
  threads sharing the learner's compiled rollout; the learner runs in the calling thread. SIGTERM/Ctrl-C (main
  thread) stop the learner after its current iteration (its checkpoint callback saves), then the actors, then the
  server; then `StoppedBySignal` is raised (exit status 130 / 143).
* `run_on_ray`: each node is a Ray actor process (`ReplayProcess`, `LearnerProcess`, `ActorProcess`, as `ps`
  shows them). Actors get `JAX_PLATFORMS=cpu` and Ray restarts (`max_restarts`, and `max_task_retries` so the
  restarted process resumes `run()`); the learner may ask for accelerators. The driver restarts a dead replay node
  itself, under the same Ray name (`distributed.replay_max_restarts`): the other nodes find the new incarnation by
  that name (`RayReplayLocation`), reconnect and redo their current work, so a sync run ends as it would have
  without the fault. This driver process only orchestrates:
  it never initialises a JAX backend (on a TPU host only the learner may open the chips). On SIGTERM/Ctrl-C, or
  when the learner finishes, it asks every node to stop, gives them `stop_grace_s`, kills what is left and, for
  `local`, shuts its Ray instance down, leaving no processes behind; after a signal it then raises
  `StoppedBySignal` (exit status 130 / 143). A `local` driver that is killed leaves nothing behind either: its
  reaper process (reaper.py) kills what Ray's fate sharing leaves running.

Both raise `SkippedUpdatesError` (one line, exit status 1) once every node has stopped when the learner stopped for
too many skipped updates (`LearnerResult.failure`).

Every wait here has a timeout and re-checks the stop signal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from coala_dist import xla_flags
from coala_dist.console import RAY_WORKER_DIED, DroppingLines, counted
from coala_dist.distributed import netns
from coala_dist.distributed.control import DriverControl
from coala_dist.distributed.program import NodeSpec, Program
from coala_dist.distributed.reaper import start_reaper, stop_reaper
from coala_dist.distributed.replay import FixedReplayLocation

# Environment variables a node process inherits from this driver when set (compilation cache, logging).
PASSED_ENVIRONMENT = (
    "JAX_THREEFRY_PARTITIONABLE",  # random streams must agree across every process of a run
    "JAX_COMPILATION_CACHE_DIR",
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
    "TF_CPP_MIN_LOG_LEVEL",
)
# With replay=ray, work units travel through the object store on their way to the store actor (which copies them
# out, so the object store only holds items in flight); with Reverb nothing large goes through it.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2
LOCAL_SCALE_ROOM = 8  # a `local` run's Ray instance has CPU slots for this many actors beyond those it starts with
STARTUP_TIMEOUT_S = 600.0  # a node process that takes longer than this to start is an error
PID_POLL_S = 2.0  # how often the driver asks the actors for their process ids, to notice Ray's restarts


@dataclasses.dataclass
class RunResult:
    """What a run returns.

    Attributes:
      state: the learner's final TrainState on the host, or None if it never got one.
      history: per-iteration metrics of this run.
      actor_stats: per actor, what it did (`ActorStats` as dicts), for actors that reported.
      consumed_lags: policy lag of every episode the (primary) learner consumed.
      dropped_stale: episodes dropped as too old.
      dropped_duplicates: sync episodes received twice (e.g. redone by a restarted actor).
    """

    state: Any
    history: list[dict[str, float]]
    actor_stats: list[dict[str, float]]
    consumed_lags: list[int]
    dropped_stale: int
    dropped_duplicates: int


def _raise_if_stopped(learner_result: Any, signum: int | None, node_failure: str | None = None) -> None:
    """After every node stopped: a learner failure, else a failed node, else a stop by signal, ends the run with its
    exit status."""
    from coala_dist.train import NodeFailedError, SkippedUpdatesError, StoppedBySignal

    if learner_result is not None and getattr(learner_result, "failure", None):
        raise SkippedUpdatesError(learner_result.failure)
    if node_failure is not None:
        if learner_result is not None and learner_result.state is not None:
            saved = f"the learner stopped after iteration {int(learner_result.state.step)} and saved it"
        else:
            saved = "the newest checkpoint in the workdir holds what the learner last saved"
        raise NodeFailedError(f"{node_failure}: {saved}; run the same command to resume")
    if signum is not None:
        raise StoppedBySignal(signum)


def _result(learner_result: Any, actor_stats: list[dict[str, float]]) -> RunResult:
    return RunResult(
        state=learner_result.state,
        history=learner_result.history,
        actor_stats=actor_stats,
        consumed_lags=learner_result.consumed_lags,
        dropped_stale=learner_result.dropped_stale,
        dropped_duplicates=learner_result.dropped_duplicates,
    )


# ---------------------------------------------------------------------------------------------------------------------
# In-process: threads and an embedded replay server.
def run_inprocess(program: Program, *, components: Any = None, log: Callable[[str], None] = print) -> RunResult:
    """Runs `program` as threads of this process.

    Args:
      program: from `make_program(..., launch="inprocess")`.
      components: prebuilt components shared by every node (tests pass theirs so nothing recompiles).
      log: where the learner's console lines go.

    Raises:
      RuntimeError: an actor thread failed (the learner is stopped first).
      SkippedUpdatesError: the learner stopped after too many skipped updates (its last good state was saved).
      StoppedBySignal: SIGINT/SIGTERM stopped the run (after the learner saved its checkpoint).
    """
    from coala_dist.builder import build
    from coala_dist.train import stop_on_signals

    config = program.config
    components = components or build(config)
    stop = threading.Event()
    failures: list[tuple[str, BaseException]] = []
    actor_stats: dict[str, dict[str, float]] = {}
    # Built here, before the actors: its eval_shape of the rollout primes the trace cache they share.
    replay = program.replay.factory(components=components)
    location = FixedReplayLocation(replay.address)

    def run_actor(spec: NodeSpec) -> None:
        try:
            actor = spec.factory(replay=location, should_stop=stop.is_set, components=components)
            actor_stats[spec.name] = actor.run()
        except BaseException as error:  # reported by the main thread; stops everything
            failures.append((spec.name, error))
            stop.set()

    threads = [threading.Thread(target=run_actor, args=(spec,), name=spec.name, daemon=True) for spec in program.actors]
    signum = None
    try:
        for thread in threads:
            thread.start()
        with stop_on_signals() as signalled:
            learner = program.learners[0].factory(
                replay=location,
                should_stop=lambda: stop.is_set() or signalled.is_set(),
                components=components,
                log=log,
            )
            learner_result = learner.run()
        signum = signalled.signum
    finally:
        stop.set()
        deadline = time.monotonic() + config.distributed.stop_grace_s
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        replay.stop()
    if failures:
        name, error = failures[0]
        raise RuntimeError(f"{name} failed: {error!r}") from error
    _raise_if_stopped(learner_result, signum)
    return _result(learner_result, [actor_stats[s.name] for s in program.actors if s.name in actor_stats])


# ---------------------------------------------------------------------------------------------------------------------
# Ray: one process per node.
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


def _node_environment(spec: NodeSpec) -> dict[str, str]:
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
        "runtime_env": {"env_vars": _node_environment(spec)},
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


def _start(process_class: type, spec: NodeSpec, *, ray_name: str | None = None, **runtime: Any) -> Any:
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


class _ReplayNode:
    """The replay node as the driver sees it: one Ray actor process under a fixed name, restarted by the driver
    under the same name when it dies (`distributed.replay_max_restarts`), so that `RayReplayLocation` finds it.

    The driver, not Ray's `max_restarts`, restarts it: a Ray restart would re-run a task the driver waits on, while
    the driver must know when a new incarnation answers and say so."""

    def __init__(self, spec: NodeSpec, max_restarts: int):
        self.spec, self.max_restarts, self.restarts_left = spec, max_restarts, max_restarts
        self.name = f"coala-replay-node-{secrets.token_hex(6)}"
        self.handle: Any = None
        self.ref: Any = None  # of `run()`: returns when stopped, fails when its process dies

    def start(self, signalled: threading.Event) -> str:
        """Starts a process under the node's name; returns its address once it answers."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                self.handle = _start(ReplayProcess, self.spec, ray_name=self.name)
                break
            except ValueError:  # the name is still the dead incarnation's for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.ref = self.handle.run.remote()
        return _wait_for(self.handle.address.remote(), signalled, "the replay node")

    def location(self, timeout_s: float) -> RayReplayLocation:
        return RayReplayLocation(self.name, timeout_s)

    def check(self, signalled: threading.Event, log: Callable[[str], None]) -> str | None:
        """Restarts the node if its process died and restarts are left; returns one line if it is gone for good."""
        import ray

        finished, _ = ray.wait([self.ref], timeout=0)
        if not finished:
            return None
        try:
            ray.get(self.ref)
        except Exception:
            if self.restarts_left == 0:
                return (
                    f"the replay node's process died and its restarts are used up (distributed.replay_max_restarts="
                    f"{self.max_restarts}; what it held is lost; sync episodes are rolled out again on resume)"
                )
            self._restart(signalled, log)
            return None
        return "the replay node stopped while the learner was still training"

    def _restart(self, signalled: threading.Event, log: Callable[[str], None]) -> None:
        import ray

        from coala_dist.distributed.params import NodeStoppedError

        ray.kill(self.handle, no_restart=True)  # frees its name
        self.handle = self.ref = None
        if self.restarts_left > 0:
            self.restarts_left -= 1
        started = time.monotonic()
        try:
            address = self.start(signalled)
        except ray.exceptions.RayActorError:  # died again while starting: the next check restarts it again
            return
        except NodeStoppedError:  # a signal: supervision stops the run next
            return
        log(
            f"the replay node's process died: restarted it at {address} in {time.monotonic() - started:.1f} s "
            f"({self.restarts_left if self.restarts_left >= 0 else 'unlimited'} restarts left); what it held is "
            "lost: sync episodes are rolled out again"
        )


def _wait_for(ref: Any, signalled: threading.Event, what: str, timeout_s: float = STARTUP_TIMEOUT_S) -> Any:
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


class _Actors:
    """The actor processes of a Ray run, by actor id; grown and shrunk while it runs (`coala scale`, control.py).

    Growing starts the new processes and waits (without blocking supervision) until each has built its node; only
    then is the learner told the new count, which it publishes with its next version. Shrinking tells the learner
    at once: the actors left out finish the version they are on and retire by themselves at the next one (actor.py).
    Either way each version's work units are split among exactly the actors its publication names, so sync-mode
    results do not change.
    """

    def __init__(self, program: Program, location: RayReplayLocation):
        self.program, self.location = program, location
        self.handles: dict[int, Any] = {}
        self.refs: dict[Any, int] = {}  # `run()` of each working actor -> its id
        self.count = 0  # the count the learner publishes
        self.starting: dict[int, Any] = {}  # id -> ref of its `pid()`: answers once its node is built
        self.retiring: set[int] = set()
        self.retired_stats: list[dict[str, float]] = []
        self.pids: dict[int, int] = {}
        self.restarts: dict[int, int] = {}
        self._pid_refs: dict[int, Any] = {}
        self._last_pid_poll = -math.inf

    def start(self, ids: range) -> None:
        for i in ids:
            self.handles[i] = _start(ActorProcess, self.program.actor_spec(i), replay=self.location)

    def run(self, ids: Any) -> None:
        for i in ids:
            self.refs[self.handles[i].run.remote()] = i

    def request(self, count: int, learners: list[Any]) -> bool:
        """Begins to change the actor count to `count`; False while an earlier change is still under way."""
        if self.starting or self.retiring:
            return False
        if count > self.count:
            self.start(range(self.count, count))
            self.starting = {i: self.handles[i].pid.remote() for i in range(self.count, count)}
        else:
            self.retiring = set(range(count, self.count))
            self._publish(count, learners)
        return True

    def advance(self, learners: list[Any]) -> bool:
        """Finishes a growth whose new actors are all built (they run, the learner is told); True if it did."""
        import ray

        if not self.starting:
            return False
        ready, _ = ray.wait(list(self.starting.values()), num_returns=len(self.starting), timeout=0)
        if len(ready) < len(self.starting):
            return False
        ids, self.starting = sorted(self.starting), {}
        self.run(ids)
        self._publish(ids[-1] + 1, learners)
        return True

    def report_restarts(self, log: Callable[[str], None]) -> None:
        """Says in one line when Ray restarted an actor's process (its process id changed); asks every running actor
        for its id every `PID_POLL_S` (answered at once, or once a restarted process is up)."""
        import ray

        for i, ref in list(self._pid_refs.items()):
            if not ray.wait([ref], timeout=0)[0]:
                continue
            del self._pid_refs[i]
            try:
                pid = ray.get(ref)
            except Exception:  # noqa: BLE001 -- gone for good or retired: `failure` reports what matters
                continue
            before, self.pids[i] = self.pids.get(i), pid
            if before is not None and pid != before:
                self.restarts[i] = self.restarts.get(i, 0) + 1
                log(restart_line(i, before, self.restarts[i], self.program.actor_spec(i).max_restarts))
        if time.monotonic() - self._last_pid_poll >= PID_POLL_S:
            self._last_pid_poll = time.monotonic()
            for i in set(self.refs.values()) - set(self._pid_refs):
                if i in self.handles:
                    self._pid_refs[i] = self.handles[i].pid.remote()

    def _publish(self, count: int, learners: list[Any]) -> None:
        import ray

        ray.get([learner.set_num_actors.remote(count) for learner in learners], timeout=STARTUP_TIMEOUT_S)
        self.count = count

    def failure(self) -> str | None:
        """One line naming an actor gone for good while the learner trains, or None; collects retired actors."""
        import ray

        finished, _ = ray.wait(list(self.refs), num_returns=1, timeout=0) if self.refs else ([], [])
        for ref in finished:
            i = self.refs.pop(ref)
            try:
                stats = ray.get(ref)  # raises if the actor died and its restarts are used up
            except Exception as error:
                return f"actor/{i} failed for good: {_error_line(error)}"
            if i in self.retiring and stats.get("retired"):
                self.retiring.discard(i)
                self.retired_stats.append(stats)
                ray.kill(self.handles.pop(i), no_restart=True)
                return None
            return f"actor/{i} stopped while the learner was still training"
        return None


def run_on_ray(
    program: Program,
    *,
    address: str | None = None,
    log: Callable[[str], None] = print,
    forward_node_logs: bool = True,
) -> RunResult:
    """Runs `program` with one Ray actor process per node.

    Args:
      program: from `make_program(..., launch="local" | "ray")`.
      address: the Ray cluster for launch `ray` (e.g. `ray://head:10001` or `auto`); ignored for `local`, which
        starts a private Ray instance on this machine. If Ray is already initialised in this process (tests), that
        instance is used and left running.
      log: where the driver's lines go (the learner's console lines come through Ray's log forwarding).
      forward_node_logs: whether the nodes' output is printed here (Ray's `log_to_driver`; when Ray is started
        here).

    Raises:
      NodeFailedError: the replay node's or a learner's process died, or an actor's restarts are used up (one line;
        every other node was stopped and a living learner saved first).
      RuntimeError: the learner itself failed.
      SkippedUpdatesError: the learner stopped after too many skipped updates (its last good state was saved).
      StoppedBySignal: SIGINT/SIGTERM stopped the run (after the learner saved its checkpoint).
    """
    os.environ.update(ray_console_environment(program.launch, sys.stdout.isatty()))  # before Ray reads them
    import ray

    from coala_dist.distributed.params import NodeStoppedError
    from coala_dist.train import stop_on_signals

    config = program.config
    owns_ray = not ray.is_initialized()
    # If this driver is killed, its reaper kills the processes of its private Ray instance (reaper.py).
    reaper = start_reaper() if owns_ray and program.launch == "local" else None
    if owns_ray:
        base_env = {"env_vars": {"XLA_FLAGS": _node_environment(program.replay)["XLA_FLAGS"]}}
        if program.launch == "local":
            nodes = 1 + len(program.learners) + len(program.actors) + LOCAL_SCALE_ROOM
            # In a private network the node's address is a loopback one. Not 127.0.0.1: Ray replaces that by probing
            # for an outward address (a route this namespace has not) and prints a warning; any 127/8 address is lo.
            isolated = {"_node_ip_address": netns.LOOPBACK_NODE_ADDRESS} if netns.is_isolated() else {}
            context = ray.init(
                address="local",
                **isolated,
                num_cpus=max(nodes, os.cpu_count() or 1),
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                runtime_env=base_env,
                log_to_driver=forward_node_logs,
                logging_level=logging.WARNING,  # not Ray's INFO lines ("Started a local Ray instance.")
            )
        else:
            context = ray.init(
                address=address, runtime_env=base_env, log_to_driver=forward_node_logs, logging_level=logging.WARNING
            )
        log(f"Ray's own logs (its view of node deaths and restarts): {ray_logs_dir(context)}")
    _warn_missing_resources(program, log)
    replay = _ReplayNode(program.replay, config.distributed.replay_max_restarts)
    actors = _Actors(program, replay.location(config.distributed.rpc_timeout_s))
    learners: list[Any] = []
    actor_stats: list[dict[str, float]] = []
    learner_result = node_failure = signum = None
    learner_refs: list[Any] = []
    grace = _LearnerGrace(config.distributed.stop_grace_s)
    control = None
    if program.workdir is not None and "://" not in program.workdir:  # `coala scale --workdir=...` reaches it
        control = DriverControl(program.workdir, program.launch, len(program.actors))
    console = _drop_ray_worker_died_lines() if owns_ray and forward_node_logs else None
    try:
        with stop_on_signals() as signalled:
            try:
                log(f"replay node at {replay.start(signalled)}")
                learners = [_start(LearnerProcess, spec, replay=actors.location) for spec in program.learners]
                coordinator = None
                if len(learners) > 1:
                    coordinator = _wait_for(learners[0].coordinator_address.remote(), signalled, "learner 0")
                actors.start(range(len(program.actors)))
                actors.count = len(program.actors)
                learner_refs = [learner.run.remote(coordinator_address=coordinator) for learner in learners]
                actors.run(range(actors.count))
                learner_result, node_failure = _supervise(
                    replay, actors, learners, learner_refs, control, signalled, grace, log
                )
            except NodeStoppedError:
                log("stopped before training started")
        signum = signalled.signum
    finally:
        actor_stats = _stop_all(replay, actors, learners, learner_refs, grace)
        if control is not None:
            control.close()
        if owns_ray:
            ray.shutdown()
        if console is not None:
            console.close_filter()
            sys.stdout = console.target
        if reaper is not None:
            stop_reaper(reaper)
    _raise_if_stopped(learner_result, signum, node_failure)
    if learner_result is None:
        return RunResult(None, [], actor_stats, [], 0, 0)
    return _result(learner_result, actor_stats)


def ray_logs_dir(context: Any) -> str:
    """The logs folder of the Ray session `ray.init` returned (its `address_info`)."""
    info = getattr(context, "address_info", None) or {}
    session = info.get("session_dir")
    return os.path.join(session, "logs") if session else "(Ray's session folder, /tmp/ray/session_latest/logs)"


def _drop_ray_worker_died_lines() -> DroppingLines:
    """From now on this driver's stdout drops Ray's "A worker died ..." lines (the launcher's own line says what
    happened; Ray's stay in its logs). Returns the filter, whose `target` is the stdout to put back."""
    console = DroppingLines(sys.stdout, RAY_WORKER_DIED)
    sys.stdout = console
    return console


def _warn_missing_resources(program: Program, log: Callable[[str], None]) -> None:
    """Says which custom resources no node offers yet: their nodes wait (e.g. for an autoscaler) rather than fail."""
    import ray

    available = ray.cluster_resources()
    wanted = {
        name: spec.name
        for spec in (*program.learners, *program.actors)
        for name in spec.ray_options.get("resources", {})
        if name not in available
    }
    for name, node in wanted.items():
        log(
            f"no Ray node offers resource {name!r} (needed by {node} and its kind) yet: it will wait for one; "
            "set config.distributed.ray_learner_resource / ray_actor_resource to '' on a cluster without them"
        )


class _LearnerGrace:
    """The learners' one `stop_grace_s`, counted from the first request to stop, however many places wait on it (a
    learner stuck in a collective with a dead peer is waited for once, not once per wait)."""

    def __init__(self, grace_s: float):
        self.grace_s = grace_s
        self.deadline: float | None = None

    def left_s(self) -> float:
        """Seconds left of the grace; starts it on the first call."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace_s
        return max(0.0, self.deadline - time.monotonic())


def _supervise(
    replay: _ReplayNode,
    actors: _Actors,
    learners: list[Any],
    learner_refs: list[Any],
    control: DriverControl | None,
    signalled: threading.Event,
    grace: _LearnerGrace,
    log: Callable[[str], None],
) -> tuple[Any, str | None]:
    """Waits for the learners to finish, restarting a dead replay node while it may and changing the actor count
    when `coala scale` asks. A signal, the replay node gone for good or an actor gone for good stops them (they save
    their last whole iteration, within the grace). Returns the primary learner's result (None if it did not stop in
    time) and, if a node failed, one line saying which."""
    import ray

    while True:
        if control is not None:
            _scale(actors, learners, control, log)
        done, _ = ray.wait(learner_refs, num_returns=len(learner_refs), timeout=0.2)
        learner_died = _learner_death(learner_refs, done)
        if learner_died is not None and len(done) == len(learner_refs):
            return None, learner_died
        if len(done) == len(learner_refs):
            return ray.get(learner_refs)[0], None
        actors.report_restarts(log)
        failure = learner_died or replay.check(signalled, log) or actors.failure()
        if failure is None and not signalled.is_set():
            continue
        log(f"stopping: {failure}" if failure else "stopping: asking the learner to finish its iteration")
        for learner in learners:
            learner.stop.remote()
        ready, _ = ray.wait(learner_refs, num_returns=len(learner_refs), timeout=grace.left_s())
        if learner_refs[0] not in ready:
            return None, failure
        try:
            return ray.get(learner_refs[0]), failure
        except Exception as error:
            if failure is not None:  # e.g. the primary's collective failed because a peer died: that death is reported
                return None, failure
            raise RuntimeError(f"the learner failed: {_error_line(error)}") from error


def _error_line(error: BaseException) -> str:
    """The last non-empty line of a (Ray) error's text: the exception itself, without Ray's traceback banner."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _learner_death(learner_refs: list[Any], done: list[Any]) -> str | None:
    """One line naming a learner process that died (SIGKILL, OOM), or None. The others of its group cannot go on
    (their collectives wait for it); the newest checkpoint holds what the group saved together."""
    import ray

    for ref in done:
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError:  # its process is gone (Ray's text says only that, at length)
            return f"learner process {learner_refs.index(ref)} died (killed, out of memory or crashed)"
    return None


def _scale(actors: _Actors, learners: list[Any], control: DriverControl, log: Callable[[str], None]) -> None:
    """Applies a `coala scale` request (control.py) step by step; records the count once the learner has it."""
    before = control.num_actors
    count = control.requested()
    if count is not None and actors.request(count, learners):
        log(f"scaling from {before} to {counted(count, 'actor')}")
    actors.advance(learners)
    if actors.count != control.num_actors and not actors.starting:
        control.applied(actors.count)
        log(f"now {counted(actors.count, 'actor')} (was {before}): the learner's next version is split among them")


def _stop_all(
    replay: _ReplayNode, actors: _Actors, learners: list[Any], learner_refs: list[Any], grace: _LearnerGrace
) -> list[dict[str, float]]:
    """Asks every node to stop, lets the learners finish (a save in flight) within what is left of their grace,
    collects the actors' stats within `stop_grace_s`, then kills every node process.

    The replay node stops last: an actor still blocked on a full queue must see its stop event, not its replay
    server vanish (a Ray store actor dies with its server, and the call would fail instead).
    """
    import ray

    handles = [*learners, *actors.handles.values()]
    actor_refs = actors.refs
    for handle in handles:
        handle.stop.remote()
    if learner_refs:  # a learner that failed may still be writing its checkpoint: never kill it mid-save
        ray.wait(learner_refs, num_returns=len(learner_refs), timeout=grace.left_s())
    stats = list(actors.retired_stats)
    if actor_refs:
        ready, _ = ray.wait(list(actor_refs), num_returns=len(actor_refs), timeout=grace.grace_s)
        for ref in ready:
            with contextlib.suppress(Exception):  # a failed actor has no stats; its error was reported already
                stats.append(ray.get(ref))
    if replay.handle is not None:
        with contextlib.suppress(Exception):  # gone already
            ray.get(replay.handle.stop.remote(), timeout=grace.grace_s)
        handles = [replay.handle, *handles]
    for handle in handles:
        ray.kill(handle, no_restart=True)
    return stats


def launch(
    program: Program,
    *,
    ray_address: str | None = None,
    components: Any = None,
    log: Callable[[str], None] = print,
    forward_node_logs: bool = True,
) -> RunResult:
    """Runs `program` the way its launch type says (`components` only matter in-process, `ray_address` and
    `forward_node_logs` only on Ray)."""
    if program.launch == "inprocess":
        return run_inprocess(program, components=components, log=log)
    return run_on_ray(program, address=ray_address, log=log, forward_node_logs=forward_node_logs)
