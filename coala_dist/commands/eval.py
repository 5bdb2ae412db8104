"""`coala eval --workdir=DIR`: the run's newest checkpoint against fresh naive learners and against each other.

Prints, per inner episode of the meta-episode, for IPD the meta agent's cooperation probability in each state, both
players' cooperation rates and rewards, and the ZD-extortion fit; for Clean Up the paper's metrics (return,
cleaning discrepancy, zap rate, pollution, apples). Writes eval.json and eval.png to --out (default DIR/eval).
"""

from __future__ import annotations

from absl import flags

from coala_dist.commands import UsageError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's work directory (holding checkpoints/).")
_OUT = flags.DEFINE_string("out", None, "Output directory for eval.json and eval.png (default: WORKDIR/eval).")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Evaluation meta-batches (each as many meta-episodes as an iteration).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; use --workdir=DIR")
    if not _WORKDIR.value:
        raise UsageError("--workdir is required")
    if _ROUNDS.value < 1:
        raise UsageError(f"--rounds must be >= 1, got {_ROUNDS.value}")
    from coala_dist.analysis.evaluation import evaluate_workdir
    from coala_dist.checkpoint import IncompatibleCheckpointError

    try:
        evaluate_workdir(_WORKDIR.value, _OUT.value, rounds=_ROUNDS.value)
    except (FileNotFoundError, IncompatibleCheckpointError, ValueError) as error:
        raise SystemExit(f"coala eval: {error}") from None
