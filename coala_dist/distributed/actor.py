"""The actor node: poll parameters, roll out work units with THE rollout (`Rollout.episodes`), write episodes.

* **sync**: for every new version v, the actor rolls out its fixed share of v's work units (`work.actor_work_units`)
  with the run key, so episode e of version v is the same whichever actor makes it (keys are
  fold_in(run_key, v, e)), then waits for v + 1.
* **async**: the actor never waits for the learner: before each work unit it adopts whatever newer parameters its
  background fetch has brought (`ParamsClient.update`) and rolls out the next agent's unit in round robin. Its
  episodes take their keys from a stream of its own (`keys.async_run_key`), so two actors never duplicate an episode;
  async runs are not reproducible and do not try to be. Only the queue's rate limiter can block it.

A restarted replay node (launch local/ray) holds nothing: the actor notices its new incarnation, reconnects and
starts its current work again (sync: its units of the version the learner publishes again, the same episodes).

Scaling a running job (`coala scale`): every publication says how many actors share its version's work units
(`PublishedParams.num_actors`); an actor works on the versions whose count exceeds its id, retires when a later
count leaves it out, and a new actor waits for the first version that includes it. Each version's units are thus
split among exactly the actors its publication names, and sync episodes are the same whoever makes them.

Timers (cleanba style) are summed per actor and returned by `run`; the learner is the only node writing metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from coala_dist import keys
from coala_dist.builder import Components, build
from coala_dist.config import episodes_per_work_unit
from coala_dist.distributed.codec import PublishedParams, episode_codec, params_codec
from coala_dist.distributed.params import NodeStoppedError, ParamsClient
from coala_dist.distributed.replay import ReplayLink, ReplayLocation
from coala_dist.distributed.work import WorkUnit, actor_work_units, unit_table, work_units


@dataclasses.dataclass
class ActorStats:
    """What one actor did (sums since it started).

    Attributes:
      actor_id: the actor.
      pid: its process id (a restarted actor has a new one).
      units: work units written.
      episodes: meta-episodes written.
      versions: distinct policy versions it rolled out.
      params_wait_s: time waiting for or fetching parameters.
      rollout_s: time in the jitted rollout.
      write_s: time writing to the replay node (including time blocked by a full queue).
      replay_restarts: new incarnations of the replay node it followed.
      retired: whether it ended because the job was scaled down below its id (not stopped).
    """

    actor_id: int
    pid: int = dataclasses.field(default_factory=os.getpid)
    units: int = 0
    episodes: int = 0
    versions: int = 0
    params_wait_s: float = 0.0
    rollout_s: float = 0.0
    write_s: float = 0.0
    replay_restarts: int = 0
    retired: bool = False


class _RetiredError(Exception):
    """The job was scaled down below this actor's id: it ends its `run()`."""


class Actor:
    """One actor node. Build it in the thread or process that runs it; `run()` returns when stopped.

    Args:
      config: the experiment config.
      actor_id: its index; it works on the versions whose published actor count exceeds it
        (`PublishedParams.num_actors`), and retires when a later count leaves it out (`coala scale`).
      replay: where the replay node is. When the launcher restarts it (empty), the actor reconnects and starts its
        current work again: in sync mode it rolls out its units of the version the learner publishes again.
      should_stop: polled between (and inside) blocking steps.
      components: prebuilt components (in-process actors share the learner's compiled rollout); built if None.
      device: where parameters and rollouts live (None: JAX's default device).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        actor_id: int,
        replay: ReplayLocation,
        *,
        should_stop: Callable[[], bool],
        components: Components | None = None,
        device: Any = None,
    ):
        if actor_id < 0:
            raise ValueError(f"actor_id={actor_id} must be >= 0")
        self.config = config
        self.actor_id = actor_id
        self._took_part = False
        self.should_stop = should_stop
        self.components = components or build(config)
        self.episode_codec = episode_codec(self.components, episodes_per_work_unit(config))
        self.link = ReplayLink(replay, config.distributed.rpc_timeout_s, should_stop)
        self.device = device
        self.stats = ActorStats(actor_id)

    def _interrupted(self) -> bool:
        """A stop request, or a new incarnation of the replay node (the actor then starts its current work again)."""
        return self.should_stop() or self.link.moved()

    def _takes_part(self, params: PublishedParams) -> bool:
        """Whether this actor works on `params`' version. Raises `_RetiredError` once a version's actor count leaves out
        an actor that took part before (a job scaled down); an actor started by a scale-up waits for the first
        version published with the larger count."""
        if self.actor_id < int(params.num_actors):
            self._took_part = True
            return True
        if self._took_part:
            raise _RetiredError
        return False

    def _roll_out_and_write(self, params: PublishedParams, unit: WorkUnit, run_key: jax.Array, writer) -> bool:
        start = time.perf_counter()
        indices = jax.device_put(unit.episode_indices(), self.device)
        episodes = self.components.rollout_episodes(
            params.meta_params, params.naive_params, run_key, params.version, indices
        )
        items = self.episode_codec.unstack(episodes)  # device -> host
        written = time.perf_counter()
        self.stats.rollout_s += written - start
        table = unit_table(self.config, unit)
        for item in items:
            writer.add(table, item)
        done = writer.flush(self.config.distributed.rpc_timeout_s, self._interrupted)
        self.stats.write_s += time.perf_counter() - written
        if done:
            self.stats.units += 1
            self.stats.episodes += len(items)
        return done

    def _run_sync(self, writer) -> None:
        done_version = -1
        while not self._interrupted():
            start = time.perf_counter()
            self.params.wait_for_newer(done_version, self.config.distributed.poll_interval_s, self._interrupted)
            self.stats.params_wait_s += time.perf_counter() - start
            params = self.params.params
            if self._takes_part(params):
                for unit in actor_work_units(self.config, self.actor_id, int(params.num_actors)):
                    if not self._roll_out_and_write(params, unit, params.run_key, writer):
                        return
                self.stats.versions += 1
            done_version = self.params.version

    def _run_async(self, writer) -> None:
        units = work_units(self.config)
        incarnation = secrets.randbelow(2**31)  # a restarted actor must not replay its predecessor's keys
        start = time.perf_counter()
        self.params.wait_for_newer(-1, self.config.distributed.poll_interval_s, self._interrupted)
        self.stats.params_wait_s += time.perf_counter() - start
        counter, last_version = 0, -1
        while not self._interrupted():
            start = time.perf_counter()
            self.params.update()  # never blocks: adopts a finished fetch, starts the next
            self.stats.params_wait_s += time.perf_counter() - start
            params = self.params.params
            if not self._takes_part(params):
                time.sleep(self.config.distributed.poll_interval_s)
                continue
            if self.params.version != last_version:
                last_version = self.params.version
                self.stats.versions += 1
            unit = units[(self.actor_id + counter) % len(units)]  # every agent in turn, actors offset
            key = keys.async_run_key(params.run_key, self.actor_id, incarnation, counter)
            if not self._roll_out_and_write(params, unit, key, writer):
                return
            counter += 1

    def run(self) -> dict[str, float]:
        """Rolls out until stopped; returns this actor's `ActorStats` as a dict."""
        while True:
            writer = self.link.client.writer()
            self.params = ParamsClient(
                self.link.address, params_codec(self.components), self.config.distributed.rpc_timeout_s, self.device
            )
            try:
                if self.config.distributed.mode == "sync":
                    self._run_sync(writer)
                else:
                    self._run_async(writer)
            except NodeStoppedError:
                pass
            except _RetiredError:
                self.stats.retired = True
            finally:
                with contextlib.suppress(Exception):  # a writer of a replay node that died has nothing to flush
                    writer.close()
                self.params.close()
            if self.stats.retired or self.should_stop() or not self.link.moved():
                break
            try:
                self.link.reconnect(self.should_stop)  # what the old replay node held is lost: start the work again
            except NodeStoppedError:
                break
            self.stats.replay_restarts += 1
        return {k: float(v) for k, v in dataclasses.asdict(self.stats).items()}
