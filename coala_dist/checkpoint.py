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

import contextlib
import hashlib
import json
import logging
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


class WriteFailedError(SystemExit):
    """Writing one of the run's files failed (no space left, a file-size limit, a vanished disk...).

    A SystemExit: uncaught it ends the process with its one-line message (exit status 1) and no traceback; the loop
    stops within the iteration, keeps the newest checkpoint that was written whole, and the same command resumes.

    Attributes:
      path: the file or folder whose write failed.
      cause: why, in a few words (the OS error's text).
    """

    def __init__(self, path: str, error: BaseException):
        self.path, self.cause = path, _first_line(error) if not isinstance(error, OSError) else _os_error(error)
        super().__init__(f"writing {path} failed ({self.cause}); the run stopped")

    @classmethod
    def from_line(cls, line: str) -> WriteFailedError:
        """The error again from its one line (as a learner node reported it to the launcher)."""
        error = cls.__new__(cls)
        SystemExit.__init__(error, line)
        error.path = error.cause = ""
        return error


def _os_error(error: OSError) -> str:
    return error.strerror or _first_line(error)


TEMPORARY_MARK = ".orbax-checkpoint-tmp"


def remove_temporary_saves(directory: str) -> list[str]:
    """Removes the unfinished saves (`*.orbax-checkpoint-tmp*`) in a local `checkpoints/` folder: what a failed or
    killed save leaves, which a later save of the same step would trip over. Returns the removed paths."""
    import shutil

    if "://" in directory or not os.path.isdir(directory):
        return []
    removed = []
    for name in os.listdir(directory):
        if TEMPORARY_MARK in name:
            shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            removed.append(os.path.join(directory, name))
    return removed


class _OrbaxErrors(logging.Filter):
    """Drops Orbax's error records (a failed background save logs several tracebacks; the run reports it in one
    line instead) and keeps the newest one's cause, for that line."""

    def __init__(self):
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            self.last = _os_error(error) if isinstance(error, OSError) else _first_line(error)
        return False


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


def experiment_fields(config: dict) -> dict[str, Any]:
    """The fields of a config (as a plain dict) that must match on resume, flattened to dotted names: what defines
    the experiment, as opposed to how it is run (`COMPATIBLE_FIELDS`)."""
    return _experiment_fields(config)


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
      owner: this is the run that writes the workdir: unfinished saves left by an earlier, dead writer are removed
        at once (a reader, e.g. `coala eval` on a live run, must not remove the save in flight).
    """

    def __init__(self, workdir: str, *, save_every: int, max_to_keep: int, owner: bool = False):
        directory = workdir if "://" in workdir else os.path.abspath(workdir)
        self.directory = os.path.join(directory, "checkpoints")
        self.save_every, self.max_to_keep = save_every, max_to_keep
        if owner and jax.process_index() == 0:  # one process cleans the shared folder, before anyone saves
            remove_temporary_saves(self.directory)
        self._manager = self._open()
        self._failed: WriteFailedError | None = None
        self._last_step: int | None = None  # the newest save asked for: what a failure names
        self._orbax_errors = _OrbaxErrors()
        logging.getLogger("absl").addFilter(self._orbax_errors)

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
        self.check()  # a failure of the previous save is named as its own, not as this one's
        self._last_step = step
        try:
            return self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    config=ocp.args.JsonSave(config.to_dict()),
                    meta=ocp.args.JsonSave(meta),
                ),
                force=True,
            )
        except Exception as error:  # noqa: BLE001 — any failed write stops the run in one line
            raise self._failure(os.path.join(self.directory, str(step)), error) from None

    def _failure(self, path: str, error: BaseException) -> WriteFailedError:
        """Records and returns the failure of a save to `path`; its unfinished folder is removed."""
        if self._failed is None:
            self._failed = WriteFailedError(path, error)
        remove_temporary_saves(self.directory)
        return self._failed

    def check(self) -> None:
        """Waits for the save in flight (started an iteration ago: usually written by now) and raises
        `WriteFailedError` if it failed. Orbax only logs a failed asynchronous save and leaves its unfinished folder,
        so a save counts as failed when its step's folder is missing once it ended."""
        if self._failed is not None:
            raise self._failed
        try:
            self._manager.wait_until_finished()
        except Exception as error:  # noqa: BLE001
            raise self._failure(self._newest_path(), error) from None
        step = self._last_step
        if step is not None and "://" not in self.directory and not os.path.isdir(self._newest_path()):
            raise self._failure(self._newest_path(), OSError(self._orbax_errors.last or "the save did not finish"))

    def _newest_path(self) -> str:
        """The folder of the newest save asked for (for a failure's message)."""
        return self.directory if self._last_step is None else os.path.join(self.directory, str(self._last_step))

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
        """Waits for the save in flight and closes; raises `WriteFailedError` (after closing) if a save failed."""
        try:
            self.check()
            try:
                self._manager.wait_until_finished()
            except Exception as error:  # noqa: BLE001
                raise self._failure(self._newest_path(), error) from None
        finally:
            with contextlib.suppress(Exception):
                self._manager.close()
            logging.getLogger("absl").removeFilter(self._orbax_errors)


def abstract_train_state(init_fn, key: jax.Array, sharding: jax.sharding.Sharding | None = None) -> TrainState:
    """`jax.eval_shape(init_fn, key)` with every leaf placed on `sharding` (default: this process's first device)."""
    sharding = sharding or jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shapes = jax.eval_shape(init_fn, key)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), shapes)


def _check_saved_configs(directory: str, config: ml_collections.ConfigDict, *, start_over: bool) -> None:
    """`check_resumable` for a local folder, reading each step's `config/metadata` JSON (what `JsonSave` writes)
    without Orbax: its manager starts JAX's backend, and a driver that then starts processes (Ray, the reaper) would
    fork a multithreaded process."""
    steps = sorted(int(name) for name in os.listdir(directory) if name.isdigit())
    first_error: Exception | None = None
    for step in reversed(steps):
        path = os.path.join(directory, str(step))
        try:
            with open(os.path.join(path, "config", "metadata")) as f:
                saved_config = json.load(f)
            if not isinstance(saved_config, dict):
                raise ValueError("the saved config is not a JSON object")
        except (OSError, ValueError) as error:  # unreadable ones are reported by restore_latest
            first_error = first_error or error
            continue
        check_compatible(saved_config, config, path)
        return
    if steps and not start_over:
        raise UnreadableCheckpointsError(_unreadable_message(directory, steps, first_error))


def check_resumable(workdir: str, config: ml_collections.ConfigDict, *, start_over: bool = False) -> None:
    """Before any heavy work: raises IncompatibleCheckpointError if the newest checkpoint with a readable config in
    `workdir` was saved with a config that differs in an experiment-defining field, and UnreadableCheckpointsError
    if there are checkpoints but not one readable config and not `start_over` (the checks `restore_latest` makes
    again, after building the learner, where it also reads the arrays). A workdir without checkpoints passes."""
    directory = os.path.join(workdir if "://" in workdir else os.path.abspath(workdir), "checkpoints")
    if "://" not in directory and not os.path.isdir(directory):
        return
    if "://" not in directory:
        _check_saved_configs(directory, config, start_over=start_over)
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
