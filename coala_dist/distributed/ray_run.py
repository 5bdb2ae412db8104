"""Runs a `Program` (program.py) with one Ray actor process per node (ray_nodes.py), on this machine (`local`: a
private Ray instance) or a cluster (`ray`).

This driver process only orchestrates (supervision.py): it never initialises a JAX backend (on a TPU host only the
learner may open the chips). On SIGTERM/Ctrl-C, or when the learner finishes, it asks every node to stop, gives them
`stop_grace_s`, kills what is left and, for `local`, shuts its Ray instance down, leaving no processes behind. A
`local` driver that is killed leaves nothing behind either: its reaper process (reaper.py) kills what Ray's fate
sharing leaves running. The console shows coala's lines, not Ray's worker-died banners (Ray's logs keep them).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from coala_dist.console import RAY_WORKER_DIED, DroppingLines
from coala_dist.distributed import netns
from coala_dist.distributed.control import DriverControl
from coala_dist.distributed.learner_node import RunResult
from coala_dist.distributed.program import Program
from coala_dist.distributed.ray_nodes import (
    LearnerProcess,
    node_environment,
    ray_console_environment,
    start_node,
    wait_for,
)
from coala_dist.distributed.reaper import start_reaper, stop_reaper
from coala_dist.distributed.supervision import ActorProcesses, LearnerGrace, ReplayNode, stop_all, supervise
from coala_dist.train import Ending, Outcome

# With replay=ray, work units travel through the object store on their way to the store actor (which copies them
# out, so the object store only holds items in flight); with Reverb nothing large goes through it.
LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2
LOCAL_SCALE_ROOM = 8  # a `local` run's Ray instance has CPU slots for this many actors beyond those it starts with


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
        base_env = {"env_vars": {"XLA_FLAGS": node_environment(program.replay)["XLA_FLAGS"]}}
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
    replay = ReplayNode(program.replay, config.distributed.replay_max_restarts)
    actors = ActorProcesses(program, replay.location(config.distributed.rpc_timeout_s))
    learners: list[Any] = []
    actor_stats: list[dict[str, float]] = []
    learner_result = node_failure = signum = None
    learner_refs: list[Any] = []
    grace = LearnerGrace(config.distributed.stop_grace_s)
    control = None
    if program.workdir is not None and "://" not in program.workdir:  # `coala scale --workdir=...` reaches it
        control = DriverControl(program.workdir, program.launch, len(program.actors))
    console = _drop_ray_worker_died_lines() if owns_ray and forward_node_logs else None
    try:
        with stop_on_signals() as signalled:
            try:
                log(f"replay node at {replay.start(signalled)}")
                learners = [start_node(LearnerProcess, spec, replay=actors.location) for spec in program.learners]
                coordinator = None
                if len(learners) > 1:
                    coordinator = wait_for(learners[0].coordinator_address.remote(), signalled, "learner 0")
                actors.start(range(len(program.actors)))
                actors.count = len(program.actors)
                learner_refs = [learner.run.remote(coordinator_address=coordinator) for learner in learners]
                actors.run(range(actors.count))
                learner_result, node_failure = supervise(
                    replay, actors, learners, learner_refs, control, signalled, grace, log
                )
            except NodeStoppedError:
                log("stopped before training started")
        signum = signalled.signum
    finally:
        actor_stats = stop_all(replay, actors, learners, learner_refs, grace)
        if control is not None:
            control.close()
        if owns_ray:
            ray.shutdown()
        if console is not None:
            console.close_filter()
            sys.stdout = console.target
        if reaper is not None:
            stop_reaper(reaper)
    result = learner_result or RunResult(Outcome(Ending.STOPPED, 0))
    result.actor_stats = actor_stats
    result.raise_for_exit(signum, node_failure)
    return result


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
