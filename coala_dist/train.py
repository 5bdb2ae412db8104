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

import csv
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import jax
import ml_collections

from coala_dist.builder import Components, build
from coala_dist.learner import TrainState
from coala_dist.metrics import summarize_episodes
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
    """Generates every agent's meta-batch in this process (sync mode: always the state's own version)."""
    rollout = jax.jit(components.rollout.episodes)
    episode_indices = components.rollout.iteration_indices()
    learner = components.learner

    def next_batch(state: TrainState) -> tuple[MetaEpisode, dict[str, float]]:
        start = time.perf_counter()
        batch = rollout(
            state.meta_params, learner.naive_initialisations(state), state.run_key, state.version, episode_indices
        )
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
) -> TrainState:
    """Updates until `config.training_iterations` updates have been applied (or `should_stop()`).

    Args:
      components: the built experiment.
      state: the state to continue from (`state.step` updates already done).
      batch_source: where meta-batches come from.
      callbacks: called after every update with the 1-based iteration number.
      should_stop: polled between iterations (e.g. set by a SIGTERM handler).

    Returns:
      The final state.
    """
    update = jax.jit(components.learner.update)
    summarize = jax.jit(summarize_episodes)
    total = components.config.training_iterations
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
    """Prints a line every `log_every` iterations and appends every iteration's metrics to `workdir/metrics.csv`."""

    def __init__(self, workdir: str | None, log_every: int, log: Callable[[str], None] = print):
        self.log_every, self.log = log_every, log
        self.history: list[dict[str, float]] = []
        self._file = self._writer = None
        if workdir:
            os.makedirs(workdir, exist_ok=True)
            path = os.path.join(workdir, "metrics.csv")
            self._file = open(path, "a", newline="")  # noqa: SIM115  (closed in close())

    def on_iteration(self, iteration: int, state: TrainState, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        self.history.append(row)
        if self._file is not None:
            if self._writer is None:
                self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
                if self._file.tell() == 0:
                    self._writer.writeheader()
            self._writer.writerow(row)
            self._file.flush()
        if iteration % self.log_every == 0 or iteration == 1:
            self.log(format_metrics(iteration, metrics))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def prepare_learner(
    config: ml_collections.ConfigDict,
    workdir: str | None,
    *,
    components: Components | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Components, TrainState, list[Callback]]:
    """Everything a learner needs before its loop, whatever the launch type: the built components, the state to
    continue from, and the callbacks (logging) to run after every update.

    Args:
      config: the experiment config (validated by `build`).
      workdir: the run's directory (metrics.csv); None keeps everything in memory.
      components: prebuilt components (tests share compiled functions this way); built from `config` if None.
      log: where the per-iteration console line goes.
    """
    components = components or build(config)
    state = components.learner.init(jax.random.PRNGKey(config.seed))
    callbacks: list[Callback] = [ConsoleAndCsvLogger(workdir, config.log_every, log)]
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

    Returns:
      The final TrainState and the per-iteration metrics.
    """
    components, state, callbacks = prepare_learner(config, workdir, components=components, log=log)
    state = learner_loop(components, state, inprocess_batch_source(components), callbacks)
    history = next(c.history for c in callbacks if isinstance(c, ConsoleAndCsvLogger))
    return state, history
