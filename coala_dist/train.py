"""The in-process training loop: roll out a meta-batch per agent, update every agent, log. Read top to bottom.

The distributed launch (coala_dist/distributed) calls the very same `Components.rollout.episodes` and
`Components.learner.update`; this file only sequences them in one process.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from coala_dist.builder import Components, build
from coala_dist.learner import TrainState
from coala_dist.metrics import summarize_episodes

HEADLINE = (
    ("vs_naive/ego_reward", "r_meta|naive"),
    ("vs_naive/coplayer_reward", "r_naive"),
    ("vs_meta/ego_reward", "r_meta|meta"),
    ("vs_naive/cooperate_player_1", "coop_meta|naive"),
    ("vs_naive/cooperate_player_2", "coop_naive"),
    ("vs_meta/cooperate_player_1", "coop_meta|meta"),
)


def make_iteration(components: Components) -> Callable[[TrainState], tuple[TrainState, dict[str, jax.Array]]]:
    """Returns `iteration(state) -> (state, metrics)`: rollout + update in sync mode, as two jitted calls."""
    rollout = jax.jit(components.rollout.episodes)
    update = jax.jit(components.learner.update)
    summarize = jax.jit(summarize_episodes)
    episode_indices = components.rollout.iteration_indices()
    learner = components.learner

    def iteration(state: TrainState) -> tuple[TrainState, dict[str, Any]]:
        start = time.perf_counter()
        batch = rollout(
            state.meta_params, learner.naive_initialisations(state), state.run_key, state.version, episode_indices
        )
        jax.block_until_ready(batch)
        rollout_seconds = time.perf_counter() - start
        state, metrics = update(state, batch)
        metrics = metrics | summarize(batch)
        metrics = jax.device_get(metrics)
        total_seconds = time.perf_counter() - start
        metrics["time/rollout_s"] = rollout_seconds
        metrics["time/update_s"] = total_seconds - rollout_seconds
        return state, metrics

    return iteration


def format_metrics(iteration: int, metrics: dict[str, Any]) -> str:
    parts = [f"it {iteration:5d}"]
    for key, label in HEADLINE:
        if key in metrics and metrics[key] == metrics[key]:  # skip NaN (no episode of that kind)
            parts.append(f"{label} {float(metrics[key]):+.3f}")
    parts.append(f"loss {float(metrics['learner/loss']):.4f}")
    parts.append(f"t {metrics['time/rollout_s']:.2f}+{metrics['time/update_s']:.2f}s")
    return "  ".join(parts)


def train(
    config: ml_collections.ConfigDict,
    workdir: str | None = None,
    *,
    log: Callable[[str], None] = print,
) -> tuple[TrainState, list[dict[str, Any]]]:
    """Trains for `config.training_iterations` iterations in this process.

    Args:
      config: the experiment config (validated here).
      workdir: if given, `metrics.csv` is written there (one row per iteration).
      log: where the per-iteration line goes.

    Returns:
      The final TrainState and the list of per-iteration metric dicts.
    """
    components = build(config)
    state = components.learner.init(jax.random.PRNGKey(config.seed))
    iteration = make_iteration(components)
    history: list[dict[str, Any]] = []
    writer = csv_file = None
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        csv_file = open(os.path.join(workdir, "metrics.csv"), "w", newline="")  # noqa: SIM115
    try:
        for it in range(config.training_iterations):
            state, metrics = iteration(state)
            metrics = {"iteration": it + 1, **{k: float(v) for k, v in metrics.items()}}
            history.append(metrics)
            if csv_file is not None:
                if writer is None:
                    writer = csv.DictWriter(csv_file, fieldnames=list(metrics))
                    writer.writeheader()
                writer.writerow(metrics)
                csv_file.flush()
            if (it + 1) % config.log_every == 0 or it == 0:
                log(format_metrics(it + 1, metrics))
    finally:
        if csv_file is not None:
            csv_file.close()
    return state, history
