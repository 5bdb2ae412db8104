"""The data-parallel learner: 8 fake CPU devices, and two `jax.distributed` processes, give the 1-device update.

Each check runs `_worker` in fresh subprocesses (device counts and process groups are fixed when JAX starts): it
rebuilds the tiny experiment, loads the TrainState and meta-batch the test saved, contributes its own block of the
batch (`sharding.process_episode_range`, `sharding.global_batch`) and applies `sharding.data_parallel_update`. The
reference is the plain jitted `Learner.update` on one device in this process.

Run as a script, this file is that worker: `python tests/test_distributed_sharding.py DIR PROCESSES PROCESS_ID ADDR`.
"""

from __future__ import annotations

import os
import subprocess
import sys

if __name__ == "__main__":  # the worker configures XLA before its first JAX import, as the CLI does
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from coala_dist import xla_flags

    xla_flags.configure()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import portpicker  # noqa: E402
import pytest  # noqa: E402

from coala_dist.rollout import MetaEpisode  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The data-parallel update needs the partitionable threefry lowering (see `sharding.data_parallel_update`). It is the
# project's default (coala_dist/__init__.py): the workers start WITHOUT the variable, so they prove nobody has to
# set it by hand, and the reference here uses the session's default.
TOLERANCE = 1e-5  # all-reduces sum partial means in another order than one device does
pytestmark = pytest.mark.slow  # every check starts JAX processes that compile the update for their devices


def _save_batch(path: str, batch: MetaEpisode) -> None:
    fields = {name: np.asarray(value) for name, value in batch._asdict().items() if name != "metrics"}
    fields.update({f"metrics/{name}": np.asarray(value) for name, value in batch.metrics.items()})
    np.savez(path, **fields)


def _load_batch(path: str) -> MetaEpisode:
    data = np.load(path)
    metrics = {name.split("/", 1)[1]: data[name] for name in data.files if name.startswith("metrics/")}
    return MetaEpisode(**{name: data[name] for name in data.files if "/" not in name}, metrics=metrics)


def _worker(directory: str, num_processes: int, process_id: int, coordinator: str) -> None:
    """One learner process: the sharded update of the saved state and batch; process 0 writes the new params."""
    from conftest import load_config

    from coala_dist.builder import build
    from coala_dist.distributed import sharding

    if num_processes > 1:
        assert sharding.initialize_learner_group(coordinator, num_processes, process_id) == process_id
    config = load_config("ipd_tiny")
    components = build(config)
    abstract = jax.eval_shape(components.learner.init, jax.random.PRNGKey(config.seed))
    saved = np.load(os.path.join(directory, "state.npz"))
    state = jax.tree_util.tree_unflatten(
        jax.tree_util.tree_structure(abstract), [saved[f"arr_{i}"] for i in range(len(saved.files))]
    )
    batch = _load_batch(os.path.join(directory, "batch.npz"))
    num_episodes = batch.actions.shape[0]
    mesh = sharding.learner_mesh()
    sharding.check_batch_divides(num_episodes, mesh)
    state = jax.device_put(state, sharding.replicated(mesh))
    block = sharding.process_episode_range(mesh, num_episodes)
    local = jax.tree_util.tree_map(lambda x: x[block.start : block.stop], batch)
    global_batch = sharding.global_batch(local, mesh, num_episodes)
    new_state, metrics = sharding.data_parallel_update(components.learner, mesh)(state, global_batch)
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(new_state.meta_params)]
    print(f"process {jax.process_index()} devices {mesh.size} block {block.start}:{block.stop}", flush=True)
    if jax.process_index() == 0:
        np.savez(os.path.join(directory, "updated.npz"), *leaves, loss=np.asarray(metrics["learner/loss"]))


@pytest.fixture(scope="module")
def saved_update(tiny_components, tiny_config, tmp_path_factory):
    """A state and batch on disk, and the 1-device update of them (the reference)."""
    directory = tmp_path_factory.mktemp("sharded_update")
    state = tiny_components.learner.init(jax.random.PRNGKey(tiny_config.seed))
    batch = tiny_components.rollout_episodes(
        state.meta_params,
        tiny_components.learner.naive_initialisations(state),
        state.run_key,
        state.version,
        tiny_components.rollout.iteration_indices(),
    )
    assert jax.config.jax_threefry_partitionable  # the default, not set by this test
    expected, metrics = tiny_components.learner_update(state, batch)
    np.savez(directory / "state.npz", *[np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(state)])
    _save_batch(str(directory / "batch.npz"), batch)
    return directory, expected, float(metrics["learner/loss"])


def _spawn(directory, num_processes: int, process_id: int, coordinator: str, device_count: int):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={device_count}".strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)  # the session's flags (conftest.py) as well
    env.pop("JAX_THREEFRY_PARTITIONABLE", None)  # importing coala_dist sets it
    args = [sys.executable, __file__, str(directory), str(num_processes), str(process_id), coordinator]
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(processes) -> list[str]:
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=400)
            assert process.returncode == 0, err[-3000:]
            outputs.append(out)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return outputs


def _assert_matches(directory, expected, expected_loss) -> None:
    updated = np.load(directory / "updated.npz")
    initial = np.load(directory / "state.npz")  # TrainState leaves: the meta params come first
    leaves = jax.tree_util.tree_leaves(expected.meta_params)
    assert len(updated.files) == len(leaves) + 1
    largest_step = 0.0
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(updated[f"arr_{i}"], np.asarray(leaf), atol=TOLERANCE, rtol=0)
        largest_step = max(largest_step, float(np.abs(np.asarray(leaf) - initial[f"arr_{i}"]).max()))
    assert largest_step > 100 * TOLERANCE  # the update moved the parameters, so agreeing on it means something
    np.testing.assert_allclose(float(updated["loss"]), expected_loss, atol=TOLERANCE, rtol=0)


def test_eight_devices_give_the_one_device_update(saved_update):
    directory, expected, loss = saved_update
    (output,) = _finish([_spawn(directory, 1, 0, "", device_count=8)])
    assert "devices 8 block 0:8" in output
    _assert_matches(directory, expected, loss)


def test_two_learner_processes_give_the_one_process_update(saved_update):
    directory, expected, loss = saved_update
    (directory / "updated.npz").unlink(missing_ok=True)
    coordinator = f"127.0.0.1:{portpicker.pick_unused_port()}"
    outputs = _finish([_spawn(directory, 2, i, coordinator, device_count=1) for i in range(2)])
    assert "process 0 devices 2 block 0:4" in outputs[0]
    assert "process 1 devices 2 block 4:8" in outputs[1]
    _assert_matches(directory, expected, loss)


if __name__ == "__main__":
    _worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
