"""Launch `local` with the learner side changing under a running job: actors scaled up and down while it trains, and
two learner processes (one jax.distributed group) of which one is SIGKILLed after a save. Both end with the plain
loop's parameters. (Fixtures: conftest.py; helpers: ray_helpers.py.)
"""

from __future__ import annotations

import csv
import os
import threading
import time

import jax
import numpy as np
import pytest
from helpers import with_fields
from ray_helpers import (
    ITERATIONS,
    all_gone,
    assert_same_state,
    column_sum,
    metrics_rows,
    quick,
    saved_steps,
    sigkill_when,
)

from coala_dist import compat
from coala_dist.config import episodes_per_iteration
from coala_dist.distributed.control import request_scale
from coala_dist.distributed.program import make_program
from coala_dist.distributed.ray_run import run_on_ray
from coala_dist.distributed.work import work_units
from coala_dist.train import NodeFailedError, train

# Ray starts its own server processes with fork+exec (subprocess), which never runs JAX code in the child.
pytestmark = [pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning"), pytest.mark.slow]


# Room for a new actor process to start and build (its JAX import and compilation: minutes on a loaded 2-core machine)
# while the learner keeps training; a tiny iteration takes a fraction of a second.
SCALE_ITERATIONS = 150


def test_a_running_sync_job_scaled_up_and_down_ends_with_the_plain_loops_parameters(
    ray_instance, tiny_config, tiny_components, tmp_path
):
    """`coala scale` while `local` trains (sync, 1 actor): to 2 actors as soon as the job runs, then back to 1 once
    the new actor has rolled out two versions. The learner never stops; the second actor starts, takes half of the work
    units of every version published for 2 actors, and retires when the count drops; the run ends with the plain
    loop's parameters (every episode is a pure function of run key, version and index, whoever rolls it out)."""
    config = with_fields(tiny_config, training_iterations=SCALE_ITERATIONS)
    expected, _ = train(config, None, components=tiny_components, log=lambda line: None)
    workdir = tmp_path / "run"
    metrics = workdir / "metrics.csv"
    program = make_program(quick(config), launch="local", num_actors=1, workdir=str(workdir))
    requests: dict[str, int] = {}

    def scale() -> None:
        def until(condition) -> bool:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and not condition():
                time.sleep(0.05)
            return condition()

        # As soon as the job can be asked: a new actor process takes seconds to start and build its rollout.
        if until(lambda: (workdir / "control" / "driver.json").exists()):
            requests["up_from"] = request_scale(str(workdir), 2, timeout_s=600)
            requests["up_at"] = metrics_rows(metrics)
        if until(lambda: column_sum(metrics, "replay/num_actors") >= metrics_rows(metrics) + 2):  # two versions with 2
            requests["down_from"] = request_scale(str(workdir), 1, timeout_s=600)

    scaler = threading.Thread(target=scale)
    scaler.start()
    lines: list[str] = []
    result = run_on_ray(program, log=lines.append)
    scaler.join()
    assert requests.get("up_from") == 1 and requests.get("down_from") == 2, requests
    assert requests["up_at"] < SCALE_ITERATIONS - 4  # both changes happened while the learner was training
    assert [line.split(":")[0] for line in lines if "the learner's next version is split" in line] == [
        "now 2 actors (was 1)",
        "now 1 actor (was 2)",
    ]
    with open(metrics, newline="") as f:
        counts = [int(float(row["replay/num_actors"])) for row in csv.DictReader(f)]
    changes = [count for i, count in enumerate(counts) if i == 0 or count != counts[i - 1]]
    assert changes in ([1, 2, 1], [2, 1]) and counts.count(2) >= 2, counts  # (the first version may already have 2)
    assert int(result.state.step) == SCALE_ITERATIONS and metrics_rows(metrics) == SCALE_ITERATIONS
    assert_same_state(jax.device_get(expected), result.state)
    stats = sorted(result.actor_stats, key=lambda s: s["actor_id"])
    assert [s["actor_id"] for s in stats] == [0, 1]
    assert stats[1]["retired"] == 1 and stats[1]["versions"] >= 2 and stats[0]["retired"] == 0
    assert stats[0]["versions"] == SCALE_ITERATIONS  # actor 0 worked on every version, alone or with actor 1
    # Each version's work units were split between the actors its publication named: none rolled out twice.
    assert len(work_units(config)) >= 2 and result.dropped_duplicates == 0
    assert sum(s["episodes"] for s in stats) == SCALE_ITERATIONS * episodes_per_iteration(config)
    assert not (workdir / "control" / "driver.json").exists()  # the ended run can no longer be scaled
    assert all_gone("ActorProcess") and all_gone("LearnerProcess") and all_gone("ReplayProcess")

def test_two_learner_processes_of_four_devices_save_resume_after_a_sigkill_and_match_the_plain_loop(
    ray_instance, tiny_config, plain_loop_state, tmp_path, monkeypatch
):
    """Multi-host readiness: 2 learner processes × 4 CPU devices (one jax.distributed group, an 8-device data-parallel
    mesh) save checkpoints together (Orbax, collectively); one process is SIGKILLed after a save; the run stops in one
    line; the same command resumes both processes from the group's checkpoint and ends with the plain one-device
    loop's parameters (to float rounding of the 8-way gradient reduction, as in test_distributed_sharding.py).

    On the reverb profile each process has one CPU device: jaxlib 0.4.34's CPU collectives abort with several
    (compat.SEVERAL_CPU_DEVICES_PER_GROUP_PROCESS)."""
    workdir = tmp_path / "run"
    devices = 4 if compat.SEVERAL_CPU_DEVICES_PER_GROUP_PROCESS else 1
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    monkeypatch.setenv("XLA_FLAGS", flags)  # what every node process of the run gets (ray_nodes.node_environment)

    def program():
        config = quick(
            tiny_config,
            training_iterations=ITERATIONS,
            checkpoint__save_every=2,
            distributed__num_learner_processes=2,
            distributed__stop_grace_s=3.0,  # the survivor waits in a collective for its dead peer: it cannot stop
        )
        return make_program(config, launch="local", num_actors=1, workdir=str(workdir))

    with (
        sigkill_when(lambda: bool(saved_steps(workdir)), "LearnerProcess", count=2) as killed,
        pytest.raises(NodeFailedError, match=r"learner process \d died") as stopped,
    ):
        run_on_ray(program(), log=lambda line: None)
    assert "pid" in killed, "two learner processes were not found"
    assert "\n" not in str(stopped.value.code)
    assert saved_steps(workdir) and saved_steps(workdir)[-1] < ITERATIONS
    assert all_gone("LearnerProcess") and all_gone("ActorProcess") and all_gone("ReplayProcess")

    result = run_on_ray(program(), log=lambda line: None)
    assert int(result.state.step) == ITERATIONS
    for x, y in zip(jax.tree_util.tree_leaves(plain_loop_state), jax.tree_util.tree_leaves(result.state), strict=True):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4, atol=1e-5)
