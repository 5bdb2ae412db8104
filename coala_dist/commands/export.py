"""`coala export --workdir=W --out=DIR [--agent=i]`: one trained meta agent as a self-describing folder.

Writes DIR/agent.json (the manifest: estimator, seed, iteration, the policy fields that rebuild the network, the game,
the naive learners it was trained against, the run's final metrics, the code's commit, the parameters' sha256),
DIR/params.npz (the policy parameters of agent i of the run's newest readable checkpoint) and DIR/config.json (the
run's config). `coala league --agents=DIR`, `coala eval --agent=DIR` and `coala_dist.agents.load_agent(DIR)` read it.
"""

from __future__ import annotations

import os

from absl import flags

from coala_dist.commands import UsageError

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's work directory (holding checkpoints/).")
_OUT = flags.DEFINE_string("out", None, "The agent folder to write (created; an earlier export there is replaced).")
_AGENT = flags.DEFINE_integer("agent", 0, "Which meta agent of the run (0 .. population_size_meta - 1).")
_NAME = flags.DEFINE_string("name", None, "The agent's name in league tables (default: the folder's name).")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; use --workdir=W --out=DIR")
    if not _WORKDIR.value or not _OUT.value:
        raise UsageError("--workdir and --out are required")
    workdir, out = _WORKDIR.value, _OUT.value
    if not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} is not a folder")
    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise UsageError(f"--workdir={workdir} is not a run's workdir (no checkpoints/)")
    if _AGENT.value < 0:
        raise UsageError(f"--agent must be >= 0, got {_AGENT.value}")
    from coala_dist.agents import MANIFEST

    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out={out} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out) and not os.path.exists(os.path.join(out, MANIFEST)):
        raise UsageError(f"--out={out} is a folder holding other files; name a new or empty one")
    from coala_dist.agents import export_agent
    from coala_dist.checkpoint import UnreadableCheckpointsError

    try:
        manifest = export_agent(workdir, out, _AGENT.value, _NAME.value)
    except IndexError as error:
        raise UsageError(f"--agent: {error}") from None
    except (FileNotFoundError, UnreadableCheckpointsError, OSError) as error:
        raise SystemExit(f"coala export: {error}") from None
    print(
        f"exported agent {manifest['agent_index']} ({manifest['estimator']}, seed {manifest['seed']}, iteration "
        f"{manifest['iteration']}, {manifest['params']['count']} parameters) of {workdir} to {out}"
    )
