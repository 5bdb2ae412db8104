"""XLA settings for this project's CPU work, applied before JAX starts its backend.

`--xla_cpu_use_thunk_runtime=false` selects XLA's older CPU runtime. With jax 0.4.34 (the reverb profile) the newer
"thunk" runtime adds a large per-iteration overhead to `lax.scan` loops, which are this project's hot path (one
rollout step per scan iteration, the RG-LRU recurrence in the learner): measured here, one IPD iteration of the paper
config took 15.5 s with the thunk runtime and 9.0 s without it (`scripts/bench_iteration.py`, 2-core CPU, shared
machine). Newer jaxlib releases removed the old runtime (jax 0.12 ignores the flag with a warning), and their thunk
runtime is the faster one, so the flag is only added on jaxlib 0.4.x.

The version is read from the installed package's metadata, not by importing jax: importing it would be too late.
"""

from __future__ import annotations

import importlib.metadata
import os

LEGACY_RUNTIME_FLAGS = ("--xla_cpu_use_thunk_runtime=false",)


def jaxlib_version() -> tuple[int, ...]:
    """The installed jaxlib's (major, minor, patch), without importing it; (0,) if it is not installed."""
    try:
        text = importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return (0,)
    return tuple(int(part) for part in text.split(".")[:3] if part.isdigit())


def cpu_flags() -> tuple[str, ...]:
    """The XLA flags that help this project on the installed jaxlib."""
    return LEGACY_RUNTIME_FLAGS if jaxlib_version()[:2] == (0, 4) else ()


def configure() -> None:
    """Adds the project's XLA flags to $XLA_FLAGS unless the user already set them. Call before importing jax."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [flag for flag in cpu_flags() if flag.split("=")[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
