"""The distributed program in one process: work layout, replay tables, the learner's batch rules, sync and async runs.

The end-to-end checks run `launch=inprocess` (actor threads, an embedded replay server of each in-process backend)
on the tiny experiment and compare with the plain in-process loop (`coala_dist.train.train`), an independent path
that never touches a replay.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from helpers import with_fields
from replay_contract import CONTRACT, SMALL

from coala_dist.builder import build
from coala_dist.config import episodes_per_iteration, validate
from coala_dist.distributed import work
from coala_dist.distributed.codec import TreeCodec, episode_codec, params_codec
from coala_dist.distributed.launch import run_inprocess
from coala_dist.distributed.params import NodeStoppedError, ParamsPublisher
from coala_dist.distributed.program import make_program
from coala_dist.distributed.replay import (
    FixedReplayLocation,
    ReplayBackendError,
    ReplayLink,
    ReplayUnavailableError,
    TableSpec,
    connect,
    resolve_backend,
    reverb_installed,
    start_server,
)
from coala_dist.distributed.replay_node import table_specs
from coala_dist.distributed.replay_queues import QueueStore
from coala_dist.distributed.replay_source import ReplayBatchSource
from coala_dist.learner import TrainState
from coala_dist.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _never() -> bool:
    return False


def _link(address: str) -> ReplayLink:
    return ReplayLink(FixedReplayLocation(address), 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Layout: work units, actors, learner shares and tables.
def test_work_units_cover_every_episode_once_and_actors_split_them(tiny_config):
    config = with_fields(tiny_config, distributed__work_units_per_agent=2)  # P=2 agents x N=4 episodes, units of 2
    units = work.work_units(config)
    indices = np.concatenate([unit.episode_indices()[0] for unit in units])
    np.testing.assert_array_equal(indices, np.arange(8))
    for unit in units:  # one ego agent per unit (Rollout.episodes shares the ego params along a row)
        assert set(unit.episode_indices()[0] // config.meta_batch_size) == {unit.agent}
    for num_actors in (1, 3, 5):
        shares = [work.actor_work_units(config, a, num_actors) for a in range(num_actors)]
        assert sorted((u.agent, u.chunk) for share in shares for u in share) == [(u.agent, u.chunk) for u in units]


def test_learner_shares_and_tables_route_each_episode_to_one_consumer(tiny_config):
    config = with_fields(tiny_config, distributed__num_learner_processes=2, distributed__work_units_per_agent=2)
    assert work.learner_share(config, 0) == range(0, 4) and work.learner_share(config, 1) == range(4, 8)
    # With P=2, N=4 the first learner process owns agent 0's episodes, the second agent 1's.
    assert work.learner_tables(config, 0) == {"episodes_agent0_learner0": 4}
    assert work.learner_tables(config, 1) == {"episodes_agent1_learner1": 4}
    for unit in work.work_units(config):
        owner = work.learner_process_of(config, unit.first_episode)
        assert work.unit_table(config, unit) in work.learner_tables(config, owner)
    # P=3: 12 episodes in shares of 6; agent 1's episodes 4..7 are split between both processes (units of 2).
    three = with_fields(
        tiny_config,
        population_size_meta=3,
        distributed__num_learner_processes=2,
        distributed__work_units_per_agent=2,
    )
    validate(three)
    assert work.learner_tables(three, 0) == {"episodes_agent0_learner0": 4, "episodes_agent1_learner0": 2}
    assert work.learner_tables(three, 1) == {"episodes_agent1_learner1": 2, "episodes_agent2_learner1": 4}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"distributed__mode": "eventually"}, "config.distributed.mode='eventually' is invalid: must be one of sync"),
        ({"distributed__num_actors": -1}, "config.distributed.num_actors=-1 is invalid: must be an integer >= 0"),
        ({"distributed__work_units_per_agent": 3}, "must divide meta_batch_size=4"),
        ({"distributed__num_learner_processes": 3}, "config.distributed.num_learner_processes=3"),
        ({"distributed__max_policy_lag": -1}, "config.distributed.max_policy_lag=-1"),
        ({"distributed__rpc_timeout_s": 0.0}, "config.distributed.rpc_timeout_s=0.0"),
        ({"distributed__start_timeout_s": -5.0}, "config.distributed.start_timeout_s=-5.0"),
    ],
)
def test_bad_distributed_config_is_one_line_naming_the_field(tiny_config, fields, message):
    with pytest.raises(ValueError) as error:
        validate(with_fields(tiny_config, **fields))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_make_program_validates_options_before_building_nodes(tiny_config):
    with pytest.raises(ValueError, match="launch='cloud' is invalid"):
        make_program(tiny_config, launch="cloud")
    with pytest.raises(ValueError, match="num_actors=0 is invalid"):
        make_program(tiny_config, launch="local", num_actors=0)
    with pytest.raises(ValueError, match="needs launch local or ray"):
        make_program(with_fields(tiny_config, distributed__num_learner_processes=2), launch="inprocess")
    with pytest.raises(ValueError, match="only applies to launch ray"):
        make_program(with_fields(tiny_config, distributed__learner_accelerator="tpu"), launch="local")
    program = make_program(tiny_config, launch="ray", num_actors=3, mode="async", workdir="relative/dir")
    assert program.config.distributed.mode == "async" and len(program.actors) == 3
    assert os.path.isabs(program.workdir)
    # A Cloud TPU run's workdir is a bucket: kept as given (not turned into a local path under the current folder).
    assert make_program(tiny_config, launch="ray", workdir="gs://bucket/run").workdir == "gs://bucket/run"
    assert program.actor_spec(7).name == "actor/7"  # a scaled job's actor beyond the first ones
    assert all(spec.cpu_only for spec in program.actors) and not program.learners[0].cpu_only
    assert program.actors[0].ray_options == {"resources": {"coala_actor_slot": 1}}
    assert program.learners[0].ray_options == {"resources": {"coala_learner_host": 1}}


def test_multi_device_update_refuses_the_legacy_random_lowering(tiny_components):
    from coala_dist.distributed.sharding import data_parallel_update, learner_mesh

    with jax.threefry_partitionable(False), pytest.raises(ValueError, match="JAX_THREEFRY_PARTITIONABLE"):
        data_parallel_update(tiny_components.learner, learner_mesh())


# ---------------------------------------------------------------------------------------------------------------------
# The replay interface on the in-process backends (an embedded server; no JAX): queues everywhere, Reverb where the
# profile has it. The same contract runs on the Ray backend in test_ray_local.py.
LOCAL_BACKENDS = ("queues", "reverb") if reverb_installed() else ("queues",)


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
@pytest.mark.parametrize("check", CONTRACT, ids=lambda check: check.__name__)
def test_replay_contract(check, backend):
    check(backend)


@pytest.mark.skipif(not reverb_installed(), reason="Reverb exists only in the reverb profile (its CI leg runs this)")
def test_a_reverb_take_left_waiting_by_its_server_ends_when_the_caller_gives_up():
    """Reverb's sampler has no timeout: asked for more items than the queue holds (what a take sees when its server
    was replaced between `sizes()` and the sample), it waits. The take polls `give_up` and ends with
    ReplayUnavailableError once it says so. (The abandoned sampler still waits on its table, which is why a take
    gives up only when the server that held the items is gone; another table's take is unaffected.)"""
    tables = [TableSpec("gone", SMALL, queue_capacity=4), TableSpec("q", SMALL, queue_capacity=4)]
    server = start_server("reverb", tables)
    try:
        client = connect(server.address, rpc_timeout_s=0.2)
        asked: list[float] = []
        start = time.monotonic()
        with pytest.raises(ReplayUnavailableError, match="gave up taking 2 items of gone"):
            client.take("gone", 2, give_up=lambda: asked.append(time.monotonic()) or len(asked) >= 3)
        assert len(asked) == 3 and time.monotonic() - start < 10
        writer = client.writer()
        writer.add("q", [np.full((3,), 2.0, np.float32), np.asarray(6, np.int32)])
        assert writer.flush(5.0, lambda: False)
        (item,) = client.take("q", 1, give_up=lambda: False)
        assert int(item[1]) == 6 and float(item[0][0]) == 2.0
    finally:
        server.stop()


def test_store_refuses_an_item_of_the_wrong_signature():
    store = QueueStore([TableSpec("q", SMALL, queue_capacity=2)])
    with pytest.raises(ValueError, match="does not match table 'q'"):
        store.put("q", [[np.zeros((3,), np.float64), np.asarray(0, np.int32)]], 0.1)
    assert store.sizes() == {"q": 0}


@pytest.mark.parametrize(
    ("requested", "launch", "message"),
    [
        ("queues", "local", "replay=queues cannot serve launch local"),
        ("ray", "inprocess", "replay=ray cannot serve launch inprocess"),
        ("zmq", "inprocess", "replay='zmq' is invalid"),
    ],
)
def test_impossible_backend_is_one_line(requested, launch, message):
    with pytest.raises(ReplayBackendError, match=message):
        resolve_backend(requested, launch)


def test_auto_backend_never_listens_unauthenticated():
    """`auto` picks the socket-free queues in process and Ray's authenticated transport otherwise, on both profiles:
    Reverb (no bind address, no authentication) runs only when asked for."""
    expected = ("queues", "ray", "ray")
    assert tuple(resolve_backend("auto", launch) for launch in ("inprocess", "local", "ray")) == expected
    if not reverb_installed():
        with pytest.raises(ReplayBackendError, match="needs the reverb profile"):
            resolve_backend("reverb", "inprocess")


def test_tree_codec_round_trip_and_shape_check():
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": (np.int32(7), np.array([True, False]))}
    codec = TreeCodec.from_abstract(tree)
    items = codec.unstack(jax.tree_util.tree_map(lambda x: np.stack([x, x]), tree))
    assert len(items) == 2
    back = codec.stack(items)
    np.testing.assert_array_equal(back["a"][1], tree["a"])
    assert back["b"][1].dtype == np.bool_
    with pytest.raises(ValueError, match="does not match"):
        codec.flatten({"a": np.zeros((3, 2), np.float32), "b": (np.int32(0), np.array([True, False]))})


# ---------------------------------------------------------------------------------------------------------------------
# The learner's batch rules, on hand-written episodes in a real replay server.
@pytest.fixture(scope="module")
def tiny_episode_codec(tiny_components, tiny_config):
    return episode_codec(tiny_components, tiny_config.meta_batch_size)


def _episode(codec: TreeCodec, *, version: int, index: int, meta_batch_size: int) -> list[np.ndarray]:
    """A zero episode with the given version and index (and the ego agent its index implies), against naive
    co-player 0 (a possible episode: `episode_problem` accepts it)."""
    fields = codec.unflatten([np.zeros(spec.shape, spec.dtype) for spec in codec.specs])
    fields = fields._replace(
        policy_version=np.int32(version),
        episode_index=np.int32(index),
        ego_id=np.int32(index // meta_batch_size),
        coplayer_is_naive=np.bool_(True),
    )
    return codec.flatten(fields)


def _state_at(version: int) -> TrainState:
    # The batch source reads only the version when it does not publish.
    return TrainState(None, None, None, None, np.int32(0), np.int32(version), np.int32(0))


def _write(address: str, items: list[tuple[str, list[np.ndarray]]]) -> None:
    writer = connect(address, 1.0).writer()
    for table, item in items:
        writer.add(table, item)
    assert writer.flush(1.0, _never)
    writer.close()


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_sync_source_takes_exactly_its_version_sorted_and_drops_the_rest(
    tiny_config, tiny_components, tiny_episode_codec, backend
):
    config = with_fields(tiny_config, distributed__queue_capacity_work_units=4, distributed__poll_interval_s=0.01)
    server = start_server(backend, table_specs(config, tiny_components))
    try:
        address = server.address
        n = config.meta_batch_size
        rng = np.random.default_rng(0)
        items = [
            (work.episode_table(0, 0), _episode(tiny_episode_codec, version=1, index=i, meta_batch_size=n))
            for i in range(3)
        ]  # stale: written for the previous version
        for index in rng.permutation(8):
            items.append(
                (
                    work.episode_table(index // n, 0),
                    _episode(tiny_episode_codec, version=2, index=int(index), meta_batch_size=n),
                )
            )
        items.insert(5, (work.episode_table(0, 0), _episode(tiny_episode_codec, version=2, index=1, meta_batch_size=n)))
        _write(address, items)
        source = ReplayBatchSource(
            config,
            tiny_components,
            _link(address),
            learner_process=0,
            publisher=None,
            should_stop=_never,
        )
        batch, metrics = source.next(_state_at(2))
        np.testing.assert_array_equal(batch.episode_index, np.arange(8))
        np.testing.assert_array_equal(batch.policy_version, np.full(8, 2))
        np.testing.assert_array_equal(batch.ego_id, np.arange(8) // n)
        assert source.dropped_stale == 3 and source.dropped_duplicates == 1
        assert metrics["replay/policy_lag_max"] == 0 and metrics["replay/episodes"] == 8
    finally:
        server.stop()


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_async_source_drops_episodes_older_than_the_lag_bound(
    tiny_config, tiny_components, tiny_episode_codec, backend
):
    config = with_fields(
        tiny_config,
        distributed__mode="async",
        distributed__max_policy_lag=1,
        distributed__queue_capacity_work_units=4,
        distributed__poll_interval_s=0.01,
    )
    server = start_server(backend, table_specs(config, tiny_components))
    try:
        address = server.address
        n = config.meta_batch_size
        versions = {0: [0, 1, 2, 3, 2, 3, 3], 1: [3, 1, 2, 2, 0, 3]}  # per agent, in insertion order
        items = []
        for agent, agent_versions in versions.items():
            for k, version in enumerate(agent_versions):
                index = agent * n + k % n
                items.append(
                    (
                        work.episode_table(agent, 0),
                        _episode(tiny_episode_codec, version=version, index=index, meta_batch_size=n),
                    )
                )
        _write(address, items)
        source = ReplayBatchSource(
            config, tiny_components, _link(address), learner_process=0, publisher=None, should_stop=_never
        )
        source.dropped_stale = 5  # as if earlier iterations of this process had dropped 5: the metric is per iteration
        batch, metrics = source.next(_state_at(3))
        # The source reads at most what it still needs. Agent 0 reads v0 v1 v2 v3 (two dropped), then v2 v3, and
        # leaves the last v3 queued; agent 1 reads v3 v1 v2 v2 (one dropped), then v0 (dropped), then v3.
        np.testing.assert_array_equal(batch.ego_id, [0, 0, 0, 0, 1, 1, 1, 1])
        np.testing.assert_array_equal(batch.policy_version, [2, 2, 3, 3, 2, 2, 3, 3])  # sorted within an agent
        assert source.dropped_stale == 5 + 4 and sorted(source.consumed_lags) == [0, 0, 0, 0, 1, 1, 1, 1]
        assert metrics["replay/policy_lag_max"] == 1.0 and metrics["replay/dropped_stale"] == 4
        sizes = connect(address, 1.0).sizes()
        assert sizes[work.episode_table(0, 0)] == 1 and sizes[work.episode_table(1, 0)] == 0
    finally:
        server.stop()


class _MovableLocation:
    """A replay location the test moves, as the Ray launcher's moves when it restarts a dead replay node."""

    def __init__(self, address: str):
        self.found = (address, "incarnation 0")

    def lookup(self) -> tuple[str, str]:
        return self.found


def test_a_source_follows_a_restarted_replay_node_publishes_again_and_collects_the_version_afresh(
    tiny_config, tiny_components, tiny_state, tiny_episode_codec
):
    """The replay node dies halfway through an iteration (the learner has taken 5 of its 8 episodes) and comes back
    empty at a new address: the source notices the new incarnation, publishes the parameters there again, and takes
    the version's episodes that the actors roll out again, as if nothing had happened."""
    config = with_fields(tiny_config, distributed__poll_interval_s=0.01, distributed__data_timeout_s=30.0)
    tables = table_specs(config, tiny_components)
    old, new = start_server("queues", tables), start_server("queues", tables)
    version, n = int(tiny_state.version), config.meta_batch_size

    def episodes(indices):
        return [
            (work.episode_table(i // n, 0), _episode(tiny_episode_codec, version=version, index=i, meta_batch_size=n))
            for i in indices
        ]

    location = _MovableLocation(old.address)
    link = ReplayLink(location, 1.0, check_interval_s=0.0)
    publisher = ParamsPublisher(tiny_components, link.client, params_codec(tiny_components))
    lines: list[str] = []
    source = ReplayBatchSource(
        config, tiny_components, link, learner_process=0, publisher=publisher, should_stop=_never, log=lines.append
    )

    def until(condition) -> bool:
        deadline = time.monotonic() + 30.0
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        return condition()

    def replay_node_dies_and_comes_back():
        _write(old.address, episodes([0, 1, 2, 4, 5]))
        assert until(lambda: connect(old.address, 1.0).sizes()[work.episode_table(0, 0)] == 0)  # the learner took them
        old.stop()
        location.found = (new.address, "incarnation 1")
        client = connect(new.address, 1.0)
        # Actors wait for the parameters, published again, then roll out the whole version again.
        if until(lambda: client.latest(work.PARAMS_VERSION_TABLE) is not None):
            _write(new.address, episodes(range(8)))

    try:
        helper = threading.Thread(target=replay_node_dies_and_comes_back, daemon=True)
        helper.start()
        batch, metrics = source.next(tiny_state)
        helper.join()
        np.testing.assert_array_equal(batch.episode_index, np.arange(8))
        assert metrics["replay/restarts"] == 1 and source.replay_restarts == 1
        assert int(connect(new.address, 1.0).latest(work.PARAMS_VERSION_TABLE)[0]) == version
        assert publisher.published_version == version
        assert len(lines) == 1 and "replay node restarted" in lines[0] and new.address in lines[0]
        assert source.dropped_duplicates == 0  # what the old node gave is not mixed with the new node's episodes
    finally:
        old.stop()
        new.stop()


def test_learner_wait_ends_on_stop_and_times_out_start_then_data_naming_missing_episodes(
    tiny_config, tiny_components, tiny_episode_codec
):
    """A stop ends the wait. Until the first whole batch the wait is bounded by start_timeout_s (nodes start and
    compile), after it by data_timeout_s: each bound applies alone, the other set to far longer than the test."""
    server = start_server("queues", table_specs(tiny_config, tiny_components))
    try:
        client = _link(server.address)
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        source = ReplayBatchSource(
            tiny_config, tiny_components, client, learner_process=0, publisher=None, should_stop=stop.is_set
        )
        with pytest.raises(NodeStoppedError):
            source.next(_state_at(0))

        def source_with(start: float, data: float) -> ReplayBatchSource:
            config = with_fields(
                tiny_config,
                distributed__start_timeout_s=start,
                distributed__data_timeout_s=data,
                distributed__poll_interval_s=0.01,
            )
            return ReplayBatchSource(
                config, tiny_components, client, learner_process=0, publisher=None, should_stop=_never
            )

        began = time.monotonic()
        with pytest.raises(TimeoutError, match=r"for 0.3 s while the run starts \(distributed.start_timeout_s; "):
            source_with(start=0.3, data=600.0).next(_state_at(0))
        assert time.monotonic() - began < 60

        source = source_with(start=600.0, data=0.3)
        n = tiny_config.meta_batch_size
        episodes = [
            (work.episode_table(i // n, 0), _episode(tiny_episode_codec, version=0, index=i, meta_batch_size=n))
            for i in range(episodes_per_iteration(tiny_config))
        ]
        _write(server.address, episodes)
        batch, _ = source.next(_state_at(0))  # the first whole batch
        assert len(batch.episode_index) == episodes_per_iteration(tiny_config)
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=r"no episode for 0.3 s \(still missing: episodes \[0, 1, 2"):
            source.next(_state_at(1))
        assert time.monotonic() - began < 60
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------------------
# End to end, one process.
@pytest.fixture(scope="module")
def plain_loop_state(tiny_config, tiny_components):
    """The reference: the plain in-process loop (rollout and update alternate, no replay, no threads), by the
    number of work units per agent (the same config as the distributed run it is compared with)."""
    cache = {}

    def get(work_units_per_agent: int):
        if work_units_per_agent not in cache:
            config = with_fields(tiny_config, distributed__work_units_per_agent=work_units_per_agent)
            components = tiny_components if work_units_per_agent == 1 else build(config)
            state, _ = train(config, None, components=components, log=lambda line: None)
            cache[work_units_per_agent] = jax.device_get(state)
        return cache[work_units_per_agent]

    return get


def _quick(config, **fields):
    return with_fields(config, distributed__rpc_timeout_s=1.0, distributed__poll_interval_s=0.01, **fields)


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
@pytest.mark.parametrize(
    ("num_actors", "work_units_per_agent"),
    # One actor does everything; three actors share four work units of two episodes unevenly (a config of its own:
    # the 2-episode rollout compiles).
    [(1, 1), pytest.param(3, 2, marks=pytest.mark.slow)],
)
def test_sync_inprocess_gives_the_plain_loop_parameters_bitwise(
    tiny_config, tiny_components, plain_loop_state, num_actors, work_units_per_agent, backend
):
    config = _quick(tiny_config, distributed__work_units_per_agent=work_units_per_agent)
    program = make_program(config, launch="inprocess", num_actors=num_actors, mode="sync", replay=backend)
    assert program.config.distributed.replay == backend
    result = run_inprocess(program, components=tiny_components, log=lambda line: None)
    assert int(result.state.step) == tiny_config.training_iterations
    expected_state = plain_loop_state(work_units_per_agent)
    for expected, actual in zip(
        jax.tree_util.tree_leaves(expected_state), jax.tree_util.tree_leaves(result.state), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))
    episodes = tiny_config.training_iterations * 8
    assert result.consumed_lags == [0] * episodes
    assert len(result.actor_stats) == num_actors
    assert sum(stats["episodes"] for stats in result.actor_stats) == episodes
    assert all(row["replay/policy_lag_max"] == 0 for row in result.history)


def test_async_inprocess_consumes_no_episode_older_than_the_lag_bound(tiny_config, tiny_components):
    config = _quick(tiny_config, training_iterations=5, distributed__max_policy_lag=1)
    program = make_program(config, launch="inprocess", num_actors=2, mode="async")
    result = run_inprocess(program, components=tiny_components, log=lambda line: None)
    assert int(result.state.step) == 5 and len(result.history) == 5
    assert len(result.consumed_lags) == 5 * 8
    assert max(result.consumed_lags) <= 1  # (never negative: `episode_problem` drops episodes from the future)
    assert all(row["replay/policy_lag_max"] <= 1 for row in result.history)
    leaves = jax.tree_util.tree_leaves(result.state.meta_params)
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in leaves)


# ---------------------------------------------------------------------------------------------------------------------
# The command line.
@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--launch=ray"], "--launch=ray needs --ray_address"),
        (["--launch=local", "--num_actors=0"], "--num_actors=0 is invalid with --launch=local"),
    ],
)
def test_bad_launch_option_is_one_line(flags, message):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", "train", "--config=configs/ipd_tiny.py", *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert message in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", LOCAL_BACKENDS)
def test_malformed_episodes_are_rejected_counted_and_never_reach_the_batch(
    tiny_config, tiny_components, tiny_episode_codec, backend
):
    """What a writer with the table's signature can still get wrong: the source names and counts each such episode,
    keeps waiting for the real one, and returns exactly the valid batch."""
    config = with_fields(tiny_config, distributed__queue_capacity_work_units=4, distributed__poll_interval_s=0.01)
    n = config.meta_batch_size
    server = start_server(backend, table_specs(config, tiny_components))

    def episode(index, table_agent=None, **fields):
        item = _episode(tiny_episode_codec, version=2, index=index, meta_batch_size=n)
        decoded = tiny_episode_codec.unflatten(item)._replace(**fields)
        agent = index // n if table_agent is None else table_agent
        return work.episode_table(agent, 0), tiny_episode_codec.flatten(decoded)

    zeros = tiny_episode_codec.unflatten([np.zeros(s.shape, s.dtype) for s in tiny_episode_codec.specs])
    bad = [
        episode(0, rewards=np.full_like(zeros.rewards, np.nan)),
        episode(1, actions=np.full_like(zeros.actions, 7)),
        episode(5, table_agent=0),  # agent 1's episode in agent 0's table
        episode(2, ego_id=np.int32(1)),
        episode(3, policy_version=np.int32(3)),  # from a version the learner has not published
        episode(4, coplayer_is_naive=np.bool_(False), coplayer_id=np.int32(1)),  # a meta agent playing itself
    ]
    try:
        _write(server.address, bad + [episode(i) for i in range(8)])
        lines = []
        source = ReplayBatchSource(
            config,
            tiny_components,
            _link(server.address),
            learner_process=0,
            publisher=None,
            should_stop=_never,
            log=lines.append,
        )
        batch, metrics = source.next(_state_at(2))
        np.testing.assert_array_equal(batch.episode_index, np.arange(8))
        assert np.all(np.isfinite(batch.rewards)) and int(batch.actions.max()) < tiny_components.env.num_actions
        assert source.dropped_malformed == 6 and metrics["replay/dropped_malformed"] == 6
        assert source.dropped_stale == source.dropped_duplicates == 0
        reasons = ("non-finite rewards", "actions outside", "does not belong to this table", "ego_id 1 does not match",
                   "newer than the learner's 2")
        assert len(lines) == 5 and all(r in line for r, line in zip(reasons, lines, strict=True)), lines
        assert "further ones are only counted" in lines[-1]
    finally:
        server.stop()
