"""What a researcher looks at while a run trains.

* `summarize_episodes`: per-iteration means of the per-episode metrics, split by co-player type;
* `ThroughputMetrics`: episodes/s and agent-steps/s derived from the iteration wall time;
* `TensorBoardWriter`: every scalar of every iteration into `workdir/tensorboard`;
* `ProgressReporter`: the console: one redrawn line on a terminal, one line per log period otherwise.

The callbacks plug into `coala_dist.train.learner_loop`; `coala_dist.train.prepare_learner` wires them for every
launch type. The CSV (`workdir/metrics.csv`) is written by `MetricsCsvWriter`.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import json
import math
import numbers
import os
import shutil
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

import jax
import jax.numpy as jnp

from coala_dist.checkpoint import WriteFailedError, timestamped_aside
from coala_dist.config import episodes_per_iteration, meta_trajectory_length
from coala_dist.rollout import MetaEpisode


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of values[n, ...] over the episodes where mask[n]; NaN when no episode qualifies."""
    per_episode = values.reshape((values.shape[0], -1)).mean(axis=1)
    count = mask.sum()
    total = jnp.sum(jnp.where(mask, per_episode, 0.0))
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def summarize_episodes(batch: MetaEpisode) -> dict[str, jax.Array]:
    """Scalar means of every per-episode metric, split by co-player type.

    Keys are `vs_naive/<metric>` and `vs_meta/<metric>`, e.g. `vs_naive/ego_reward` is the meta agents' reward per
    step against naive learners (unscaled), `vs_meta/cooperate_player_2` the meta co-players' cooperation rate.
    A group with no episode in this batch gives NaN.
    """
    out = {}
    for name, values in batch.metrics.items():
        out[f"vs_naive/{name}"] = _masked_mean(values, batch.coplayer_is_naive)
        out[f"vs_meta/{name}"] = _masked_mean(values, ~batch.coplayer_is_naive)
    out["episodes/fraction_naive"] = batch.coplayer_is_naive.mean()
    return out


# ---------------------------------------------------------------------------------------------------------------------
# What a run reports while it trains: derived throughput, TensorBoard scalars and the console progress line.
# These are callbacks of `coala_dist.train.learner_loop` (`on_iteration(iteration, state, metrics)`, `close()`); they
# log whatever keys arrive (learner/*, vs_naive/*, vs_meta/*, time/*, distributed/*, ...).

# (metric key, console label) of the numbers a researcher watches: rewards per step, then cooperation rates.
HEADLINE = (
    ("vs_naive/ego_reward", "r_meta|naive"),
    ("vs_naive/coplayer_reward", "r_naive"),
    ("vs_meta/ego_reward", "r_meta|meta"),
    ("vs_naive/cooperate_player_1", "coop_meta|naive"),
    ("vs_naive/cooperate_player_2", "coop_naive"),
    ("vs_meta/cooperate_player_1", "coop_meta|meta"),
)
# The reward shown on the one-line TTY progress bar: against naive learners, else between meta agents.
HEADLINE_REWARDS = (("vs_naive/ego_reward", "r_meta|naive"), ("vs_meta/ego_reward", "r_meta|meta"))

# Iterations whose durations the ETA averages (the first one of a process, which compiles, is never among them).
ETA_WINDOW = 20


def agent_steps_per_episode(config) -> int:
    """Ego agent-steps in one meta-episode: B · M · T (paper Tables 2 and 5).

    One agent-step is one step of one game as the ego meta agent sees it; its co-player acts in the same step.
    """
    return config.batch_size * meta_trajectory_length(config)


def agent_steps_per_iteration(config) -> int:
    """Ego agent-steps consumed by one training iteration: P · meta_batch_size · B · M · T
    (docs/choices.md#compute-scale gives meta_batch × B × M × T per meta agent; the P meta agents each get a
    meta-batch)."""
    return episodes_per_iteration(config) * agent_steps_per_episode(config)


def _is_finite_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def learner_wait_fraction(metrics: dict[str, float], iteration_seconds: float) -> float:
    """The fraction of an iteration's wall time the learner spent waiting for its meta-batch instead of updating.

    Distributed learners report their wait as `time/wait_for_data_s`; in the in-process loop the learner generates
    the batch itself, so its wait is the rollout, `time/rollout_s`. NaN when neither is known.
    """
    waited = metrics.get("time/wait_for_data_s", metrics.get("time/rollout_s", math.nan))
    if not (_is_finite_number(waited) and _is_finite_number(iteration_seconds)) or iteration_seconds <= 0:
        return math.nan
    return min(1.0, waited / iteration_seconds)


class ThroughputMetrics:
    """Adds `throughput/episodes_per_s`, `throughput/agent_steps_per_s`, `throughput/agent_steps` (cumulative) and
    `throughput/learner_wait_fraction` (`learner_wait_fraction`) to the metrics.

    Rates use the wall time between consecutive iterations as seen by the callbacks, so they include everything
    the learner spends (waiting for data, the update, logging, checkpointing). The first iteration of a run has no
    predecessor and uses the loop's `time/iteration_s` (which includes compilation). Put this callback before the
    writers so they see the keys.

    Args:
      config: the experiment config (batch sizes).
      clock: seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, config, clock: Callable[[], float] = time.perf_counter):
        self.episodes_per_iteration = episodes_per_iteration(config)
        self.agent_steps_per_iteration = agent_steps_per_iteration(config)
        self._clock = clock
        self._last: float | None = None

    def on_iteration(self, iteration: int, state, metrics: dict[str, float]) -> None:
        del state
        now = self._clock()
        seconds = (now - self._last) if self._last is not None else metrics.get("time/iteration_s", math.nan)
        self._last = now
        rate = 1.0 / seconds if seconds and seconds > 0 else math.nan
        metrics["throughput/episodes_per_s"] = self.episodes_per_iteration * rate
        metrics["throughput/agent_steps_per_s"] = self.agent_steps_per_iteration * rate
        metrics["throughput/agent_steps"] = float(iteration * self.agent_steps_per_iteration)
        metrics["throughput/learner_wait_fraction"] = learner_wait_fraction(metrics, seconds)

    def close(self) -> None:
        pass


class TensorBoardWriter:
    """Writes every finite scalar metric of every iteration to a TensorBoard event file in `logdir`.

    Written in the learner's own thread, flushed every iteration (and synced to disk every `flush_every_s`): a write
    that fails (no space left, a file-size limit) raises `WriteFailedError` naming the file in that iteration,
    instead of killing a background writer thread that the learner would then wait for forever.

    On resume (`start_iteration` > 0), and when a run starts over in a folder that already holds events, TensorBoard is
    told to purge the events of iterations after the restored one (written before an interruption or by the replaced
    run, and about to be redone), so every curve holds each iteration once. Purged events stay in their files.

    Args:
      logdir: the event directory (a run uses `workdir/tensorboard`).
      start_iteration: iterations already done (the restored checkpoint's step).
      config: if given, written once as text (tag `config`) so a run's settings sit next to its curves.
      flush_every_s: seconds between syncs to disk.
    """

    def __init__(self, logdir: str, start_iteration: int = 0, config=None, flush_every_s: float = 10.0):
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        os.makedirs(logdir, exist_ok=True)
        has_events = any(name.startswith("events.out.tfevents") for name in os.listdir(logdir))
        # The pid keeps two writers started within one second (a quick resume) from sharing, and truncating, a file.
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = os.path.join(logdir, name)
        self._file = None
        self._sync_every_s, self._last_sync = flush_every_s, time.monotonic()
        try:
            self._file = open(self.path, "ab")  # noqa: SIM115  (closed in close())
        except OSError as error:
            raise WriteFailedError(self.path, error) from None
        events = [Event(wall_time=time.time(), file_version="brain.Event:2")]
        if start_iteration > 0 or has_events:
            purge = start_iteration + 1
            events.append(Event(wall_time=time.time(), step=purge, session_log=SessionLog(status=SessionLog.START)))
        if config is not None and start_iteration == 0:
            from tensorboardX.summary import text

            body = json.dumps(config.to_dict(), indent=1, sort_keys=True, default=str)
            events.append(Event(wall_time=time.time(), step=0, summary=text("config", f"```\n{body}\n```")))
        self._write(events)

    def _write(self, events) -> None:
        """Appends `events` as TFRecords and flushes; a failure is `WriteFailedError` naming the file."""
        from tensorboardX.record_writer import masked_crc32c

        records = []
        for event in events:
            data = event.SerializeToString()
            header = struct.pack("Q", len(data))
            records += [header, struct.pack("I", masked_crc32c(header)), data, struct.pack("I", masked_crc32c(data))]
        try:
            self._file.write(b"".join(records))
            self._file.flush()
            if time.monotonic() - self._last_sync >= self._sync_every_s:
                os.fsync(self._file.fileno())
                self._last_sync = time.monotonic()
        except OSError as error:
            raise WriteFailedError(self.path, error) from None

    def on_iteration(self, iteration: int, state, metrics: dict[str, float]) -> None:
        del state
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        now = time.time()
        self._write(
            [
                Event(wall_time=now, step=iteration, summary=scalar(key, value))
                for key, value in metrics.items()
                if _is_finite_number(value)  # NaN marks "no episode of that kind": no point rather than a gap marker
            ]
        )

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except OSError as error:
                raise WriteFailedError(self.path, error) from None


def format_duration(seconds: float) -> str:
    """`H:MM:SS` (days prefixed as `Nd `), or `?` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = int(round(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{days}d {text}" if days else text


def estimate_remaining_seconds(recent_iteration_seconds: Sequence[float], remaining_iterations: int) -> float:
    """ETA: the mean duration of the recent iterations times the iterations left; NaN without any duration."""
    if remaining_iterations <= 0:
        return 0.0
    if not recent_iteration_seconds:
        return math.nan
    return remaining_iterations * sum(recent_iteration_seconds) / len(recent_iteration_seconds)


def _headline_parts(metrics: dict[str, float], keys: Sequence[tuple[str, str]]) -> list[str]:
    return [f"{label} {metrics[key]:+.3f}" for key, label in keys if _is_finite_number(metrics.get(key))]


def _skipped_parts(metrics: dict[str, float]) -> list[str]:
    """`skipped N` (meta-agent updates skipped so far) and `(K in a row)` (iterations), only when N > 0."""
    total = metrics.get("learner/skipped_updates", 0)
    if not _is_finite_number(total) or total <= 0:
        return []
    in_a_row = metrics.get("learner/consecutive_skipped_updates", 0)
    streak = f" ({int(in_a_row)} in a row)" if _is_finite_number(in_a_row) and in_a_row > 0 else ""
    return [f"skipped {int(total)}{streak}"]


class ProgressReporter:
    """The console view of a run.

    On a terminal (`tty=True`) one line is redrawn in place: a bar, iterations done of the total, ETA, iterations
    per second and the headline reward. Otherwise (a log file, a test, a Ray worker) one line is written per log
    period (and for the first and last iteration of this invocation), starting `it <iteration>/<total>` and holding
    the headline rewards and cooperation rates, the loss, the skipped updates (when there are any: the running total
    of meta-agent updates skipped as non-finite, and how many iterations in a row ended with one), the throughput and
    the ETA.

    The ETA and the speed average the durations of recent iterations, never the first one of this process: it
    compiles (also after a resume), so until a second iteration has been timed they read `?`.

    Args:
      total_iterations: the run's `training_iterations` (what the ETA counts down to).
      log_every: iterations between lines when not on a terminal.
      start_iteration: iterations already done (after a resume).
      log: where lines go when not on a terminal.
      tty: redraw one line on `stream` instead of calling `log`.
      stream: the terminal (default sys.stdout).
      clock: seconds, monotonic (tests pass a fake one).
      redraw_every_s: minimum seconds between redraws on a terminal (the last iteration is always drawn).
      learning_rate: the meta agents' learning rate, named in the line about the first skipped update.
    """

    def __init__(
        self,
        total_iterations: int,
        log_every: int,
        *,
        start_iteration: int = 0,
        log: Callable[[str], None] = print,
        tty: bool = False,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
        redraw_every_s: float = 0.1,
        learning_rate: float | None = None,
    ):
        self.total, self.log_every, self.start = total_iterations, max(1, log_every), start_iteration
        self._learning_rate, self._told_skipped = learning_rate, False
        self.log, self.tty, self.stream = log, tty, stream
        self._clock, self._redraw_every_s = clock, redraw_every_s
        # Durations between consecutive iterations: the first iteration (which compiles) has none, so never counts.
        self._durations: collections.deque[float] = collections.deque(maxlen=ETA_WINDOW)
        self._last_time: float | None = None
        self._last_draw = -math.inf
        self._drawn = False

    def _recent_durations(self) -> list[float]:
        return list(self._durations)

    def eta_seconds(self, iteration: int) -> float:
        """Seconds left: the mean of the recent iteration durations times the iterations still to do."""
        return estimate_remaining_seconds(self._recent_durations(), self.total - iteration)

    def on_iteration(self, iteration: int, state, metrics: dict[str, float]) -> None:
        del state
        now = self._clock()
        if self._last_time is not None:
            self._durations.append(now - self._last_time)
        self._last_time = now
        self._tell_first_skip(iteration, metrics)
        if self.tty:
            last = iteration >= self.total
            if last or now - self._last_draw >= self._redraw_every_s:
                self._draw(self.tty_line(iteration, metrics))
                self._last_draw = now
        elif iteration == self.start + 1 or iteration % self.log_every == 0 or iteration >= self.total:
            self.log(self.log_line(iteration, metrics))

    def _tell_first_skip(self, iteration: int, metrics: dict[str, float]) -> None:
        """Once per process, on the first iteration that skipped an update: a line saying why and the likely cause."""
        in_a_row = metrics.get("learner/consecutive_skipped_updates", 0)
        if self._told_skipped or not _is_finite_number(in_a_row) or in_a_row <= 0:
            return
        self._told_skipped = True
        rate = f" (config.meta.learning_rate={self._learning_rate:g})" if self._learning_rate is not None else ""
        line = (
            f"iteration {iteration}: an update was skipped because its loss or a gradient was not finite; the likely "
            f"cause is a learning rate too large{rate}, else a reward scale too large"
        )
        if self.tty:
            (self.stream or sys.stdout).write(("\n" if self._drawn else "") + line + "\n")
            self._drawn = False
        else:
            self.log(line)

    def _rates(self) -> str:
        durations = self._recent_durations()
        if not durations:
            return ""
        per_iteration = sum(durations) / len(durations)
        return f"{per_iteration:.2f} s/it" if per_iteration >= 1 else f"{1 / per_iteration:.1f} it/s"

    def log_line(self, iteration: int, metrics: dict[str, float]) -> str:
        """The line written per log period: `it <i>/<total>`, headline numbers, loss, throughput, ETA."""
        parts = [f"it {iteration:5d}/{self.total}", *_headline_parts(metrics, HEADLINE)]
        if _is_finite_number(metrics.get("learner/loss")):
            parts.append(f"loss {metrics['learner/loss']:.4f}")
        parts.extend(_skipped_parts(metrics))
        if _is_finite_number(metrics.get("throughput/agent_steps_per_s")):
            parts.append(f"{metrics['throughput/agent_steps_per_s']:.3g} steps/s")
        parts.append(f"eta {format_duration(self.eta_seconds(iteration))}")
        return "  ".join(parts)

    def tty_line(self, iteration: int, metrics: dict[str, float], bar_width: int = 20) -> str:
        """The redrawn terminal line: bar, progress, ETA, speed and the headline reward."""
        fraction = min(1.0, iteration / self.total) if self.total else 1.0
        filled = int(round(bar_width * fraction))
        parts = [
            f"[{'#' * filled}{'.' * (bar_width - filled)}] {iteration}/{self.total} {100 * fraction:3.0f}%",
            f"eta {format_duration(self.eta_seconds(iteration))}",
        ]
        if self._rates():
            parts.append(self._rates())
        parts.extend(_headline_parts(metrics, HEADLINE_REWARDS))
        parts.extend(_skipped_parts(metrics))
        return "  ".join(parts)

    def _draw(self, line: str) -> None:
        stream = self.stream or sys.stdout
        width = shutil.get_terminal_size((120, 24)).columns - 1
        stream.write("\r" + line[:width] + "\x1b[K")  # \x1b[K clears what a longer previous line left
        stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            (self.stream or sys.stdout).write("\n")
            (self.stream or sys.stdout).flush()
            self._drawn = False


class MetricsCsvWriter:
    """Keeps every iteration's metrics (`history`) and appends them to `workdir/metrics.csv` (the console line is
    `ProgressReporter`'s).

    The CSV holds each iteration once and is never truncated. On resume (`start_iteration` = the restored step) the
    rows up to the restored iteration are kept; if the file also holds rows of later iterations (written before an
    interruption, about to be redone from an older checkpoint) or a run starts from iteration 1 over an existing
    file (`--start_over`), the whole previous file is first moved aside to `metrics.csv.<YYYYmmdd-HHMMSS>.bak`
    (a line on stderr names it), so no row is ever lost. Rewrites (a new column) go through a temporary file and a
    rename, so an interruption leaves the old or the new file, never a partial one.
    """

    def __init__(self, workdir: str | None, start_iteration: int = 0):
        self.history: list[dict[str, float]] = []
        self._file = None
        self._path: str | None = None
        self._rows: list[dict] = []  # every row of the file, so that a late new metric can widen the header
        self._fields: list[str] = []
        self.set_aside: str | None = None  # where the previous metrics.csv went, if it was moved
        self.resumed: list[dict[str, str]] = []  # the rows kept from the run this one resumes (iterations ≤ start)
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            self._path = os.path.join(workdir, "metrics.csv")
            if os.path.exists(self._path):
                self._keep_rows_up_to(start_iteration)
            with self._failure_named():
                if self._rows:
                    self._rewrite()
                else:
                    self._file = open(self._path, "w", newline="")  # noqa: SIM115  (closed in close())

    @contextlib.contextmanager
    def _failure_named(self):
        """Turns a failed write into `WriteFailedError` naming metrics.csv; the file is closed, never written again
        (what was written stays: a torn last row is dropped on resume)."""
        try:
            yield
        except OSError as error:
            file, self._file = self._file, None
            if file is not None:
                with contextlib.suppress(OSError):
                    file.close()
            raise WriteFailedError(self._path, error) from None

    def _keep_rows_up_to(self, start_iteration: int) -> None:
        """Reads the existing CSV and keeps its whole, parseable rows up to `start_iteration`.

        Whatever else it finds (a torn last row, unreadable lines, rows after the restored iteration, missing rows,
        an empty or foreign file) is said in one line on stderr; whenever a row is dropped the previous file is first
        moved aside (`*.bak`), so no row is ever lost.
        """
        with open(self._path, newline="") as f:
            text = f.read()
        found = read_metrics_rows(text)
        kept = [row for row in found.rows if int(row["iteration"]) <= start_iteration]
        # An empty file before the first iteration loses nothing.
        problems = [] if start_iteration == 0 and not found.rows and not found.dropped else list(found.problems)
        later = len(found.rows) - len(kept)
        if later:
            problems.append(f"holds {later} rows after iteration {start_iteration}, which this run writes again")
        missing = missing_iterations([int(row["iteration"]) for row in kept], start_iteration)
        if found.dropped or later:
            self.set_aside = timestamped_aside(self._path)
            os.replace(self._path, self.set_aside)
        if missing:
            problems.append(
                f"lacks the rows of iterations {format_ranges(missing)} of the checkpoint it resumes from, which "
                "cannot be recovered (TensorBoard may still hold them)"
            )
        if problems:
            kept_as = f"; the previous file is kept as {self.set_aside}" if self.set_aside else ""
            print(f"warning: {self._path} {'; '.join(problems)}{kept_as}", file=sys.stderr)
        self._rows, self._fields = kept, found.fields if kept else []
        self.resumed = list(kept)

    def _rewrite(self) -> None:
        """Writes the whole file again with the current columns (metrics absent from a row stay empty), atomically."""
        temporary = f"{self._path}.tmp"
        try:
            with open(temporary, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._fields, restval="")
                writer.writeheader()
                writer.writerows(self._rows)
        except OSError:
            with contextlib.suppress(OSError):
                os.remove(temporary)  # the old file stays whole
            raise
        if self._file is not None:
            self._file.close()
        os.replace(temporary, self._path)
        self._file = open(self._path, "a", newline="")  # noqa: SIM115  (closed in close())

    def on_iteration(self, iteration: int, state, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        self.history.append(row)
        if self._file is not None:
            self._rows.append(row)
            new_fields = [k for k in row if k not in self._fields]
            with self._failure_named():
                if new_fields:  # e.g. checkpoint/save_blocking_s first appears at the first save
                    self._fields += new_fields
                    self._rewrite()
                else:
                    csv.DictWriter(self._file, fieldnames=self._fields, restval="").writerow(row)
                    self._file.flush()

    def close(self) -> None:
        with self._failure_named():
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclasses.dataclass
class MetricsRows:
    """What `read_metrics_rows` found in a metrics.csv: its columns, its whole rows, what it could not read."""

    fields: list[str]
    rows: list[dict[str, str]]
    problems: list[str]
    dropped: int  # lines that held something and are not among `rows`


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _whole_row(cells: list[str], fields: list[str]) -> bool:
    """Whether `cells` is a complete row: one cell per column, a positive integer iteration, numbers or empty."""
    if len(cells) != len(fields) or not cells[0].isdigit() or int(cells[0]) < 1:
        return False
    return all(cell == "" or _is_number(cell) for cell in cells[1:])


def read_metrics_rows(text: str) -> MetricsRows:
    """Parses a metrics.csv's `text`, keeping only whole rows (one per iteration, the first of each) and naming what
    it skipped: a torn last row (the file ends inside it: a write interrupted), lines that are not rows of this
    file, repeated iterations, an empty file or one without this file's header."""
    if not text.strip():
        return MetricsRows([], [], ["is empty"], 0)
    lines = text.splitlines(keepends=True)
    fields = next(csv.reader([lines[0]]))
    if not fields or fields[0] != "iteration":
        return MetricsRows([], [], ["cannot be read as this run's metrics (no 'iteration' header)"], len(lines))
    rows, seen, problems, unreadable, repeated = [], set(), [], 0, 0
    torn = not lines[-1].endswith("\n")
    body = lines[1:-1] if torn else lines[1:]
    for line in body:
        cells = next(csv.reader([line]), [])
        if not _whole_row(cells, fields):
            unreadable += bool(line.strip())
            continue
        if int(cells[0]) in seen:
            repeated += 1
            continue
        seen.add(int(cells[0]))
        rows.append(dict(zip(fields, cells, strict=True)))
    if torn and len(lines) > 1:
        problems.append("ends in a torn row (a write was interrupted), dropped")
    if unreadable:
        problems.append(f"holds {unreadable} unreadable line{'s' if unreadable > 1 else ''}, dropped")
    if repeated:
        problems.append(f"holds {repeated} repeated iteration{'s' if repeated > 1 else ''}, the first kept")
    rows.sort(key=lambda row: int(row["iteration"]))
    return MetricsRows(fields, rows, problems, unreadable + repeated + (torn and len(lines) > 1))


def missing_iterations(iterations: Sequence[int], last: int) -> list[int]:
    """The iterations among 1..`last` that `iterations` lacks."""
    present = set(iterations)
    return [i for i in range(1, last + 1) if i not in present]


def format_ranges(numbers: Sequence[int]) -> str:
    """`[1, 2, 3, 7]` as `1-3, 7` (at most 5 ranges, then `...`)."""
    ranges: list[list[int]] = []
    for n in numbers:
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    parts = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:5]]
    return ", ".join(parts) + (", ..." if len(ranges) > 5 else "")
