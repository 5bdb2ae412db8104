"""The program graph: which nodes exist and how each is built (Acme's `make_distributed_experiment`).

`make_program(config, launch=..., num_actors=..., workdir=...)` validates every option first, then returns a
`Program`: the replay node, the learner node(s) and the actor nodes, each a `NodeSpec` holding an UNCALLED factory
(a closure over the config) plus what it needs from the launcher (where it runs, what it may restart). The launcher
(`launch.py`) calls each factory inside the thread or process that runs the node, handing it the runtime pieces
only known there: where the replay node is (`replay.ReplayLocation`), the node's stop check, shared components
for in-process threads.

Seeding: there is one root key, `config.seed`; the learner derives the run key from it, publishes it with the
parameters, and every episode key is folded from it (`coala_dist.keys`), so no node needs a key of its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import ml_collections

from coala_dist.config import validate
from coala_dist.distributed.replay import resolve_backend

LAUNCH_TYPES = ("inprocess", "local", "ray")


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One node of the program.

    Attributes:
      name: e.g. `replay`, `learner/0`, `actor/3`.
      factory: called where the node runs, with keyword arguments from the launcher; returns an object with
        `run()` (and, for the replay node, `address` and `stop()`).
      cpu_only: the node's process gets `JAX_PLATFORMS=cpu` (only the learner may own accelerators).
      ray_options: extra Ray actor options (placement), e.g. {"num_gpus": 1} or {"resources": {"TPU": 4}}.
      max_restarts: Ray restarts after the process dies (0: none, -1: unlimited).
    """

    name: str
    factory: Callable[..., Any]
    cpu_only: bool
    ray_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    max_restarts: int = 0


@dataclasses.dataclass(frozen=True)
class Program:
    """The nodes of one run.

    Attributes:
      config: the validated config (with the launch's mode and actor count written in).
      launch: inprocess | local | ray.
      workdir: absolute path (or remote URL, e.g. gs://bucket/run) of the run's directory, or None.
      replay: the replay node.
      learners: one node per learner process (`distributed.num_learner_processes`).
      actors: `num_actors` actor nodes.
      actor_spec: the spec of actor node `i` for any i >= 0 (a scaled job adds actors beyond `actors`).
    """

    config: ml_collections.ConfigDict
    launch: str
    workdir: str | None
    replay: NodeSpec
    learners: tuple[NodeSpec, ...]
    actors: tuple[NodeSpec, ...]
    actor_spec: Callable[[int], NodeSpec]


def _placement(config: ml_collections.ConfigDict, launch: str, role: str) -> dict[str, Any]:
    """Ray options placing the replay, a learner or an actor node on an existing cluster (launch ray; nothing
    otherwise)."""
    d = config.distributed
    if launch != "ray":
        return {}
    options: dict[str, Any] = {}
    resources: dict[str, float] = {}
    if role == "learner":
        if d.learner_accelerator == "gpu":
            options["num_gpus"] = d.learner_accelerator_count
        elif d.learner_accelerator == "tpu":
            resources["TPU"] = d.learner_accelerator_count
        if d.ray_learner_resource:
            resources[d.ray_learner_resource] = 1
    elif role == "actor" and d.ray_actor_resource:
        resources[d.ray_actor_resource] = 1
    elif role == "replay" and d.ray_replay_resource:
        resources[d.ray_replay_resource] = 1
    if resources:
        options["resources"] = resources
    return options


def make_program(
    config: ml_collections.ConfigDict,
    *,
    launch: str = "inprocess",
    num_actors: int | None = None,
    mode: str | None = None,
    workdir: str | None = None,
    replay: str | None = None,
    start_over: bool = False,
) -> Program:
    """Validates the options and describes the program's nodes.

    Args:
      config: the experiment config.
      launch: inprocess (threads of this process, an embedded replay server) | local (Ray on this machine, one
        process per node) | ray (an existing Ray cluster).
      num_actors: actor nodes; default `config.distributed.num_actors`.
      mode: sync | async; default `config.distributed.mode`.
      workdir: the run's directory (checkpoints, metrics.csv), or None.
      replay: the replay backend (auto | reverb | ray | queues); default `config.distributed.replay`. The program's
        config holds the resolved name (`auto` becomes what it chose for this launch and install).
      start_over: the learner trains from iteration 1 when every checkpoint in `workdir` is unreadable, moving them
        and metrics.csv aside (`coala_dist.train.prepare_learner`), instead of refusing.

    Raises:
      ValueError: naming the offending option, before any node exists.
    """
    if isinstance(config, ml_collections.FrozenConfigDict):
        config = config.as_configdict()
    config = config.copy_and_resolve_references()
    if num_actors is not None:
        config.distributed.num_actors = num_actors
    if mode is not None:
        config.distributed.mode = mode
    if replay is not None:
        config.distributed.replay = replay
    validate(config)
    d = config.distributed
    if launch not in LAUNCH_TYPES:
        raise ValueError(f"launch={launch!r} is invalid: must be one of {', '.join(LAUNCH_TYPES)}")
    d.replay = resolve_backend(d.replay, launch)
    if d.num_actors < 1:
        raise ValueError(f"num_actors={d.num_actors} is invalid: the distributed program needs at least one actor")
    if launch == "inprocess" and d.num_learner_processes > 1:
        raise ValueError(
            f"distributed.num_learner_processes={d.num_learner_processes} needs launch local or ray (one process "
            "per learner), not inprocess"
        )
    if launch != "ray" and d.learner_accelerator != "none":
        raise ValueError(
            f"distributed.learner_accelerator={d.learner_accelerator!r} only applies to launch ray; launch {launch} "
            "uses this machine's devices as they are"
        )
    if workdir and "://" not in workdir:  # a remote workdir (gs://...) is Orbax's to resolve, not a local path
        workdir = os.path.abspath(workdir)
    workdir = workdir or None
    frozen = ml_collections.FrozenConfigDict(config)

    def build_replay(*, should_stop=None, host="localhost", components=None):
        from coala_dist.distributed.replay_node import ReplayNode

        return ReplayNode(frozen, components=components, host=host, should_stop=should_stop)

    def build_learner(learner_process: int, *, replay, should_stop, components=None, log=None):
        from coala_dist.distributed.learner_node import LearnerNode

        # `log=None` prints; `print` itself is not captured here: Ray's driver patches it and cannot pickle it.
        return LearnerNode(
            frozen,
            workdir,
            replay,
            should_stop=should_stop,
            learner_process=learner_process,
            components=components,
            log=log,
            start_over=start_over,
        )

    def build_actor(actor_id: int, *, replay, should_stop, components=None):
        from coala_dist.distributed.actor import Actor

        return Actor(frozen, actor_id, replay, should_stop=should_stop, components=components)

    learners = tuple(
        NodeSpec(
            name=f"learner/{process}",
            factory=_bind(build_learner, process),
            cpu_only=False,
            ray_options=_placement(config, launch, "learner"),
        )
        for process in range(d.num_learner_processes)
    )
    def actor_spec(i: int) -> NodeSpec:
        return NodeSpec(
            name=f"actor/{i}",
            factory=_bind(build_actor, i),
            cpu_only=True,
            ray_options=_placement(config, launch, "actor"),
            max_restarts=d.actor_max_restarts,
        )

    actors = tuple(actor_spec(i) for i in range(d.num_actors))
    return Program(
        config=config,
        launch=launch,
        workdir=workdir,
        replay=NodeSpec(
            name="replay", factory=build_replay, cpu_only=True, ray_options=_placement(config, launch, "replay")
        ),
        learners=learners,
        actors=actors,
        actor_spec=actor_spec,
    )


def _bind(factory: Callable[..., Any], index: int) -> Callable[..., Any]:
    """`factory` with its first (node index) argument fixed; keyword arguments come from the launcher."""

    def bound(**kwargs):
        return factory(index, **kwargs)

    return bound
