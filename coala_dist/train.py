"""The training loop shared by every launch type. Read top to bottom.

    prepared = prepare_learner(config, workdir)        # restore-or-init, the streak, the callbacks
    repeat until config.training_iterations (or a stop, or too many skipped updates in a row):
        batch, source_metrics = source.next(state)      # in-process: the jitted rollout; distributed: the replay
        state, learner_metrics = update(state, batch)   # the one jitted update (coala_dist/learner.py)
        streak.record(state, metrics)                   # skipped updates in a row (`SkipStreak`)
        source.publish(state)                           # distributed: actors start on the next version now
        every callback sees (iteration, state, metrics) # checkpoints, console/CSV/TensorBoard logging
    return state, Outcome(ending, iteration, message)   # data: the launcher turns it into the exit

`InProcessSource` generates the meta-batch in this process with `Components.rollout_episodes`; the distributed
launch (coala_dist/distributed) passes `ReplayBatchSource`, which takes the same `MetaEpisode`s from the replay node,
written by actors that call the very same rollout. There is no second loop.

How a run ends early, and what its process exits with (`RunStopped`, a SystemExit: uncaught, no traceback):
  * SIGINT (Ctrl-C) / SIGTERM: the iteration in flight finishes, a checkpoint is saved, every node stops, then
    `StoppedBySignal`: exit status 128 + the signal's number (130 / 143), so `coala train ... && next` stops too;
  * `config.max_consecutive_skipped_updates` iterations in a row with a skipped (non-finite) update: the last good
    state is saved as the newest checkpoint, then `SkippedUpdatesError`: one line, exit status 1;
  * a write of the run's files fails (checkpoint, metrics.csv, TensorBoard events; no space left, a file-size
    limit): the loop stops within that iteration without a final save (the newest whole checkpoint stays the one to
    resume from, and unfinished saves are removed), then `WriteFailedError`: one line naming the file and the cause,
    exit status 1;
  * (launch `local`/`ray`) the replay node's or a learner's process dies, an actor's restarts are used up, or the
    learner waits `distributed.start_timeout_s` (until its first batch) or `data_timeout_s` for episodes: a
    living learner finishes or abandons the iteration in flight and saves, every node stops, then `NodeFailedError`:
    one line, exit status 1; the same command resumes (in sync mode with the parameters an uninterrupted run would
    have).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import ml_collections

from coala_dist import keys
from coala_dist.builder import Components, build
from coala_dist.checkpoint import Checkpointer, WriteFailedError, abstract_train_state
from coala_dist.learner import TrainState
from coala_dist.metrics import (
    MetricsCsvWriter,
    ProgressReporter,
    TensorBoardWriter,
    ThroughputMetrics,
    summarize_episodes,
)
from coala_dist.rollout import MetaEpisode

# Iterations in a row, ending with this one, in which at least one meta agent's update was skipped (non-finite loss or
# gradient; the update then keeps that agent's parameters and optimiser state). Set by `SkipStreak.record`.
CONSECUTIVE_SKIPPED_KEY = "learner/consecutive_skipped_updates"


class RunStopped(SystemExit):
    """A run ended before `training_iterations` for a reason its process should exit with, raised by `train` and
    `launch` after every node stopped and the checkpoint was written. A SystemExit, so that uncaught it ends the
    process with `code` (a message is printed as one line, exit status 1) and no traceback; callers may catch it."""


class StoppedBySignal(RunStopped):
    """SIGINT or SIGTERM stopped the run (after a checkpoint was saved): exit status 128 + the signal number."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class SkippedUpdatesError(RunStopped):
    """`config.max_consecutive_skipped_updates` iterations in a row skipped an update; the message is one line."""


class NodeFailedError(RunStopped):
    """A node of a distributed run is gone for good (the replay node's or a learner's process died, an actor's
    restarts are used up, or the learner waited `start_timeout_s` or `data_timeout_s` for episodes): the launcher
    stopped every other node and the learner saved what it could (its last whole iteration, or its newest periodic
    checkpoint if a learner died); the message is one line and says how to resume."""


class Ending(enum.Enum):
    """Why a learner's loop ended."""

    FINISHED = "finished"  # `training_iterations` updates applied (perhaps by an earlier process)
    STOPPED = "stopped"  # asked to stop (a signal, or the launcher stopping every node)
    SKIPPED_STREAK = "skipped_streak"  # too many iterations in a row skipped an update
    WRITE_FAILED = "write_failed"  # a checkpoint, metrics.csv or TensorBoard write failed
    NODE_FAILED = "node_failed"  # a node of a distributed run is gone for good, or sent no episode in time


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a learner's loop ended: data, passed from the learner node to the launcher, which turns it into the
    process's exit (`raise_for_exit`) once every node has stopped.

    Attributes:
      ending: why it ended.
      iteration: the updates applied when it ended (`state.step`).
      message: one line for the failures (what happened, what was saved, how to resume); "" otherwise.
    """

    ending: Ending
    iteration: int
    message: str = ""

    @property
    def failed(self) -> bool:
        return self.ending in (Ending.SKIPPED_STREAK, Ending.WRITE_FAILED, Ending.NODE_FAILED)

    def raise_for_exit(self, signum: int | None = None) -> None:
        """Raises the `RunStopped` the process exits with: the failure, else `StoppedBySignal(signum)` if a signal
        stopped the run; returns for a run that finished (or stopped without a signal)."""
        if self.ending is Ending.SKIPPED_STREAK:
            raise SkippedUpdatesError(self.message)
        if self.ending is Ending.WRITE_FAILED:
            raise WriteFailedError.from_line(self.message)
        if self.ending is Ending.NODE_FAILED:
            raise NodeFailedError(self.message)
        if signum is not None:
            raise StoppedBySignal(signum)


class Callback(Protocol):
    """Sees every iteration's result; closed when the loop ends (normally or not)."""

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class StopRule(Callback, Protocol):
    """A callback that may end a run before its budget (`train(stop_rule=...)`, e.g.
    `coala_dist.experiments.early_stop.DefectionStop`); `reached` is polled between iterations, as a signal is."""

    def resume(self, rows: Sequence[Mapping[str, str | float]]) -> None:
        """The metrics.csv rows of the iterations already done (a resumed run), before the first new iteration."""
        ...

    @property
    def reached(self) -> bool: ...


class BatchSource(Protocol):
    """Where meta-batches come from, and where new parameters go (the in-process rollout, or the replay node)."""

    def next(self, state: TrainState) -> tuple[MetaEpisode, dict[str, float]]:
        """The meta-batch for `state` (its episodes sorted by episode index) and the source's own metrics (timings,
        queue sizes, policy lag...). Publishes `state`'s parameters first if `publish` has not."""
        ...

    def publish(self, state: TrainState) -> dict[str, float]:
        """Makes `state`'s parameters the ones rollouts act with from now on (early: actors start on the next
        version while the learner writes its metrics and checkpoints); returns the time it took as metrics."""
        ...


class InProcessSource:
    """Generates every agent's meta-batch in this process (sync mode: always the state's own version).

    The iteration is rolled out as the actors roll it out: one call per work unit (`[1, n]` episode indices, n =
    meta_batch_size / distributed.work_units_per_agent), concatenated in episode order. The same calls with the same
    shapes make the batch bit-identical to a distributed run's: XLA:CPU may round differently by batch shape
    (measured: behaviour values of one `[2, 4]` call and two `[1, 4]` calls differ by ~1e-9 on jax 0.4.34).
    """

    def __init__(self, components: Components):
        indices = components.rollout.iteration_indices()  # [P, N]
        units = indices.reshape(-1, indices.shape[1] // components.config.distributed.work_units_per_agent)
        self._work_units = [units[i : i + 1] for i in range(units.shape[0])]  # P·U work units, not time steps
        self._rollout, self._learner = components.rollout_episodes, components.learner

    def next(self, state: TrainState) -> tuple[MetaEpisode, dict[str, float]]:
        start = time.perf_counter()
        naive = self._learner.naive_initialisations(state)
        rollout = functools.partial(self._rollout, state.meta_params, naive, state.run_key, state.version)
        blocks = [rollout(unit) for unit in self._work_units]
        batch = blocks[0] if len(blocks) == 1 else jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *blocks)
        jax.block_until_ready(batch)
        return batch, {"time/rollout_s": time.perf_counter() - start}

    def publish(self, state: TrainState) -> dict[str, float]:
        del state  # the rollout reads the parameters from the state it is given
        return {}


class SkipStreak:
    """The iterations in a row, ending with the latest, in which at least one meta agent's update was skipped (its
    loss or a gradient was not finite: the agent keeps its parameters), and the last good state before them.

    The loop records every iteration; the checkpoint callback defers periodic saves inside a streak and, when the
    streak reaches `limit` (`config.max_consecutive_skipped_updates`; 0: never), saves the last good state and says
    where (`saved_as`). A resumed run starts with the streak its checkpoint ended (`count`).

    Args:
      limit: the streak that stops the run (0: none does).
      state: the state the loop starts from.
      count: the streak `state` ends (from its checkpoint; 0 for a fresh run).
    """

    def __init__(self, limit: int, state: TrainState, count: int = 0):
        self.limit, self.count = limit, count
        # Unknown when the run resumed inside a streak: it began before this process.
        self.last_good: TrainState | None = state if count == 0 else None
        self.saved_as: str | None = None
        self._skipped_total = float(state.skipped_updates)

    def record(self, state: TrainState, metrics: dict[str, float]) -> None:
        """Extends or ends the streak with the iteration that produced `state`; adds `CONSECUTIVE_SKIPPED_KEY`."""
        skipped_total = metrics.get("learner/skipped_updates", self._skipped_total)
        self.count = self.count + 1 if skipped_total > self._skipped_total else 0
        self._skipped_total = skipped_total
        if self.count == 0:
            self.last_good = state
        metrics[CONSECUTIVE_SKIPPED_KEY] = float(self.count)

    @property
    def exceeded(self) -> bool:
        return bool(self.limit) and self.count >= self.limit

    def message(self, iteration: int) -> str:
        """One line: why the run stopped at `iteration` and where its last good state is."""
        if self.saved_as:
            where = f", saved as {self.saved_as}"
        elif self.last_good is None:
            where = ", from before this process resumed (an older checkpoint)"
        else:
            where = ""
        return (
            f"training stopped at iteration {iteration}: {self.count} iterations in a row skipped an update because "
            f"the loss or a gradient was not finite (config.max_consecutive_skipped_updates={self.limit}); the last "
            f"good state is iteration {iteration - self.count}{where}"
        )


def _run_callbacks(callbacks: Sequence[Callback], iteration: int, state: TrainState, metrics: dict) -> None:
    """Calls every callback; a failed write is told to every callback (`write_failed`: no final checkpoint save on
    a failing disk, the resume hint added to the error's line) before it ends the loop."""
    try:
        for callback in callbacks:
            callback.on_iteration(iteration, state, metrics)
    except WriteFailedError as error:
        for callback in callbacks:
            getattr(callback, "write_failed", lambda error: None)(error)
        raise


def _close_all(callbacks: Sequence[Callback]) -> None:
    """Closes every callback, even when one fails; then raises the first failure, unless an exception is already on
    its way out (the one a run ends with: a second one would only hide it)."""
    first: BaseException | None = None
    for callback in callbacks:
        try:
            callback.close()
        except BaseException as error:  # noqa: BLE001 — every writer is closed, whatever the others do
            first = first or error
    if first is not None and sys.exc_info()[1] is None:
        raise first


def learner_loop(
    learner: PreparedLearner,
    source: BatchSource,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    total_iterations: int | None = None,
    log: Callable[[str], None] = print,
) -> tuple[TrainState, Outcome]:
    """Updates until `config.training_iterations` updates have been applied, a stop is asked for, or the skipped-update
    streak reaches its limit. Each iteration:

        batch  <- source.next(state)        # the meta-batch of the state's version
        state  <- update(state, batch)      # the one jitted update (coala_dist/learner.py)
        streak.record(state)                # skipped updates in a row
        source.publish(state)               # actors start on the next version now
        every callback sees (iteration, state, metrics)

    The callbacks are closed however the loop ends (the checkpoint callback then saves: the newest state, or the
    last good one after a streak).

    Args:
      learner: the components, the state to continue from (`state.step` updates already done), the callbacks
        (called after every update with the 1-based iteration number) and the skipped-update streak.
      source: where meta-batches come from and parameters go.
      should_stop: polled between iterations (e.g. set by a SIGTERM handler).
      total_iterations: stop once `state.step` reaches it; default `config.training_iterations`.
      log: where the line for a run that has nothing left to do goes.

    Returns:
      The final state and how the loop ended (FINISHED, STOPPED, SKIPPED_STREAK or WRITE_FAILED).
    """
    components, state, callbacks, streak = learner.components, learner.state, learner.callbacks, learner.streak
    total = components.config.training_iterations if total_iterations is None else total_iterations
    if int(state.step) >= total:
        log(f"the run already finished: {int(state.step)} of {total} iterations done")
        _close_all(callbacks)
        return state, Outcome(Ending.FINISHED, int(state.step))
    update, summarize = components.learner_update, jax.jit(summarize_episodes)
    failure: WriteFailedError | None = None
    try:
        while int(state.step) < total and not should_stop() and not streak.exceeded:
            start = time.perf_counter()
            batch, source_metrics = source.next(state)
            update_start = time.perf_counter()
            state, learner_metrics = update(state, batch)
            metrics = {k: float(v) for k, v in jax.device_get(learner_metrics | summarize(batch)).items()}
            metrics |= source_metrics
            metrics["time/update_s"] = time.perf_counter() - update_start
            streak.record(state, metrics)
            if int(state.step) < total:
                metrics |= source.publish(state)
            metrics["time/iteration_s"] = time.perf_counter() - start
            _run_callbacks(callbacks, int(state.step), state, metrics)
    except WriteFailedError as error:
        failure = error
    finally:
        _close_all(callbacks)
    if failure is not None:
        return state, Outcome(Ending.WRITE_FAILED, int(state.step), str(failure.code))
    if streak.exceeded:
        return state, Outcome(Ending.SKIPPED_STREAK, int(state.step), streak.message(int(state.step)))
    ending = Ending.FINISHED if int(state.step) >= total else Ending.STOPPED
    return state, Outcome(ending, int(state.step))


class CheckpointCallback:
    """Saves every `checkpoint.save_every` updates, and once more when the loop ends for any reason (finished,
    SIGTERM/Ctrl-C, an exception), so a preempted run loses at most the iteration in flight.

    Inside a skipped-update streak (`SkipStreak`) a periodic save that falls due is deferred to the streak's end, so
    periodic checkpoints hold good states. When the loop stops because the streak reached its limit, the final save is
    the streak's last good state (at its own step; `streak.saved_as` says where), not the states after it: resuming
    retries from there. Every checkpoint records the streak it ends, so a resume keeps counting.

    Args:
      checkpointer: where checkpoints go.
      config: the experiment config.
      streak: the loop's skipped-update streak.
    """

    def __init__(self, checkpointer: Checkpointer, config: ml_collections.ConfigDict, streak: SkipStreak):
        self.checkpointer, self.config, self.streak = checkpointer, config, streak
        self._last_state: TrainState | None = None
        self._deferred = False
        self._write_failed = False

    def write_failed(self, error: WriteFailedError) -> None:
        """A write of the run failed: no final save (the disk is suspect; the newest whole checkpoint stays), and the
        error's line names the checkpoint a rerun resumes from."""
        self._write_failed = True
        steps = whole_checkpoints(self.checkpointer.directory)
        directory = self.checkpointer.directory
        where = f"{directory}/{steps[-1]}" if steps else "none yet: it starts at iteration 1"
        error.code = f"{error.code}; the newest whole checkpoint is {where}; free space and rerun the same command"

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None:
        self.checkpointer.check()  # a save of an earlier iteration that failed stops the run now, not at the next
        start = time.perf_counter()
        if self.streak.count:
            self._deferred = self._deferred or self.checkpointer.is_due(iteration)
        else:
            if self.checkpointer.save(state, self.config, force=self._deferred):
                # Saves are asynchronous: this is only the time the learner is blocked (device-to-host copy).
                metrics["checkpoint/save_blocking_s"] = time.perf_counter() - start
            self._deferred = False
        self._last_state = state

    def close(self) -> None:
        try:
            if not self._write_failed:
                self._final_save()
        finally:
            self.checkpointer.close()

    def _final_save(self) -> None:
        if self.streak.exceeded:
            if self.streak.last_good is not None:
                step = int(self.streak.last_good.step)
                self.checkpointer.save(self.streak.last_good, self.config, force=True)
                self.streak.saved_as = os.path.join(self.checkpointer.directory, str(step))
        elif self._last_state is not None:
            self.checkpointer.save(
                self._last_state, self.config, force=True, consecutive_skipped_updates=self.streak.count
            )


class SignalEvent(threading.Event):
    """Set by SIGINT/SIGTERM within `stop_on_signals`; `signum` is the first signal received (None: none)."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[SignalEvent]:
    """Within the block, SIGTERM (preemption) and SIGINT (Ctrl-C) set the yielded event (and its `signum`) instead of
    killing the process, so the loop can finish its iteration and write a final checkpoint; the caller then raises
    `StoppedBySignal(stop.signum)`. Main thread only (else a no-op)."""
    stop = SignalEvent()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if stop.is_set():  # a second signal: give up waiting
            signal.signal(signum, previous[signum])
            raise KeyboardInterrupt
        print(f"received signal {signum}: stopping after this iteration and saving a checkpoint", file=sys.stderr)
        stop.signum = signum
        stop.set()

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def local_metrics_dir(workdir: str | None) -> str | None:
    """Where metrics.csv and TensorBoard events go: the workdir itself, or for a remote workdir (gs://...), whose
    checkpoints Orbax writes through tensorstore, a local mirror `workdirs/remote/<bucket>/<path>` (the CSV writer
    needs a local file system)."""
    if workdir is None or "://" not in workdir:
        return workdir
    return os.path.join("workdirs", "remote", workdir.replace("://", "/", 1))


@dataclasses.dataclass
class PreparedLearner:
    """A learner ready for its loop (`prepare_learner` makes one from a workdir; a benchmark may make its own).

    Attributes:
      components: the built experiment.
      state: the state to continue from.
      callbacks: what sees every iteration, in order: those that add metrics (checkpoint timing, throughput) before
        those that write them (metrics.csv, TensorBoard, the progress line).
      streak: the skipped-update streak `state` ends (from its checkpoint; a fresh one if None), shared by the loop
        and the checkpoint callback.
      checkpoint: the callback that saves the state (None without a workdir).
      metrics_csv: the callback keeping the per-iteration metrics (`history`) and writing metrics.csv, if any.
    """

    components: Components
    state: TrainState
    callbacks: list[Callback] = dataclasses.field(default_factory=list)
    streak: SkipStreak | None = None
    checkpoint: CheckpointCallback | None = None
    metrics_csv: MetricsCsvWriter | None = None

    def __post_init__(self):
        if self.streak is None:
            self.streak = SkipStreak(self.components.config.max_consecutive_skipped_updates, self.state)

    @property
    def history(self) -> list[dict[str, float]]:
        """The metrics of every iteration this process ran."""
        return self.metrics_csv.history if self.metrics_csv is not None else []


def prepare_learner(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    *,
    components: Components | None = None,
    log: Callable[[str], None] = print,
    sharding: jax.sharding.Sharding | None = None,
    start_over: bool = False,
    write_metrics: bool = True,
) -> PreparedLearner:
    """Everything a learner needs before its loop, whatever the launch type: the built components, the state to
    continue from (the newest readable checkpoint in `workdir`, else a fresh one), and the callbacks (checkpoints,
    console/CSV logging) to run after every update.

    Args:
      config: the experiment config (validated by `build`).
      workdir: the run's directory (checkpoints/, metrics.csv); None keeps everything in memory.
      components: prebuilt components (tests share compiled functions this way); built from `config` if None.
      log: where the per-iteration console line goes.
      sharding: where the state's arrays live (e.g. replicated over a learner mesh); default: the first device.
      start_over: if the workdir holds checkpoints and none is readable, move them (and metrics.csv) aside and
        start from iteration 1 instead of refusing. A readable checkpoint is resumed whatever this says.
      write_metrics: whether this process writes metrics.csv and TensorBoard events (False: kept in memory). Of
        several learner processes only one may: on resume each writer rewrites metrics.csv.

    Raises:
      IncompatibleCheckpointError: the workdir's checkpoint was made with an incompatible config.
      UnreadableCheckpointsError: the workdir holds checkpoints, none is readable, and not `start_over`.
    """
    components = components or build(config)
    key = keys.seed_key(config.seed)
    placement = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = None
    consecutive = 0
    checkpointer = None
    if workdir:
        checkpointer = Checkpointer(
            workdir, save_every=config.checkpoint.save_every, max_to_keep=config.checkpoint.max_to_keep, owner=True
        )
        try:
            state = checkpointer.restore_latest(
                abstract_train_state(components.learner.init, key, placement), config, start_over=start_over
            )
        except BaseException:
            checkpointer.close()
            raise
        if state is not None:
            consecutive = int(checkpointer.saved_meta(int(state.step)).get("consecutive_skipped_updates", 0))
            streak = f" ({consecutive} iterations in a row skipped an update)" if consecutive else ""
            log(f"resumed from {checkpointer.directory} at iteration {int(state.step)}{streak}")
    if state is None:
        # Committed to the placement a restored state has: an uncommitted fresh state lowers the jitted update
        # without argument shardings, so a resume would miss every program the fresh run put in the compilation
        # cache.
        state = jax.device_put(components.learner.init(key), placement)
    streak = SkipStreak(config.max_consecutive_skipped_updates, state, consecutive)
    checkpoint = CheckpointCallback(checkpointer, config, streak) if checkpointer is not None else None
    start_iteration = int(state.step)
    metrics_dir = local_metrics_dir(workdir) if write_metrics else None
    if write_metrics and metrics_dir != workdir:
        log(f"checkpoints go to {workdir}; metrics.csv and TensorBoard events to the local {metrics_dir}")
    metrics_csv = MetricsCsvWriter(metrics_dir, start_iteration=start_iteration)
    callbacks: list[Callback] = [checkpoint] if checkpoint is not None else []
    callbacks += [ThroughputMetrics(config), metrics_csv]  # throughput adds metrics the writers write
    if metrics_dir:
        callbacks.append(TensorBoardWriter(os.path.join(metrics_dir, "tensorboard"), start_iteration, config=config))
    callbacks.append(
        ProgressReporter(
            config.training_iterations,
            config.log_every,
            start_iteration=start_iteration,
            log=log,
            tty=log is print and sys.stdout.isatty(),  # a caller's own `log` always gets whole lines
            learning_rate=config.meta.learning_rate,
        )
    )
    return PreparedLearner(components, state, callbacks, streak, checkpoint, metrics_csv)


def whole_checkpoints(directory: str) -> list[int]:
    """The steps of the finished saves in a local `checkpoints/` folder (unfinished ones carry a suffix)."""
    if "://" in directory or not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def train(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    components: Components | None = None,
    log: Callable[[str], None] = print,
    start_over: bool = False,
    stop_rule: StopRule | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Trains in this process (launch type `inprocess` without actors: rollout and update alternate).

    Args:
      config: the experiment config (validated by `build`).
      workdir: if given, `metrics.csv` is written there.
      components: prebuilt components (tests share compiled functions this way); built from `config` if None.
      log: where the per-iteration line goes.
      start_over: train from iteration 1 when every checkpoint in `workdir` is unreadable (see `prepare_learner`).
      stop_rule: ends the run before its budget when it is `reached` (it sees the resumed run's metrics first);
        the state is then saved as at a signal, and the returned state's step is below the budget.

    A workdir holding a checkpoint resumes from it; SIGTERM or Ctrl-C stops after the current iteration and saves.

    Returns:
      The final TrainState and the per-iteration metrics of this invocation.

    Raises:
      StoppedBySignal: SIGINT/SIGTERM stopped the run (after the checkpoint was saved).
      SkippedUpdatesError: too many iterations in a row skipped an update (the last good state was saved).
      UnreadableCheckpointsError, IncompatibleCheckpointError: see `prepare_learner`.
    """
    prepared = prepare_learner(config, workdir, components=components, log=log, start_over=start_over)
    if stop_rule is not None:
        stop_rule.resume(prepared.metrics_csv.resumed if prepared.metrics_csv is not None else [])
        prepared.callbacks.append(stop_rule)
    with stop_on_signals() as stop:
        state, outcome = learner_loop(
            prepared,
            InProcessSource(prepared.components),
            should_stop=lambda: stop.is_set() or (stop_rule is not None and stop_rule.reached),
            total_iterations=config.training_iterations,
            log=log,
        )
    if stop.signum is not None and not outcome.failed:
        where = f"; rerun the same command to resume from {workdir}" if workdir else ""
        print(f"stopped by signal {stop.signum} after iteration {outcome.iteration}{where}", file=sys.stderr)
    outcome.raise_for_exit(stop.signum)
    return state, prepared.history
