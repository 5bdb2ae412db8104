"""The learner: TrainState and the COALA-PG update of every meta agent (paper App. A.4, B.2; docs/architecture.md).

`Learner.update(state, batch)` is the one update implementation every launch type calls. It takes the meta-batch of
every meta agent (episodes sorted by episode index, so agent i owns episodes [i·N, (i+1)·N)) and updates all P agents
at once with `vmap` over their stacked parameters:

1. rewards × `reward_scale`;
2. advantages by GAE through Algorithm 1 (`rl.estimators.advantages`): the configured rule (COALA-PG, M-FOS or
   batch-unaware) for episodes against naive co-players, standard PG (batch-unaware flags) against meta co-players;
   value targets of the batch-unaware value (Eq. 10) by TD(λ_td);
3. optional advantage centering, separately per co-player type;
4. PPO epochs over minibatches of whole meta-episodes (never split along time), or one A2C step;
   naive-opponent episodes of the COALA/M-FOS rules sum the policy gradient over the B trajectories (Eq. 5);
5. global-norm clipping and Adam/SGD; an update whose loss or gradient is not finite is skipped and counted.

LOLA-DiCE agents (estimator "lola_dice") have a learner of their own with the same interface,
`coala_dist.lola_dice_learner.LolaDiceLearner`, which replaces 2–4 by one step on the DiCE objective.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from coala_dist import compat, keys
from coala_dist.networks.policy import HawkPolicy, evaluate_actions, init_policy_params
from coala_dist.rl import estimators
from coala_dist.rl.losses import LossOutput, a2c_loss, ppo_loss
from coala_dist.rollout import MetaEpisode


class TrainState(NamedTuple):
    """Everything needed to continue training exactly.

    Attributes:
      meta_params: parameters of the P meta agents, stacked on a leading [P] axis.
      opt_state: their optimiser states, stacked on [P].
      naive_params: the K static naive initialisations, stacked on [K] (unused with dynamic naive agents).
      run_key: the run's root PRNG key; episode keys are folded from it (see `coala_dist.keys`).
      step: [] int32, updates applied.
      version: [] int32, version of `meta_params` (incremented by every update, applied or skipped).
      skipped_updates: [] int32, updates skipped because the loss or a gradient was not finite.
    """

    meta_params: Any
    opt_state: Any
    naive_params: Any
    run_key: jax.Array
    step: jax.Array
    version: jax.Array
    skipped_updates: jax.Array


def episodes_per_gradient_chunk(num_episodes: int, batch_size: int, max_trajectories: int) -> int:
    """Meta-episodes per gradient chunk: the largest divisor of `num_episodes` with at most `max_trajectories`
    trajectories (B = `batch_size` each), at least 1; all of them when `max_trajectories` is 0."""
    if max_trajectories <= 0:
        return num_episodes
    fitting = max(1, max_trajectories // batch_size)
    return max(d for d in range(1, min(fitting, num_episodes) + 1) if num_episodes % d == 0)


def _stack_init(policy: HawkPolicy, key: jax.Array, count: int, obs_dim: int) -> Any:
    return jax.vmap(lambda k: init_policy_params(policy, k, obs_dim))(jax.random.split(key, count))


@dataclasses.dataclass(frozen=True)
class LearnerSettings:
    """What the update of the meta agents depends on (paper App. A.4, Tables 4 and 7), read once from the config by
    `coala_dist.builder.learner_settings`.

    Attributes:
      population_size_meta: P meta agents.
      population_size_naive: K static naive initialisations.
      meta_batch_size: N meta-episodes per agent and update.
      inner_episode_length: T (Algorithm 1's inner-episode boundaries).
      dynamic_naive_agents: naive co-players start from copies of the meta agents instead of the static set.
      agent_estimators: the naive-opponent rule of each meta agent (names in `rl.estimators.REGISTRY`), length P.
      algorithm: "ppo" (clipped, epochs × minibatches of whole meta-episodes) or "a2c" (one step).
      reward_scale: rewards are multiplied by it before targets are computed.
      discount: γ.
      gae_lambda: λ_gae of the advantages.
      td_lambda: λ_td of the value targets.
      value_targets_average_future: Algorithm 1's batch-average of future episodes in the value targets of
        naive-opponent episodes (see `rl.estimators.value_targets`).
      advantage_normalization: centre advantages per co-player type (`rl.estimators.center_advantages`).
      advantage_divide_by_std: also divide them by their standard deviation.
      clip_epsilon: PPO ratio clip ε.
      value_coefficient: c_v.
      clip_value: PPO's clipped value loss.
      value_clip_epsilon: ε_v.
      entropy_coefficient: c_H.
      ppo_num_minibatches: minibatches per PPO epoch.
      ppo_num_epochs: PPO epochs.
      gradient_chunk_trajectories: at most this many trajectories per backward pass (0: the whole minibatch).
      lola_look_ahead_steps: LOLA-DiCE's gradient-ascent look-ahead steps through a meta co-player's learning.
      lola_look_ahead_lr: their step size.
    """

    population_size_meta: int
    population_size_naive: int
    meta_batch_size: int
    inner_episode_length: int
    dynamic_naive_agents: bool
    agent_estimators: tuple[str, ...]
    algorithm: Literal["ppo", "a2c"]
    reward_scale: float
    discount: float
    gae_lambda: float
    td_lambda: float
    value_targets_average_future: bool
    advantage_normalization: bool
    advantage_divide_by_std: bool
    clip_epsilon: float
    value_coefficient: float
    clip_value: bool
    value_clip_epsilon: float
    entropy_coefficient: float
    ppo_num_minibatches: int
    ppo_num_epochs: int
    gradient_chunk_trajectories: int
    lola_look_ahead_steps: int = 1
    lola_look_ahead_lr: float = 1.0


@dataclasses.dataclass(frozen=True)
class Learner:
    """Builds the initial TrainState and applies updates of Algorithm 1's rules (COALA-PG, M-FOS, batch-unaware).
    `coala_dist.builder.build` constructs it; LOLA-DiCE agents have their own (`coala_dist.lola_dice_learner`).
    """

    policy: HawkPolicy
    optimizer: optax.GradientTransformation
    settings: LearnerSettings
    obs_dim: int

    def init(self, key: jax.Array) -> TrainState:
        """Fresh meta agents and naive initialisations (Hawk init, zero readouts: uniform policies). Jitted: one
        compiled program instead of hundreds of eager initialiser ops (inside a trace, e.g. `jax.eval_shape`, it is
        traced as part of the caller's program)."""
        if isinstance(key, jax.core.Tracer):
            return self._init(key)
        return _jitted_init(self, key)

    def _init(self, key: jax.Array) -> TrainState:
        s = self.settings
        meta_key, naive_key, run_key = keys.init_keys(key)
        meta_params = _stack_init(self.policy, meta_key, s.population_size_meta, self.obs_dim)
        naive_params = _stack_init(self.policy, naive_key, s.population_size_naive, self.obs_dim)
        zero = jnp.zeros((), jnp.int32)
        return TrainState(
            meta_params=meta_params,
            opt_state=jax.vmap(self.optimizer.init)(meta_params),
            naive_params=naive_params,
            run_key=run_key,
            step=zero,
            version=zero,
            skipped_updates=zero,
        )

    def naive_initialisations(self, state: TrainState) -> Any:
        """The parameters naive co-players start from: the static set, or copies of the meta agents."""
        return state.meta_params if self.settings.dynamic_naive_agents else state.naive_params

    # ---------------------------------------------------------------------------------------------------------
    # Targets
    def scale_rewards(self, rewards: jax.Array) -> jax.Array:
        """Rewards as every target and objective of the update sees them: × `reward_scale`."""
        return rewards * self.settings.reward_scale

    def raw_advantages(self, batch: MetaEpisode, rule_flags) -> jax.Array:
        """The advantages of one agent's meta-batch [N, B, L] under a rule's flags (avg_future, normalize_current,
        sum_over_batch; `estimators.rule_flags`) before any centring: rewards × reward_scale, GAE under the rule's
        Algorithm 1 flags against naive co-players and the batch-unaware ones against meta co-players."""
        s = self.settings
        avg_future, normalize_current, _ = rule_flags

        def per_episode(r, v, naive):
            return estimators.advantages(
                r,
                v,
                discount=s.discount,
                gae_lambda=s.gae_lambda,
                average_future_episodes=jnp.logical_and(naive, avg_future),
                normalize_current_episode=jnp.logical_and(naive, normalize_current),
                inner_episode_length=s.inner_episode_length,
            )

        return jax.vmap(per_episode)(self.scale_rewards(batch.rewards), batch.behaviour_values, batch.coplayer_is_naive)

    def advantages(self, batch: MetaEpisode, rule_flags) -> jax.Array:
        """The advantages as the update uses them: `raw_advantages`, then the optional centring per co-player type."""
        s = self.settings
        adv = self.raw_advantages(batch, rule_flags)
        if s.advantage_normalization:
            adv = estimators.center_advantages(adv, batch.coplayer_is_naive, divide_by_std=s.advantage_divide_by_std)
        return adv

    def _value_targets(self, scaled_rewards: jax.Array, values: jax.Array, coplayer_is_naive: jax.Array) -> jax.Array:
        """TD(λ_td) value targets [N, B, L] of a meta-batch from its scaled rewards and recorded values [N, B, L]."""
        s = self.settings

        def per_episode(r, v, naive):
            return estimators.value_targets(
                r,
                v,
                discount=s.discount,
                td_lambda=s.td_lambda,
                inner_episode_length=s.inner_episode_length,
                average_future_episodes=jnp.logical_and(naive, s.value_targets_average_future),
            )

        return jax.vmap(per_episode)(scaled_rewards, values, coplayer_is_naive)

    def _targets(self, batch: MetaEpisode, rule_flags) -> tuple[jax.Array, jax.Array]:
        """Advantages (`advantages`) and value targets for one agent's meta-batch [N, B, L] under its rule's flags."""
        scaled_rewards = self.scale_rewards(batch.rewards)
        targets = self._value_targets(scaled_rewards, batch.behaviour_values, batch.coplayer_is_naive)
        return self.advantages(batch, rule_flags), targets

    # ---------------------------------------------------------------------------------------------------------
    # Loss
    def _episode_loss(
        self,
        logp: jax.Array,
        behaviour_logp: jax.Array,
        entropy: jax.Array,
        values: jax.Array,
        behaviour_values: jax.Array,
        adv: jax.Array,
        targets: jax.Array,
        sum_over_batch: jax.Array,
    ) -> LossOutput:
        """The configured loss (PPO or A2C) of one meta-episode; arrays [B, L]."""
        s = self.settings
        if s.algorithm == "ppo":
            return ppo_loss(
                logp,
                behaviour_logp,
                entropy,
                values,
                behaviour_values,
                adv,
                targets,
                sum_over_batch=sum_over_batch,
                clip_epsilon=s.clip_epsilon,
                value_coefficient=s.value_coefficient,
                clip_value=s.clip_value,
                value_clip_epsilon=s.value_clip_epsilon,
                entropy_coefficient=s.entropy_coefficient,
            )
        return a2c_loss(
            logp,
            entropy,
            values,
            adv,
            targets,
            sum_over_batch=sum_over_batch,
            value_coefficient=s.value_coefficient,
            entropy_coefficient=s.entropy_coefficient,
        )

    def evaluate_actions(self, params: Any, batch: MetaEpisode) -> tuple[jax.Array, jax.Array, jax.Array]:
        """The policy on a batch's whole meta-trajectories: log π(aₜ | hₜ) of the taken actions, the entropy and the
        value at each step, each [n, B, L] for a batch [n, B, L] (no cache: every trajectory starts fresh)."""
        return self.sequence_log_probs(params, batch.obs, batch.actions)

    def sequence_log_probs(
        self, params: Any, obs: jax.Array, actions: jax.Array
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """log π(aₗ | hₗ), entropy and value of a meta agent's policy along whole meta-trajectories: obs [..., L, o],
        actions [..., L] -> three [..., L] arrays (segment position l, no cache)."""
        return evaluate_actions(self.policy, params, obs, actions)

    def _loss(self, params: Any, batch: MetaEpisode, adv: jax.Array, targets: jax.Array, sums_over_batch: jax.Array):
        """Mean over the meta-episodes of the per-episode PPO/A2C loss. Arrays [n, B, L]."""
        logp, entropy, values = self.evaluate_actions(params, batch)
        sum_over_batch = jnp.logical_and(batch.coplayer_is_naive, sums_over_batch)
        out = jax.vmap(self._episode_loss)(
            logp, batch.behaviour_logp, entropy, values, batch.behaviour_values, adv, targets, sum_over_batch
        )
        out = jax.tree_util.tree_map(jnp.mean, out)
        return out.loss, out

    def _loss_and_grad(self, params: Any, batch: MetaEpisode, adv: jax.Array, targets: jax.Array, sums_over_batch):
        """`value_and_grad(_loss)` on a minibatch [n, B, L], accumulated over chunks of whole meta-episodes.

        `_loss` is a mean over meta-episodes, so with equal chunks the loss, its statistics and its gradient are the
        means of the chunks' (equal up to float rounding). Chunks keep one backward pass's activations in cache.
        """
        value_and_grad = jax.value_and_grad(self._loss, has_aux=True)
        n, batch_size = batch.actions.shape[:2]
        chunk = episodes_per_gradient_chunk(n, batch_size, self.settings.gradient_chunk_trajectories)
        if chunk == n:
            return value_and_grad(params, batch, adv, targets, sums_over_batch)
        chunks = jax.tree_util.tree_map(lambda x: x.reshape((n // chunk, chunk) + x.shape[1:]), (batch, adv, targets))

        def accumulate(total, chunk_data):
            result = value_and_grad(params, *chunk_data, sums_over_batch)
            return jax.tree_util.tree_map(jnp.add, total, result), None

        zeros = jax.eval_shape(value_and_grad, params, *jax.tree_util.tree_map(lambda x: x[0], chunks), sums_over_batch)
        zeros = jax.tree_util.tree_map(lambda x: jnp.zeros(x.shape, x.dtype), zeros)
        total, _ = jax.lax.scan(accumulate, zeros, chunks)
        return jax.tree_util.tree_map(lambda x: x / (n // chunk), total)

    # ---------------------------------------------------------------------------------------------------------
    # Update
    def _update_agent(self, params, opt_state, batch: MetaEpisode, key: jax.Array, rule_flags):
        """All gradient steps of one meta agent on its meta-batch [N, B, L]. Returns params, opt_state, stats."""
        s = self.settings
        adv, targets = self._targets(batch, rule_flags)
        num_episodes = batch.actions.shape[0]
        if s.algorithm == "ppo":
            num_minibatches, num_epochs = s.ppo_num_minibatches, s.ppo_num_epochs
        else:
            num_minibatches, num_epochs = 1, 1
        minibatch = num_episodes // num_minibatches
        data = (batch, adv, targets)

        def _minibatch_step(carry, minibatch_data):
            params, opt_state, all_finite = carry
            mb_batch, mb_adv, mb_targets = minibatch_data
            (loss, out), grads = self._loss_and_grad(params, mb_batch, mb_adv, mb_targets, rule_flags[2])
            params, opt_state, finite = self._step_if_finite(params, opt_state, loss, grads)
            stats = out._asdict() | {"grad_norm": optax.global_norm(grads)}
            return (params, opt_state, all_finite & finite), stats

        def _epoch(carry, epoch_key):
            order = jax.random.permutation(epoch_key, num_episodes)
            shuffled = jax.tree_util.tree_map(lambda x: x[order], data)
            minibatches = jax.tree_util.tree_map(
                lambda x: x.reshape((num_minibatches, minibatch) + x.shape[1:]), shuffled
            )
            return jax.lax.scan(_minibatch_step, carry, minibatches)

        carry = (params, opt_state, jnp.array(True))
        (new_params, new_opt_state, all_finite), stats = jax.lax.scan(
            _epoch, carry, jax.random.split(key, num_epochs)
        )
        # One non-finite step anywhere skips this agent's whole update: keep its previous parameters.
        params, opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(all_finite, new, old), (new_params, new_opt_state), (params, opt_state)
        )
        stats = jax.tree_util.tree_map(jnp.mean, stats)
        stats["advantage_mean"] = adv.mean()
        stats["value_target_mean"] = targets.mean()
        return params, opt_state, all_finite, stats

    def _step_if_finite(self, params, opt_state, loss: jax.Array, grads) -> tuple[Any, Any, jax.Array]:
        """One optimiser step, or none if the loss or a gradient is not finite (never let it poison the run: the
        previous parameters and optimiser state are kept). Returns params, opt_state and whether it stepped."""
        finite = jnp.isfinite(loss) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads)])
        )
        updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        params, opt_state = jax.tree_util.tree_map(
            lambda new, old: jnp.where(finite, new, old), (new_params, new_opt_state), (params, opt_state)
        )
        return params, opt_state, finite

    # ---------------------------------------------------------------------------------------------------------
    # Update
    def update_agents(self, state: TrainState, per_agent: MetaEpisode) -> tuple[Any, Any, jax.Array, dict]:
        """Every meta agent's step on its own meta-batch ([P, N, ...]): new params and optimiser states [P], whether
        each step was applied [P] and per-agent statistics."""
        s = self.settings
        agent_keys = jax.random.split(keys.update_key(state.run_key, state.version), s.population_size_meta)
        flags = estimators.rule_flags(s.agent_estimators)
        return jax.vmap(self._update_agent)(state.meta_params, state.opt_state, per_agent, agent_keys, flags)

    def update(self, state: TrainState, batch: MetaEpisode) -> tuple[TrainState, dict[str, jax.Array]]:
        """One training iteration's update of all meta agents.

        Args:
          state: the current TrainState.
          batch: P·N meta-episodes sorted by episode index (leading axis P·N), generated with `state.version`
            (sync) or earlier versions (async; PPO's ratio then uses the stored behaviour log-probs).

        Returns:
          The new state (version + 1) and scalar metrics (learner statistics averaged over agents).
        """
        s = self.settings
        per_agent = jax.tree_util.tree_map(
            lambda x: x.reshape((s.population_size_meta, s.meta_batch_size) + x.shape[1:]), batch
        )
        params, opt_state, all_finite, stats = self.update_agents(state, per_agent)
        skipped = jnp.sum(~all_finite).astype(jnp.int32)
        new_state = state._replace(
            meta_params=params,
            opt_state=opt_state,
            step=state.step + 1,
            version=state.version + 1,
            skipped_updates=state.skipped_updates + skipped,
        )
        metrics = {f"learner/{k}": v.mean() for k, v in stats.items()}
        metrics["learner/skipped_updates"] = new_state.skipped_updates
        return new_state, metrics


def _init_program(learner: Learner, key: jax.Array) -> TrainState:
    return learner._init(key)


# The initialisers run once per run: at LLVM -O0 XLA:CPU compiles them in ~2 s instead of 15-25 s (jax 0.12, 2-core
# CPU, threefry-heavy code), and the values agree with -O2's to 1 float32 ulp (the eager ops' values differ as much).
_jitted_init = compat.jit_with_compiler_options(
    _init_program, {"xla_backend_optimization_level": 0}, static_argnums=0
)
