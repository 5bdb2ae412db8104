"""The import rules of docs/architecture.md, read from the source (no module is imported)."""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "coala_dist"
CORE = ("learner.py", "lola_dice_learner.py", "rollout.py", "pool.py", "keys.py", "rl", "networks", "envs")


def _imports(path: pathlib.Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _files(*parts: str) -> list[pathlib.Path]:
    found = []
    for part in parts:
        path = PACKAGE / part
        found.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return found


def test_core_takes_typed_settings_never_the_config():
    forbidden = ("coala_dist.config", "ml_collections", "coala_dist.builder", "coala_dist.distributed",
                 "coala_dist.analysis", "coala_dist.experiments", "coala_dist.train")
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(n for n in _imports(path) if n.startswith(forbidden))
        for path in _files(*CORE)
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_only_the_reverb_transport_imports_reverb_or_tensorflow():
    importers = {
        str(path.relative_to(PACKAGE))
        for path in _files(".")
        if any(n.split(".")[0] in ("reverb", "tensorflow") for n in _imports(path))
    }
    assert importers == {"distributed/replay_reverb.py"}
