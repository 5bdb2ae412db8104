"""Changing a running job from outside: the driver's control files in WORKDIR/control (`coala scale`).

The driver of a `local`/`ray` run whose workdir is on its own machine (not gs://...) writes `control/driver.json`
({"pid", "launch", "num_actors"}) when it starts and whenever its actor count changes, and removes it when it ends.
`coala scale` writes the wanted count to `control/num_actors` (a temporary file renamed over it, so the driver never
reads half a request) and waits until driver.json shows it. Files, not a socket: nothing listens, and only who may
write the workdir may scale the job. The driver reads the request between its supervision rounds (launch.py), so a
request takes effect within about a second; the actors' share of work changes at the learner's next version
(actor.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

CONTROL_DIR = "control"
DRIVER_FILE = "driver.json"
REQUEST_FILE = "num_actors"
SCALABLE_LAUNCHES = ("local", "ray")


def _path(workdir: str, name: str) -> str:
    return os.path.join(workdir, CONTROL_DIR, name)


def _write_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def _read_driver(workdir: str) -> dict[str, Any] | None:
    try:
        with open(_path(workdir, DRIVER_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, someone else's
        return True
    return True


class DriverControl:
    """The driver's side: announces the run, reads scale requests, records what it applied.

    Args:
      workdir: the run's directory.
      launch: local | ray.
      num_actors: the actor count the run starts with.
    """

    def __init__(self, workdir: str, launch: str, num_actors: int):
        self.workdir, self.launch = workdir, launch
        request = _path(workdir, REQUEST_FILE)
        if os.path.exists(request):  # a request to an earlier run of this workdir: the command line decides now
            os.remove(request)
        self._seen: tuple[int, int] | None = None
        self.applied(num_actors)

    def applied(self, num_actors: int) -> None:
        """Records the actor count the run now has (what `coala scale` waits for)."""
        self.num_actors = num_actors
        driver = {"pid": os.getpid(), "launch": self.launch, "num_actors": num_actors}
        _write_atomically(_path(self.workdir, DRIVER_FILE), json.dumps(driver))

    def requested(self) -> int | None:
        """The actor count of a request that differs from the current one, or None."""
        path = _path(self.workdir, REQUEST_FILE)
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            return None
        try:
            count = int(text)
        except ValueError:
            return None  # `request_scale` writes only integers; anything else is ignored
        return count if count >= 1 and count != self.num_actors else None

    def close(self) -> None:
        """The run ended: no request can reach it any more."""
        for name in (DRIVER_FILE, REQUEST_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.remove(_path(self.workdir, name))


def request_scale(workdir: str, num_actors: int, *, timeout_s: float = 120.0, poll_s: float = 0.2) -> int:
    """Asks the run in `workdir` for `num_actors` actors and waits until its driver has them; returns the count it
    had before.

    Raises:
      ValueError: one line, before anything is written, when the request cannot reach a running job (no run there,
        its driver is gone, an in-process run); or when the driver did not apply it within `timeout_s`.
    """
    if num_actors < 1:
        raise ValueError(f"--num_actors={num_actors} is invalid: a running job needs at least one actor")
    if "://" in workdir:
        raise ValueError(
            f"--workdir={workdir} is remote: only a job whose workdir is a directory on this machine can be scaled"
        )
    driver = _read_driver(workdir)
    if driver is None:
        raise ValueError(
            f"no running job in {workdir}: {os.path.join(CONTROL_DIR, DRIVER_FILE)} is missing (only a run started "
            "with --launch=local or --launch=ray and this --workdir can be scaled)"
        )
    if not _alive(int(driver["pid"])):
        raise ValueError(f"the job in {workdir} is not running: its driver (pid {driver['pid']}) is gone")
    before = int(driver["num_actors"])
    _write_atomically(_path(workdir, REQUEST_FILE), str(num_actors))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        driver = _read_driver(workdir)
        if driver is None:
            raise ValueError(f"the job in {workdir} ended before it applied --num_actors={num_actors}")
        if int(driver["num_actors"]) == num_actors:
            return before
        time.sleep(poll_s)
    raise ValueError(
        f"the job in {workdir} did not apply --num_actors={num_actors} within {timeout_s:g} s (it still has "
        f"{driver['num_actors']}; the request stays and may still be applied)"
    )
