"""The training loop shared by every launch type. Read top to bottom.

    state = restore-or-init
    repeat until config.training_iterations:
        batch, source_metrics = batch_source(state)     # in-process: the jitted rollout; distributed: Reverb
        state, learner_metrics = update(state, batch)   # the one jitted update (coala_dist/learner.py)
        every callback sees (iteration, state, metrics) # console/CSV logging, checkpoints, ...

`inprocess_batch_source` generates the meta-batch in this process with `Components.rollout.episodes`; the
distributed launch (coala_dist/distributed) passes a source that samples the same `MetaEpisode`s from Reverb,
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
  * (launch `local`/`ray`) the replay node's or a learner's process dies, or an actor's restarts are used up: a
    living learner finishes or abandons the iteration in flight and saves, every node stops, then `NodeFailedError`:
    one line, exit status 1; the same command resumes (in sync mode with the parameters an uninterrupted run would
    have).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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

# A batch source returns the meta-batch for the state's version (episodes sorted by episode index) and its own
# metrics (timings, queue sizes, policy lag...).
BatchSource = Callable[[TrainState], tuple[MetaEpisode, dict[str, float]]]

# Iterations in a row, ending with this one, in which at least one meta agent's update was skipped (non-finite loss or
# gradient; the update then keeps that agent's parameters and optimiser state). Set by `learner_loop`.
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
    """A node of a distributed run is gone for good (the replay node's or a learner's process died, or an actor's
    restarts are used up): the launcher stopped every other node and the learner saved what it could (its last whole
    iteration, or its newest periodic checkpoint if a learner died); the message is one line and says how to
    resume."""


def _consecutive_skipped_message(iteration: int, consecutive: int, limit: int, last_good_iteration: int) -> str:
    return (
        f"training stopped at iteration {iteration}: {consecutive} iterations in a row skipped an update because the "
        f"loss or a gradient was not finite (config.max_consecutive_skipped_updates={limit}); the last good state is "
        f"iteration {last_good_iteration}"
    )


class Callback(Protocol):
    """Sees every iteration's result; closed when the loop ends (normally or not)."""

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def inprocess_batch_source(components: Components) -> BatchSource:
    """Generates every agent's meta-batch in this process (sync mode: always the state's own version).

    The iteration is rolled out as the actors roll it out: one call per work unit (`[1, n]` episode indices, n =
    meta_batch_size / distributed.work_units_per_agent), concatenated in episode order. The same calls with the same
    shapes make the batch bit-identical to a distributed run's: XLA:CPU may round differently by batch shape
    (measured: behaviour values of one `[2, 4]` call and two `[1, 4]` calls differ by ~1e-9 on jax 0.4.34).
    """
    rollout = components.rollout_episodes
    indices = components.rollout.iteration_indices()  # [P, N]
    units = indices.reshape(-1, indices.shape[1] // components.config.distributed.work_units_per_agent)
    work_units = [units[i : i + 1] for i in range(units.shape[0])]  # a loop over P·U work units, not time steps
    learner = components.learner

    def next_batch(state: TrainState) -> tuple[MetaEpisode, dict[str, float]]:
        start = time.perf_counter()
        naive = learner.naive_initialisations(state)
        blocks = [rollout(state.meta_params, naive, state.run_key, state.version, unit) for unit in work_units]
        batch = blocks[0] if len(blocks) == 1 else jax.tree_util.tree_map(lambda *x: jnp.concatenate(x), *blocks)
        jax.block_until_ready(batch)
        return batch, {"time/rollout_s": time.perf_counter() - start}

    return next_batch


def _run_callbacks(callbacks: Sequence[Callback], iteration: int, state: TrainState, metrics: dict) -> None:
    """Calls every callback; a failed write is told to every callback (`write_failed`, e.g. no final checkpoint
    save on a failing disk) before it ends the loop."""
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
    components: Components,
    state: TrainState,
    batch_source: BatchSource,
    callbacks: Sequence[Callback] = (),
    *,
    should_stop: Callable[[], bool] = lambda: False,
    total_iterations: int | None = None,
    consecutive_skipped_updates: int = 0,
) -> TrainState:
    """Updates until `config.training_iterations` updates have been applied (or `should_stop()`).

    An iteration in which the update of at least one meta agent was skipped (its loss or a gradient was not finite:
    the agent keeps its parameters) extends a streak, `metrics[CONSECUTIVE_SKIPPED_KEY]`; an iteration without one
    ends it. When the streak reaches `config.max_consecutive_skipped_updates` (0: never), the callbacks see that
    iteration, are closed (the checkpoint callback then saves the last good state), and `SkippedUpdatesError` is
    raised.

    Args:
      components: the built experiment.
      state: the state to continue from (`state.step` updates already done).
      batch_source: where meta-batches come from.
      callbacks: called after every update with the 1-based iteration number.
      should_stop: polled between iterations (e.g. set by a SIGTERM handler).
      total_iterations: stop once `state.step` reaches it; default `components.config.training_iterations`.
      consecutive_skipped_updates: the streak `state` ends (from its checkpoint), so a resumed run keeps counting.

    Returns:
      The final state.

    Raises:
      SkippedUpdatesError: too many iterations in a row skipped an update.
    """
    update = components.learner_update
    summarize = jax.jit(summarize_episodes)
    total = components.config.training_iterations if total_iterations is None else total_iterations
    limit = components.config.max_consecutive_skipped_updates
    consecutive = consecutive_skipped_updates
    skipped_total = float(state.skipped_updates)
    try:
        while int(state.step) < total and not should_stop():
            start = time.perf_counter()
            batch, source_metrics = batch_source(state)
            update_start = time.perf_counter()
            state, learner_metrics = update(state, batch)
            metrics = jax.device_get(learner_metrics | summarize(batch))
            metrics = {k: float(v) for k, v in metrics.items()} | source_metrics
            now = time.perf_counter()
            metrics["time/update_s"] = now - update_start
            metrics["time/iteration_s"] = now - start
            skipped_now = metrics.get("learner/skipped_updates", skipped_total) - skipped_total
            skipped_total += skipped_now
            consecutive = consecutive + 1 if skipped_now > 0 else 0
            metrics[CONSECUTIVE_SKIPPED_KEY] = float(consecutive)
            iteration = int(state.step)
            _run_callbacks(callbacks, iteration, state, metrics)
            if limit and consecutive >= limit:
                raise SkippedUpdatesError(
                    _consecutive_skipped_message(iteration, consecutive, limit, iteration - consecutive)
                )
    finally:
        _close_all(callbacks)
    return state


class CheckpointCallback:
    """Saves every `checkpoint.save_every` updates, and once more when the loop ends for any reason (finished,
    SIGTERM/Ctrl-C, an exception), so a preempted run loses at most the iteration in flight.

    Skipped updates (`CONSECUTIVE_SKIPPED_KEY` > 0): a periodic save that falls inside a streak is deferred to the
    streak's end, so periodic checkpoints hold good states. When the loop stops because the streak reached
    `config.max_consecutive_skipped_updates`, the final save is the last good state (the state after the last
    iteration without a skipped update, at its own step; `saved_step` says which), not the states after it: resuming
    retries from there. Every checkpoint records the streak it ends, so a resume keeps counting.

    Args:
      checkpointer: where checkpoints go.
      config: the experiment config.
      state: the state the loop starts from (restored or fresh).
      consecutive_skipped_updates: the streak `state` ends (0 for a fresh run).
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        config: ml_collections.ConfigDict,
        state: TrainState | None = None,
        consecutive_skipped_updates: int = 0,
    ):
        self.checkpointer, self.config = checkpointer, config
        self._limit = config.max_consecutive_skipped_updates
        self._last_state: TrainState | None = None
        self._consecutive = consecutive_skipped_updates
        # Unknown when the run resumed inside a streak: its start lies before this process.
        self._last_good: TrainState | None = state if consecutive_skipped_updates == 0 else None
        self._deferred = False
        self._write_failed = False
        self.saved_step: int | None = None

    def write_failed(self, error: WriteFailedError) -> None:
        """A write of the run failed: no final save (the disk is suspect; the newest whole checkpoint stays)."""
        del error
        self._write_failed = True

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None:
        consecutive = int(metrics.get(CONSECUTIVE_SKIPPED_KEY, 0))
        self.checkpointer.check()  # a save of an earlier iteration that failed stops the run now, not at the next
        start = time.perf_counter()
        if consecutive:
            self._deferred = self._deferred or self.checkpointer.is_due(iteration)
        else:
            self._last_good = state
            if self.checkpointer.save(state, self.config, force=self._deferred):
                # Saves are asynchronous: this is only the time the learner is blocked (device-to-host copy).
                metrics["checkpoint/save_blocking_s"] = time.perf_counter() - start
            self._deferred = False
        self._last_state, self._consecutive = state, consecutive

    def close(self) -> None:
        try:
            if not self._write_failed:
                self._final_save()
        finally:
            self.checkpointer.close()

    def _final_save(self) -> None:
        if self._limit and self._consecutive >= self._limit:
            if self._last_good is not None:
                self.checkpointer.save(self._last_good, self.config, force=True)
                self.saved_step = int(self._last_good.step)
        elif self._last_state is not None:
            self.checkpointer.save(
                self._last_state, self.config, force=True, consecutive_skipped_updates=self._consecutive
            )
            self.saved_step = int(self._last_state.step)


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
    """What `prepare_learner` returns.

    Attributes:
      components: the built experiment.
      state: the state to continue from.
      checkpoint: saves the state (None without a workdir).
      metrics_csv: the per-iteration metrics in memory (`history`) and in metrics.csv.
      writers: what else sees every iteration's metrics: throughput, TensorBoard, the progress line (in order).
      consecutive_skipped_updates: the skipped-update streak `state` ends (from its checkpoint; 0 if fresh).
    """

    components: Components
    state: TrainState
    checkpoint: CheckpointCallback | None
    metrics_csv: MetricsCsvWriter
    writers: list[Callback]
    consecutive_skipped_updates: int = 0

    @property
    def callbacks(self) -> list[Callback]:
        """Every callback in the order the loop runs them: those that add metrics (checkpoint timing, throughput)
        before those that write them."""
        first = [self.checkpoint] if self.checkpoint is not None else []
        return first + self.writers[:1] + [self.metrics_csv] + self.writers[1:]


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
    checkpoint = CheckpointCallback(checkpointer, config, state, consecutive) if checkpointer is not None else None
    start_iteration = int(state.step)
    metrics_dir = local_metrics_dir(workdir) if write_metrics else None
    if write_metrics and metrics_dir != workdir:
        log(f"checkpoints go to {workdir}; metrics.csv and TensorBoard events to the local {metrics_dir}")
    writers: list[Callback] = [ThroughputMetrics(config)]  # first: it adds metrics the others write
    if metrics_dir:
        writers.append(TensorBoardWriter(os.path.join(metrics_dir, "tensorboard"), start_iteration, config=config))
    writers.append(
        ProgressReporter(
            config.training_iterations,
            config.log_every,
            start_iteration=start_iteration,
            log=log,
            tty=log is print and sys.stdout.isatty(),  # a caller's own `log` always gets whole lines
            learning_rate=config.meta.learning_rate,
        )
    )
    metrics_csv = MetricsCsvWriter(metrics_dir, start_iteration=start_iteration)
    return PreparedLearner(components, state, checkpoint, metrics_csv, writers, consecutive)


def with_checkpoint_location(error: SkippedUpdatesError, checkpoint: CheckpointCallback | None) -> SkippedUpdatesError:
    """`error` with where the last good state was saved appended (when the checkpoint callback saved it)."""
    if checkpoint is None:
        return error
    if checkpoint.saved_step is None:
        return SkippedUpdatesError(f"{error.code}, from before this process resumed (an older checkpoint)")
    path = os.path.join(checkpoint.checkpointer.directory, str(checkpoint.saved_step))
    return SkippedUpdatesError(f"{error.code}, saved as {path}")


def with_resume_hint(error: WriteFailedError, checkpoint: CheckpointCallback | None) -> WriteFailedError:
    """`error` with the checkpoint a rerun resumes from (the newest whole one) appended to its one line."""
    if checkpoint is not None:
        directory = checkpoint.checkpointer.directory
        steps = whole_checkpoints(directory)
        where = f"{directory}/{steps[-1]}" if steps else "none yet: it starts at iteration 1"
        error.code = f"{error.code}; the newest whole checkpoint is {where}; free space and rerun the same command"
    return error


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
) -> tuple[TrainState, list[dict[str, float]]]:
    """Trains in this process (launch type `inprocess` without actors: rollout and update alternate).

    Args:
      config: the experiment config (validated by `build`).
      workdir: if given, `metrics.csv` is written there.
      components: prebuilt components (tests share compiled functions this way); built from `config` if None.
      log: where the per-iteration line goes.
      start_over: train from iteration 1 when every checkpoint in `workdir` is unreadable (see `prepare_learner`).

    A workdir holding a checkpoint resumes from it; SIGTERM or Ctrl-C stops after the current iteration and saves.

    Returns:
      The final TrainState and the per-iteration metrics of this invocation.

    Raises:
      StoppedBySignal: SIGINT/SIGTERM stopped the run (after the checkpoint was saved).
      SkippedUpdatesError: too many iterations in a row skipped an update (the last good state was saved).
      UnreadableCheckpointsError, IncompatibleCheckpointError: see `prepare_learner`.
    """
    prepared = prepare_learner(config, workdir, components=components, log=log, start_over=start_over)
    state, callbacks = prepared.state, prepared.callbacks
    if int(state.step) >= config.training_iterations:
        log(f"run in {workdir} already finished: {int(state.step)} of {config.training_iterations} iterations done")
        for callback in callbacks:
            callback.close()
        return state, prepared.metrics_csv.history
    with stop_on_signals() as stop:
        try:
            state = learner_loop(
                prepared.components,
                state,
                inprocess_batch_source(prepared.components),
                callbacks,
                should_stop=stop.is_set,
                total_iterations=config.training_iterations,
                consecutive_skipped_updates=prepared.consecutive_skipped_updates,
            )
        except SkippedUpdatesError as error:
            raise with_checkpoint_location(error, prepared.checkpoint) from None
        except WriteFailedError as error:
            raise with_resume_hint(error, prepared.checkpoint) from None
    if stop.signum is not None:
        where = f"; rerun the same command to resume from {workdir}" if workdir else ""
        print(f"stopped by signal {stop.signum} after iteration {int(state.step)}{where}", file=sys.stderr)
        raise StoppedBySignal(stop.signum)
    return state, prepared.metrics_csv.history
