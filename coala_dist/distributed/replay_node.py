"""The replay node: a replay server (backend `config.distributed.replay`) whose tables are fixed by the config."""

from __future__ import annotations

import threading
from collections.abc import Callable

import ml_collections

from coala_dist.builder import Components, build
from coala_dist.config import episodes_per_work_unit
from coala_dist.distributed.codec import LeafSpec, episode_codec, params_codec
from coala_dist.distributed.replay import TableSpec, resolve_backend, start_server
from coala_dist.distributed.work import PARAMS_TABLE, PARAMS_VERSION_TABLE, all_episode_tables


def table_specs(config: ml_collections.ConfigDict, components: Components) -> list[TableSpec]:
    """Every table of the program: one episode queue per (agent, learner process), params and params_version.

    Signatures come from `jax.eval_shape` of the rollout and of the learner's state (no computation).
    """
    episodes = episode_codec(components, episodes_per_work_unit(config))
    capacity = config.distributed.queue_capacity_work_units * episodes_per_work_unit(config)
    tables = [TableSpec(name, episodes.specs, queue_capacity=capacity) for name in all_episode_tables(config)]
    tables.append(TableSpec(PARAMS_TABLE, params_codec(components).specs))
    tables.append(TableSpec(PARAMS_VERSION_TABLE, (LeafSpec((), "int32"),)))
    return tables


class ReplayNode:
    """Starts the replay server when built; `run()` blocks until stopped; `stop()` shuts the server down.

    Args:
      config: the experiment config.
      components: prebuilt components (only their shapes are used); built if None.
      host: the host name other nodes reach this one by.
      should_stop: ends `run()` when it returns True (polled every 0.2 s).
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        *,
        components: Components | None = None,
        host: str = "localhost",
        should_stop: Callable[[], bool] | None = None,
    ):
        components = components or build(config)
        # make_program resolved `auto` for its launch; a node built without it (tests) resolves it for one process.
        backend = config.distributed.replay
        if backend == "auto":
            backend = resolve_backend(backend, "inprocess")
        tables = table_specs(config, components)
        self._server = start_server(backend, tables, port=config.distributed.replay_port, host=host)
        self.address = self._server.address
        self._stopped = threading.Event()
        self._should_stop = should_stop or self._stopped.is_set

    def run(self) -> None:
        while not (self._stopped.wait(0.2) or self._should_stop()):
            pass

    def stop(self) -> None:
        self._stopped.set()
        self._server.stop()
