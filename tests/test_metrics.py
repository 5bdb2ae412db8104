"""What a run reports: throughput metrics, TensorBoard scalars, the CSV and the console progress."""

from __future__ import annotations

import csv
import io
import math
import os
import struct

import pytest

from coala_dist.metrics import (
    ProgressReporter,
    TensorBoardWriter,
    ThroughputMetrics,
    agent_steps_per_episode,
    agent_steps_per_iteration,
    estimate_remaining_seconds,
    format_duration,
    learner_wait_fraction,
)
from coala_dist.train import train


class FakeClock:
    def __init__(self, times):
        self.times = list(times)

    def __call__(self) -> float:
        return self.times.pop(0)


def read_events(logdir: str):
    """Every Event of the TFRecord event files in `logdir`, parsed by hand (independent of the writer):
    a record is [uint64 length][uint32 crc][payload][uint32 crc]."""
    from tensorboardX.proto import event_pb2

    events = []
    for name in sorted(os.listdir(logdir)):
        if "tfevents" not in name:
            continue
        with open(os.path.join(logdir, name), "rb") as f:
            data = f.read()
        position = 0
        while position < len(data):
            (length,) = struct.unpack("<Q", data[position : position + 8])
            payload = data[position + 12 : position + 12 + length]
            position += 12 + length + 4
            event = event_pb2.Event()
            event.ParseFromString(payload)
            events.append(event)
    return events


def scalars(events) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for event in events:
        for value in event.summary.value:
            if value.HasField("simple_value"):
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


@pytest.fixture(scope="module")
def trained_run(tiny_config, tiny_components, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    lines: list[str] = []
    state, history = train(tiny_config, workdir, components=tiny_components, log=lines.append)
    return workdir, state, history, lines


def test_agent_steps_count_the_steps_of_a_real_meta_batch(tiny_config, tiny_components, trained_run):
    _, state, _, _ = trained_run
    batch = tiny_components.rollout_episodes(
        state.meta_params,
        state.naive_params,
        state.run_key,
        state.version,
        tiny_components.rollout.iteration_indices(),
    )
    # Every ego action taken in one iteration is one agent-step.
    assert agent_steps_per_iteration(tiny_config) == batch.actions.size
    assert agent_steps_per_episode(tiny_config) == batch.actions[0].size


def test_throughput_uses_the_wall_time_between_iterations(tiny_config):
    throughput = ThroughputMetrics(tiny_config, clock=FakeClock([100.0, 102.0, 102.5]))
    episodes = tiny_config.population_size_meta * tiny_config.meta_batch_size
    steps = episodes * tiny_config.batch_size * tiny_config.num_inner_episodes * tiny_config.env.inner_episode_length
    seen = []
    for iteration, extra in ((1, {"time/iteration_s": 4.0, "time/rollout_s": 1.0}), (2, {}), (3, {})):
        metrics = dict(extra)
        throughput.on_iteration(iteration, None, metrics)
        seen.append(metrics)
    # The first iteration has no predecessor: the loop's own iteration time stands in.
    assert seen[0]["throughput/episodes_per_s"] == pytest.approx(episodes / 4.0)
    assert seen[0]["throughput/learner_wait_fraction"] == pytest.approx(0.25)
    assert seen[1]["throughput/episodes_per_s"] == pytest.approx(episodes / 2.0)
    assert seen[2]["throughput/agent_steps_per_s"] == pytest.approx(steps / 0.5)
    assert seen[2]["throughput/agent_steps"] == 3 * steps
    assert math.isnan(seen[1]["throughput/learner_wait_fraction"])  # nothing says how long it waited


def test_learner_wait_fraction_prefers_the_distributed_wait():
    assert learner_wait_fraction({"time/wait_for_data_s": 1.0, "time/rollout_s": 3.0}, 4.0) == pytest.approx(0.25)
    assert learner_wait_fraction({"time/rollout_s": 3.0}, 4.0) == pytest.approx(0.75)
    assert math.isnan(learner_wait_fraction({}, 4.0))
    assert math.isnan(learner_wait_fraction({"time/rollout_s": 1.0}, 0.0))


def test_eta_and_durations():
    assert estimate_remaining_seconds([2.0, 4.0], 5) == pytest.approx(15.0)
    assert estimate_remaining_seconds([], 0) == 0.0
    assert math.isnan(estimate_remaining_seconds([], 3))
    assert format_duration(3723) == "1:02:03"
    assert format_duration(2 * 86400 + 5) == "2d 0:00:05"
    assert format_duration(math.nan) == "?"


def _metrics(reward: float) -> dict[str, float]:
    return {
        "vs_naive/ego_reward": reward,
        "vs_meta/ego_reward": math.nan,
        "learner/loss": 0.5,
        "time/iteration_s": 10.0,
    }


def test_progress_without_a_terminal_writes_one_line_per_log_period():
    lines: list[str] = []
    progress = ProgressReporter(5, 2, log=lines.append, clock=FakeClock([0.0, 2.0, 4.0, 6.0, 8.0]))
    for iteration in range(1, 6):
        progress.on_iteration(iteration, None, _metrics(0.1 * iteration))
    progress.close()
    # The first iteration, every log period, and the last one.
    assert [line.split()[1] for line in lines] == ["1/5", "2/5", "4/5", "5/5"]
    assert lines[0].startswith("it     1/5") and "r_meta|naive +0.100" in lines[0]
    assert "r_meta|meta" not in lines[0]  # NaN: no such episodes, not shown
    # ETA: the first iteration (10 s: it compiles) never counts, so there is none before a second one is timed;
    # then the measured 2 s per iteration: 3 left -> 6 s.
    assert lines[0].endswith("eta ?")
    assert lines[1].endswith("eta 0:00:06")
    assert lines[-1].endswith("eta 0:00:00")


def test_progress_after_a_resume_starts_with_the_first_new_iteration():
    lines: list[str] = []
    progress = ProgressReporter(10, 5, start_iteration=7, log=lines.append, clock=FakeClock([0.0, 1.0, 2.0]))
    for iteration in (8, 9, 10):
        progress.on_iteration(iteration, None, _metrics(0.0))
    assert [line.split()[1] for line in lines] == ["8/10", "10/10"]


def test_progress_on_a_terminal_redraws_one_line():
    stream = io.StringIO()
    lines: list[str] = []
    progress = ProgressReporter(
        3, 1, log=lines.append, tty=True, stream=stream, clock=FakeClock([0.0, 1.0, 2.0]), redraw_every_s=0.0
    )
    for iteration in (1, 2, 3):
        progress.on_iteration(iteration, None, _metrics(0.25))
    assert "\n" not in stream.getvalue()  # still one line while running
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and not lines
    last = text.rstrip("\n").split("\r")[-1]
    assert "3/3" in last and "100%" in last and "eta 0:00:00" in last and "r_meta|naive +0.250" in last


def test_tensorboard_writes_every_finite_scalar_and_purges_on_resume(tmp_path):
    logdir = str(tmp_path / "tb")
    writer = TensorBoardWriter(logdir)
    for iteration in (1, 2, 3):
        writer.on_iteration(iteration, None, {"learner/loss": 0.5 * iteration, "vs_meta/ego_reward": math.nan})
    writer.close()
    values = scalars(read_events(logdir))
    assert values == {"learner/loss": [(1, 0.5), (2, 1.0), (3, 1.5)]}
    # Resuming after iteration 2 marks the start of a new session at step 3: TensorBoard drops the old step 3.
    resumed = TensorBoardWriter(logdir, start_iteration=2)
    resumed.on_iteration(3, None, {"learner/loss": 7.0})
    resumed.close()
    events = read_events(logdir)
    starts = [event.step for event in events if event.HasField("session_log")]
    assert 3 in starts
    assert scalars(events)["learner/loss"][-1] == (3, 7.0)


def test_a_run_writes_tensorboard_csv_and_progress(tiny_config, trained_run):
    workdir, _, history, lines = trained_run
    values = scalars(read_events(os.path.join(workdir, "tensorboard")))
    for key in ("learner/loss", "vs_naive/ego_reward", "throughput/episodes_per_s", "throughput/agent_steps_per_s"):
        assert [step for step, _ in values[key]] == [1, 2, 3], key
    assert [v for _, v in values["learner/loss"]] == pytest.approx([row["learner/loss"] for row in history])
    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3]
    assert all(float(r["throughput/agent_steps_per_s"]) > 0 for r in rows)
    assert [int(float(r["throughput/agent_steps"])) for r in rows] == [
        i * agent_steps_per_iteration(tiny_config) for i in (1, 2, 3)
    ]
    assert lines[0].startswith("it     1/3") and "eta" in lines[0]
    assert [row["iteration"] for row in history] == [1, 2, 3]  # train() still returns the in-memory history
