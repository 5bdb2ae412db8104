"""XLA and JAX settings for this project, applied before JAX starts its backend: CPU flags and the compilation cache.

`--xla_cpu_use_thunk_runtime=false` selects XLA's older CPU runtime. With jax 0.4.34 (the reverb profile) the newer
"thunk" runtime adds a large per-iteration overhead to `lax.scan` loops, which are this project's hot path (one
rollout step per scan iteration, the RG-LRU recurrence in the learner); results/profiles/README.md has the
measurement. Newer jaxlib releases removed the old runtime (jax 0.12 ignores the flag with a warning), and their thunk
runtime is the faster one, so the flag is only added on jaxlib 0.4.x.

The version is read from the installed package's metadata, not by importing jax: importing it would be too late.

JAX's persistent compilation cache is on by default: compiling the paper config's rollout and update
takes 15-30 s on a 2-core CPU, and a second run or a resume of the same config loads the programs from disk instead.
Where: `$COALA_COMPILATION_CACHE` if set (a directory, or `off`), else `$XDG_CACHE_HOME/coala-dist/jax`
(`~/.cache/coala-dist/jax`). `coala --compilation_cache=off|DIR COMMAND ...` sets the variable for one command (and
the processes it starts). A user who sets `JAX_COMPILATION_CACHE_DIR` keeps it.
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


COMPILATION_CACHE_ENV = "COALA_COMPILATION_CACHE"
CACHE_OFF = ("off", "none", "false", "0")
# Programs that compile faster than this are not written to the cache (JAX's default, 1 s, would miss the many
# 0.1-1 s programs a first iteration also compiles).
CACHE_MIN_COMPILE_TIME_S = "0.1"


def default_compilation_cache_dir() -> str:
    """`$XDG_CACHE_HOME/coala-dist/jax`, or `~/.cache/coala-dist/jax`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "coala-dist", "jax")


def compilation_cache_dir() -> str | None:
    """The persistent compilation cache's directory, or None when `$COALA_COMPILATION_CACHE` turns it off."""
    choice = os.environ.get(COMPILATION_CACHE_ENV, "").strip()
    if choice.lower() in CACHE_OFF:
        return None
    return os.path.abspath(os.path.expanduser(choice)) if choice else default_compilation_cache_dir()


def configure() -> None:
    """Adds the project's XLA flags to $XLA_FLAGS unless the user already set them, and points JAX's persistent
    compilation cache at `compilation_cache_dir()` (through JAX's environment variables, so processes started from
    here use it too), and quiets TensorFlow's C++ start-up logs (`TF_CPP_MIN_LOG_LEVEL=3` unless set). Call before
    importing jax."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = [flag for flag in cpu_flags() if flag.split("=")[0] not in current]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([current, *extra]).strip()
    # TensorFlow (reverb profile only) logs its CUDA/cuDNN/TensorRT probes as errors on a machine without a GPU.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cache = compilation_cache_dir()
    if cache is None:
        os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    elif "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", CACHE_MIN_COMPILE_TIME_S)
