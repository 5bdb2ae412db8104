"""`coala plot WORKDIR [WORKDIR ...] --out=fig.png`: training curves of runs, mean ± std over seeds per estimator.

The style of the paper's Fig. 5. Each WORKDIR is one run (one seed); runs are grouped by the estimator saved in
their checkpoint's config. `--metrics` picks the panels (metric keys of metrics.csv, e.g. vs_naive/ego_reward).
"""

from __future__ import annotations

import sys

from absl import flags

_OUT = flags.DEFINE_string("out", "fig.png", "PNG to write.")
_METRICS = flags.DEFINE_list("metrics", None, "Metric keys to draw, one panel each (default: the headline ones).")
_SMOOTHING = flags.DEFINE_integer("smoothing", None, "Moving-average window in iterations (default: ~2% of the run).")
_TITLE = flags.DEFINE_string("title", None, "Figure title.")


def main(argv: list[str]) -> None:
    import os

    from coala_dist.analysis.curves import distinct_workdirs, plot_runs
    from coala_dist.analysis.runs import load_run

    workdirs = argv[1:]
    if not workdirs:
        raise SystemExit("coala plot: give one or more WORKDIRs (each a run's --workdir holding metrics.csv)")
    workdirs, repeated = distinct_workdirs(workdirs)
    if repeated:
        print(f"coala plot: counted once: {', '.join(repeated)} (given more than once)", file=sys.stderr)
    try:
        runs = [load_run(workdir) for workdir in workdirs]
        if os.path.dirname(_OUT.value):
            os.makedirs(os.path.dirname(_OUT.value), exist_ok=True)
        summary = plot_runs(runs, _OUT.value, _METRICS.value, _SMOOTHING.value, _TITLE.value)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"coala plot: {error}") from None
    for group, entry in summary["groups"].items():
        finals = "  ".join(f"{k} {v['mean']:+.3f}±{v['std']:.3f}" for k, v in entry["final"].items())
        seeds = f"{entry['seeds']} seed{'s' if entry['seeds'] > 1 else ''}"
        print(f"{group} ({seeds}): {finals}")
    print(f"wrote {_OUT.value}")
