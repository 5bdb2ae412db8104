"""The learner node: `prepare_learner` + `learner_loop` (coala_dist/train.py) with the replay as its batch source
(`ReplayBatchSource`, replay_source.py), in one learner process of a distributed run.

Only learner process 0 publishes parameters and writes metrics; the other processes keep only the checkpoint
callback of `prepare_learner`, because Orbax saves collectively. The node returns how its loop ended (`Outcome`) as
data in its `RunResult`: the launcher stops every other node first, then turns it into the process's exit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from coala_dist.builder import Components, build
from coala_dist.config import episodes_per_iteration
from coala_dist.distributed.codec import params_codec
from coala_dist.distributed.params import NodeStoppedError, ParamsPublisher
from coala_dist.distributed.replay import ReplayLink, ReplayLocation
from coala_dist.distributed.replay_source import ReplayBatchSource
from coala_dist.distributed.sharding import (
    check_batch_divides,
    data_parallel_update,
    initialize_learner_group,
    learner_mesh,
    process_episode_range,
    replicated,
)
from coala_dist.distributed.work import learner_share
from coala_dist.learner import TrainState
from coala_dist.train import Ending, Outcome, learner_loop, prepare_learner


@dataclasses.dataclass
class RunResult:
    """What a learner node returns, and (with the actors' stats added by the launcher) what a run returns.

    Attributes:
      outcome: how the learner's loop ended (the launcher raises its failure once every node has stopped).
      state: the final TrainState on the host (numpy), or None (a non-primary learner process, or no learner result).
      history: the per-iteration metrics of this run (primary process).
      consumed_lags: policy lag of every episode this process consumed.
      dropped_stale: episodes dropped as too old.
      dropped_duplicates: sync episodes received twice (e.g. redone by a restarted actor).
      dropped_malformed: episodes rejected as malformed (`episode_problem`).
      actor_stats: per actor, what it did (`ActorStats` as dicts), for actors that reported (set by the launcher).
    """

    outcome: Outcome
    state: TrainState | None = None
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    consumed_lags: list[int] = dataclasses.field(default_factory=list)
    dropped_stale: int = 0
    dropped_duplicates: int = 0
    dropped_malformed: int = 0
    actor_stats: list[dict[str, float]] = dataclasses.field(default_factory=list)

    def raise_for_exit(self, signum: int | None = None, node_failure: str | None = None) -> None:
        """After every node stopped: the learner's failure, else `node_failure` (one line from the launcher: a node
        gone for good), else a stop by `signum`, ends the run with its exit status; returns for a finished run."""
        if node_failure is not None and not self.outcome.failed:
            if self.state is not None:
                saved = f"the learner stopped after iteration {int(self.state.step)} and saved it"
            else:
                saved = "the newest checkpoint in the workdir holds what the learner last saved"
            message = f"{node_failure}: {saved}; run the same command to resume"
            Outcome(Ending.NODE_FAILED, self.outcome.iteration, message).raise_for_exit()
        self.outcome.raise_for_exit(signum)


class _LatestState:
    """A callback remembering the newest state (the loop may be left by an exception)."""

    def __init__(self, state: TrainState):
        self.state = state

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None:
        self.state = state

    def close(self) -> None:
        pass


class LearnerNode:
    """One learner process. Build it where it runs; `run()` trains until done or stopped.

    Args:
      config: the experiment config.
      workdir: the run's directory (checkpoints, metrics.csv), or None.
      replay: where the replay node is (the learner follows it when the launcher restarts it).
      should_stop: polled between iterations and while waiting for data.
      learner_process: this process's index in the learner group.
      components: prebuilt components (in-process launch shares the compiled functions); built if None.
      log: where the primary process's console lines go (default: print).
      start_over: train from iteration 1 when every checkpoint in `workdir` is unreadable (`prepare_learner`).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str | None,
        replay: ReplayLocation,
        *,
        should_stop: Callable[[], bool],
        learner_process: int = 0,
        components: Components | None = None,
        log: Callable[[str], None] | None = None,
        start_over: bool = False,
    ):
        self.config, self.workdir, self.replay = config, workdir, replay
        self.should_stop, self.learner_process = should_stop, learner_process
        self.components, self.log = components, log or print
        self.start_over = start_over
        self._num_actors = config.distributed.num_actors
        self._publisher: ParamsPublisher | None = None

    def set_num_actors(self, count: int) -> None:
        """Publishes `count` as the actor count from the next version on (a scaled job; the launcher calls it from
        another thread while `run` trains)."""
        self._num_actors = count
        if self._publisher is not None:
            self._publisher.num_actors = count

    def _components(self) -> tuple[Components, jax.sharding.Mesh | None]:
        """The built experiment, with a data-parallel update when the learner mesh has several devices (then also
        the mesh)."""
        config = self.config
        components = self.components or build(config)
        mesh = learner_mesh()
        check_batch_divides(episodes_per_iteration(config), mesh)
        if mesh.size == 1:
            return components, None
        components = dataclasses.replace(components, learner_update=data_parallel_update(components.learner, mesh))
        block = process_episode_range(mesh, episodes_per_iteration(config))
        if block != learner_share(config, self.learner_process):
            raise ValueError(f"learner process {self.learner_process} holds episodes {block} of the mesh")
        return components, mesh

    def run(self, coordinator_address: str | None = None) -> RunResult:
        """Trains; returns how it ended, the final state (primary process) and the replay statistics.

        Args:
          coordinator_address: `host:port` of learner process 0 when there are several learner processes (None:
            detected by JAX from `$JAX_COORDINATOR_ADDRESS` and the Cloud TPU metadata).
        """
        config = self.config
        if config.distributed.num_learner_processes > 1:
            self.learner_process = initialize_learner_group(
                coordinator_address, config.distributed.num_learner_processes, self.learner_process
            )
        primary = self.learner_process == 0
        components, mesh = self._components()
        log = self.log if primary else (lambda line: None)
        prepared = prepare_learner(
            config,
            self.workdir,
            components=components,
            log=log,
            sharding=replicated(mesh) if mesh is not None else None,
            start_over=self.start_over,
            write_metrics=primary,  # the others must not rewrite metrics.csv on resume (a race on its file)
        )
        if not primary:  # one process writes metrics; the others keep the checkpoint callback (Orbax saves jointly)
            for callback in prepared.callbacks:
                if callback is not prepared.checkpoint:
                    callback.close()
            prepared.callbacks = [prepared.checkpoint] if prepared.checkpoint is not None else []
        link = ReplayLink(self.replay, config.distributed.rpc_timeout_s, self.should_stop)
        publisher = None
        if primary:
            publisher = ParamsPublisher(components, link.client, params_codec(components), self._num_actors)
            self._publisher = publisher
            publisher.num_actors = self._num_actors  # a count set while the publisher was being made
        source = ReplayBatchSource(
            config,
            components,
            link,
            learner_process=self.learner_process,
            publisher=publisher,
            should_stop=self.should_stop,
            mesh=mesh,
            log=log,
        )
        latest = _LatestState(prepared.state)
        prepared.callbacks.append(latest)
        try:
            _, outcome = learner_loop(
                prepared, source, should_stop=self.should_stop, total_iterations=config.training_iterations, log=log
            )
        except NodeStoppedError:
            log(f"learner stopped at iteration {int(latest.state.step)}")
            outcome = Outcome(Ending.STOPPED, int(latest.state.step))
        except TimeoutError as error:  # no episode for start_/data_timeout_s: one line, not the traceback of a Ray task
            message = f"{error} The last whole iteration was saved: rerun the same command to resume."
            outcome = Outcome(Ending.NODE_FAILED, int(latest.state.step), message)
        finally:
            if publisher is not None:
                publisher.close()
        final: Any = jax.device_get(latest.state) if primary else None
        return RunResult(
            outcome=outcome,
            state=final,
            history=prepared.history if primary else [],
            consumed_lags=source.consumed_lags,
            dropped_stale=source.dropped_stale,
            dropped_duplicates=source.dropped_duplicates,
            dropped_malformed=source.dropped_malformed,
        )
