"""`coala plot WORKDIR [WORKDIR ...] [--out=FILE.png]`: training curves of runs, mean ± std over seeds per estimator.

The style of the paper's Fig. 5. Each WORKDIR is one run (one seed); runs are grouped by the estimator saved in
their checkpoint's config. `--metrics` picks the panels (metric keys of metrics.csv, e.g. vs_naive/ego_reward).
Without `--out` the figure goes next to the runs: `WORKDIR/curves.png` for one run, else into the folder that holds
them all.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from coala_dist.commands import UsageError
from coala_dist.console import counted

_OUT = flags.DEFINE_string(
    "out", None, "PNG to write (default WORKDIR/curves.png; with several runs, curves.png in their common folder)."
)
DEFAULT_NAME = "curves.png"


def default_out(workdirs: list[str]) -> str:
    """Where the figure goes without --out: into the one run's workdir, or the folder holding every run."""
    if len(workdirs) == 1:
        return os.path.join(workdirs[0], DEFAULT_NAME)
    return os.path.join(os.path.commonpath([os.path.abspath(w) for w in workdirs]), DEFAULT_NAME)


_METRICS = flags.DEFINE_list("metrics", None, "Metric keys to draw, one panel each (default: the headline ones).")
_SMOOTHING = flags.DEFINE_integer("smoothing", None, "Moving-average window in iterations (default: ~2% of the run).")
_TITLE = flags.DEFINE_string("title", None, "Figure title.")


def main(argv: list[str]) -> None:
    from coala_dist.analysis.curves import distinct_workdirs, plot_runs
    from coala_dist.analysis.runs import load_run

    workdirs = argv[1:]
    if not workdirs:
        raise UsageError("give one or more WORKDIRs (each a run's --workdir holding metrics.csv)")
    workdirs, repeated = distinct_workdirs(workdirs)
    if repeated:
        print(f"coala plot: counted once: {', '.join(repeated)} (given more than once)", file=sys.stderr)
    out = _OUT.value or default_out(workdirs)
    try:
        runs = [load_run(workdir) for workdir in workdirs]
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        summary = plot_runs(runs, out, _METRICS.value, _SMOOTHING.value, _TITLE.value)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"coala plot: {error}") from None
    for group, entry in summary["groups"].items():
        finals = "  ".join(f"{k} {v['mean']:+.3f}±{v['std']:.3f}" for k, v in entry["final"].items())
        print(f"{group} ({counted(entry['seeds'], 'seed')}): {finals}")
    print(f"wrote {out}")
