"""Leaves no process behind when a `local` run's driver is killed (SIGKILL, OOM killer): a reaper process.

Ray's own fate sharing ends the GCS and raylet at once and the node processes within about 2.5 s of the driver's
death, but the dashboard and runtime-env agents that the raylet started linger about 60 s (they report the raylet's
death to the GCS, which is gone, and wait for its timeout). Nothing in the dying driver can act, so a small process
started beside it does: it holds the read end of a pipe whose only writer is the driver and, while the driver lives,
records the driver's descendants (pid and start time) every `POLL_S`. End of file on the pipe means the driver is
gone; unless the driver first wrote `CLEAN_EXIT` (after `ray.shutdown()` stopped everything), the reaper then kills
every recorded process still running with the same start time (a reused pid is never touched) and exits. Only
processes started after the reaper are recorded: the descendants the driver had before are named to the reaper
(pid and start time) when it starts, and left alone.
It runs in its own session, so Ctrl-C or a closed terminal reaches the driver, not the reaper.

The bound: every process of the run is gone `REAP_BOUND_S` after the driver's death (tested with SIGKILL in
tests/test_ray_local.py). Processes the driver started less than `POLL_S` before it died may escape the last
record; Ray starts none during training except restarted actors, which fate-share with the (dead) raylet anyway.

Standard library and psutil only: the reaper starts in well under a second and never imports JAX.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys

import psutil

POLL_S = 0.5  # how often the driver's descendants are recorded
REAP_BOUND_S = 10.0  # every recorded process is gone this long after the driver's death (measured ≈ 1–3 s)
CLEAN_EXIT = b"clean exit"


def start_reaper() -> subprocess.Popen:
    """Starts the reaper of this (driver) process; keep the returned handle alive for as long as the driver runs.

    The pipe's write end stays open in this process only (Python's pipes are not inherited by children, so Ray's
    processes never hold it): its end of file is this process's death."""
    existing = _descendants(psutil.Process(), {})  # not the run's: started before the reaper
    return subprocess.Popen(
        [sys.executable, "-m", "coala_dist.distributed.reaper", str(os.getpid()), json.dumps(existing)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_reaper(reaper: subprocess.Popen) -> None:
    """After a clean shutdown: tells the reaper so and closes the pipe; it exits without killing anything."""
    if reaper.stdin is not None:
        with contextlib.suppress(OSError):  # the reaper is gone already
            reaper.stdin.write(CLEAN_EXIT)
            reaper.stdin.close()
    try:
        reaper.wait(timeout=REAP_BOUND_S)
    except subprocess.TimeoutExpired:
        reaper.kill()


def _descendants(driver: psutil.Process, excluded: dict[int, float]) -> dict[int, float]:
    """pid → start time of every living descendant of `driver`, but this process and those in `excluded`."""
    recorded = {}
    for child in driver.children(recursive=True):
        try:
            started = child.create_time()
        except psutil.Error:
            continue  # vanished while we looked
        if child.pid != os.getpid() and excluded.get(child.pid) != started:
            recorded[child.pid] = started
    return recorded


def _kill_recorded(recorded: dict[int, float]) -> None:
    for pid, started in recorded.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == started:
                process.send_signal(signal.SIGKILL)
        except psutil.Error:
            continue  # already gone, or not ours to kill


def reap(driver_pid: int, excluded: dict[int, float], stdin_fd: int = 0) -> None:
    """Records `driver_pid`'s descendants (but `excluded`) until `stdin_fd` reaches end of file, then kills the ones
    still running unless the driver wrote `CLEAN_EXIT` first."""
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return
    recorded: dict[int, float] = {}
    received = b""
    while True:
        with contextlib.suppress(psutil.Error):  # the driver is gone: the pipe says so next
            recorded.update(_descendants(driver, excluded))  # kept after they exit: pid and start time identify each
        readable, _, _ = select.select([stdin_fd], [], [], POLL_S)
        if readable:
            chunk = os.read(stdin_fd, 4096)
            if not chunk:
                break
            received += chunk
    if received != CLEAN_EXIT:
        _kill_recorded(recorded)


if __name__ == "__main__":
    reap(int(sys.argv[1]), {int(pid): started for pid, started in json.loads(sys.argv[2]).items()})
