"""Reading a run's work directory: its per-iteration metrics and the config saved with its checkpoints.

A work directory written by `coala train` (or any launch) holds `metrics.csv` (one row per iteration) and
`checkpoints/<step>/` whose `config` item is the experiment config as JSON (coala_dist/checkpoint.py).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os

import ml_collections
import numpy as np

from coala_dist.config import default_config
from coala_dist.rl import estimators


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run.

    Attributes:
      workdir: its work directory.
      config: the experiment config saved with its newest readable checkpoint (a plain dict), None if it has none.
      rows: its per-iteration metrics, sorted by iteration (NaN where a value is missing).
    """

    workdir: str
    config: dict | None
    rows: list[dict[str, float]]

    @property
    def estimator(self) -> str | None:
        return None if self.config is None else self.config.get("estimator")

    @property
    def group(self) -> str:
        """What runs are averaged over (seeds): the estimator's name, else the work directory's name."""
        if self.estimator is not None:
            return estimators.label(self.estimator)
        return os.path.basename(os.path.normpath(self.workdir))


def json_safe(value):
    """`value` with NaN/inf replaced by None and numpy scalars by Python numbers, so `json.dump` writes strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def read_metrics_csv(path: str) -> list[dict[str, float]]:
    """A run's `metrics.csv` as rows sorted by iteration; empty cells are NaN; a repeated iteration keeps its last
    row (a run restarted without a checkpoint writes its iterations again)."""
    by_iteration: dict[int, dict[str, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            values = {k: (float(v) if v not in ("", None) else math.nan) for k, v in row.items() if k is not None}
            by_iteration[int(values["iteration"])] = values
    return [by_iteration[i] for i in sorted(by_iteration)]


def saved_config(workdir: str) -> dict | None:
    """The config saved with the newest readable checkpoint of `workdir`, or None if there is no checkpoint."""
    import orbax.checkpoint as ocp

    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    if not os.path.isdir(directory):
        return None
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=False),  # reads only: never saves, so never writes
        item_names=("state", "config", "meta"),
    )
    try:
        for step in sorted(manager.all_steps(), reverse=True):
            try:
                return manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
            except Exception:  # noqa: BLE001 — an unreadable checkpoint: try the previous one
                continue
        return None
    finally:
        manager.close()


def config_from_saved(saved: dict) -> ml_collections.ConfigDict:
    """The saved config as a ConfigDict, on top of today's defaults so fields added since the run was started exist.

    Args:
      saved: the JSON config of a checkpoint.

    Returns:
      `default_config()` with every saved field written over it.
    """
    config = default_config()

    def write(target: ml_collections.ConfigDict, values: dict) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and key in target and isinstance(target[key], ml_collections.ConfigDict):
                write(target[key], value)
            elif isinstance(value, dict):
                target[key] = ml_collections.ConfigDict(value)
            else:
                target[key] = value

    write(config, saved)
    return config


def load_run(workdir: str) -> Run:
    """Reads a work directory.

    Raises:
      FileNotFoundError: it has no metrics.csv.
    """
    path = os.path.join(workdir, "metrics.csv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no metrics.csv (is it a run's --workdir?)")
    return Run(workdir=workdir, config=saved_config(workdir), rows=read_metrics_csv(path))
