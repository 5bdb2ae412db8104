"""The data-parallel learner: the meta-batch axis sharded over a device mesh, parameters replicated.

`data_parallel_update` is `Learner.update` itself, jitted with `NamedSharding`s: the state (parameters, optimiser
states, keys, counters) replicated on every device, every leaf of the `MetaEpisode` batch split along its leading
(episode) axis. XLA's SPMD partitioner then runs the per-episode work (advantages, forward and backward passes) on
each device's episodes and turns the means over episodes into all-reduces, so gradients are averaged across devices
and every device applies the same optimiser step. Nothing in `Learner.update` changes.

Several hosts: every learner process joins one `jax.distributed` group (`initialize_learner_group`); the mesh spans
all their devices ordered by process, so process h owns a contiguous block of the batch axis, which it reads from
its own replay tables and contributes with `global_batch`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from coala_dist.learner import Learner, TrainState
from coala_dist.rollout import MetaEpisode

EPISODE_AXIS = "episodes"


def initialize_learner_group(coordinator_address: str | None, num_processes: int, process_id: int) -> int:
    """Joins the learner processes' `jax.distributed` group (before any other JAX call in this process).

    With `coordinator_address=None` and `$JAX_COORDINATOR_ADDRESS` set (the cloud launchers' learner hosts), JAX
    detects the group from the Cloud TPU metadata. CPU devices need a collectives implementation to talk across
    processes; gloo is the one that works with this stack (docs/architecture.md#processes-and-accelerators); it only
    affects the CPU backend, so it is set unconditionally.

    Returns:
      This process's index in the group (which share of every meta-batch it reads).
    """
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator_address is None:
        if not os.environ.get("JAX_COORDINATOR_ADDRESS"):
            raise ValueError("several learner processes need a coordinator address (or $JAX_COORDINATOR_ADDRESS)")
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
    if jax.process_count() != num_processes:
        raise ValueError(
            f"distributed.num_learner_processes={num_processes} but the jax.distributed group has "
            f"{jax.process_count()} processes"
        )
    return jax.process_index()


def learner_mesh(devices: list[Any] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: every device of every learner process), ordered by process."""
    devices = sorted(devices if devices is not None else jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.array(devices), (EPISODE_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def episode_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (episode) axis split into equal contiguous blocks, one per device."""
    return NamedSharding(mesh, PartitionSpec(EPISODE_AXIS))


def check_batch_divides(num_episodes: int, mesh: Mesh) -> None:
    """Raises ValueError unless the meta-batch splits evenly over the mesh (Acme's IMPALA check)."""
    if num_episodes % mesh.size:
        raise ValueError(
            f"the {num_episodes} episodes of an iteration (population_size_meta x meta_batch_size) must divide "
            f"evenly over the learner's {mesh.size} devices"
        )


def data_parallel_update(
    learner: Learner, mesh: Mesh
) -> Callable[[TrainState, MetaEpisode], tuple[TrainState, dict[str, jax.Array]]]:
    """`learner.update` jitted with the state replicated and the batch sharded by episode over `mesh`.

    Args:
      learner: the learner whose (unchanged) `update` is compiled.
      mesh: the learner's device mesh (`learner_mesh`).

    Returns:
      update(state, batch) -> (state, metrics): state and metrics replicated; batch leaves [P·N, ...].

    Raises:
      ValueError: if JAX's `jax_threefry_partitionable` is off. The update draws its PPO minibatch permutations
        inside a `vmap` over agents whose axis is sharded here; with the legacy threefry lowering the SPMD
        partitioner then produces DIFFERENT random numbers than one device does (measured: other minibatches,
        parameters off by ~1e-3 after one update), while with the partitionable lowering the update is bitwise
        the one-device update. Importing `coala_dist` turns it on (the project's default on both profiles), so
        this only fires for a user who set `JAX_THREEFRY_PARTITIONABLE=0`.
    """
    if not jax.config.jax_threefry_partitionable:
        raise ValueError(
            "a multi-device learner needs jax_threefry_partitionable=True, the project's default (unset "
            "JAX_THREEFRY_PARTITIONABLE=0): otherwise sharding changes the update's random minibatches"
        )
    state_sharding, batch_sharding = replicated(mesh), episode_sharded(mesh)
    return jax.jit(
        learner.update, in_shardings=(state_sharding, batch_sharding), out_shardings=(state_sharding, state_sharding)
    )


def process_episode_range(mesh: Mesh, num_episodes: int) -> range:
    """The contiguous block of the episode axis that this process's devices hold."""
    index_map = episode_sharded(mesh).addressable_devices_indices_map((num_episodes,))
    starts = sorted(index[0].start or 0 for index in index_map.values())
    stops = sorted(num_episodes if index[0].stop is None else index[0].stop for index in index_map.values())
    block = range(starts[0], stops[-1])
    if len(block) != sum(stop - start for start, stop in zip(starts, stops, strict=True)):
        raise ValueError(f"this process's devices do not hold a contiguous block of the {num_episodes} episodes")
    return block


def global_batch(local_batch: Any, mesh: Mesh, num_episodes: int) -> Any:
    """The global, episode-sharded batch from this process's block of it (numpy leaves [block, ...]).

    One process: a plain sharded `device_put`. Several: each contributes its block
    (`jax.make_array_from_process_local_data`); the blocks must be those of `process_episode_range`.
    """
    sharding = episode_sharded(mesh)
    if jax.process_count() == 1:
        return jax.device_put(local_batch, sharding)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, x, (num_episodes,) + x.shape[1:]), local_batch
    )
