"""The learner's batch source on a distributed run: parameters out to the actors, meta-batches in from the replay.

`ReplayBatchSource` is a `coala_dist.train.BatchSource`. `publish(state)` (primary learner process only) makes
`state`'s parameters the ones actors roll out with, once per version. `next(state)`

1. publishes `state`'s parameters if `publish` did not (the first version, or after a replay restart);
2. takes this process's share of the meta-batch from its queue tables, polling with a timeout and a stop check:
   * **sync**: exactly the episodes of `state.version` with the indices of its share; older episodes (e.g. written
     twice by a restarted actor) are dropped and counted; the batch is sorted by episode index — the same batch
     as the in-process loop's, whatever the actor count;
   * **async**: `meta_batch_size` episodes per agent (its share of them), whatever version made them, except that
     episodes more than `max_policy_lag` versions old are dropped and counted; PPO's ratio uses their stored
     behaviour log-probs;
3. returns the batch (sharded over the learner mesh when it has several devices) and its metrics: the time spent
   waiting for data, the queue size, the policy lag of the consumed episodes and the dropped counts.

When the launcher restarts a dead replay node (`distributed.replay_max_restarts`), the source notices the new
incarnation (`replay.ReplayLink`), reconnects, publishes again and collects the iteration afresh; in sync mode the
actors roll out every episode of the version again, so the batch, and the run, are the same as without the fault.

What comes from the network is checked before it can enter an update. The transports already refuse items whose
shapes or dtypes differ from the table's signature; `episode_problem` rejects the rest — non-finite observations,
rewards, log-probs or values, actions outside the action set, an episode index that is not this table's, an ego or
co-player id that cannot be, a version newer than the learner's — and the source counts each rejection
(`replay/dropped_malformed`) and names the first few on the console, then goes on waiting for the real episode.

Invariant: only learner process 0 publishes parameters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from coala_dist.builder import Components
from coala_dist.config import episodes_per_iteration, episodes_per_work_unit
from coala_dist.distributed.codec import TreeCodec, episode_codec
from coala_dist.distributed.params import NodeStoppedError, ParamsPublisher
from coala_dist.distributed.replay import ReplayLink, ReplayTimeoutError
from coala_dist.distributed.sharding import global_batch
from coala_dist.distributed.work import learner_share, learner_tables, table_episode_indices
from coala_dist.learner import TrainState
from coala_dist.rollout import MetaEpisode

# Console lines naming rejected episodes: the first few, then only the count in the metrics.
MALFORMED_LINES = 5
# A wait for episodes is said on the console once it exceeds this many times the previous collection (and at least
# STALL_REPORT_MIN_S, or a quarter of the timeout if that is shorter).
STALL_ITERATIONS = 3
STALL_REPORT_MIN_S = 10.0


def episode_problem(
    episode: MetaEpisode,
    *,
    table_indices: range,
    newest_version: int,
    num_actions: int,
    meta_batch_size: int,
    population_size_meta: int,
    num_naive_initialisations: int,
) -> str | None:
    """Why a received episode (numpy fields of ONE `MetaEpisode`) cannot enter an update, or None if it can.

    Args:
      episode: the decoded episode.
      table_indices: the episode indices its table holds.
      newest_version: the learner's version (no actor can have acted with a newer one).
      num_actions: |A|.
      meta_batch_size: N (the ego of episode e is e // N).
      population_size_meta: P.
      num_naive_initialisations: how many naive initialisations a naive co-player id may name.
    """
    for field in ("obs", "rewards", "behaviour_logp", "behaviour_values"):
        if not np.all(np.isfinite(getattr(episode, field))):
            return f"non-finite {field}"
    actions = episode.actions
    if actions.size and (actions.min() < 0 or actions.max() >= num_actions):
        return f"actions outside [0, {num_actions})"
    index, version = int(episode.episode_index), int(episode.policy_version)
    if index not in table_indices:
        return f"episode index {index} does not belong to this table (indices {table_indices.start}..)"
    if int(episode.ego_id) != index // meta_batch_size:
        return f"ego_id {int(episode.ego_id)} does not match episode index {index}"
    if version > newest_version:
        return f"policy version {version} is newer than the learner's {newest_version}"
    if version < 0:
        return f"policy version {version} is negative"
    coplayer, naive = int(episode.coplayer_id), bool(episode.coplayer_is_naive)
    limit = num_naive_initialisations if naive else population_size_meta
    if not 0 <= coplayer < limit or (not naive and coplayer == int(episode.ego_id)):
        kind = "naive" if naive else "meta"
        return f"{kind} co-player id {coplayer} is impossible (ego {int(episode.ego_id)}, {limit} {kind} agents)"
    return None


def _leaf_position(codec: TreeCodec, field: str) -> int:
    """Index of a MetaEpisode field in the codec's flat item."""
    positions = codec.unflatten(list(range(len(codec.specs))))
    return getattr(positions, field)


class ReplayBatchSource:
    """Publishes parameters and assembles the meta-batch of one learner process from the replay node.

    Args:
      config: the experiment config.
      components: the built experiment.
      replay: the link to the replay node. When the launcher restarts the replay node (its tables are then empty),
        the source reconnects, publishes the parameters again and collects the current iteration's batch afresh:
        actors roll out the lost sync episodes again (each is a pure function of run key, version and index).
      learner_process: this process's index in the learner group.
      publisher: publishes parameters (primary process), or None.
      should_stop: polled while waiting; a stop raises `NodeStoppedError` out of the call.
      mesh: the learner's mesh when it has more than one device (the batch is then returned sharded), else None.
      log: where lines naming rejected (malformed) episodes go.

    Attributes:
      dropped_stale: episodes dropped because they were too old (sync: not of the current version).
      dropped_duplicates: sync episodes received twice.
      dropped_malformed: episodes rejected by `episode_problem`.
      replay_restarts: new incarnations of the replay node this source followed.
      consumed_lags: policy lag of every consumed episode, in consumption order.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        components: Components,
        replay: ReplayLink,
        *,
        learner_process: int,
        publisher: ParamsPublisher | None,
        should_stop: Callable[[], bool],
        mesh: jax.sharding.Mesh | None = None,
        log: Callable[[str], None] = print,
    ):
        self.config, self.link, self.replay, self.publisher, self.should_stop, self.mesh, self.log = (
            config,
            replay,
            replay.client,
            publisher,
            should_stop,
            mesh,
            log,
        )
        self.sync = config.distributed.mode == "sync"
        self.tables = learner_tables(config, learner_process)  # in episode (hence agent) order
        self.share = learner_share(config, learner_process)
        self.codec = episode_codec(components, episodes_per_work_unit(config))
        self._version_at = _leaf_position(self.codec, "policy_version")
        self._index_at = _leaf_position(self.codec, "episode_index")
        self.table_indices = table_episode_indices(config, learner_process)
        self.num_actions = components.env.num_actions
        self.num_naive_initialisations = (
            config.population_size_meta if config.dynamic_naive_agents else config.population_size_naive
        )
        self.dropped_stale = 0
        self.dropped_duplicates = 0
        self.dropped_malformed = 0
        self.replay_restarts = 0
        self.consumed_lags: list[int] = []
        self._collect_started, self._typical_collect_s, self._next_report_s = time.monotonic(), 0.0, 0.0
        self._collected_once = False  # until the first whole batch, a wait is bounded by start_timeout_s

    def _malformed(self, item: list[np.ndarray], table: str, version: int) -> bool:
        """Checks one received item; counts and (the first few) names a rejected one."""
        problem = episode_problem(
            self.codec.unflatten(item),
            table_indices=self.table_indices[table],
            newest_version=version,
            num_actions=self.num_actions,
            meta_batch_size=self.config.meta_batch_size,
            population_size_meta=self.config.population_size_meta,
            num_naive_initialisations=self.num_naive_initialisations,
        )
        if problem is None:
            return False
        self.dropped_malformed += 1
        if self.dropped_malformed <= MALFORMED_LINES:
            last = self.dropped_malformed == MALFORMED_LINES
            more = " (further ones are only counted: replay/dropped_malformed)" if last else ""
            self.log(f"learner rejected an episode from table {table}: {problem}{more}")
        return True

    # -------------------------------------------------------------------------------------------------------------
    def _interrupted(self) -> bool:
        """A stop request, or a new incarnation of the replay node (this iteration's collection starts again)."""
        return self.should_stop() or self.link.moved()

    def _follow_replay(self, version: int) -> None:
        """Connects to the restarted replay node; the publisher publishes again in the next `_publish_and_collect`."""
        self.replay = self.link.reconnect(self.should_stop)
        if self.publisher is not None:
            self.publisher.reconnect(self.replay)
        self.replay_restarts += 1
        self.log(
            f"learner: the replay node restarted ({self.replay.address}); collecting version {version} again "
            "(what the old one held is lost and rolled out again)"
        )

    def _poll(self) -> dict[str, int]:
        while True:
            if self._interrupted():
                raise NodeStoppedError
            try:
                return self.replay.sizes()
            except ReplayTimeoutError:
                continue

    def _take(self, table: str, count: int) -> list[list[np.ndarray]]:
        """Up to `count` items of `table`; none if the replay did not answer in time or is gone (the next `_poll`
        checks the stop event, and a timed-out Ray `take` is collected by the next one)."""
        try:
            return self.replay.take(table, count, give_up=self._interrupted)
        except ReplayTimeoutError:
            return []

    def _timeout(self) -> float:
        """How long the learner waits for a new episode: `start_timeout_s` until this process's first whole batch (every
        node starts and compiles), then `data_timeout_s`."""
        d = self.config.distributed
        return d.data_timeout_s if self._collected_once else d.start_timeout_s

    def _waited(self, progressed: bool, last_progress: float, missing: str) -> float:
        """Book-keeping of one polling round: returns the new time of last progress; sleeps, says what it waits for
        once the wait grows long (`_report_wait`), or times out."""
        now = time.monotonic()
        if progressed:
            return now
        timeout = self._timeout()
        if now - last_progress > timeout:
            if self._collected_once:
                waited = f"for {timeout:g} s (still missing"
            else:
                waited = f"for {timeout:g} s while the run starts (distributed.start_timeout_s; still missing"
            raise TimeoutError(f"the learner received no episode {waited}: {missing}); are the actors alive?")
        self._report_wait(now - self._collect_started, missing)
        time.sleep(self.config.distributed.poll_interval_s)
        return last_progress

    def _report_wait(self, waited: float, missing: str) -> None:
        """A line saying what the learner waits for, once the wait exceeds a few iterations' collection time (at
        least `STALL_REPORT_MIN_S`, at most a quarter of the timeout), then each time the wait doubles."""
        if waited < self._next_report_s:
            return
        timeout = self._timeout()
        self.log(f"learner: waiting {waited:.0f} s for {missing} (the run stops after {timeout:g} s without any)")
        self._next_report_s = 2 * waited

    def _start_collecting(self) -> None:
        self._collect_started = time.monotonic()
        timeout = self._timeout()
        self._next_report_s = max(STALL_ITERATIONS * self._typical_collect_s, min(STALL_REPORT_MIN_S, timeout / 4))

    def _end_collecting(self) -> None:
        self._typical_collect_s = time.monotonic() - self._collect_started
        self._collected_once = True

    def _missing_sync(self, missing: list[int], version: int) -> str:
        """`missing` episodes of `version` with the work units holding them and the actors that roll those out."""
        size = episodes_per_work_unit(self.config)
        units = sorted({index // size for index in missing})  # work units are consecutive blocks, in order
        text = f"episodes {missing[:8]}{' ...' if len(missing) > 8 else ''} of version {version}"
        actors = self.publisher.published_num_actors if self.publisher is not None else None
        if not actors:
            return f"{text} (work units {units[:8]})"
        owners = sorted({unit % actors for unit in units})  # sync work is assigned round robin (work.py)
        return f"{text} (work units {units[:8]}, rolled out by actor {', '.join(map(str, owners[:8]))})"

    def _collect_sync(self, version: int) -> tuple[list[list[np.ndarray]], int]:
        """Exactly this share's episodes of `version`, sorted by episode index; and the queue size first seen."""
        needed = set(self.share)
        received: dict[int, list[np.ndarray]] = {}
        last_progress, queue_size = time.monotonic(), None
        self._start_collecting()
        while len(received) < len(needed):
            sizes = self._poll()
            if queue_size is None:
                queue_size = sum(sizes.get(table, 0) for table in self.tables)
            progressed = False
            for table in self.tables:
                for item in self._take(table, sizes.get(table, 0)):
                    if self._malformed(item, table, version):
                        continue
                    item_version, index = int(item[self._version_at]), int(item[self._index_at])
                    if item_version < version:
                        self.dropped_stale += 1
                    elif index in received or index not in needed:
                        self.dropped_duplicates += 1
                    else:
                        received[index] = item
                        progressed = True
            missing = sorted(needed - set(received))
            if missing:
                last_progress = self._waited(progressed, last_progress, self._missing_sync(missing, version))
        self._end_collecting()
        return [received[index] for index in sorted(received)], queue_size or 0

    def _collect_async(self, version: int) -> tuple[list[list[np.ndarray]], int]:
        """This share's count of episodes per agent, none older than `max_policy_lag` versions."""
        oldest = version - self.config.distributed.max_policy_lag
        remaining = dict(self.tables)
        received: dict[str, list[list[np.ndarray]]] = {table: [] for table in self.tables}
        last_progress, queue_size = time.monotonic(), None
        self._start_collecting()
        while any(remaining.values()):
            sizes = self._poll()
            if queue_size is None:
                queue_size = sum(sizes.get(table, 0) for table in self.tables)
            progressed = False
            for table, count in remaining.items():
                for item in self._take(table, min(count, sizes.get(table, 0))):
                    if self._malformed(item, table, version):
                        continue
                    if int(item[self._version_at]) < oldest:
                        self.dropped_stale += 1
                    else:
                        received[table].append(item)
                        remaining[table] -= 1
                        progressed = True
            if any(remaining.values()):
                waiting_for = f"{remaining} episodes per table of version {oldest} or newer"
                last_progress = self._waited(progressed, last_progress, waiting_for)
        self._end_collecting()
        items = []
        for table in self.tables:  # agent order, as Learner.update expects
            items.extend(sorted(received[table], key=lambda i: (int(i[self._version_at]), int(i[self._index_at]))))
        return items, queue_size or 0

    # -------------------------------------------------------------------------------------------------------------
    def publish(self, state: TrainState) -> dict[str, float]:
        """Publishes `state`'s parameters now (primary process), so actors roll out its version while the learner
        writes metrics and checkpoints. A stop or a restarted replay node is left to `next`, which publishes again."""
        if self.publisher is None:
            return {}
        start = time.perf_counter()
        with contextlib.suppress(NodeStoppedError):
            self.publisher.publish(state, self._interrupted)
        return {"time/publish_s": time.perf_counter() - start}

    def _publish_and_collect(self, state: TrainState) -> tuple[list[list[np.ndarray]], int]:
        """Publishes `state`'s parameters unless `publish` did (primary process) and collects this share of its
        meta-batch; returns the items and the queue size first seen. Starts again after a replay restart."""
        version = int(state.version)
        while True:
            try:
                if self.publisher is not None:
                    self.publisher.publish(state, self._interrupted)
                return self._collect_sync(version) if self.sync else self._collect_async(version)
            except NodeStoppedError:
                if self.should_stop() or not self.link.moved():
                    raise
            self._follow_replay(version)

    def next(self, state: TrainState) -> tuple[MetaEpisode, dict[str, float]]:
        start = time.perf_counter()
        version = int(state.version)
        before = (self.dropped_stale, self.dropped_duplicates, self.dropped_malformed, self.replay_restarts)
        items, queue_size = self._publish_and_collect(state)
        received = time.perf_counter()
        batch = self.codec.stack(items)
        lags = version - batch.policy_version.astype(np.int64)
        self.consumed_lags.extend(int(lag) for lag in lags)
        if self.mesh is not None:
            batch = global_batch(batch, self.mesh, episodes_per_iteration(self.config))
        metrics = {
            "time/wait_for_data_s": received - start,
            "replay/queue_size": float(queue_size),
            "replay/episodes": float(len(items)),
            "replay/policy_lag_mean": float(lags.mean()),
            "replay/policy_lag_max": float(lags.max()),
            # Per iteration, not this process's totals: a resumed run's rows then add up to the run's total.
            "replay/dropped_stale": float(self.dropped_stale - before[0]),
            "replay/dropped_duplicates": float(self.dropped_duplicates - before[1]),
            "replay/dropped_malformed": float(self.dropped_malformed - before[2]),
            "replay/restarts": float(self.replay_restarts - before[3]),
        }
        if self.publisher is not None:  # the actors this version was published for (a scaled job changes it)
            metrics["replay/num_actors"] = float(self.publisher.published_num_actors)
        return batch, metrics
