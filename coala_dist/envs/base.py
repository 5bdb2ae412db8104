"""The two-player environment contract shared by every environment of coala-dist.

An environment is a frozen (hashable) dataclass, so it can be closed over or passed as a static argument to
`jax.jit`. It is batched: `reset` makes `batch_size` independent games, `step` advances all of them. It never
resets itself: the rollout resets it at every inner-episode boundary (paper Sec. 2.3), which keeps the three time
scales (docs/choices.md#time-scales) explicit in one place.

Notation: b = batch (parallel games), o = observation size.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax


class EnvStep(NamedTuple):
    """What `reset` and `step` return.

    Attributes:
      state: the environment's own pytree (holds its RNG key if it is stochastic).
      obs_player_1: [b, o] float32, what player 1 sees, ordered (own, other).
      obs_player_2: [b, o] float32, what player 2 sees, ordered (own, other).
      reward_player_1: [b] float32 (zeros at reset).
      reward_player_2: [b] float32 (zeros at reset).
      info: per-step diagnostics, each [b] float32 (same keys at reset and step, zeros at reset), averaged by the
        rollout into per-episode metrics.
    """

    state: Any
    obs_player_1: jax.Array
    obs_player_2: jax.Array
    reward_player_1: jax.Array
    reward_player_2: jax.Array
    info: dict[str, jax.Array]


class TwoPlayerEnv(Protocol):
    """Structural type of a batched two-player environment."""

    @property
    def num_actions(self) -> int: ...

    @property
    def obs_dim(self) -> int: ...

    inner_episode_length: int

    def reset(self, key: jax.Array, batch_size: int) -> EnvStep: ...

    def step(self, state: Any, action_player_1: jax.Array, action_player_2: jax.Array) -> EnvStep: ...


def episode_metrics(env: TwoPlayerEnv, info: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """Extra per-inner-episode metrics of an environment (scalars from its [b, T] `info`); {} if it defines none.

    An environment may define `episode_metrics(info)` for metrics that are not a mean of a per-step quantity
    (Clean Up-lite's cleaning discrepancy is an absolute difference per game).
    """
    method = getattr(env, "episode_metrics", None)
    return method(info) if method is not None else {}
