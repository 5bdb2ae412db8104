"""The `coala` console script: one entry point, one sub-command per job.

Each sub-command lives in its own module exposing `main(argv)` and defining its absl flags at
import time; only the chosen module is imported, so flags of different commands never clash and
`coala --help` stays fast (no JAX/TF import).
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module, one-line help). The module must define `main(argv: list[str]) -> None`.
COMMANDS: dict[str, tuple[str, str]] = {
    "play": ("coala_dist.commands.play", "play one batched IPD episode with fresh Hawk policies"),
    "train": ("coala_dist.commands.train", "train meta agents (--config, --workdir, --launch, --num_actors)"),
    "analytic": ("coala_dist.commands.analytic", "exact analytic IPD experiments (paper §4, Fig. 3, 4, 8-10)"),
    "experiment": ("coala_dist.commands.experiment", "reproduce the paper's IPD experiments (Fig. 5, ablation, H.3)"),
    "plot": ("coala_dist.commands.plot", "training curves of runs, mean ± std over seeds (WORKDIR... --out)"),
    "eval": ("coala_dist.commands.eval", "trained agents vs fresh naive learners and each other (--workdir)"),
    "bench": ("coala_dist.commands.bench", "throughput benchmark and FLOP limit, as JSON (--out, --quick)"),
}


def _usage() -> str:
    lines = ["usage: coala COMMAND [--flags]", "", "commands:"]
    width = max(len(name) for name in COMMANDS)
    for name, (_, help_text) in COMMANDS.items():
        lines.append(f"  {name.ljust(width)}  {help_text}")
    lines.append("")
    lines.append("`coala COMMAND --help` lists a command's flags.")
    lines.append(
        "`coala --compilation_cache=off|DIR COMMAND ...`: JAX's compilation cache (default ~/.cache/coala-dist/jax)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    from coala_dist import xla_flags

    while len(argv) > 1 and argv[1].split("=")[0] == "--compilation_cache":
        value = argv.pop(1).partition("=")[2]
        if not value:
            sys.exit("coala: --compilation_cache needs a value: --compilation_cache=off or --compilation_cache=DIR")
        os.environ[xla_flags.COMPILATION_CACHE_ENV] = value
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return
    name = argv[1]
    if name not in COMMANDS:
        sys.exit(f"coala: unknown command {name!r}; valid commands: {', '.join(COMMANDS)}")
    from coala_dist import profiles

    problem = profiles.mismatch()
    if problem:
        sys.exit(f"coala: {problem}")
    xla_flags.configure()  # before any JAX import
    module = importlib.import_module(COMMANDS[name][0])
    from absl import app, logging

    logging.set_verbosity(logging.WARNING)

    app.run(module.main, argv=[f"coala {name}", *argv[2:]])


if __name__ == "__main__":
    main()
