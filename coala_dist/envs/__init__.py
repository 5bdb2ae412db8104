"""Pure-JAX two-player environments and the factory that builds them from a config."""

from __future__ import annotations

from typing import Any

from coala_dist.envs.base import EnvStep, TwoPlayerEnv

__all__ = ["EnvStep", "TwoPlayerEnv", "make_env", "ENV_NAMES"]

ENV_NAMES = ("ipd", "cleanup_lite")


def make_env(name: str, inner_episode_length: int, **kwargs: Any) -> TwoPlayerEnv:
    """Builds an environment by name. Raises a ValueError listing the valid names for an unknown one."""
    if name == "ipd":
        from coala_dist.envs.ipd import IPD

        return IPD(inner_episode_length=inner_episode_length, **kwargs)
    if name == "cleanup_lite":
        from coala_dist.envs.cleanup_lite import CleanupLite

        return CleanupLite(inner_episode_length=inner_episode_length, **kwargs)
    raise ValueError(f"unknown env name {name!r}; valid names: {', '.join(ENV_NAMES)}")
