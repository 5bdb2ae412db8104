"""The shipped experiment configs, and how a `--config` value becomes a loaded config.

Each `*.py` file here defines `get_config() -> ml_collections.ConfigDict` (see `coala_dist.config.default_config`).
They ship inside the package so that `--config=ipd_pure_shaping` works from any folder; the repository's
`configs/` is a link to this folder, so `--config=configs/ipd_pure_shaping.py` keeps working in a checkout.

Every failure here is a `ConfigFileError` whose message is one line naming the file and the problem: the command
line turns it into `coala COMMAND: <message>` and a non-zero exit, before anything heavy is imported.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from types import ModuleType

CONFIG_DIR = os.path.dirname(os.path.abspath(__file__))


class ConfigFileError(ValueError):
    """A config file that cannot be found or loaded; the message is one line."""


def names() -> list[str]:
    """The shipped configs, by name (file name without `.py`)."""
    return sorted(f[:-3] for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and not f.startswith("_"))


def resolve(spec: str) -> str:
    """The path of config `spec`: an existing file path as given, else a shipped config's name.

    `ipd_tiny`, `ipd_tiny.py` and `configs/ipd_tiny.py` name the shipped `ipd_tiny.py` wherever the command runs.
    """
    if os.path.isfile(spec):
        return spec
    name = os.path.basename(spec)
    name = name[:-3] if name.endswith(".py") else name
    shipped = os.path.join(CONFIG_DIR, name + ".py")
    if name in names() and (os.sep not in spec or os.path.dirname(spec).rstrip(os.sep).endswith("configs")):
        return shipped
    close = difflib.get_close_matches(name, names(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; shipped configs: {', '.join(names())}"
    raise ConfigFileError(f"config {spec!r} not found: no such file, and not the name of a shipped config{hint}")


def load_module(path: str) -> ModuleType:
    """Executes the config file at `path` as a module; any error becomes one line naming the file."""
    if not os.path.isfile(path):
        raise ConfigFileError(f"config file {path!r} does not exist")
    module_name = "coala_config_" + "".join(c if c.isalnum() else "_" for c in os.path.splitext(path)[0])
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        raise ConfigFileError(f"config file {path!r}: syntax error at line {error.lineno}: {error.msg}") from None
    except Exception as error:  # noqa: BLE001 -- any failure of user code is reported in one line
        raise ConfigFileError(f"config file {path!r} failed to load: {_one_line(error)}") from None
    if not callable(getattr(module, "get_config", None)):
        raise ConfigFileError(f"config file {path!r} defines no get_config() function")
    return module


def load(spec: str):
    """`get_config()` of config `spec` (a path or a shipped name, see `resolve`)."""
    path = resolve(spec)
    module = load_module(path)
    try:
        config = module.get_config()
    except Exception as error:  # noqa: BLE001
        raise ConfigFileError(f"config file {path!r}: get_config() raised {_one_line(error)}") from None
    check_type(config, path)
    return config


def check_type(config, path: str) -> None:
    """Raises a one-line ConfigFileError unless `get_config()` of `path` returned an `ml_collections.ConfigDict`."""
    import ml_collections

    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigFileError(
            f"config file {path!r}: get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict "
            "(start from coala_dist.config.default_config() and change fields)"
        )


def missing_fields(config, reference, prefix: str = "") -> list[str]:
    """Dotted names of the fields of `reference` (a ConfigDict) that `config` lacks, sections included."""
    import ml_collections

    missing = []
    for key, value in reference.items():
        name = f"{prefix}{key}"
        if key not in config:
            missing.append(name)
        elif isinstance(value, ml_collections.ConfigDict) and isinstance(config[key], ml_collections.ConfigDict):
            missing.extend(missing_fields(config[key], value, name + "."))
    return missing


def check_complete(config, reference, path: str) -> None:
    """Raises a one-line ConfigFileError naming the fields of `reference` (the command's default config) that the
    config of `path` lacks: a partial config would fail deep inside the run."""
    missing = missing_fields(config, reference)
    if missing:
        listed = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        raise ConfigFileError(
            f"config file {path!r}: get_config() returned a config without {listed} "
            "(start from coala_dist.config.default_config() and change fields)"
        )


def load_shipped_module(file_name: str) -> ModuleType:
    """The shipped config file `file_name` (e.g. "ipd_cpu_pure_shaping.py") as a module."""
    return load_module(os.path.join(CONFIG_DIR, file_name))


def load_shipped(file_name: str):
    """`get_config()` of the shipped `file_name`: what configs that build on others call."""
    return load_shipped_module(file_name).get_config()


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")

