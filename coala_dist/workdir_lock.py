"""One owner per workdir: `coala train` holds `workdir/.lock` while it runs.

The lock is an advisory `flock` on the file, so the kernel releases it when its owner dies in any way (SIGKILL
included): a dead owner never leaves a workdir stuck. The file also holds the owner's host, pid and start time, so a
refused second run can name who holds it. A bucket path (gs://...) has no such lock: there the owner file is written
and a live-looking one is reported, which at least detects a second run started meanwhile (it cannot exclude one).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

LOCK_NAME = ".lock"
# An owner file on a bucket younger than this (seconds since its last heartbeat) counts as a live owner.
REMOTE_STALE_S = 600.0


class WorkdirBusyError(RuntimeError):
    """Another live process owns the workdir; the message is one line naming it."""


def _owner_record() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}


def _describe(record: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started", 0)))
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')}, since {started}"


def _read_record(path: str) -> dict:
    try:
        with open(path) as f:
            return json.loads(f.read() or "{}")
    except (OSError, ValueError):
        return {}


# Locks this process holds, by workdir: kept open (and so locked) until `release` or the process ends.
_HELD: dict[str, int] = {}


def acquire(workdir: str) -> None:
    """Owns `workdir` (created if missing) until `release(workdir)` or this process ends; raises `WorkdirBusyError`
    at once if a live process owns it.

    Local disk: an exclusive non-blocking `flock` on `workdir/.lock`, which the kernel drops when the process ends.
    Bucket: see `check_remote_owner`.
    """
    if "://" in workdir:
        check_remote_owner(workdir)
        atexit.register(release_remote_owner, workdir)
        return
    key = os.path.abspath(workdir)
    if key in _HELD:
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_NAME)
    # Not inheritable (Python's default): processes the run spawns cannot prolong the lock after it dies.
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise WorkdirBusyError(
            f"{key} is in use by another run ({_describe(_read_record(path))}); wait for it, stop it, or use another "
            "--workdir"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, json.dumps(_owner_record()).encode())
    _HELD[key] = descriptor


def release(workdir: str) -> None:
    """Gives up `workdir` if this process owns it. The file stays: removing it would race with a new owner."""
    descriptor = _HELD.pop(os.path.abspath(workdir), None)
    if descriptor is not None:
        os.close(descriptor)


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
    """`acquire` for the block, then `release`."""
    acquire(workdir)
    try:
        yield
    finally:
        if "://" in workdir:
            release_remote_owner(workdir)
        else:
            release(workdir)


def check_remote_owner(workdir: str) -> None:
    """On a bucket: raises `WorkdirBusyError` if `workdir/.lock` was written by another process less than
    `REMOTE_STALE_S` ago, then writes this process's record there. Detection only: two runs starting within the same
    moment can both pass."""
    from etils import epath

    path = epath.Path(workdir) / LOCK_NAME
    try:
        record = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        record = {}
    mine = _owner_record()
    someone_else = record and (record.get("host"), record.get("pid")) != (mine["host"], mine["pid"])
    if someone_else and time.time() - float(record.get("started", 0)) < REMOTE_STALE_S:
        raise WorkdirBusyError(
            f"{workdir} may be in use by another run ({_describe(record)}); if that run is gone, delete {path} and "
            "run again"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine))


def release_remote_owner(workdir: str) -> None:
    """Removes the bucket's owner record if it is still this process's (a run that ends frees its workdir)."""
    from etils import epath

    path = epath.Path(workdir) / LOCK_NAME
    mine = _owner_record()
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text())
        if (record.get("host"), record.get("pid")) == (mine["host"], mine["pid"]):
            path.unlink()
