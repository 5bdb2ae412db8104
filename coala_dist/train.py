"""The training loop shared by every launch type. Read top to bottom.

    state = restore-or-init
    repeat until config.training_iterations:
        batch, source_metrics = batch_source(state)     # in-process: the jitted rollout; distributed: Reverb
        state, learner_metrics = update(state, batch)   # the one jitted update (coala_dist/learner.py)
        every callback sees (iteration, state, metrics) # console/CSV logging, checkpoints, ...

`inprocess_batch_source` generates the meta-batch in this process with `Components.rollout.episodes`; the
distributed launch (coala_dist/distributed) passes a source that samples the same `MetaEpisode`s from Reverb,
written by actors that call the very same rollout. There is no second loop.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections

from coala_dist.builder import Components, build
from coala_dist.checkpoint import Checkpointer, abstract_train_state
from coala_dist.learner import TrainState
from coala_dist.metrics import ProgressReporter, TensorBoardWriter, ThroughputMetrics, summarize_episodes
from coala_dist.rollout import MetaEpisode

# A batch source returns the meta-batch for the state's version (episodes sorted by episode index) and its own
# metrics (timings, queue sizes, policy lag...).
BatchSource = Callable[[TrainState], tuple[MetaEpisode, dict[str, float]]]

HEADLINE = (
    ("vs_naive/ego_reward", "r_meta|naive"),
    ("vs_naive/coplayer_reward", "r_naive"),
    ("vs_meta/ego_reward", "r_meta|meta"),
    ("vs_naive/cooperate_player_1", "coop_meta|naive"),
    ("vs_naive/cooperate_player_2", "coop_naive"),
    ("vs_meta/cooperate_player_1", "coop_meta|meta"),
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


def learner_loop(
    components: Components,
    state: TrainState,
    batch_source: BatchSource,
    callbacks: Sequence[Callback] = (),
    *,
    should_stop: Callable[[], bool] = lambda: False,
    total_iterations: int | None = None,
) -> TrainState:
    """Updates until `config.training_iterations` updates have been applied (or `should_stop()`).

    Args:
      components: the built experiment.
      state: the state to continue from (`state.step` updates already done).
      batch_source: where meta-batches come from.
      callbacks: called after every update with the 1-based iteration number.
      should_stop: polled between iterations (e.g. set by a SIGTERM handler).
      total_iterations: stop once `state.step` reaches it; default `components.config.training_iterations`.

    Returns:
      The final state.
    """
    update = components.learner_update
    summarize = jax.jit(summarize_episodes)
    total = components.config.training_iterations if total_iterations is None else total_iterations
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
            for callback in callbacks:
                callback.on_iteration(int(state.step), state, metrics)
    finally:
        for callback in callbacks:
            callback.close()
    return state


def format_metrics(iteration: int, metrics: dict[str, Any]) -> str:
    """One console line: the headline rewards and cooperation rates, the loss and the timings."""
    parts = [f"it {iteration:5d}"]
    for key, label in HEADLINE:
        if key in metrics and metrics[key] == metrics[key]:  # skip NaN (no episode of that kind)
            parts.append(f"{label} {float(metrics[key]):+.3f}")
    parts.append(f"loss {float(metrics['learner/loss']):.4f}")
    parts.append(f"t {metrics.get('time/rollout_s', 0.0):.2f}+{metrics['time/update_s']:.2f}s")
    return "  ".join(parts)


class ConsoleAndCsvLogger:
    """Prints a line every `log_every` iterations and appends every iteration's metrics to `workdir/metrics.csv`.

    On resume (`start_iteration` > 0) rows of iterations after the restored one (written before an interruption and
    about to be redone) are dropped, so the CSV holds each iteration once.
    """

    def __init__(
        self, workdir: str | None, log_every: int, log: Callable[[str], None] = print, start_iteration: int = 0
    ):
        self.log_every, self.log = log_every, log
        self.history: list[dict[str, float]] = []
        self._file = None
        self._rows: list[dict] = []  # every row of the file, so that a late new metric can widen the header
        self._fields: list[str] = []
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.csv")
            if os.path.exists(path) and start_iteration > 0:
                with open(path, newline="") as f:
                    self._rows = [row for row in csv.DictReader(f) if int(row["iteration"]) <= start_iteration]
            self._file = open(path, "w", newline="")  # noqa: SIM115  (closed in close())
            if self._rows:
                self._fields = list(self._rows[0])
                self._rewrite()

    def _rewrite(self) -> None:
        """Writes the whole file again with the current columns (metrics absent from a row stay empty)."""
        self._file.seek(0)
        self._file.truncate()
        writer = csv.DictWriter(self._file, fieldnames=self._fields, restval="")
        writer.writeheader()
        writer.writerows(self._rows)
        self._file.flush()

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        self.history.append(row)
        if self._file is not None:
            self._rows.append(row)
            new_fields = [k for k in row if k not in self._fields]
            if new_fields:  # e.g. checkpoint/save_blocking_s first appears at the first save
                self._fields += new_fields
                self._rewrite()
            else:
                csv.DictWriter(self._file, fieldnames=self._fields, restval="").writerow(row)
                self._file.flush()
        if iteration % self.log_every == 0 or iteration == 1:
            self.log(format_metrics(iteration, metrics))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CheckpointCallback:
    """Saves every `checkpoint.save_every` updates, and once more when the loop ends for any reason (finished,
    SIGTERM/Ctrl-C, an exception), so a preempted run loses at most the iteration in flight."""

    def __init__(self, checkpointer: Checkpointer, config: ml_collections.ConfigDict):
        self.checkpointer, self.config = checkpointer, config
        self._last_state: TrainState | None = None

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None:
        start = time.perf_counter()
        if self.checkpointer.save(state, self.config):
            # Saves are asynchronous: this is only the time the learner is blocked (device-to-host copy).
            metrics["checkpoint/save_blocking_s"] = time.perf_counter() - start
        self._last_state = state

    def close(self) -> None:
        if self._last_state is not None:
            self.checkpointer.save(self._last_state, self.config, force=True)
        self.checkpointer.close()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Within the block, SIGTERM (preemption) and SIGINT (Ctrl-C) set the yielded event instead of killing the
    process, so the loop can finish its iteration and write a final checkpoint. Main thread only (else a no-op)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum, frame):
        if stop.is_set():  # a second signal: give up waiting
            signal.signal(signum, previous[signum])
            raise KeyboardInterrupt
        print(f"received signal {signum}: stopping after this iteration and saving a checkpoint", file=sys.stderr)
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


def prepare_learner(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    *,
    components: Components | None = None,
    log: Callable[[str], None] = print,
    sharding: jax.sharding.Sharding | None = None,
) -> tuple[Components, TrainState, list[Callback]]:
    """Everything a learner needs before its loop, whatever the launch type: the built components, the state to
    continue from (the newest readable checkpoint in `workdir`, else a fresh one), and the callbacks (checkpoints,
    console/CSV logging) to run after every update.

    Args:
      config: the experiment config (validated by `build`).
      workdir: the run's directory (checkpoints/, metrics.csv); None keeps everything in memory.
      components: prebuilt components (tests share compiled functions this way); built from `config` if None.
      log: where the per-iteration console line goes.
      sharding: where the state's arrays live (e.g. replicated over a learner mesh); default: the first device.

    Raises:
      IncompatibleCheckpointError: the workdir's checkpoint was made with an incompatible config.
    """
    components = components or build(config)
    key = jax.random.PRNGKey(config.seed)
    state = None
    callbacks: list[Callback] = []
    if workdir:
        checkpointer = Checkpointer(
            workdir, save_every=config.checkpoint.save_every, max_to_keep=config.checkpoint.max_to_keep
        )
        state = checkpointer.restore_latest(abstract_train_state(components.learner.init, key, sharding), config)
        if state is not None:
            log(f"resumed from {checkpointer.directory} at iteration {int(state.step)}")
        callbacks.append(CheckpointCallback(checkpointer, config))  # before the logger: it adds a metric
    if state is None:
        state = components.learner.init(key)
        if sharding is not None:
            state = jax.device_put(state, sharding)
    start_iteration = int(state.step)
    metrics_dir = local_metrics_dir(workdir)
    if metrics_dir != workdir:
        log(f"checkpoints go to {workdir}; metrics.csv and TensorBoard events to the local {metrics_dir}")
    # Order matters: callbacks that add metrics (checkpoint timing, throughput) run before the writers.
    callbacks.append(ThroughputMetrics(config))
    # The CSV and the in-memory history; the console is the progress reporter's (below).
    callbacks.append(
        ConsoleAndCsvLogger(metrics_dir, config.log_every, lambda line: None, start_iteration=start_iteration)
    )
    if metrics_dir:
        callbacks.append(TensorBoardWriter(os.path.join(metrics_dir, "tensorboard"), start_iteration, config=config))
    callbacks.append(
        ProgressReporter(
            config.training_iterations,
            config.log_every,
            start_iteration=start_iteration,
            log=log,
            tty=log is print and sys.stdout.isatty(),  # a caller's own `log` always gets whole lines
        )
    )
    return components, state, callbacks


def train(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    components: Components | None = None,
    log: Callable[[str], None] = print,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Trains in this process (launch type `inprocess` without actors: rollout and update alternate).

    Args:
      config: the experiment config (validated by `build`).
      workdir: if given, `metrics.csv` is written there.
      components: prebuilt components (tests share compiled functions this way); built from `config` if None.
      log: where the per-iteration line goes.

    A workdir holding a checkpoint resumes from it; SIGTERM or Ctrl-C stops after the current iteration and saves.

    Returns:
      The final TrainState and the per-iteration metrics of this invocation.
    """
    components, state, callbacks = prepare_learner(config, workdir, components=components, log=log)
    logger = next(c for c in callbacks if isinstance(c, ConsoleAndCsvLogger))
    if int(state.step) >= config.training_iterations:
        log(f"run in {workdir} already finished: {int(state.step)} of {config.training_iterations} iterations done")
        for callback in callbacks:
            callback.close()
        return state, logger.history
    with stop_on_signals() as stop:
        state = learner_loop(
            components,
            state,
            inprocess_batch_source(components),
            callbacks,
            should_stop=stop.is_set,
            total_iterations=config.training_iterations,
        )
    return state, logger.history
