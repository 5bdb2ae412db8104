"""What the driver of a Ray run does while the learners train (ray_run.py): restart a dead replay node under its
name, grow and shrink the actor processes (`coala scale`), notice restarted or failed nodes, and stop every node
within its grace when the learners finish, a signal arrives or a node is gone for good.

Every wait here has a timeout and re-checks the stop signal.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from coala_dist.console import counted
from coala_dist.distributed.control import DriverControl
from coala_dist.distributed.program import NodeSpec, Program
from coala_dist.distributed.ray_nodes import (
    STARTUP_TIMEOUT_S,
    ActorProcess,
    RayReplayLocation,
    ReplayProcess,
    restart_line,
    start_node,
    wait_for,
)

PID_POLL_S = 2.0  # how often the driver asks the actors for their process ids, to notice Ray's restarts


class ReplayNode:
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
                self.handle = start_node(ReplayProcess, self.spec, ray_name=self.name)
                break
            except ValueError:  # the name is still the dead incarnation's for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.ref = self.handle.run.remote()
        return wait_for(self.handle.address.remote(), signalled, "the replay node")

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


class ActorProcesses:
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
            self.handles[i] = start_node(ActorProcess, self.program.actor_spec(i), replay=self.location)

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


class LearnerGrace:
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


def supervise(
    replay: ReplayNode,
    actors: ActorProcesses,
    learners: list[Any],
    learner_refs: list[Any],
    control: DriverControl | None,
    signalled: threading.Event,
    grace: LearnerGrace,
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


def _scale(actors: ActorProcesses, learners: list[Any], control: DriverControl, log: Callable[[str], None]) -> None:
    """Applies a `coala scale` request (control.py) step by step; records the count once the learner has it."""
    before = control.num_actors
    count = control.requested()
    if count is not None and actors.request(count, learners):
        log(f"scaling from {before} to {counted(count, 'actor')}")
    actors.advance(learners)
    if actors.count != control.num_actors and not actors.starting:
        control.applied(actors.count)
        log(f"now {counted(actors.count, 'actor')} (was {before}): the learner's next version is split among them")


def stop_all(
    replay: ReplayNode, actors: ActorProcesses, learners: list[Any], learner_refs: list[Any], grace: LearnerGrace
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
