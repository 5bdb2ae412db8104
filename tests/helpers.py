"""Helpers shared by several test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable

import psutil
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def with_fields(config, **fields):
    """A copy of `config` with dotted fields (`a__b` for a.b) replaced."""
    config = config.copy_and_resolve_references()
    for name, value in fields.items():
        *parents, last = name.split("__")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    return config


def coala_train_command(workdir, *flags: str) -> list[str]:
    """`coala train` on the tiny config in `workdir`, as a subprocess argument list (run it with cwd=REPO)."""
    return [sys.executable, "-m", "coala_dist.cli", "train", "--config=configs/ipd_tiny.py", f"--workdir={workdir}",
            *flags]


def run_coala(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`coala ARGS` as a subprocess in the repository root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "coala_dist.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def train_tiny_run(tiny_config, tiny_components, path: str, iterations: int) -> str:
    """The tiny mixed pool (2 meta agents) trained for `iterations` in `path`, with its checkpoint; returns `path`."""
    from coala_dist.train import train

    config = with_fields(tiny_config, training_iterations=iterations)
    train(config, path, components=tiny_components, log=lambda line: None)
    return path


@pytest.fixture(scope="module", name="workdir")
def tiny_run_workdir(tiny_config, tiny_components, tmp_path_factory):
    """The tiny mixed pool (2 meta agents) trained for 2 iterations, with its checkpoint (import it as a fixture)."""
    return train_tiny_run(tiny_config, tiny_components, str(tmp_path_factory.mktemp("run") / "tiny"), 2)


@pytest.fixture(scope="module", name="exported")
def exported_tiny_agent(workdir, tmp_path_factory):
    """Meta agent 1 of `workdir`, exported (`coala export`) to its own folder (import it as a fixture)."""
    from coala_dist.agents import export_agent

    out = str(tmp_path_factory.mktemp("agents") / "tiny-agent1")
    export_agent(workdir, out, agent_index=1)
    return out


def results_snapshot() -> dict[str, tuple[int, str]]:
    """Every file under the repository's results/ with its mtime and content hash: what "untouched" compares."""
    snapshot = {}
    for root, _, files in os.walk(os.path.join(REPO, "results")):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            snapshot[os.path.relpath(path, REPO)] = (os.stat(path).st_mtime_ns, digest)
    return snapshot


def with_command_line_part(processes: Iterable[psutil.Process], text: str) -> list[psutil.Process]:
    """Those of `processes` with `text` in a part of their command line (Ray titles its worker processes, e.g.
    `ray::ActorProcess`); processes gone meanwhile are left out."""
    found = []
    for process in processes:
        try:
            if any(text in part for part in process.cmdline()):
                found.append(process)
        except psutil.Error:
            pass
    return found
