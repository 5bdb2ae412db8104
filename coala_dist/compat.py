"""The few places where the two install profiles' JAX versions differ (README "Set up").

* reverb profile: jax 0.4.34 (pinned by dm-reverb 0.14.0 -> TF 2.15 -> numpy < 2);
* current profile: jax >= 0.6 (tested with 0.12).

Everything else in the code base is written once against APIs both versions have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax


@contextlib.contextmanager
def enable_x64() -> Iterator[None]:
    """Float64/int64 inside the block, for exact reference computations in tests and oracles.

    jax 0.4.34 has `jax.experimental.enable_x64()`; newer releases removed it in favour of the `jax.enable_x64(True)`
    configuration context (added in the 0.5/0.6 series).
    """
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(True):
            yield
    else:
        from jax.experimental import enable_x64 as legacy_enable_x64

        with legacy_enable_x64():
            yield
