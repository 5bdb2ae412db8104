"""Runs a `Program` (program.py) the way its launch type says: as threads of this process (`inprocess`, here), or
as Ray processes on this machine or a cluster (`local`, `ray`: ray_run.py).

* `run_inprocess`: the replay node embeds its server (Reverb or in-process queues) in this process; actors are
  threads sharing the learner's compiled rollout; the learner runs in the calling thread. SIGTERM/Ctrl-C (main
  thread) stop the learner after its current iteration (its checkpoint callback saves), then the actors, then the
  server.
* `run_on_ray` (ray_run.py): one Ray actor process per node; the driver restarts a dead replay node, scales actors
  and stops every node when the run ends (supervision.py).

Either way the learner returns how its loop ended as data (`RunResult.outcome`); once every node has stopped the
launcher turns it into the exit (`RunResult.raise_for_exit`): the learner's failure (one line, exit status 1), else
a node gone for good (`NodeFailedError`), else `StoppedBySignal` (exit status 130 / 143).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from coala_dist.distributed.learner_node import RunResult
from coala_dist.distributed.program import NodeSpec, Program
from coala_dist.distributed.ray_run import run_on_ray
from coala_dist.distributed.replay import FixedReplayLocation


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
    learner_result.actor_stats = [actor_stats[s.name] for s in program.actors if s.name in actor_stats]
    learner_result.raise_for_exit(signum)
    return learner_result
