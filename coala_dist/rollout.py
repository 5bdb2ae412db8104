"""Meta-episode rollout: the one implementation every launch type uses (paper Sec. 2.3, App. B.2).

The three time scales it keeps apart: docs/choices.md#time-scales.

A meta-episode is one ego meta agent against one co-player over B parallel meta-trajectories of M inner episodes
of T steps (L = M·T). The three time scales are explicit:

* step t inside an inner episode (`_inner_step`, scanned T times);
* the inner-episode boundary (`_inner_episode`, scanned M times): the environment is reset, a naive co-player's
  recurrent state restarts (its segment position is t, so it is 0 at every inner-episode start), and after the
  episode a naive co-player takes one A2C step on the B trajectories it just played;
* the meta-trajectory boundary: the ego agent's segment position is the long index l = m·T + t, so its recurrent
  state is reset only at l = 0 and carried across inner episodes. A meta co-player is treated the same way and never
  learns inside a rollout.

Randomness comes from `keys.episode_key(run_key, version, episode_index)`, never from a carried key, so an episode is
the same whichever actor generates it — and the learner can replay it (`Rollout.replay`, for LOLA-DiCE).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from coala_dist import keys
from coala_dist.envs.base import TwoPlayerEnv, episode_metrics
from coala_dist.networks.policy import HawkPolicy, action_log_probs
from coala_dist.pool import Pairing, coplayer_params, sample_pairing, select_params
from coala_dist.rl.dice import magic_box
from coala_dist.rl.naive import NaiveLearner


class MetaEpisode(NamedTuple):
    """One ego meta agent against one co-player: the unit actors write and the learner reads
    (docs/architecture.md#the-data-contract).

    Shapes for a single episode; batched episodes add leading axes.

    Attributes:
      obs: [B, L, obs_dim] float32, the ego's observations.
      actions: [B, L] int32, the ego's actions.
      rewards: [B, L] float32, the ego's (unscaled) rewards.
      behaviour_logp: [B, L] float32, log π(aₗ | hₗ) under the acting parameters.
      behaviour_values: [B, L] float32, V̂(hₗ) under the acting parameters (before acting at l).
      ego_id: [] int32.
      coplayer_is_naive: [] bool.
      coplayer_id: [] int32 (index into the naive initialisations or the meta agents).
      policy_version: [] int32, the version of the parameters that acted.
      episode_index: [] int32, index of this episode within its version's batch.
      metrics: per-inner-episode means over the B trajectories and T steps, each [M] float32:
        `ego_reward`, `coplayer_reward`, every key of the environment's `info`, and the environment's
        `episode_metrics` (coala_dist.envs.base.episode_metrics).
    """

    obs: jax.Array
    actions: jax.Array
    rewards: jax.Array
    behaviour_logp: jax.Array
    behaviour_values: jax.Array
    ego_id: jax.Array
    coplayer_is_naive: jax.Array
    coplayer_id: jax.Array
    policy_version: jax.Array
    episode_index: jax.Array
    metrics: dict[str, jax.Array]


def _act(policy: HawkPolicy, params, obs, segment_pos, cache, key):
    """One policy step for [B] games: returns (action, log-prob, value, new cache)."""
    output, cache = policy.apply({"params": params}, obs[:, None, :], segment_pos[:, None], cache)
    logits = output.logits[:, 0]
    action = jax.random.categorical(key, logits)
    logp, _ = action_log_probs(logits, action)
    return action.astype(jnp.int32), logp, output.value[:, 0], cache


@dataclasses.dataclass(frozen=True)
class Rollout:
    """Plays meta-episodes. Build with `Rollout(env, policy, naive_learner, num_inner_episodes, batch_size, ...)`.

    Attributes:
      env: the two-player environment.
      policy: the Hawk policy shared by meta agents and naive learners.
      naive_learner: the naive co-players' learning rule.
      num_inner_episodes: M.
      batch_size: B.
      meta_batch_size: episodes per meta agent per version (maps an episode index to its ego agent).
      population_size_meta: P.
      population_size_naive: number of naive initialisations.
      p_naive: probability that a co-player is naive.
      meta_coplayer_mask: optional [P][P] bools, which meta agents each agent may meet (App. H.3); None: any other.
    """

    env: TwoPlayerEnv
    policy: HawkPolicy
    naive_learner: NaiveLearner
    num_inner_episodes: int
    batch_size: int
    meta_batch_size: int
    population_size_meta: int
    population_size_naive: int
    p_naive: float
    meta_coplayer_mask: tuple[tuple[bool, ...], ...] | None = None

    @property
    def inner_episode_length(self) -> int:
        return self.env.inner_episode_length

    def iteration_indices(self) -> jax.Array:
        """[P, N] int32: every episode of one version, one row per ego agent (the in-process work unit)."""
        count = self.population_size_meta * self.meta_batch_size
        return jnp.arange(count, dtype=jnp.int32).reshape(self.population_size_meta, self.meta_batch_size)

    def play(
        self,
        ego_params: Any,
        coplayer_start_params: Any,
        coplayer_is_naive: jax.Array,
        key: jax.Array,
        *,
        look_ahead: bool = False,
    ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        """Plays one meta-episode (B meta-trajectories) between fixed ego parameters and a co-player.

        Args:
          ego_params: the ego meta agent's parameters.
          coplayer_start_params: the co-player's parameters at the start (a naive learner's initialisation).
          coplayer_is_naive: [] bool; a naive co-player resets every inner episode and learns after each one.
          key: this episode's rollout key.
          look_ahead: (static) LOLA-DiCE's look-ahead: each trajectory's share of a naive co-player's A2C loss is
            weighted by DiCE's magic box of the log-probabilities of both players' actions in that trajectory's
            inner episode, □(Σₜ log π_ego + log π_co) = 1, so every update keeps its value while the co-player's
            later parameters become differentiable functions of the ego's (paper Eq. 4; `Rollout.replay`).

        Returns:
          (trajectory, metrics): trajectory arrays `obs` [B, L, o], `actions`, `rewards`, `behaviour_logp`,
          `behaviour_values` [B, L], and the co-player's `coplayer_obs`, `coplayer_actions`, `coplayer_rewards`,
          `coplayer_logp` (log π of its actions under its parameters of the moment); metrics as in
          `MetaEpisode.metrics`, each [M].
        """
        env, policy = self.env, self.policy
        batch, length = self.batch_size, self.inner_episode_length
        coplayer_opt_state = self.naive_learner.init(coplayer_start_params)

        def _inner_step(carry, t):
            env_out, ego_cache, co_cache, co_params, long_offset, episode_key_m = carry
            step_key = jax.random.fold_in(episode_key_m, t)
            ego_key, co_key = jax.random.split(step_key)
            ego_pos = jnp.full((batch,), long_offset + t, jnp.int32)
            co_pos = jnp.where(coplayer_is_naive, t, long_offset + t) * jnp.ones((batch,), jnp.int32)
            ego_action, ego_logp, ego_value, ego_cache = _act(
                policy, ego_params, env_out.obs_player_1, ego_pos, ego_cache, ego_key
            )
            co_action, co_logp, _, co_cache = _act(policy, co_params, env_out.obs_player_2, co_pos, co_cache, co_key)
            next_out = env.step(env_out.state, ego_action, co_action)
            emitted = {
                "obs": env_out.obs_player_1,
                "actions": ego_action,
                "rewards": next_out.reward_player_1,
                "behaviour_logp": ego_logp,
                "behaviour_values": ego_value,
                "coplayer_obs": env_out.obs_player_2,
                "coplayer_actions": co_action,
                "coplayer_rewards": next_out.reward_player_2,
                "coplayer_logp": co_logp,
                "info": next_out.info,
            }
            return (next_out, ego_cache, co_cache, co_params, long_offset, episode_key_m), emitted

        def _inner_episode(carry, m):
            ego_cache, co_cache, co_params, co_opt_state = carry
            episode_key_m = jax.random.fold_in(key, m)
            env_out = env.reset(jax.random.fold_in(episode_key_m, length), batch)
            init = (env_out, ego_cache, co_cache, co_params, m * length, episode_key_m)
            (_, ego_cache, co_cache, _, _, _), steps = jax.lax.scan(
                _inner_step, init, jnp.arange(length, dtype=jnp.int32)
            )
            # scan stacks time first: [T, B, ...] -> [B, T, ...]
            steps = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), steps)

            # A naive co-player learns after every inner episode but the last (that update would be unused). The
            # step is computed for every co-player and kept where it applies: `episodes` vmaps this over episodes,
            # where a `lax.cond` would run both branches anyway, and batching a cond's branches roughly doubles the
            # time to trace the rollout (docs/performance.md).
            weights = None
            if look_ahead:
                weights = magic_box(jnp.sum(steps["behaviour_logp"] + steps["coplayer_logp"], axis=1))
            learned = self.naive_learner.update(
                co_params,
                co_opt_state,
                steps["coplayer_obs"],
                steps["coplayer_actions"],
                steps["coplayer_rewards"],
                weights,
            )
            learns = jnp.logical_and(coplayer_is_naive, m < self.num_inner_episodes - 1)
            co_params, co_opt_state = jax.tree_util.tree_map(
                lambda new, old: jnp.where(learns, new, old), learned, (co_params, co_opt_state)
            )
            metrics = {
                "ego_reward": steps["rewards"].mean(),
                "coplayer_reward": steps["coplayer_rewards"].mean(),
                **{name: value.mean() for name, value in steps["info"].items()},
                **episode_metrics(self.env, steps["info"]),
            }
            trajectory = {name: value for name, value in steps.items() if name != "info"}
            return (ego_cache, co_cache, co_params, co_opt_state), (trajectory, metrics)

        init = (
            policy.init_cache(batch),
            policy.init_cache(batch),
            coplayer_start_params,
            coplayer_opt_state,
        )
        _, (trajectory, metrics) = jax.lax.scan(
            _inner_episode, init, jnp.arange(self.num_inner_episodes, dtype=jnp.int32)
        )
        # [M, B, T, ...] -> [B, M·T, ...]
        trajectory = jax.tree_util.tree_map(
            lambda x: jnp.swapaxes(x, 0, 1).reshape((batch, self.num_inner_episodes * length) + x.shape[3:]),
            trajectory,
        )
        return trajectory, metrics

    def episode(
        self,
        ego_params: Any,
        meta_params: Any,
        naive_params: Any,
        run_key: jax.Array,
        version: jax.Array,
        episode_index: jax.Array,
    ) -> MetaEpisode:
        """Generates meta-episode `episode_index` of policy version `version`.

        The ego agent is `episode_index // meta_batch_size`; the co-player is drawn from this episode's key.

        Args:
          ego_params: the ego agent's parameters (entry `episode_index // meta_batch_size` of `meta_params`; passed
            separately so that a batch of one agent's episodes shares them and its matmuls stay single GEMMs).
          meta_params: all meta agents' parameters, stacked on a leading [P] axis (meta co-players come from here).
          naive_params: the naive initialisations, stacked on a leading [K] axis.
          run_key: the run's root key.
          version: [] int32 policy version of `meta_params`.
          episode_index: [] int32 in [0, P · meta_batch_size).
        """
        pairing, play_key = self._pairing(run_key, version, episode_index)
        trajectory, metrics = self.play(
            ego_params,
            coplayer_params(meta_params, naive_params, pairing),
            pairing.coplayer_is_naive,
            play_key,
        )
        return MetaEpisode(
            # The co-player's arrays are not part of the data contract (docs/architecture.md#the-data-contract); jit
            # drops them.
            **{name: value for name, value in trajectory.items() if not name.startswith("coplayer_")},
            ego_id=pairing.ego_id,
            coplayer_is_naive=pairing.coplayer_is_naive,
            coplayer_id=pairing.coplayer_id,
            policy_version=jnp.asarray(version, jnp.int32),
            episode_index=jnp.asarray(episode_index, jnp.int32),
            metrics=metrics,
        )

    def _pairing(self, run_key: jax.Array, version: jax.Array, episode_index: jax.Array) -> tuple[Pairing, jax.Array]:
        """Episode `episode_index` of version `version`: its ego agent and co-player, and the key it is played with."""
        key = keys.episode_key(run_key, version, episode_index)
        pairing_key, play_key = jax.random.split(key)
        ego_id = (episode_index // self.meta_batch_size).astype(jnp.int32)
        pairing = sample_pairing(
            pairing_key,
            ego_id,
            population_size_meta=self.population_size_meta,
            population_size_naive=self.population_size_naive,
            p_naive=self.p_naive,
            meta_coplayer_mask=None if self.meta_coplayer_mask is None else jnp.asarray(self.meta_coplayer_mask),
        )
        return pairing, play_key

    def replay(
        self,
        ego_params: Any,
        meta_params: Any,
        naive_params: Any,
        run_key: jax.Array,
        version: jax.Array,
        episode_index: jax.Array,
        *,
        look_ahead: bool = True,
    ) -> tuple[dict[str, jax.Array], jax.Array, Any]:
        """Plays episode `episode_index` of version `version` again, differentiably in `ego_params` (LOLA-DiCE).

        With the parameters that generated it (a synchronous run's current ones) this is the same episode, action
        for action, as `episode` gave the actor; with newer parameters it is a fresh on-policy sample from the same
        key. The log-probabilities are functions of `ego_params` (the ego's directly, a naive co-player's through
        its A2C updates when `look_ahead`, see `play`).

        Returns:
          (trajectory, coplayer_is_naive, coplayer): `play`'s trajectory [B, L], the co-player type [] and its
          parameters at the start.
        """
        pairing, play_key = self._pairing(run_key, version, episode_index)
        coplayer = jax.lax.stop_gradient(coplayer_params(meta_params, naive_params, pairing))
        trajectory, _ = self.play(ego_params, coplayer, pairing.coplayer_is_naive, play_key, look_ahead=look_ahead)
        return trajectory, pairing.coplayer_is_naive, coplayer

    def episodes(
        self, meta_params: Any, naive_params: Any, run_key: jax.Array, version: jax.Array, episode_indices: jax.Array
    ) -> MetaEpisode:
        """Generates a block of meta-episodes. Jit this.

        Args:
          meta_params, naive_params, run_key, version: as in `episode`.
          episode_indices: [g, n] int32; each row holds episodes of ONE ego agent (e.g. a slice of
            `arange(P·N).reshape(P, N)`), so the ego parameters are shared along the row.

        Returns:
          `MetaEpisode` with leading axes [g·n], in the order of `episode_indices`' rows.
        """
        ego_ids = episode_indices[:, 0] // self.meta_batch_size

        def one_agent(ego_id, indices):
            ego_params = select_params(meta_params, ego_id)
            return jax.vmap(self.episode, in_axes=(None, None, None, None, None, 0))(
                ego_params, meta_params, naive_params, run_key, version, indices
            )

        batch = jax.vmap(one_agent)(ego_ids, episode_indices)
        return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)
