"""Publishing parameters (learner) and polling them (actors), the version travelling with the parameters.

`ParamsPublisher` writes the `PublishedParams` of a state's version to the replay node once per version, then the
version alone to a tiny table. `ParamsClient` is Acme's VariableClient: actors poll the version table and fetch the
parameters only when it changed, on a single background thread, so an asynchronous actor never waits for them
(`update(wait=False)` skips a fetch while the previous one is still running); `wait_for_newer` is the blocking
form sync actors use. Every wait has a stop check.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from coala_dist.builder import Components
from coala_dist.distributed.codec import PublishedParams, TreeCodec, published_params
from coala_dist.distributed.replay import ReplayClient, ReplayTimeoutError, connect
from coala_dist.distributed.work import PARAMS_TABLE, PARAMS_VERSION_TABLE
from coala_dist.learner import TrainState


class NodeStoppedError(Exception):
    """Raised by a blocking wait when its node was asked to stop."""


class ParamsPublisher:
    """Learner side. Only the primary learner process publishes (the others hold the same replicated params)."""

    def __init__(self, components: Components, client: ReplayClient, codec: TreeCodec, num_actors: int = 1):
        self._components, self._client, self._codec = components, client, codec
        self._writer = client.writer()
        self.published_version: int | None = None
        self.published_num_actors: int | None = None
        # Published with every version; a new count (a scaled job) applies from the next version on.
        self.num_actors = num_actors

    def publish(self, state: TrainState, should_stop: Callable[[], bool]) -> None:
        """Publishes `state`'s parameters unless this version already was; raises NodeStoppedError if stopped."""
        version = int(state.version)
        if version == self.published_version:
            return
        num_actors = self.num_actors
        params = jax.device_get(published_params(self._components, state, num_actors))
        self._writer.add(PARAMS_TABLE, self._codec.flatten(params))
        # Parameters first, version second: an actor that sees version v finds parameters of version >= v.
        if not self._writer.flush(self._client.rpc_timeout_s, should_stop):
            raise NodeStoppedError
        self._writer.add(PARAMS_VERSION_TABLE, [np.asarray(version, np.int32)])
        if not self._writer.flush(self._client.rpc_timeout_s, should_stop):
            raise NodeStoppedError
        self.published_version, self.published_num_actors = version, num_actors

    def reconnect(self, client: ReplayClient) -> None:
        """Publishes through `client` from now on (a restarted replay node: every version is published again)."""
        with contextlib.suppress(Exception):  # its server is gone: nothing to flush
            self._writer.close()
        self._client, self._writer, self.published_version = client, client.writer(), None

    def close(self) -> None:
        self._writer.close()


class ParamsClient:
    """Actor side: the latest published parameters, fetched on one background thread.

    Attributes:
      params: the newest `PublishedParams` fetched so far (device arrays), or None before the first.
      version: its version, -1 before the first.
    """

    def __init__(self, address: str, codec: TreeCodec, rpc_timeout_s: float, device: Any = None):
        # Its own client, used only from the fetch thread.
        self._client = connect(address, rpc_timeout_s)
        self._codec, self._device = codec, device
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="params-client")
        self._future: concurrent.futures.Future | None = None
        self.params: PublishedParams | None = None
        self.version = -1

    def _fetch_if_newer(self, known_version: int) -> PublishedParams | None:
        try:
            item = self._client.latest(PARAMS_VERSION_TABLE)
            if item is None or int(item[0]) <= known_version:
                return None
            params = self._codec.unflatten(self._client.latest(PARAMS_TABLE))
        except ReplayTimeoutError:  # a slow server: the caller polls again
            return None
        # Place once per version, not once per rollout (Acme's VariableClient `device`).
        return jax.device_put(params, self._device)

    def _take(self, params: PublishedParams | None) -> None:
        if params is not None and int(params.version) > self.version:
            self.params, self.version = params, int(params.version)

    def update(self) -> None:
        """Non-blocking: adopts the result of a finished fetch and starts the next one if none is running."""
        if self._future is not None and self._future.done():
            future, self._future = self._future, None
            self._take(future.result())
        if self._future is None:
            self._future = self._executor.submit(self._fetch_if_newer, self.version)

    def wait_for_newer(self, version: int, poll_interval_s: float, should_stop: Callable[[], bool]) -> None:
        """Blocks until parameters newer than `version` are held; raises NodeStoppedError if stopped first."""
        while self.version <= version:
            if should_stop():
                raise NodeStoppedError
            if self._future is None:
                self._future = self._executor.submit(self._fetch_if_newer, self.version)
            try:
                params = self._future.result(timeout=self._client.rpc_timeout_s)
            except concurrent.futures.TimeoutError:
                continue  # the fetch is still running: check the stop event and wait again
            self._future = None
            self._take(params)
            if self.version <= version:
                time.sleep(poll_interval_s)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
