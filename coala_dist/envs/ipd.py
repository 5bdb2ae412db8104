"""Iterated prisoner's dilemma, RL version (paper App. B.1.1, Tables 1 and 2).

Five observable states: start, CC, CD, DC, DD. The first letter is always the *observer's own* previous action and
the second the co-player's (the "permutation of the tuple to ensure a symmetry of observation"), so both players
run the same policy on the same kind of input. Action 0 = cooperate, 1 = defect.

The game is deterministic; the state is the joint previous action (or "start") and the step counter `t` within the
inner episode (int32, docs/choices.md#time-scales). The environment does not end or reset itself: the rollout calls
`reset` at every inner-episode boundary, after `inner_episode_length` steps.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from coala_dist.envs.base import EnvStep

COOPERATE = 0
DEFECT = 1

# Observation indices: 0 = start, then 1 + 2·own + other for the joint previous action.
START, CC, CD, DC, DD = range(5)
NUM_STATES = 5


class IPDState(NamedTuple):
    """Batched IPD state.

    Attributes:
      last_action_player_1: [b] int32, player 1's previous action (meaningless while `t == 0`).
      last_action_player_2: [b] int32, player 2's previous action.
      t: [b] int32, steps taken in the current inner episode.
    """

    last_action_player_1: jax.Array
    last_action_player_2: jax.Array
    t: jax.Array


@dataclasses.dataclass(frozen=True)
class IPD:
    """Batched iterated prisoner's dilemma with payoff (T, R, P, S) = (temptation, reward, punishment, sucker).

    Attributes:
      inner_episode_length: steps per inner episode (T in the paper, 10 there).
      temptation: payoff for defecting against a cooperator (2).
      reward: payoff for mutual cooperation (1).
      punishment: payoff for mutual defection (0).
      sucker: payoff for cooperating against a defector (−1).
    """

    inner_episode_length: int = 10
    temptation: float = 2.0
    reward: float = 1.0
    punishment: float = 0.0
    sucker: float = -1.0

    def __post_init__(self):
        if self.inner_episode_length < 1:
            raise ValueError(f"IPD inner_episode_length must be >= 1, got {self.inner_episode_length}")
        if not (self.temptation > self.reward > self.punishment > self.sucker):
            raise ValueError(
                "IPD payoffs must satisfy temptation > reward > punishment > sucker, got "
                f"({self.temptation}, {self.reward}, {self.punishment}, {self.sucker})"
            )

    @property
    def num_actions(self) -> int:
        return 2

    @property
    def obs_dim(self) -> int:
        return NUM_STATES

    def payoff_matrix(self) -> jax.Array:
        """[2, 2] float32: entry [own, other] is the own payoff (Table 1)."""
        return jnp.array(
            [[self.reward, self.sucker], [self.temptation, self.punishment]], dtype=jnp.float32
        )

    def reset(self, key: jax.Array, batch_size: int) -> EnvStep:
        """Starts `batch_size` games in the start state s0. `key` is unused (deterministic game)."""
        del key
        zeros_i = jnp.zeros((batch_size,), jnp.int32)
        zeros_f = jnp.zeros((batch_size,), jnp.float32)
        state = IPDState(zeros_i, zeros_i, zeros_i)
        start = jax.nn.one_hot(jnp.full((batch_size,), START), NUM_STATES, dtype=jnp.float32)
        info = {"cooperate_player_1": zeros_f, "cooperate_player_2": zeros_f}
        return EnvStep(state, start, start, zeros_f, zeros_f, info)

    def step(self, state: IPDState, action_player_1: jax.Array, action_player_2: jax.Array) -> EnvStep:
        """Plays one round in every game.

        Args:
          state: the current `IPDState`.
          action_player_1: [b] int, 0 = cooperate, 1 = defect.
          action_player_2: [b] int.

        Returns:
          `EnvStep` with each player's view of the joint action just played, ordered (own, other), and the payoffs.
        """
        action_player_1 = action_player_1.astype(jnp.int32)
        action_player_2 = action_player_2.astype(jnp.int32)
        payoff = self.payoff_matrix()
        reward_player_1 = payoff[action_player_1, action_player_2]
        reward_player_2 = payoff[action_player_2, action_player_1]
        obs_player_1 = jax.nn.one_hot(1 + 2 * action_player_1 + action_player_2, NUM_STATES, dtype=jnp.float32)
        obs_player_2 = jax.nn.one_hot(1 + 2 * action_player_2 + action_player_1, NUM_STATES, dtype=jnp.float32)
        new_state = IPDState(action_player_1, action_player_2, state.t + 1)
        info = {
            "cooperate_player_1": (action_player_1 == COOPERATE).astype(jnp.float32),
            "cooperate_player_2": (action_player_2 == COOPERATE).astype(jnp.float32),
        }
        return EnvStep(new_state, obs_player_1, obs_player_2, reward_player_1, reward_player_2, info)
