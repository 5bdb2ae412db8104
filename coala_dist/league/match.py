"""Meta-episodes between any two players, in either seat: the engine of `coala league`.

A *player* is a static kind (how it acts and whether it learns; hashable, so it keys the compiled program) plus
its data (parameters or a table; traced, so every player of a kind shares one compiled program):

* `FrozenHawk`: a trained meta agent. Its recurrent state is reset only at the start of the meta-trajectory
  (segment position l = m·T + t) and it never learns inside a meta-episode (paper App. B.2).
* `NaiveHawk`: a naive learner (paper App. B.2, Table 8): its state restarts at every inner episode (position t)
  and it takes one step of its rule on the B trajectories of each inner episode but the last. It starts from a
  fresh draw of the policy's initialisation (the distribution the run's naive initialisations were drawn from) or
  from given parameters.
* `MemoryOne`: a fixed memory-one strategy of the IPD, P(cooperate | observed state) over (start, CC, CD, DC, DD),
  own action first (the zoo's always-cooperate, always-defect, random, tit-for-tat, ZD extortioner).

`play` mirrors `Rollout.play` step for step: the same environment resets, the same per-step keys (seat 1 takes the
ego's, seat 2 the co-player's) and the same naive update, so a trained agent (seat 1) against a naive learner from
given parameters (seat 2) is, action for action, the training rollout's meta-episode with that key
(tests/test_league.py). A second rollout exists because the training one pairs Hawk policies only; what it adds is
the choice of player kinds per seat.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from coala_dist.envs.base import TwoPlayerEnv, episode_metrics
from coala_dist.networks.policy import HawkPolicy, init_policy_params
from coala_dist.rl.naive import NaiveLearner

# fold_in index of a player's initialisation key under an episode key: inner episodes use indices 0..M-1.
_PLAYER_INIT_INDEX = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class MemoryOne:
    """A fixed memory-one strategy. Data: [num_states] float32, P(cooperate | one-hot observed state).

    Defects when a uniform draw is ≥ P(cooperate): P = 1 always cooperates and P = 0 always defects, exactly.
    """

    batch_size: int | None = None  # plays at the match's B

    def start(self, data: Any, key: jax.Array, batch: int) -> Any:
        del data, key, batch
        return ()

    def act(self, data, carry, obs, long_position, t, key):
        del long_position, t
        p_cooperate = obs @ data  # one-hot observation: exactly the table's entry
        defect = jax.random.uniform(key, p_cooperate.shape) >= p_cooperate
        return defect.astype(jnp.int32), carry

    def end_inner_episode(self, data, carry, obs, actions, rewards, learns):
        del data, obs, actions, rewards, learns
        return carry


def _hawk_act(policy: HawkPolicy, params, obs, position, cache, key):
    """One policy step for [B] games (as `coala_dist.rollout._act`): action, new cache."""
    segment_pos = jnp.full((obs.shape[0], 1), position, jnp.int32)
    output, cache = policy.apply({"params": params}, obs[:, None, :], segment_pos, cache)
    logits = output.logits[:, 0]
    action = jax.random.categorical(key, logits)
    return action.astype(jnp.int32), cache


@dataclasses.dataclass(frozen=True)
class FrozenHawk:
    """A trained meta agent, frozen. Data: its policy parameters."""

    policy: HawkPolicy
    batch_size: int | None = None

    def start(self, data, key, batch):
        del data, key
        return self.policy.init_cache(batch)

    def act(self, data, cache, obs, long_position, t, key):
        del t
        return _hawk_act(self.policy, data, obs, long_position, cache, key)

    def end_inner_episode(self, data, carry, obs, actions, rewards, learns):
        del data, obs, actions, rewards, learns
        return carry


@dataclasses.dataclass(frozen=True)
class NaiveHawk:
    """A naive learner. Data: its starting parameters, or `()` with `fresh_init` (drawn per meta-episode).

    Attributes:
      policy: its Hawk policy.
      learner: its learning rule (one A2C step per inner episode in training, `coala_dist.rl.naive`).
      obs_dim: the observation size (for a fresh initialisation).
      fresh_init: draw the initial parameters from the policy's initialisation, per meta-episode and seat.
      batch_size: B of the trajectories it learns from (None: the match's).
    """

    policy: HawkPolicy
    learner: NaiveLearner
    obs_dim: int
    fresh_init: bool = True
    batch_size: int | None = None

    def start(self, data, key, batch):
        params = init_policy_params(self.policy, key, self.obs_dim) if self.fresh_init else data
        return params, self.learner.init(params), self.policy.init_cache(batch)

    def act(self, data, carry, obs, long_position, t, key):
        del data, long_position
        params, opt_state, cache = carry
        action, cache = _hawk_act(self.policy, params, obs, t, cache, key)
        return action, (params, opt_state, cache)

    def end_inner_episode(self, data, carry, obs, actions, rewards, learns):
        del data
        params, opt_state, cache = carry
        learned = self.learner.update(params, opt_state, obs, actions, rewards)
        # As the training rollout: computed every inner episode, kept where it applies (not after the last one).
        params, opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(learns, new, old), learned, (params, opt_state)
        )
        return params, opt_state, cache


PlayerKind = MemoryOne | FrozenHawk | NaiveHawk


def match_batch_size(kind_1: PlayerKind, kind_2: PlayerKind, default: int) -> int:
    """B of a match: a learner's own batch size if it has one, else `default`.

    Raises:
      ValueError: the two players need different batch sizes.
    """
    wanted = {k.batch_size for k in (kind_1, kind_2) if k.batch_size is not None}
    if len(wanted) > 1:
        raise ValueError(f"the two players learn from different batch sizes {sorted(wanted)}; they cannot meet")
    return wanted.pop() if wanted else default


@dataclasses.dataclass(frozen=True)
class Game:
    """What a match is played in: the environment, M inner episodes of its T steps, and the default B."""

    env: TwoPlayerEnv
    num_inner_episodes: int
    batch_size: int


def play(
    kind_1: PlayerKind,
    kind_2: PlayerKind,
    game: Game,
    batch: int,
    data_1: Any,
    data_2: Any,
    key: jax.Array,
    swap: jax.Array | bool = False,
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """One meta-episode of B games between two players.

    Player 1 (`kind_1`, `data_1`) sits in the environment's seat 1 and player 2 in seat 2, or the other way round
    when `swap` (traced: both seatings of a pair share one compiled program). Whatever the seating, player 1 acts
    with the first of each step's two keys, and every output is per player, not per seat.

    Returns:
      (trajectory, metrics): trajectory [B, L] arrays `actions_1`, `actions_2`, `rewards_1`, `rewards_2` and
      [B, L, o] `obs_1` (player 1's view); metrics per inner episode [M]: `reward_1`, `reward_2` (per step), the
      environment's per-player `info` keys as `<stem>_player_1` / `_player_2` of players 1 and 2, its other `info`
      keys (means over B and T) and its `episode_metrics`.
    """
    swap = jnp.asarray(swap, bool)

    def seats(first, second):
        """(seat 1's, seat 2's) values from player 1's and player 2's, or back."""
        return jnp.where(swap, second, first), jnp.where(swap, first, second)

    env, length, num_inner = game.env, game.env.inner_episode_length, game.num_inner_episodes
    init_key = jax.random.fold_in(key, _PLAYER_INIT_INDEX)
    carry_1 = kind_1.start(data_1, jax.random.fold_in(init_key, 1), batch)
    carry_2 = kind_2.start(data_2, jax.random.fold_in(init_key, 2), batch)

    def inner_step(carry, t):
        env_out, carry_1, carry_2, offset, key_m = carry
        key_1, key_2 = jax.random.split(jax.random.fold_in(key_m, t))
        obs_1, obs_2 = seats(env_out.obs_player_1, env_out.obs_player_2)  # a swap is its own inverse
        action_1, carry_1 = kind_1.act(data_1, carry_1, obs_1, offset + t, t, key_1)
        action_2, carry_2 = kind_2.act(data_2, carry_2, obs_2, offset + t, t, key_2)
        out = env.step(env_out.state, *seats(action_1, action_2))
        rewards_1, rewards_2 = seats(out.reward_player_1, out.reward_player_2)
        info = dict(out.info)
        for name in [k for k in info if k.endswith("_player_1")]:
            other = name[: -len("1")] + "2"
            info[name], info[other] = seats(info[name], info[other])
        emitted = {
            "obs_1": obs_1,
            "obs_2": obs_2,
            "actions_1": action_1,
            "actions_2": action_2,
            "rewards_1": rewards_1,
            "rewards_2": rewards_2,
            "info": info,
        }
        return (out, carry_1, carry_2, offset, key_m), emitted

    def inner_episode(carry, m):
        carry_1, carry_2 = carry
        key_m = jax.random.fold_in(key, m)
        env_out = env.reset(jax.random.fold_in(key_m, length), batch)
        (_, carry_1, carry_2, _, _), steps = jax.lax.scan(
            inner_step, (env_out, carry_1, carry_2, m * length, key_m), jnp.arange(length, dtype=jnp.int32)
        )
        steps = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), steps)  # [T, B, ...] -> [B, T, ...]
        learns = m < num_inner - 1
        carry_1 = kind_1.end_inner_episode(
            data_1, carry_1, steps["obs_1"], steps["actions_1"], steps["rewards_1"], learns
        )
        carry_2 = kind_2.end_inner_episode(
            data_2, carry_2, steps["obs_2"], steps["actions_2"], steps["rewards_2"], learns
        )
        metrics = {
            "reward_1": steps["rewards_1"].mean(),
            "reward_2": steps["rewards_2"].mean(),
            **{name: value.mean() for name, value in steps["info"].items()},
            **episode_metrics(env, steps["info"]),
        }
        trajectory = {k: steps[k] for k in ("obs_1", "actions_1", "actions_2", "rewards_1", "rewards_2")}
        return (carry_1, carry_2), (trajectory, metrics)

    _, (trajectory, metrics) = jax.lax.scan(inner_episode, (carry_1, carry_2), jnp.arange(num_inner, dtype=jnp.int32))
    trajectory = jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x, 0, 1).reshape((batch, num_inner * length) + x.shape[3:]), trajectory
    )
    return trajectory, metrics


@functools.lru_cache(maxsize=64)
def compiled_match(kind_1: PlayerKind, kind_2: PlayerKind, game: Game) -> Callable:
    """`f(data_1, data_2, keys[n], swap) -> metrics` of n meta-episodes (vmapped), jitted once per pair of kinds.

    Metrics: as `play`'s, each [n, M]. Trajectories are not returned (jit drops them).
    """
    batch = match_batch_size(kind_1, kind_2, game.batch_size)

    def many(data_1, data_2, keys, swap):
        return jax.vmap(lambda k: play(kind_1, kind_2, game, batch, data_1, data_2, k, swap)[1])(keys)

    return jax.jit(many)


@dataclasses.dataclass(frozen=True, eq=False)
class Player:
    """One entrant of a league.

    Attributes:
      name: unique within the league (a table's row).
      kind: how it acts and learns (static).
      data: its parameters or table.
      group: what its results are aggregated over across seeds: the estimator's label for a trained agent, the
        name for a zoo entry.
      zoo: a reference co-player (else a trained agent).
      info: what the reports print about it (source, estimator, seed, iteration, settings).
    """

    name: str
    kind: PlayerKind
    data: Any
    group: str
    zoo: bool
    info: dict = dataclasses.field(default_factory=dict)
