"""`coala experiment NAME --seeds=5 [--out=DIR]`: reproduce one of the paper's experiments.

NAME is one of ipd-fig5a, ipd-fig5b, ipd-fig5c, ipd-ablation-pnaive0, ipd-h3, ipd-h3-mfos-mean,
cleanup-fig6, cleanup-fig7 (coala_dist/experiments/definitions.py). Runs are trained under --workdir_root and are
resumable: re-running the same command skips finished runs and continues the others. ipd-fig5b evaluates the
ipd-fig5a runs (training them first if needed).

The report (table.md, summary.json, the PNG, per_seed/) goes to --out, by default WORKDIR_ROOT/NAME/report, next to
the runs (`--smoke`: WORKDIR_ROOT/smoke/NAME/report); the command prints where. The published results are written
only when asked for, e.g. `--out=results/ipd/ipd-fig5a`; `--smoke` with an --out inside results/ is refused.
"""

from __future__ import annotations

from absl import flags

from coala_dist.commands import UsageError

_SEEDS = flags.DEFINE_integer("seeds", 5, "Number of seeds (0 … seeds − 1) per estimator.")
_FIRST_SEED = flags.DEFINE_integer(
    "first_seed", 0, "Train/report only seeds first_seed … seeds − 1 (split seeds over processes)."
)
_OUT = flags.DEFINE_string(
    "out",
    None,
    "Report folder; default WORKDIR_ROOT/NAME/report (--smoke: WORKDIR_ROOT/smoke/NAME/report). The published "
    "results only when named, e.g. --out=results/ipd/NAME (refused with --smoke).",
)
_WORKDIR_ROOT = flags.DEFINE_string(
    "workdir_root",
    "workdirs/experiments",
    "Root of the runs' work directories (metrics.csv, result.json, params).",
)
_SMOKE = flags.DEFINE_bool(
    "smoke", False, "One tiny iteration per run (CI); runs and report go under WORKDIR_ROOT/smoke."
)
_ESTIMATORS = flags.DEFINE_list(
    "estimators", None, "Subset of the experiment's estimators (default: all)."
)
_ITERATIONS = flags.DEFINE_integer(
    "iterations", None, "Override the config's training_iterations (budget)."
)
_STOP_AFTER_DEFECTION = flags.DEFINE_integer(
    "stop_after_defection",
    0,
    "End a run once the reward per step between its meta agents has been <= 0.1 in each of this many iterations "
    "in a row; it is then finished at that iteration (0: every run trains to its budget).",
)
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Do not train; write results from the finished runs only."
)


def main(argv: list[str]) -> None:
    import os

    from coala_dist.experiments import EXPERIMENTS, run_experiment

    names = argv[1:]
    if len(names) != 1 or names[0] not in EXPERIMENTS:
        raise UsageError(f"give one experiment NAME out of {', '.join(EXPERIMENTS)}")
    name = names[0]
    if _STOP_AFTER_DEFECTION.value < 0:
        raise UsageError(
            f"--stop_after_defection={_STOP_AFTER_DEFECTION.value} must be 0 (off) or a number of iterations"
        )
    workdir_root = (
        os.path.join(_WORKDIR_ROOT.value, "smoke") if _SMOKE.value else _WORKDIR_ROOT.value
    )
    # Next to the runs, not in results/: the committed results change only when the user names them with --out.
    out = _OUT.value or os.path.join(workdir_root, name, "report")
    overrides = {} if _ITERATIONS.value is None else {"training_iterations": _ITERATIONS.value}
    try:
        run_experiment(
            name,
            num_seeds=1 if _SMOKE.value else _SEEDS.value,
            out_dir=out,
            workdir_root=workdir_root,
            smoke=_SMOKE.value,
            estimators=_ESTIMATORS.value,
            extra_overrides=overrides,
            train_missing=not _REPORT_ONLY.value,
            first_seed=_FIRST_SEED.value,
            stop_after_defection=_STOP_AFTER_DEFECTION.value,
        )
    except ValueError as error:  # a bad name or override is one line, not a traceback
        raise SystemExit(f"coala experiment: {error}") from None
    with open(os.path.join(out, "table.md")) as f:
        print(f.read())
    print(f"report: {out}")
