"""The few places where the two install profiles' JAX versions differ (README "Set up").

* reverb profile: jax 0.4.34 (pinned by dm-reverb 0.14.0 -> TF 2.15 -> numpy < 2);
* current profile: jax >= 0.6 (tested with 0.12).

Everything else in the code base is written once against APIs both versions have.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import jax

# jaxlib 0.4.34's CPU collectives (gloo) abort when a process of a jax.distributed group holds several local CPU devices
# ("enforce fail at gloo/transport/tcp/pair.cc:446", measured with 2 learner processes x 4 fake CPU devices); one CPU
# device per process works there, and current jaxlib runs both. Accelerator backends do not use gloo.
SEVERAL_CPU_DEVICES_PER_GROUP_PROCESS = tuple(int(part) for part in jax.__version__.split(".")[:2]) >= (0, 5)


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


def jit_with_compiler_options(fun: Callable, compiler_options: dict[str, Any], **jit_kwargs: Any) -> Callable:
    """`jax.jit(fun, compiler_options=...)` where this JAX has that argument (0.4.36 and later); plain `jax.jit` on
    the reverb profile's 0.4.34, whose legacy CPU runtime compiles such programs fast anyway."""
    if "compiler_options" in inspect.signature(jax.jit).parameters:
        return jax.jit(fun, compiler_options=compiler_options, **jit_kwargs)
    return jax.jit(fun, **jit_kwargs)
