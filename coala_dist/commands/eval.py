"""`coala eval --workdir=DIR` or `coala eval --agent=DIR`: trained meta agents against fresh naive learners.

--workdir (a run): its newest checkpoint's meta agents against fresh naive learners (from the run's naive
initialisations) and against each other, co-players drawn as in training; --rounds meta-batches of P·N meta-episodes.

--agent (an exported agent, `coala export`): the agent against fresh naive learners of the settings it was trained
against (its agent.json: the naive learners' rule and hyperparameters, B, the game; a new draw of the policy's
initialisation every meta-episode), played by `coala league`'s match engine; --rounds rounds of N meta-episodes, N
its run's meta_batch_size. A single agent has no meta co-players: that group is absent. IPD and Clean Up-lite alike.

Prints, per inner episode of the meta-episode, for IPD the meta agent's cooperation probability in each state, both
players' cooperation rates and rewards, and the ZD-extortion fit; for Clean Up the paper's metrics (return,
cleaning discrepancy, zap rate, pollution, apples). Writes eval.json and eval.png to --out (default DIR/eval; an
agent inside the published results/ defaults to workdirs/eval/NAME instead).
"""

from __future__ import annotations

import os

from absl import flags

from coala_dist.commands import UsageError

_WORKDIR = flags.DEFINE_string("workdir", None, "A run's work directory (holding checkpoints/).")
_AGENT = flags.DEFINE_string("agent", None, "An exported agent's folder (holding agent.json, from coala export).")
_OUT = flags.DEFINE_string("out", None, "Output directory for eval.json and eval.png (default: DIR/eval).")
_ROUNDS = flags.DEFINE_integer(
    "rounds",
    1,
    "Evaluation rounds: --workdir, meta-batches of as many meta-episodes as an iteration (P·N); --agent, N each.",
)


def default_out(folder: str) -> str:
    """--agent's default --out: FOLDER/eval, or workdirs/eval/NAME for a folder inside the published results (which
    nothing writes into unless --out names it)."""
    from coala_dist.analysis.runs import in_published_results

    if in_published_results(folder) is not None:
        return os.path.join("workdirs", "eval", os.path.basename(os.path.normpath(folder)))
    return os.path.join(folder, "eval")


def _check_agent_dir(path: str) -> None:
    from coala_dist.agents import MANIFEST, is_agent_dir

    if not os.path.isdir(path):
        raise UsageError(f"--agent={path} is not a folder")
    if not is_agent_dir(path):
        if os.path.isdir(os.path.join(path, "checkpoints")):
            raise UsageError(f"--agent={path} is a run's workdir, not an exported agent; use --workdir={path}")
        raise UsageError(f"--agent={path} is not an exported agent (no {MANIFEST}; make one with coala export)")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; use --workdir=DIR or --agent=DIR")
    if bool(_WORKDIR.value) == bool(_AGENT.value):
        raise UsageError(
            "give exactly one of --workdir=DIR (a run) and --agent=DIR (an exported agent)"
            if _WORKDIR.value
            else "--workdir (a run) or --agent (an exported agent) is required"
        )
    if _ROUNDS.value < 1:
        raise UsageError(f"--rounds must be >= 1, got {_ROUNDS.value}")
    if _AGENT.value:
        _check_agent_dir(_AGENT.value)
        from coala_dist.analysis.evaluation import evaluate_agent_dir

        try:
            evaluate_agent_dir(_AGENT.value, _OUT.value or default_out(_AGENT.value), rounds=_ROUNDS.value)
        except (FileNotFoundError, ValueError, OSError) as error:
            raise SystemExit(f"coala eval: {error}") from None
        return
    from coala_dist.agents import is_agent_dir

    if is_agent_dir(_WORKDIR.value):
        raise UsageError(f"--workdir={_WORKDIR.value} is an exported agent, not a run; use --agent={_WORKDIR.value}")
    from coala_dist.analysis.evaluation import evaluate_workdir
    from coala_dist.checkpoint import IncompatibleCheckpointError

    try:
        evaluate_workdir(_WORKDIR.value, _OUT.value, rounds=_ROUNDS.value)
    except (FileNotFoundError, IncompatibleCheckpointError, ValueError) as error:
        raise SystemExit(f"coala eval: {error}") from None
