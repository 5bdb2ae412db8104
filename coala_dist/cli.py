"""The `coala` console script: one entry point, one sub-command per job.

Each sub-command lives in its own module exposing `main(argv)` and defining its absl flags at
import time; only the chosen module is imported, so flags of different commands never clash and
`coala --help` stays fast (no JAX/TF import).
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from types import ModuleType

# name -> (module, one-line help). The module must define `main(argv: list[str]) -> None`.
COMMANDS: dict[str, tuple[str, str]] = {
    "play": ("coala_dist.commands.play", "play one batched IPD episode with fresh Hawk policies"),
    "train": ("coala_dist.commands.train", "train meta agents (--config, --workdir, --launch, --num_actors)"),
    "analytic": ("coala_dist.commands.analytic", "exact analytic IPD experiments (paper §4, Fig. 3, 4, 8-10)"),
    "experiment": (
        "coala_dist.commands.experiment",
        "reproduce the paper's experiments: IPD (Fig. 5, ablation, H.3), Clean Up-lite (Fig. 6, 7)",
    ),
    "scale": ("coala_dist.commands.scale", "change the actor count of a running job (--workdir, --num_actors)"),
    "plot": ("coala_dist.commands.plot", "training curves of runs, mean ± std over seeds (WORKDIR... --out)"),
    "eval": ("coala_dist.commands.eval", "trained agents vs fresh naive learners and each other (--workdir, --agent)"),
    "export": ("coala_dist.commands.export", "one trained meta agent as a self-describing folder (--workdir, --out)"),
    "league": ("coala_dist.commands.league", "agents and a zoo of reference co-players, every pair, both seats"),
    "snr": ("coala_dist.commands.snr", "policy-gradient signal-to-noise per estimator, before spending compute"),
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


HELP_FLAGS = ("-h", "--help", "-help", "--helpshort")


def command_help(name: str, module: ModuleType) -> str:
    """`coala NAME --help`: the command's docstring and its own flags with their defaults (not absl's or JAX's)."""
    from absl import flags

    lines = [(module.__doc__ or "").strip(), "", f"flags of coala {name}:"]
    for flag in sorted(flags.FLAGS.get_flags_for_module(module.__name__), key=lambda f: f.name):
        default = flag.default_as_str if flag.default_as_str is not None else "none"
        lines.append(f"  --{flag.name}  (default {default})")
        lines.append(f"      {flag.help}")
    if "config" in flags.FLAGS and flags.FLAGS["config"] in flags.FLAGS.get_flags_for_module(module.__name__):
        lines.append("  --config.FIELD=VALUE  overrides any field of the config, e.g. --config.meta_batch_size=32")
    return "\n".join(lines)


def _flag_arg(args: list[str], name: str) -> tuple[int, str] | None:
    """(index, value) of the last `--NAME=VALUE` or `--NAME VALUE` in `args` (absl keeps the last); None if absent."""
    found = None
    for i, arg in enumerate(args):
        if arg.startswith(f"--{name}="):
            found = i, arg.partition("=")[2]
        elif arg == f"--{name}" and i + 1 < len(args):
            found = i + 1, args[i + 1]
    return found


def _flag_value(args: list[str], name: str, default: str | None = None) -> str | None:
    found = _flag_arg(args, name)
    return default if found is None else found[1]


def check_override(config, field: str) -> None:
    """Raises a one-line ValueError if `--config.FIELD` names no field of `config` (with the closest name)."""
    import ml_collections

    node, walked = config, []
    for part in field.split("."):
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            raise ValueError(f"--config.{field}: config.{'.'.join(walked)} is a value, not a section")
        if part not in node:
            close = difflib.get_close_matches(part, list(node.keys()), n=1)
            prefix = ".".join([*walked, close[0]]) if close else None
            hint = f"; did you mean --config.{prefix}?" if close else ""
            raise ValueError(f"--config.{field}: the config has no field {'.'.join([*walked, part])!r}{hint}")
        node, walked = node[part], [*walked, part]


def preflight(module: ModuleType, args: list[str]) -> list[str]:
    """Resolves `--config` (a path or a shipped config's name), loads it and checks every `--config.FIELD` override.

    Every problem is a one-line ValueError, raised before absl parses the flags (whose errors are tracebacks here).
    Returns `args` with the config's resolved path.
    """
    from absl import flags

    if "config" not in flags.FLAGS or flags.FLAGS["config"] not in flags.FLAGS.get_flags_for_module(module.__name__):
        return args
    from coala_dist import configs

    args = list(args)
    found = _flag_arg(args, "config")
    if found is None:
        config = flags.FLAGS["config"].default
    else:
        index, value = found
        if not value:
            raise ValueError("--config needs a value: a config file or a shipped config's name")
        path = configs.resolve(value)
        args[index] = f"--config={path}" if args[index].startswith("--config=") else path
        config = configs.load(path)
        reference = flags.FLAGS["config"].default  # the command's default config (absl may still hold its path)
        configs.check_complete(config, configs.load(reference) if isinstance(reference, str) else reference, path)
    for arg in args:
        if arg.startswith("--config."):
            check_override(config, arg[len("--config.") :].partition("=")[0])
    return args


def _one_line_flags_parser(name: str):
    """absl's flag parser, with any error (a bad value, an unknown flag) as one line and exit status 2."""

    def parse(argv: list[str]) -> list[str]:
        from absl import flags

        try:
            return flags.FLAGS(argv)
        except Exception as error:  # noqa: BLE001 -- flags.Error and what config_flags raises while parsing
            text = str(error).strip().splitlines() or [type(error).__name__]
            print(f"coala {name}: {text[0]}", file=sys.stderr)
            sys.exit(2)

    return parse


def _isolate_network(args: list[str]) -> None:
    """`coala train`'s --network (coala_dist/distributed/netns.py), read from the raw arguments: the namespace must be
    entered while the process has one thread, before absl parses the flags in the command's module."""
    from coala_dist.distributed import netns

    mode = _flag_value(args, "network", "auto")
    try:
        if not netns.choose(mode, _flag_value(args, "launch", "inprocess"), _flag_value(args, "workdir")):
            return
        netns.isolate_network()
    except ValueError as error:
        print(f"coala train: {error}", file=sys.stderr)
        sys.exit(2)
    except netns.IsolationUnavailableError as error:
        if mode == "isolated":
            sys.exit(f"coala train: --network=isolated: {error}")
        print(
            f"coala train: warning: no private network for this run ({error}); its servers may listen on every "
            "interface (--network=shared silences this warning)",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    from coala_dist import xla_flags

    while len(argv) > 1 and argv[1].split("=")[0] == "--compilation_cache":
        value = argv.pop(1).partition("=")[2]
        if not value:
            print(
                "coala: --compilation_cache needs a value: --compilation_cache=off or --compilation_cache=DIR",
                file=sys.stderr,
            )
            sys.exit(2)
        os.environ[xla_flags.COMPILATION_CACHE_ENV] = value
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return
    name = argv[1]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        print(f"coala: unknown command {name!r}; {hint}valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        sys.exit(2)
    from coala_dist import profiles

    problem = profiles.mismatch()
    if problem:
        sys.exit(f"coala: {problem}")
    xla_flags.configure()  # before any JAX import
    args = argv[2:]
    if name == "train" and not any(arg in HELP_FLAGS for arg in args):
        _isolate_network(args)  # before the command's module imports JAX, which starts a thread
    module = importlib.import_module(COMMANDS[name][0])
    if any(arg in HELP_FLAGS for arg in args):
        print(command_help(name, module))
        return
    from coala_dist.configs import ConfigFileError

    try:
        args = preflight(module, args)
    except (ConfigFileError, ValueError) as error:
        print(f"coala {name}: {error}", file=sys.stderr)
        sys.exit(2)
    from absl import app, logging

    logging.set_verbosity(logging.WARNING)

    from coala_dist.commands import UsageError

    try:
        app.run(module.main, argv=[f"coala {name}", *args], flags_parser=_one_line_flags_parser(name))
    except UsageError as error:
        print(f"coala {name}: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
