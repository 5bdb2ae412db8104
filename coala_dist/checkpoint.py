"""Orbax checkpoints of the whole training state, exact resume, and config compatibility.

A checkpoint is one Orbax step directory `workdir/checkpoints/<step>/` with three items:
  * `state`  — the whole `TrainState`: every meta agent's parameters and optimiser state, the naive initialisation
               set, the run's RNG key, the update step, the policy version and the skipped-update counter;
  * `config` — the experiment config as JSON (what the run was started with);
  * `meta`   — JSON: the step, the config hash, the wall time.
Saving is asynchronous (the learner only waits for the device-to-host copy). Only the learner writes checkpoints.

Restoring uses an abstract tree from `jax.eval_shape(learner.init)` whose leaves carry the shardings of the current
device mesh, so a run saved on one device resumes on eight and vice versa. A checkpoint that fails to restore
(truncated, corrupted) is skipped with a one-line warning naming it, and the previous one is used. When every
checkpoint fails, the run is refused with one line (`UnreadableCheckpointsError`) unless the caller asked to start
over: then the unreadable `checkpoints/` folder is moved aside, never deleted, and training starts from iteration 1.
A config whose experiment-defining fields differ from the checkpoint's is refused with a one-line error naming them;
fields that only change how the run is executed (`COMPATIBLE_FIELDS`) may differ.

`meta` also holds `consecutive_skipped_updates`: how many iterations in a row had a skipped (non-finite) update when
the state was saved, so a resumed run keeps counting towards `config.max_consecutive_skipped_updates`
(coala_dist/train.py); checkpoints written before the field existed read as 0.
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
COMPATIBLE_FIELDS = (
    "training_iterations",
    "log_every",
    "max_consecutive_skipped_updates",
    "checkpoint",
    "distributed",
    "compute",
)


class IncompatibleCheckpointError(ValueError):
    """The config differs from the checkpoint's in a field that defines the experiment."""


class UnreadableCheckpointsError(ValueError):
    """The workdir holds checkpoints but none of them can be restored (and the caller did not ask to start over)."""


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _unreadable_message(directory: str, steps: list[int], error: Exception) -> str:
    listed = ", ".join(str(step) for step in steps[-5:]) + (" ..." if len(steps) > 5 else "")
    return (
        f"every checkpoint in {directory} is unreadable (iterations {listed}; newest: "
        f"{type(error).__name__}: {_first_line(error)}); "
        "rerun with --start_over to move them aside and train from iteration 1, or use a new --workdir"
    )


def timestamped_aside(path: str) -> str:
    """A free name `<path>.<YYYYmmdd-HHMMSS>.bak` (with `-1`, `-2`... if taken) for moving `path` aside."""
    base = f"{path}.{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, n = f"{base}.bak", 0
    while os.path.exists(candidate):
        n += 1
        candidate = f"{base}-{n}.bak"
    return candidate


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
    """Raises IncompatibleCheckpointError naming every experiment field that differs from the saved config.

    A field the saved config lacks (added to `default_config` after the checkpoint was written) counts as equal
    when it holds its default now: a new field's default keeps the old behaviour."""
    from coala_dist.config import default_config

    old, new = _experiment_fields(saved), _experiment_fields(config.to_dict())
    defaults = _experiment_fields(default_config().to_dict())
    for key in new.keys() - old.keys():
        if key in defaults and new[key] == defaults[key]:
            old[key] = new[key]
    differing = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
    if differing:
        details = ", ".join(
            f"{k} (checkpoint {old.get(k, '<absent>')!r}, now {new.get(k, '<absent>')!r})" for k in differing
        )
        raise IncompatibleCheckpointError(
            f"cannot resume from {path}: the config differs in {details}; use a new --workdir or the old config"
        )


def _warn_unreadable(path: str, error: Exception) -> None:
    print(
        f"warning: skipping unreadable checkpoint {path} ({_first_line(error)}); trying the previous one",
        file=sys.stderr,
    )


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
        self.save_every, self.max_to_keep = save_every, max_to_keep
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=self.max_to_keep, create=True),
            item_names=("state", "config", "meta"),
        )

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def is_due(self, step: int) -> bool:
        """Whether a periodic save falls on `step` (every `save_every` updates)."""
        return step % self.save_every == 0

    def save(
        self,
        state: TrainState,
        config: ml_collections.ConfigDict,
        *,
        force: bool = False,
        consecutive_skipped_updates: int = 0,
    ) -> bool:
        """Starts an asynchronous save of `state` at `state.step` if it is due (or forced). Returns whether it saved.

        `consecutive_skipped_updates` (iterations in a row with a skipped update, ending at this state) goes into the
        checkpoint's `meta`, so a resumed run keeps counting.
        """
        step = int(state.step)
        if step in self._manager.all_steps() or not (force or self.is_due(step)):
            return False
        meta = {
            "step": step,
            "config_hash": config_hash(config),
            "saved_at": time.time(),
            "consecutive_skipped_updates": int(consecutive_skipped_updates),
        }
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
        self, abstract_state: TrainState, config: ml_collections.ConfigDict, *, start_over: bool = False
    ) -> TrainState | None:
        """The newest checkpoint that restores, placed like `abstract_state`'s leaves; None if there is none.

        Unreadable checkpoints newer than the restored one are named in one warning line each. When there are
        checkpoints but none restores, nothing is guessed: without `start_over` the run is refused; with it the
        `checkpoints/` folder is moved aside to `checkpoints.<YYYYmmdd-HHMMSS>.bak` (kept for inspection, never
        deleted) and None is returned, so training starts from iteration 1 in an empty `checkpoints/`.

        Args:
          abstract_state: `jax.eval_shape` of the initial state; leaves may carry `.sharding` (e.g. replicated on a
            mesh) — restored arrays are placed accordingly.
          config: the current config, checked against the checkpoint's.
          start_over: what to do when every checkpoint is unreadable (see above). A readable checkpoint is restored
            whatever this says.

        Raises:
          IncompatibleCheckpointError: the config differs in an experiment-defining field.
          UnreadableCheckpointsError: there are checkpoints, none restores, and `start_over` is False.
        """
        treedef = jax.tree_util.tree_structure(abstract_state)
        steps = self.all_steps()
        skipped: list[tuple[str, Exception]] = []
        for step in reversed(steps):
            path = os.path.join(self.directory, str(step))
            try:
                only_config = ocp.args.Composite(config=ocp.args.JsonRestore())
                saved_config = self._manager.restore(step, args=only_config).config
            except Exception as error:  # noqa: BLE001 — any unreadable checkpoint is skipped, never fatal
                skipped.append((path, error))
                continue
            # Before touching the arrays: an incompatible config must be named, not reported as a shape mismatch.
            check_compatible(saved_config, config, path)
            try:
                restored = self._manager.restore(
                    step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
                ).state
            except Exception as error:  # noqa: BLE001
                skipped.append((path, error))
                continue
            for skipped_path, error in skipped:
                _warn_unreadable(skipped_path, error)
            # Orbax returns plain tuples for NamedTuples: rebuild the exact tree of the abstract state.
            return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(restored))
        if not steps:
            return None
        if not start_over:
            raise UnreadableCheckpointsError(_unreadable_message(self.directory, steps, skipped[0][1]))
        self._set_aside()
        return None

    def _set_aside(self) -> None:
        """Moves the whole `checkpoints/` folder to `checkpoints.<time>.bak` and opens a fresh, empty one.

        With several learner processes, process 0 moves it and the others wait for it (the folder is shared).
        """
        if "://" in self.directory:  # a bucket has no atomic folder rename: the user moves it
            raise UnreadableCheckpointsError(
                f"every checkpoint in {self.directory} is unreadable, and --start_over cannot move a remote folder "
                "aside: move or delete it yourself, or use a new --workdir"
            )
        self._manager.close()
        processes = jax.process_count()
        if jax.process_index() == 0:
            aside = timestamped_aside(self.directory)
            os.replace(self.directory, aside)
            print(
                f"warning: every checkpoint in {self.directory} is unreadable; moved them to {aside} "
                "(--start_over) and training from iteration 1",
                file=sys.stderr,
            )
        if processes > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("coala_dist: unreadable checkpoints moved aside")
        self._manager = self._open()

    def saved_meta(self, step: int) -> dict[str, Any]:
        """The `meta` item of checkpoint `step` (step, config hash, time, consecutive skipped updates); {} if it
        cannot be read."""
        try:
            return dict(self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)
        except Exception:  # noqa: BLE001 — the state restored; a lost meta only loses what it holds
            return {}

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


def check_resumable(workdir: str, config: ml_collections.ConfigDict, *, start_over: bool = False) -> None:
    """Before any heavy work: raises IncompatibleCheckpointError if the newest checkpoint with a readable config in
    `workdir` was saved with a config that differs in an experiment-defining field, and UnreadableCheckpointsError
    if there are checkpoints but not one readable config and not `start_over` (the checks `restore_latest` makes
    again, after building the learner, where it also reads the arrays). A workdir without checkpoints passes."""
    directory = os.path.join(workdir if "://" in workdir else os.path.abspath(workdir), "checkpoints")
    if "://" not in directory and not os.path.isdir(directory):
        return
    from absl import logging

    verbosity = logging.get_verbosity()
    # Orbax logs reading notes as warnings, and unparsable metadata as errors: this is a read-only look, whose
    # findings are the one-line errors below.
    logging.set_verbosity(logging.FATAL)
    try:
        manager = ocp.CheckpointManager(
            directory, options=ocp.CheckpointManagerOptions(create=False), item_names=("config",)
        )
        try:
            steps, first_error = sorted(manager.all_steps()), None
            for step in reversed(steps):
                try:
                    only_config = ocp.args.Composite(config=ocp.args.JsonRestore())
                    saved_config = manager.restore(step, args=only_config).config
                except Exception as error:  # noqa: BLE001 — unreadable ones are reported by restore_latest
                    first_error = first_error or error
                    continue
                check_compatible(saved_config, config, os.path.join(directory, str(step)))
                return
            if steps and not start_over:
                raise UnreadableCheckpointsError(_unreadable_message(directory, steps, first_error))
        finally:
            manager.close()
    finally:
        logging.set_verbosity(verbosity)
