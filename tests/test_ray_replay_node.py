"""Launch `local` with node processes SIGKILLed mid-run: an actor and then the replay node, each restarted, and the
run ends as an uninterrupted one; the replay node with no restarts left, and the run stops in one line and the same
command finishes it. (Fixtures: conftest.py; helpers: ray_helpers.py.)
"""

from __future__ import annotations

import os
import time

import pytest
from ray_helpers import (
    ITERATIONS,
    NETWORK_BACKENDS,
    all_gone,
    assert_same_state,
    column_sum,
    metrics_rows,
    quick,
    saved_steps,
    sigkill_when,
)

from coala_dist.distributed.program import make_program
from coala_dist.distributed.ray_run import run_on_ray
from coala_dist.train import NodeFailedError

# Ray starts its own server processes with fork+exec (subprocess), which never runs JAX code in the child.
pytestmark = [pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning"), pytest.mark.slow]


@pytest.mark.parametrize("backend", NETWORK_BACKENDS)
def test_a_killed_actor_then_a_killed_replay_node_are_restarted_and_the_run_ends_as_an_uninterrupted_one(
    ray_instance, tiny_config, plain_loop_state, tmp_path, backend
):
    """Two actor processes (not this one). After the first update, one actor's process is SIGKILLed: Ray restarts it
    and the launcher says so. After the fourth, the replay node's process is SIGKILLed: the launcher starts a new
    replay node under the same Ray name within seconds; the learner and both actors find it, the learner publishes
    again and the actors roll out the lost episodes of the current version again (each a pure function of run key,
    version and index). The run ends with the parameters of the plain loop, every iteration once in metrics.csv, and
    no node process outlives it. (Sync mode needs every actor's units, so each restart is on the path to the end.)"""
    workdir = tmp_path / "run"
    # A node that failed to follow the new replay node would wait for data: fail in five minutes, not in ten. (After
    # the first batch this bound also covers the killed actor's restart: over a minute on a loaded CPU.)
    config = quick(tiny_config, training_iterations=ITERATIONS, distributed__data_timeout_s=300.0)
    program = make_program(config, launch="local", num_actors=2, workdir=str(workdir), replay=backend)
    assert program.config.distributed.replay == backend
    assert program.config.distributed.replay_max_restarts > 0  # the default restarts it
    lines: list[str] = []
    with (
        sigkill_when(lambda: metrics_rows(workdir / "metrics.csv") >= 1, "ActorProcess", count=2) as actor,
        sigkill_when(lambda: metrics_rows(workdir / "metrics.csv") >= 4, "ReplayProcess") as replay,
    ):
        result = run_on_ray(program, log=lines.append)
    assert "pid" in actor, "no actor process was found to kill"
    assert "at" in replay, "no replay process was found to kill"
    # The launcher says what happened in its own words, counting the actor's restarts (not Ray's task retries).
    restarted = [line for line in lines if f"(process {actor['pid']} was killed or crashed)" in line]
    assert len(restarted) == 1 and restarted[0].endswith("restarted, 1 of 3 restarts used"), lines
    restarts = [line for line in lines if "replay node's process died: restarted it" in line]
    assert len(restarts) == 1, lines
    assert int(result.state.step) == ITERATIONS
    assert_same_state(plain_loop_state, result.state)  # the lost episodes were rolled out again, bit for bit
    assert metrics_rows(workdir / "metrics.csv") == ITERATIONS
    assert column_sum(workdir / "metrics.csv", "replay/restarts") == 1  # the learner followed it once
    assert [stats["replay_restarts"] for stats in result.actor_stats] == [1, 1]  # and so did each actor
    pids = [stats["pid"] for stats in result.actor_stats]
    assert len(set(pids)) == 2 and os.getpid() not in pids  # two actor processes, not this one
    assert actor["pid"] not in pids  # the restarted process finished the killed actor's work
    assert all_gone("ActorProcess") and all_gone("LearnerProcess") and all_gone("ReplayProcess")


def test_a_replay_node_killed_with_no_restarts_left_stops_the_run_in_one_line_and_the_same_command_finishes_it(
    ray_instance, tiny_config, plain_loop_state, tmp_path
):
    """With `distributed.replay_max_restarts=0`, SIGKILL of the replay node's process: within seconds the launcher
    stops every node, the learner saves its last whole iteration (no periodic save is due) and the run ends with one
    line (NodeFailedError, exit status 1), never waiting for data_timeout_s. Nothing is lost: the checkpoint holds
    every iteration metrics.csv shows, and the same command finishes the run with the parameters of an uninterrupted
    one. (The launcher's watch of the replay node is the same for every backend: the test above covers Reverb.)"""
    workdir = tmp_path / "run"

    def program():
        config = quick(
            tiny_config,
            training_iterations=ITERATIONS,
            checkpoint__save_every=1000,
            distributed__replay_max_restarts=0,
        )
        return make_program(config, launch="local", num_actors=1, workdir=str(workdir), replay="ray")

    with (
        sigkill_when(lambda: metrics_rows(workdir / "metrics.csv") >= 3, "ReplayProcess") as killed,
        pytest.raises(NodeFailedError) as stopped,
    ):
        run_on_ray(program(), log=lambda line: None)
    assert "at" in killed, "no replay process was found to kill"
    assert time.monotonic() - killed["at"] < 60  # noticed and stopped in seconds, not after data_timeout_s (600 s)
    message = str(stopped.value.code)
    assert "\n" not in message and "replay node's process died" in message and "run the same command" in message
    assert "replay_max_restarts=0" in message
    done = metrics_rows(workdir / "metrics.csv")
    assert 3 <= done < ITERATIONS and f"after iteration {done} and saved it" in message
    assert saved_steps(workdir)[-1] == done  # every iteration the run reported is in the checkpoint
    assert all_gone("ActorProcess") and all_gone("LearnerProcess") and all_gone("ReplayProcess")

    result = run_on_ray(program(), log=lambda line: None)
    assert int(result.state.step) == ITERATIONS
    assert_same_state(plain_loop_state, result.state)
    assert metrics_rows(workdir / "metrics.csv") == ITERATIONS  # each iteration once: continued, never truncated
