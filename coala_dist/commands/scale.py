"""`coala scale --workdir=DIR --num_actors=N`: change the number of actors of a running job, without stopping it.

For a job started with `coala train --launch=local|ray --workdir=DIR`. Growing starts the new actor processes and
waits until each has built its rollout; the learner then splits every later version's work units among them.
Shrinking lets the actors left out finish the version they are on; they then retire. In sync mode the run's
results do not change (every episode is the same whichever actor rolls it out). The count applies until the job
ends; a resumed job starts with its command line's --num_actors again. Waits until the driver has the new count.
"""

from __future__ import annotations

from absl import flags

from coala_dist.commands import UsageError
from coala_dist.console import counted

_WORKDIR = flags.DEFINE_string("workdir", None, "The running job's work directory (coala train --workdir).")
_NUM_ACTORS = flags.DEFINE_integer("num_actors", None, "The number of actors the job should have (>= 1).")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 300.0, "How long to wait for the job to apply it (seconds).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; use --workdir=DIR --num_actors=N")
    if not _WORKDIR.value or _NUM_ACTORS.value is None:
        raise UsageError("--workdir and --num_actors are required")
    if _NUM_ACTORS.value < 1:
        raise UsageError(f"--num_actors={_NUM_ACTORS.value} is invalid: a running job needs at least one actor")
    from coala_dist.distributed.control import request_scale

    try:
        before = request_scale(_WORKDIR.value, _NUM_ACTORS.value, timeout_s=_TIMEOUT_S.value)
    except ValueError as error:
        raise SystemExit(f"coala scale: {error}") from None
    print(f"coala scale: {_WORKDIR.value}: {before} -> {counted(_NUM_ACTORS.value, 'actor')}")
