"""XLA settings for this project's CPU work, applied before JAX starts its backend.

`--xla_cpu_use_thunk_runtime=false` selects XLA's older CPU runtime. With jax 0.4.34 the newer "thunk" runtime adds a
large per-iteration overhead to `lax.scan` loops, which are this project's hot path (one rollout step per scan
iteration, the RG-LRU recurrence in the learner): measured here, one IPD iteration of the paper config took 15.5 s with
the thunk runtime and 9.0 s without it (`scripts/bench_iteration.py`, 2-core CPU, shared machine).
"""

from __future__ import annotations

import os

CPU_FLAGS = ("--xla_cpu_use_thunk_runtime=false",)


def configure() -> None:
    """Adds the project's XLA flags to $XLA_FLAGS unless the user already set them. Call before importing jax."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [flag for flag in CPU_FLAGS if flag.split("=")[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
