"""The two install profiles (README "Set up") and the one-line check that this environment is one of them.

* **current**: Python >= 3.12, current JAX, no TensorFlow (`constraints/current.txt`);
* **reverb**: Python 3.11 with dm-reverb 0.14.0 and the stack it forces, jax 0.4.34 (`constraints/reverb.txt`).

Checked without importing JAX or TensorFlow (package metadata only), so the CLI can refuse a mismatch at once.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

INSTALL = {
    "current": 'python3.12 -m venv .venv && pip install -c constraints/current.txt -e ".[dev]"',
    "reverb": 'python3.11 -m venv .venv && pip install -c constraints/reverb.txt -e ".[reverb,dev]"',
}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def installed_profile() -> str:
    """`reverb` where Reverb is importable, else `current`."""
    return "reverb" if importlib.util.find_spec("reverb") is not None else "current"


def stack() -> dict[str, str | None]:
    """The versions that define a profile (recorded by `coala bench` and the device check)."""
    packages = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ray", "dm-reverb", "tensorflow")
    return {
        "profile": installed_profile(),
        "python": ".".join(map(str, sys.version_info[:3])),
        **{package: _version(package) for package in packages},
    }


def mismatch() -> str | None:
    """One line naming what to install when this environment is neither profile, else None."""
    python = ".".join(map(str, sys.version_info[:2]))
    if sys.version_info < (3, 12) and installed_profile() != "reverb":
        return (
            f"Python {python} without Reverb is neither install profile: for the current profile use Python >= 3.12 "
            f"({INSTALL['current']}); for the reverb profile install its extra ({INSTALL['reverb']})"
        )
    if installed_profile() == "reverb" and (_version("jax") or "").split(".")[:2] != ["0", "4"]:
        jax_version = _version("jax")
        return f"Reverb is installed beside jax {jax_version}: the reverb profile pins jax 0.4.34 ({INSTALL['reverb']})"
    return None
