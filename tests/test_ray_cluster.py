"""`--launch=ray` on a real multi-node Ray cluster, started on this machine the way a user starts one.

`ray start --head` (a node offering the learner's resource and the one the replay is placed with) plus two
`ray start --address=...` worker nodes (one actor slot each); `coala train --launch=ray --ray_address=...` runs
against it; the raylet of the node that hosts the actor is SIGKILLed mid-run. Ray restarts the actor on the other
worker node and the sync run ends with the parameters of the plain in-process loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import portpicker
import psutil
import pytest
from helpers import coala_train_command, with_command_line_part, with_fields

from coala_dist.checkpoint import Checkpointer, abstract_train_state
from coala_dist.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

ITERATIONS = 8
REPLAY_HOST = "coala_test_replay_host"  # offered by the head only: the replay node stays on the head


def _ray(*args: str, env: dict[str, str]) -> None:
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    result = subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def _cluster_processes(temp_dir: str) -> list[psutil.Process]:
    """The Ray server processes of the cluster whose session lives under `temp_dir` (GCS, raylets, agents)."""
    return with_command_line_part(psutil.process_iter(), temp_dir)


def _raylet_hosting(title: str, temp_dir: str) -> tuple[psutil.Process, psutil.Process] | None:
    """(the Ray worker process titled `title`, its node's raylet) in the cluster under `temp_dir`, if running."""
    for process in _cluster_processes(temp_dir):
        with contextlib.suppress(psutil.Error):  # a process of the cluster may exit while we look (idle workers)
            if process.name() == "raylet":
                for worker in with_command_line_part(process.children(), title):
                    return worker, process
    return None


@pytest.fixture
def cluster():
    """A head and two worker nodes; yields (address, temp_dir, environment of its drivers); kills the cluster's
    processes afterwards (never `ray stop`, which stops every Ray instance on the machine, e.g. another test
    worker's)."""
    temp_dir = tempfile.mkdtemp(prefix="ray-")  # short: Ray's socket paths must fit in 107 characters
    port = portpicker.pick_unused_port()
    # Token authentication as on a real cluster: every node and driver holds the cluster's token.
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    address = f"127.0.0.1:{port}"
    common = ["--disable-usage-stats", "--include-dashboard=false"]
    try:
        head_resources = json.dumps({"coala_learner_host": 1, REPLAY_HOST: 1})
        _ray(
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            "--num-cpus=2",
            f"--resources={head_resources}",
            *common,
            env=env,
        )
        for _ in range(2):
            _ray(
                "start",
                f"--address={address}",
                "--node-ip-address=127.0.0.1",
                "--num-cpus=1",
                '--resources={"coala_actor_slot": 1}',
                "--disable-usage-stats",
                env=env,
            )
        yield address, temp_dir, env
    finally:
        processes = _cluster_processes(temp_dir)
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_killing_the_actors_node_reschedules_the_actor_and_the_run_matches_the_plain_loop(
    cluster, tiny_config, tiny_components, tmp_path
):
    address, temp_dir, env = cluster
    workdir = tmp_path / "run"
    command = coala_train_command(
        workdir,
        "--launch=ray",
        f"--ray_address={address}",
        "--num_actors=1",
        f"--config.training_iterations={ITERATIONS}",
        f"--config.distributed.ray_replay_resource={REPLAY_HOST}",
        "--config.distributed.rpc_timeout_s=1",
        "--config.distributed.poll_interval_s=0.01",
    )
    log_path = tmp_path / "driver.txt"
    with open(log_path, "w") as log_file:
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        killed = raylet = None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and driver.poll() is None and killed is None:
            # The actor's raylet is looked up as soon as the actor runs, not after the second update: on a loaded
            # machine the scan of the cluster's processes can outlast the few updates left.
            if raylet is None:
                found = _raylet_hosting("ActorProcess", temp_dir)
                raylet = found[1] if found is not None else None
            metrics = workdir / "metrics.csv"
            rows = len(metrics.read_text().splitlines()) - 1 if metrics.exists() else 0
            if rows >= 2 and raylet is not None:  # after the second update: SIGKILL the raylet of the actor's node
                raylet.send_signal(signal.SIGKILL)
                killed = rows
            time.sleep(0.05)
        # A stalled run ends itself first (the learner's 600 s data timeout); the margin is for a loaded machine,
        # where the restarted actor's start alone has taken minutes.
        try:
            driver.wait(timeout=900)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the driver still ran 900 s after the kill (killed after {killed} updates):\n"
                f"{log_path.read_text()[-4000:]}"
            )
    finally:
        if driver.poll() is None:
            driver.kill()
    log = log_path.read_text()
    assert killed is not None, log[-3000:]
    assert driver.returncode == 0, log[-3000:]
    # In sync mode the learner needs the one actor's episodes for every iteration: the iterations after the kill were
    # rolled out by the actor restarted by Ray, and the only node left with a free actor slot is the other worker.
    assert killed < ITERATIONS
    assert "Traceback" not in log, log[-3000:]

    config = with_fields(tiny_config, training_iterations=ITERATIONS)
    expected, _ = train(config, None, components=tiny_components, log=lambda line: None)
    abstract = abstract_train_state(tiny_components.learner.init, jax.random.PRNGKey(config.seed))
    restored = Checkpointer(str(workdir), save_every=1, max_to_keep=3).restore_latest(abstract, config)
    assert int(restored.step) == ITERATIONS
    for x, y in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
