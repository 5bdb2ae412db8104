"""`coala train --config=NAME|FILE [--workdir=DIR] [--launch=inprocess|local|ray] [--num_actors=N]
[--mode=sync|async] [--replay=auto|reverb|ray|queues] [--network=auto|isolated|shared] [--start_over]`.

Launch types (coala_dist/distributed):
  inprocess  one process: actor threads, the learner, an embedded replay server (the default);
             with --num_actors=0 the plain loop alternates rollout and update without a replay;
  local      Ray on this machine, one process per node (replay, learner, actors);
  ray        an existing Ray cluster (--ray_address): learner on accelerator resources, actors on CPU nodes.
Everything is validated before any node starts; a bad value is one line naming it. Exit status: 0 when the run
finished, 130/143 after Ctrl-C/SIGTERM (a checkpoint was saved), 1 for an error or too many skipped updates, 2 for a
command-line mistake.
"""

from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

from coala_dist.commands import UsageError, check_writable_dir, default_workdir
from coala_dist.configs import CONFIG_DIR
from coala_dist.distributed import netns

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "ipd_pure_shaping.py"),
    "Experiment config: a file, or a shipped config's name (e.g. ipd_tiny; default ipd_pure_shaping).",
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Directory for checkpoints and metrics.csv (re-using it resumes); default a new workdirs/<config>-<date>-<time>.",
)
_LAUNCH = flags.DEFINE_enum(
    "launch",
    "inprocess",
    ["inprocess", "local", "ray"],
    "inprocess: threads in this process; local: Ray processes on this machine; ray: an existing Ray cluster.",
)
_NUM_ACTORS = flags.DEFINE_integer(
    "num_actors", None, "Actor threads/processes (default config.distributed.num_actors); 0: plain in-process loop."
)
_MODE = flags.DEFINE_enum(
    "mode",
    None,
    ["sync", "async"],
    "sync: reproducible, the learner waits for its version's episodes; async: "
    "actors never wait, episodes older than config.distributed.max_policy_lag are dropped (default from config).",
)
_REPLAY = flags.DEFINE_string(
    "replay",
    None,
    "Replay transport: auto (queues for inprocess, ray for local/ray, on both profiles; reverb is never chosen for "
    "you) | reverb | ray | queues (default config.distributed.replay).",
)
_START_OVER = flags.DEFINE_bool(
    "start_over",
    False,
    "If every checkpoint in --workdir is unreadable, move checkpoints/ and metrics.csv aside (*.<time>.bak) and "
    "train from iteration 1 instead of refusing; a readable checkpoint is resumed as usual.",
)
# Acted on by coala_dist.cli before this module is imported (the namespace must be entered before JAX starts a thread);
# defined here so that absl accepts it and `--help` lists it.
_NETWORK = flags.DEFINE_enum(
    "network",
    "auto",
    ["auto", "isolated", "shared"],
    "auto: inprocess/local runs with a local workdir get a private network namespace with only loopback, so nothing "
    "of the run listens on the machine's interfaces (Linux); isolated: that or an error; shared: the host network.",
)
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "Address of the Ray cluster for --launch=ray (e.g. ray://head:10001, auto)."
)


def _check_flags(num_actors: int) -> None:
    if num_actors < 0:
        raise ValueError(f"--num_actors={num_actors} is invalid: must be an integer >= 0")
    launch, address = _LAUNCH.value, _RAY_ADDRESS.value or os.environ.get("RAY_ADDRESS")
    if launch == "ray" and not address:
        raise ValueError("--launch=ray needs --ray_address (or $RAY_ADDRESS): the cluster to run on")
    if launch != "ray" and _RAY_ADDRESS.value:
        raise ValueError(f"--ray_address={_RAY_ADDRESS.value} only applies to --launch=ray, not --launch={launch}")
    if launch != "inprocess" and num_actors == 0:
        raise ValueError(f"--num_actors=0 is invalid with --launch={launch}: the program needs at least one actor")


RAY_CONNECT_TIMEOUT_S = 10.0


def check_ray_address(address: str, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> None:
    """Fails within `timeout_s` with one line if `address` (host:port or ray://host:port) accepts no connection.

    Ray itself retries an unreachable address for minutes; "auto" and "local" are left to Ray (it fails at once when
    no cluster runs on this machine).
    """
    import socket

    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if address in ("auto", "local") or not sep or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        reason = "timed out" if isinstance(error, TimeoutError) else (error.strerror or type(error).__name__)
        raise ValueError(
            f"cannot reach the Ray cluster at --ray_address={address} within {timeout_s:.0f} s ({reason}); "
            "is it running (`ray start --head`) and is the address right?"
        ) from None


def _own_workdir(workdir: str) -> None:
    """Owns the workdir until this process ends (coala_dist/workdir_lock.py); a live owner is one line, status 1.
    A `ray` launch with a local path writes on the learner's host, which this process cannot lock."""
    from coala_dist import workdir_lock

    if _LAUNCH.value == "ray" and "://" not in workdir:
        return
    try:
        workdir_lock.acquire(workdir)
    except workdir_lock.WorkdirBusyError as error:
        raise SystemExit(f"coala train: {error}") from None


def main(argv: list[str]) -> None:
    del argv
    from coala_dist.config import validate

    config = _CONFIG.value
    num_actors = config.distributed.num_actors if _NUM_ACTORS.value is None else _NUM_ACTORS.value
    workdir = _WORKDIR.value or default_workdir(config_flags.get_config_filename(flags.FLAGS["config"]))
    try:  # a bad option is one line, not a traceback, and a mistake in what was typed: exit status 2
        _check_flags(num_actors)
        validate(config)
        program = None
        if not (_LAUNCH.value == "inprocess" and num_actors == 0):
            from coala_dist.distributed.program import make_program

            program = make_program(
                config,
                launch=_LAUNCH.value,
                num_actors=num_actors,
                mode=_MODE.value,
                workdir=workdir,
                replay=_REPLAY.value,
                start_over=_START_OVER.value,
            )
            if program.config.distributed.replay == "reverb" and not netns.is_isolated():
                from coala_dist.distributed.replay import REVERB_EXPOSURE_WARNING

                print(f"coala train: warning: {REVERB_EXPOSURE_WARNING}", file=sys.stderr)
        elif _MODE.value == "async":
            raise ValueError("--mode=async needs actors (--num_actors >= 1)")
        elif _REPLAY.value is not None:
            raise ValueError(f"--replay={_REPLAY.value} needs actors (--num_actors >= 1): the plain loop has no replay")
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:  # what the machine says about them: exit status 1
        from coala_dist.capacity import check_fits

        check_fits(config, launch=_LAUNCH.value, num_actors=num_actors)  # sizes this machine cannot hold or host
        # Last: everything above has no side effect, so a bad option leaves no folder behind.
        if _LAUNCH.value == "ray":  # the learner may run on another host: its workdir is checked there
            check_ray_address(_RAY_ADDRESS.value or os.environ["RAY_ADDRESS"])
        else:
            check_writable_dir(workdir, "--workdir")
            from coala_dist.checkpoint import check_resumable

            # An incompatible config or unreadable checkpoints are one line now, not after building.
            check_resumable(workdir, config, start_over=_START_OVER.value)
    except ValueError as error:
        raise SystemExit(f"coala train: {error}") from None
    _own_workdir(workdir)
    if _WORKDIR.value is None:
        print(f"coala train: no --workdir given: writing to {workdir} (--workdir={workdir} resumes)", file=sys.stderr)

    from coala_dist.commands.run_notes import RunNotes, newest_checkpoint_step
    from coala_dist.train import local_metrics_dir

    notes = RunNotes(config, _LAUNCH.value, workdir, local_metrics_dir(workdir), newest_checkpoint_step(workdir))
    notes.announce()
    try:
        _run(config, workdir, program)
    finally:
        notes.finish()


def _run(config, workdir: str, program) -> None:
    """Trains: in this process without actors (`program` None), else through the program's launcher."""
    from coala_dist.checkpoint import IncompatibleCheckpointError, UnreadableCheckpointsError, WriteFailedError
    from coala_dist.train import NodeFailedError, SkippedUpdatesError

    try:  # what the early look could not see (every state corrupt while its config reads) is one line too
        if program is None:
            from coala_dist.train import train

            train(config, workdir, start_over=_START_OVER.value)
            return
        if program.launch == "inprocess" and program.config.distributed.replay == "reverb":
            from coala_dist.console import drop_native_chatter

            drop_native_chatter()  # the embedded Reverb server's INFO lines would break the progress line
        from coala_dist.distributed.launch import launch

        launch(program, ray_address=_RAY_ADDRESS.value or os.environ.get("RAY_ADDRESS"))
    except (IncompatibleCheckpointError, UnreadableCheckpointsError) as error:
        raise SystemExit(f"coala train: {error}") from None
    except (SkippedUpdatesError, WriteFailedError, NodeFailedError) as error:  # one line (exit 1); signals keep theirs
        raise SystemExit(f"coala train: {error.code}") from None
