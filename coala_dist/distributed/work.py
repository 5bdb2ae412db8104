"""Who does what: work units, the actors that roll them out, and the replay tables their episodes go to.

The episodes of one policy version are indexed 0 … P·N − 1; episode e belongs to ego agent e // N (`Rollout`). A
**work unit** is `episodes_per_work_unit` consecutive episodes of one agent, the block one actor rolls out with one
call of `Rollout.episodes`. With H learner processes the iteration's episodes are split into H equal contiguous
shares (process h owns [h·S, (h+1)·S), S = P·N / H, the layout of the batch axis over a device mesh ordered by
process); `config.validate` makes every work unit fall inside one share. The episodes of agent i in the share of
learner process h go to queue table `episodes_agent{i}_learner{h}`: each table has exactly one consumer.
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from coala_dist.config import episodes_per_iteration, episodes_per_work_unit

PARAMS_TABLE = "params"
PARAMS_VERSION_TABLE = "params_version"


def episode_table(agent: int, learner_process: int) -> str:
    """Name of the queue table holding agent `agent`'s episodes for learner process `learner_process`."""
    return f"episodes_agent{agent}_learner{learner_process}"


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """`episodes_per_work_unit` consecutive episodes of one ego agent.

    Attributes:
      agent: the ego agent.
      chunk: which of the agent's `work_units_per_agent` blocks.
      first_episode: index of its first episode in [0, P·N).
      num_episodes: episodes in the unit.
    """

    agent: int
    chunk: int
    first_episode: int
    num_episodes: int

    def episode_indices(self) -> np.ndarray:
        """[1, n] int32: the unit's episode indices, one row (one ego agent) as `Rollout.episodes` expects."""
        return np.arange(self.first_episode, self.first_episode + self.num_episodes, dtype=np.int32)[None, :]


def work_units(config: ml_collections.ConfigDict) -> list[WorkUnit]:
    """Every work unit of one version, ordered by first episode."""
    size = episodes_per_work_unit(config)
    units_per_agent = config.distributed.work_units_per_agent
    return [
        WorkUnit(agent, chunk, agent * config.meta_batch_size + chunk * size, size)
        for agent in range(config.population_size_meta)
        for chunk in range(units_per_agent)
    ]


def actor_work_units(config: ml_collections.ConfigDict, actor_id: int, num_actors: int) -> list[WorkUnit]:
    """Sync mode: the units actor `actor_id` rolls out for every version (round robin: unit u goes to u mod A).

    Static assignment keeps the schedule independent of timing; a restarted actor simply redoes its units (the
    learner drops the duplicates).
    """
    return work_units(config)[actor_id::num_actors]


def learner_share(config: ml_collections.ConfigDict, learner_process: int) -> range:
    """Episode indices of one version that learner process `learner_process` consumes."""
    share = episodes_per_iteration(config) // config.distributed.num_learner_processes
    return range(learner_process * share, (learner_process + 1) * share)


def learner_process_of(config: ml_collections.ConfigDict, episode_index: int) -> int:
    """The learner process whose share holds `episode_index`."""
    share = episodes_per_iteration(config) // config.distributed.num_learner_processes
    return episode_index // share


def unit_table(config: ml_collections.ConfigDict, unit: WorkUnit) -> str:
    """The queue table a work unit's episodes are written to."""
    return episode_table(unit.agent, learner_process_of(config, unit.first_episode))


def learner_tables(config: ml_collections.ConfigDict, learner_process: int) -> dict[str, int]:
    """{queue table: episodes per version} of the tables learner process `learner_process` consumes."""
    counts: dict[str, int] = {}
    for index in learner_share(config, learner_process):
        table = episode_table(index // config.meta_batch_size, learner_process)
        counts[table] = counts.get(table, 0) + 1
    return counts


def table_episode_indices(config: ml_collections.ConfigDict, learner_process: int) -> dict[str, range]:
    """{queue table: the episode indices (of any version) it holds} for learner process `learner_process`."""
    share, size = learner_share(config, learner_process), config.meta_batch_size
    ranges = {}
    for agent in range(config.population_size_meta):
        low, high = max(share.start, agent * size), min(share.stop, (agent + 1) * size)
        if low < high:
            ranges[episode_table(agent, learner_process)] = range(low, high)
    return ranges


def all_episode_tables(config: ml_collections.ConfigDict) -> list[str]:
    """Every queue table of the program."""
    processes = range(config.distributed.num_learner_processes)
    return [table for process in processes for table in learner_tables(config, process)]
