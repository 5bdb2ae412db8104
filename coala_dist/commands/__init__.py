"""Sub-commands of the `coala` console script (see coala_dist/cli.py), and checks they share."""

from __future__ import annotations

import os
import time


class UsageError(Exception):
    """A mistake in what the user typed: a flag's value, a missing or unexpected argument, an unknown name.

    `coala` prints it as one line and exits with status 2 (coala_dist/cli.py). A problem of the environment (a file
    that cannot be read or written, a network, a node that died) is a `SystemExit` with its message: status 1.
    """


def check_writable_dir(path: str, flag: str) -> None:
    """Creates directory `path` if needed and proves it writable with a probe file, before any heavy work.

    Raises a one-line ValueError naming `flag` otherwise. Remote paths (gs://...) are left to the writer.
    """
    if "://" in path:
        return
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".coala-write-probe-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{flag}={path} is not a writable directory ({reason})") from None


def default_workdir(config_path: str, root: str = "workdirs") -> str:
    """A fresh work directory for a run started without --workdir: `workdirs/<config name>-<date>-<time>`."""
    name = os.path.splitext(os.path.basename(config_path))[0] or "run"
    return os.path.join(root, f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
