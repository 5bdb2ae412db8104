"""What `coala train` says before its silent first iteration and after its last: the compile notice and where
everything went.

The first iteration of a process compiles the rollout and the update (tens of seconds for the paper config on a
2-core CPU) unless JAX's persistent compilation cache holds the programs. How long it will take is not guessed from
the config: each run records its first iteration's measured time in `first_iterations.json` in the cache
(keyed by what changes the compiled programs: the config without its run-length and bookkeeping fields, the launch
type and the JAX version), together with whether the cache was on. The notice then quotes the last measurement of
the same programs: a cached time (a run that wrote no new program into the cache) when there is one, else the time it
took to compile them. A config never run on this machine gets no number, and the notice says so.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
from typing import Any

from coala_dist import xla_flags

TIMES_FILE = "first_iterations.json"
# Fields that change how long a run lasts or where it writes, not what is compiled.
NOT_COMPILED = ("training_iterations", "log_every", "max_consecutive_skipped_updates", "checkpoint", "seed")


def programs_key(config: Any, launch: str) -> str:
    """A short hash of what decides the compiled programs: the config (less `NOT_COMPILED`), launch type, JAX."""
    import importlib.metadata

    fields = {k: v for k, v in config.to_dict().items() if k not in NOT_COMPILED}
    text = json.dumps([fields, launch, importlib.metadata.version("jax")], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def times_path(cache_dir: str | None) -> str | None:
    """Where measured first iterations are kept: in the compilation cache (JAX reads only its `*-cache` files);
    nowhere when it is off."""
    return os.path.join(cache_dir, TIMES_FILE) if cache_dir else None


def _load_times(path: str | None) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    try:
        with open(path) as f:
            times = json.load(f)
        return times if isinstance(times, dict) else {}
    except (OSError, ValueError):
        return {}


def compile_notice(key: str, cache_dir: str | None, times: dict[str, dict[str, float]]) -> str:
    """The line printed before the first iteration: what it does and, when measured before, how long it took."""
    seen = times.get(key, {})
    if cache_dir is None:
        return "compiling the rollout and the update (the compilation cache is off: every run compiles them again)"
    if "cached" in seen:
        return (
            f"loading the compiled rollout and update from the cache ({cache_dir}): ≈ {seen['cached']:.0f} s "
            "(measured when this config last ran here)"
        )
    if "compiled" in seen:
        return (
            f"loading the compiled rollout and update from the cache ({cache_dir}); compiling them took "
            f"≈ {seen['compiled']:.0f} s the first time this config ran here"
        )
    return (
        "compiling the rollout and the update: the first time for this config on this machine (no earlier timing; "
        f"the paper config took 20-30 s on a 2-core CPU), loaded from the cache ({cache_dir}) afterwards"
    )


def first_iteration_seconds(metrics_csv: str, iteration: int) -> float | None:
    """`time/iteration_s` of `iteration` in a run's metrics.csv; None when the row or the file is missing."""
    try:
        with open(metrics_csv, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("iteration") == str(iteration):
                    return float(row["time/iteration_s"])
    except (OSError, ValueError, KeyError, csv.Error):
        return None
    return None


def record_first_iteration(
    path: str, key: str, seconds: float, *, cached: bool, times: dict[str, dict[str, float]]
) -> None:
    """Keeps `seconds` as this programs key's compiled (`cached=False`) or cached first iteration; never fails a run."""
    entry = dict(times.get(key, {}))
    entry["cached" if cached else "compiled"] = round(seconds, 1)
    updated = {**times, key: entry}
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as f:
            json.dump(updated, f, indent=1, sort_keys=True)
        os.replace(temporary, path)
    except OSError:
        pass


def outputs_line(workdir: str, metrics_dir: str) -> str:
    """The run's last line: where its checkpoints, metrics.csv and TensorBoard events are."""
    checkpoints = os.path.join(workdir if "://" in workdir else os.path.abspath(workdir), "checkpoints")
    metrics = os.path.abspath(metrics_dir)
    return (
        f"checkpoints: {checkpoints}  metrics: {os.path.join(metrics, 'metrics.csv')}  "
        f"TensorBoard: tensorboard --logdir {os.path.join(metrics, 'tensorboard')}"
    )


class RunNotes:
    """The compile notice at the start of a run, and at its end the outputs line and the first iteration's timing.

    Args:
      config: the run's config.
      launch: its launch type.
      workdir: its work directory.
      metrics_dir: where its metrics.csv and TensorBoard events go (the workdir, or a local mirror of a remote one).
      start_iteration: the iteration its checkpoint resumes from (0 for a fresh run).
    """

    def __init__(self, config: Any, launch: str, workdir: str, metrics_dir: str, start_iteration: int):
        self.workdir, self.metrics_dir, self.start = workdir, metrics_dir, start_iteration
        self.cache_dir = xla_flags.compilation_cache_dir()
        self.key = programs_key(config, launch)
        self.path = times_path(self.cache_dir)
        self.times = _load_times(self.path)
        self._cache_entries = _cache_entries(self.cache_dir)

    def announce(self) -> None:
        """Prints the compile notice (stderr, so that the progress lines on stdout stay one per iteration)."""
        print(f"coala train: {compile_notice(self.key, self.cache_dir, self.times)}", file=sys.stderr, flush=True)

    def finish(self) -> None:
        """Records the first iteration of this process, if it ran, and prints where everything went."""
        seconds = first_iteration_seconds(os.path.join(self.metrics_dir, "metrics.csv"), self.start + 1)
        if seconds is not None and self.path is not None:
            # Loaded from the cache when the run wrote no new program into it.
            cached = self.cache_dir is not None and _cache_entries(self.cache_dir) <= self._cache_entries
            record_first_iteration(self.path, self.key, seconds, cached=cached, times=self.times)
        if os.path.exists(os.path.join(self.metrics_dir, "metrics.csv")):  # a run refused at its start wrote none
            print(f"coala train: {outputs_line(self.workdir, self.metrics_dir)}", file=sys.stderr, flush=True)


# The programs the notice is about, as JAX names their cache entries (`jax.jit(rollout.episodes)`,
# `jax.jit(learner.update)`); small helpers that cross the cache's compile-time threshold on a busy machine don't count.
ANNOUNCED_PROGRAMS = ("jit_episodes-", "jit_update-")


def _cache_entries(cache_dir: str | None) -> set[str]:
    """The rollout and update programs in the persistent cache (empty when it is off or not created yet)."""
    try:
        names = os.listdir(cache_dir) if cache_dir else []
    except OSError:
        return set()
    return {name for name in names if name.startswith(ANNOUNCED_PROGRAMS) and name.endswith("-cache")}


def newest_checkpoint_step(workdir: str) -> int:
    """The newest step folder under `workdir/checkpoints` (0 if none or remote): where a resume starts."""
    if "://" in workdir:
        return 0
    try:
        names = os.listdir(os.path.join(workdir, "checkpoints"))
    except OSError:
        return 0
    return max((int(name) for name in names if name.isdigit()), default=0)
