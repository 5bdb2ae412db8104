"""Orbax checkpoints of the whole training state, exact resume, and config compatibility (DESIGN.md §7).

A checkpoint is one Orbax step directory `workdir/checkpoints/<step>/` with three items:
  * `state`  — the whole `TrainState`: every meta agent's parameters and optimiser state, the naive initialisation
               set, the run's RNG key, the update step, the policy version and the skipped-update counter;
  * `config` — the experiment config as JSON (what the run was started with);
  * `meta`   — JSON: the step, the config hash, the wall time.
Saving is asynchronous (the learner only waits for the device-to-host copy). Only the learner writes checkpoints.

Restoring uses an abstract tree from `jax.eval_shape(learner.init)` whose leaves carry the shardings of the current
device mesh, so a run saved on one device resumes on eight and vice versa. A checkpoint that fails to restore
(truncated, corrupted) is skipped with a one-line warning naming it, and the previous one is used. A config whose
experiment-defining fields differ from the checkpoint's is refused with a one-line error naming them; fields that
only change how the run is executed (`COMPATIBLE_FIELDS`) may differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from coala_dist.learner import TrainState

# Config fields (dotted prefixes) that may change between a run and its resumption: they change how the run is
# executed or for how long, not what is being learned.
COMPATIBLE_FIELDS = ("training_iterations", "log_every", "checkpoint", "distributed", "compute")


class IncompatibleCheckpointError(ValueError):
    """The config differs from the checkpoint's in a field that defines the experiment."""


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _as_saved(value: Any) -> Any:
    """A config value as the checkpoint's JSON holds it: tuples become lists (so () and [] compare equal)."""
    if isinstance(value, (list, tuple)):
        return [_as_saved(v) for v in value]
    return value


def _experiment_fields(config: dict) -> dict[str, Any]:
    """The config's fields that must match on resume, flattened to dotted names."""
    flat = _flatten(config)
    return {
        k: _as_saved(v)
        for k, v in flat.items()
        if not any(k == f or k.startswith(f + ".") for f in COMPATIBLE_FIELDS)
    }


def config_hash(config: ml_collections.ConfigDict) -> str:
    """A short hash of the experiment-defining fields (stable across compatible changes)."""
    text = json.dumps(_experiment_fields(config.to_dict()), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_compatible(saved: dict, config: ml_collections.ConfigDict, path: str) -> None:
    """Raises IncompatibleCheckpointError naming every experiment field that differs from the saved config."""
    old, new = _experiment_fields(saved), _experiment_fields(config.to_dict())
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
    if differing:
        details = ", ".join(
            f"{k} (checkpoint {old.get(k, '<absent>')!r}, now {new.get(k, '<absent>')!r})" for k in differing
        )
        raise IncompatibleCheckpointError(
            f"cannot resume from {path}: the config differs in {details}; use a new --workdir or the old config"
        )


def _warn_unreadable(path: str, error: Exception) -> None:
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    print(f"warning: skipping unreadable checkpoint {path} ({reason}); trying the previous one", file=sys.stderr)


class Checkpointer:
    """Saves and restores TrainStates under `workdir/checkpoints` (local path or gs://bucket/...).

    Args:
      workdir: the run's directory.
      save_every: save after every `save_every` updates (and when `save(..., force=True)`).
      max_to_keep: number of most recent checkpoints kept on disk.
    """

    def __init__(self, workdir: str, *, save_every: int, max_to_keep: int):
        directory = workdir if "://" in workdir else os.path.abspath(workdir)
        self.directory = os.path.join(directory, "checkpoints")
        self.save_every = save_every
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            item_names=("state", "config", "meta"),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, config: ml_collections.ConfigDict, *, force: bool = False) -> bool:
        """Starts an asynchronous save of `state` at `state.step` if it is due (or forced). Returns whether it saved."""
        step = int(state.step)
        if step in self._manager.all_steps() or not (force or step % self.save_every == 0):
            return False
        meta = {"step": step, "config_hash": config_hash(config), "saved_at": time.time()}
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config.to_dict()),
                meta=ocp.args.JsonSave(meta),
            ),
            force=True,
        )

    def restore_latest(
        self, abstract_state: TrainState, config: ml_collections.ConfigDict
    ) -> TrainState | None:
        """The newest checkpoint that restores, placed like `abstract_state`'s leaves; None if there is none.

        Args:
          abstract_state: `jax.eval_shape` of the initial state; leaves may carry `.sharding` (e.g. replicated on a
            mesh) — restored arrays are placed accordingly.
          config: the current config, checked against the checkpoint's.

        Raises:
          IncompatibleCheckpointError: the config differs in an experiment-defining field.
        """
        treedef = jax.tree_util.tree_structure(abstract_state)
        for step in reversed(self.all_steps()):
            path = os.path.join(self.directory, str(step))
            try:
                only_config = ocp.args.Composite(config=ocp.args.JsonRestore())
                saved_config = self._manager.restore(step, args=only_config).config
            except Exception as error:  # noqa: BLE001 — any unreadable checkpoint is skipped, never fatal
                _warn_unreadable(path, error)
                continue
            # Before touching the arrays: an incompatible config must be named, not reported as a shape mismatch.
            check_compatible(saved_config, config, path)
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                ).state
            except Exception as error:  # noqa: BLE001
                _warn_unreadable(path, error)
                continue
            # Orbax returns plain tuples for NamedTuples: rebuild the exact tree of the abstract state.
            return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(restored))
        return None

    def wait(self) -> None:
        """Blocks until every asynchronous save has been written."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_train_state(init_fn, key: jax.Array, sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """`jax.eval_shape(init_fn, key)` with every leaf placed on `sharding` (default: this process's first device)."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = jax.eval_shape(init_fn, key)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)
