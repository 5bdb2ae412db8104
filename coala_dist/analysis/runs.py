"""Runs on disk: a work directory's per-iteration metrics, saved config and newest state, strict JSON, and where
reports may go.

A work directory written by `coala train` (or any launch) holds `metrics.csv` (one row per iteration) and
`checkpoints/<step>/` whose `config` item is the experiment config as JSON (coala_dist/checkpoint.py). Reading metrics
and configs needs no JAX; `restore_workdir` (the state, for `coala eval` and `coala snr`) imports the builder when
called.

The published results live in the repository's `results/` folder; runs whose numbers mean nothing (`coala
experiment --smoke`, `coala bench --quick`) never write there (`in_published_results`).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
from typing import TYPE_CHECKING, Any

import ml_collections
import numpy as np

from coala_dist.analysis.style import label
from coala_dist.config import default_config

if TYPE_CHECKING:
    from coala_dist.builder import Components
    from coala_dist.learner import TrainState


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
            return label(self.estimator)
        return os.path.basename(os.path.normpath(self.workdir))


def json_safe(value: Any, significant_digits: int | None = None) -> Any:
    """`value` as strict JSON accepts it: NaN/inf become None, numpy scalars Python numbers, tuples lists.

    Args:
      value: nested dicts, lists and tuples of numbers, strings, None.
      significant_digits: floats are rounded to this many significant digits (what experiment reports keep);
        None keeps them exact (`coala eval`, `coala bench`).
    """
    if isinstance(value, dict):
        return {k: json_safe(v, significant_digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, significant_digits) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return None
        return float(value) if significant_digits is None else float(f"{value:.{significant_digits}g}")
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


def restore_workdir(workdir: str, components: Components | None = None) -> tuple[Components, TrainState]:
    """The components and the newest readable checkpoint's state of a run, built from the config it saved.

    Raises:
      FileNotFoundError: the workdir has no readable checkpoint.
    """
    import jax
    import jax.numpy as jnp

    from coala_dist import keys
    from coala_dist.builder import build
    from coala_dist.checkpoint import Checkpointer, abstract_train_state

    saved = saved_config(workdir)
    if saved is None:
        raise FileNotFoundError(f"{workdir} has no readable checkpoint (train with --workdir={workdir} first)")
    config = config_from_saved(saved)
    components = components or build(config)
    checkpointer = Checkpointer(
        workdir, save_every=config.checkpoint.save_every, max_to_keep=config.checkpoint.max_to_keep
    )
    try:
        abstract_state = abstract_train_state(components.learner.init, keys.seed_key(config.seed))
        state = checkpointer.restore_latest(abstract_state, config)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"{workdir} has no readable checkpoint")
    # Restored arrays are committed to their device, fresh ones are not, and jit compiles separately for each: as
    # host copies the state reuses the rollout that `components` compiled for training.
    return components, jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), state)


def load_run(workdir: str) -> Run:
    """Reads a work directory.

    Raises:
      FileNotFoundError: it has no metrics.csv.
    """
    path = os.path.join(workdir, "metrics.csv")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{workdir} has no metrics.csv (is it a run's --workdir?)")
    return Run(workdir=workdir, config=saved_config(workdir), rows=read_metrics_csv(path))


def published_results_folders() -> tuple[pathlib.Path, ...]:
    """The folders holding committed, published results, resolved.

    `results/` next to the coala_dist package (a checkout, or an editable install of one) and `./results` (a
    checkout used from its root with a non-editable install, where the package lives in site-packages).
    """
    import coala_dist

    package_root = pathlib.Path(coala_dist.__file__).resolve().parent.parent
    return tuple(dict.fromkeys((package_root / "results", pathlib.Path("results").resolve())))


def in_published_results(path: str) -> pathlib.Path | None:
    """The published results folder that `path` is or lies inside (after resolving `..` and symlinks), else None."""
    target = pathlib.Path(path).resolve()
    for folder in published_results_folders():
        if target == folder or folder in target.parents:
            return folder
    return None
