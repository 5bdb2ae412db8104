"""The LOLA-DiCE learner: meta agents that ascend the DiCE objective through their co-players' learning (paper Eq. 4;
the LOLA-DiCE baseline of Fig. 5C).

Same interface as `coala_dist.learner.Learner` (`init`, `update`, the TrainState), chosen by the builder when the
agents' estimator is "lola_dice". It skips Algorithm 1's advantages and PPO: each agent's meta-batch is played again
from the episodes' keys (`Rollout.replay`), differentiably through the naive co-players' own A2C steps and through
LOLA's model of a meta co-player's learning (`rl.dice.lola_look_ahead`), and the agent takes one optimiser step on
−(inner-episode DiCE objective, `rl.dice.lola_dice_objective`) + c_v · value loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from coala_dist.learner import Learner, TrainState
from coala_dist.rl import dice
from coala_dist.rl.losses import LossOutput, value_loss
from coala_dist.rollout import MetaEpisode, Rollout


@dataclasses.dataclass(frozen=True)
class LolaDiceLearner(Learner):
    """LOLA-DiCE meta agents. `rollout` replays their episodes inside the update."""

    rollout: Rollout | None = None

    def __post_init__(self) -> None:
        if self.rollout is None:
            raise ValueError("LOLA-DiCE agents need the learner built with its rollout (coala_dist.builder)")

    def loss(
        self,
        params: Any,
        batch: MetaEpisode,
        meta_params: Any,
        naive_params: Any,
        run_key: jax.Array,
        *,
        look_ahead: bool = True,
    ) -> tuple[jax.Array, tuple[LossOutput, jax.Array, jax.Array]]:
        """A LOLA-DiCE agent's loss on its meta-batch [N, B, L] (Eq. 4; `rl.dice`).

        The episodes are played again from their keys (`Rollout.replay`) with `params` as the ego's, so that every
        log-probability is a function of `params`, and with `look_ahead` so are the co-players' parameters: a naive
        co-player's through its own A2C steps inside the meta-episode, a meta co-player's (which does not learn
        inside a meta-episode) through LOLA's model of its learning, `lola_look_ahead_steps` steps of gradient ascent
        (size `lola_look_ahead_lr`) on its inner-episode DiCE objective of the same episode, whose log-probabilities
        are then re-evaluated along the episode at the looked-ahead parameters. Loss = −(inner-episode DiCE
        objective, mean over episodes) + c_v · 0.5 · mean (V − G)², with rewards × reward_scale, the replayed critic
        values as DiCE's baseline and TD(λ_td) targets G.

        Returns:
          (loss, (LossOutput, advantage mean, value-target mean)); the entropy is the policy's on the actors' batch
          (a statistic only), approx_kl and clip_fraction are 0.
        """
        s = self.settings

        def replay(version, episode_index):
            return self.rollout.replay(
                params, meta_params, naive_params, run_key, version, episode_index, look_ahead=look_ahead
            )

        trajectory, coplayer_is_naive, coplayer = jax.vmap(replay)(batch.policy_version, batch.episode_index)
        rewards = self.scale_rewards(trajectory["rewards"])
        values = trajectory["behaviour_values"]
        baselines = jax.lax.stop_gradient(values)
        targets = self._value_targets(rewards, baselines, coplayer_is_naive)

        def objective(ego_logp, co_logp, r, b):
            return dice.inner_episode_dice_objective(ego_logp, co_logp, r, b, s.inner_episode_length, s.discount)

        co_logp = trajectory["coplayer_logp"]
        if look_ahead and s.lola_look_ahead_steps > 0:

            def meta_coplayer_logp(ego_logp, theta, co_obs, co_actions, co_rewards):
                def coplayer_objective(ego, th):
                    logp, _, co_values = self.sequence_log_probs(th, co_obs, co_actions)
                    return objective(ego, logp, self.scale_rewards(co_rewards), jax.lax.stop_gradient(co_values))

                ahead = dice.lola_look_ahead(
                    ego_logp, theta, coplayer_objective, s.lola_look_ahead_lr, s.lola_look_ahead_steps
                )
                return self.sequence_log_probs(ahead, co_obs, co_actions)[0]

            looked_ahead = jax.vmap(meta_coplayer_logp)(
                trajectory["behaviour_logp"],
                coplayer,
                trajectory["coplayer_obs"],
                trajectory["coplayer_actions"],
                trajectory["coplayer_rewards"],
            )
            co_logp = jnp.where(coplayer_is_naive[:, None, None], co_logp, looked_ahead)
        policy_loss = -dice.lola_dice_objective(
            trajectory["behaviour_logp"], co_logp, rewards, baselines, s.inner_episode_length, s.discount
        )
        critic_loss = value_loss(values, targets)
        loss = policy_loss + s.value_coefficient * critic_loss
        zero = jnp.zeros((), loss.dtype)
        _, entropy, _ = self.evaluate_actions(jax.lax.stop_gradient(params), batch)
        out = LossOutput(loss, policy_loss, critic_loss, jnp.mean(entropy), zero, zero)
        return loss, (out, jnp.mean(targets - baselines), jnp.mean(targets))

    def _update_agent_lola_dice(self, params, opt_state, batch: MetaEpisode, meta_params, naive_params, run_key):
        """One LOLA-DiCE step of one meta agent on its meta-batch [N, B, L]. Returns params, opt_state, stats."""
        value_and_grad = jax.value_and_grad(self.loss, has_aux=True)
        (loss, (out, advantage_mean, target_mean)), grads = value_and_grad(
            params, batch, meta_params, naive_params, run_key
        )
        params, opt_state, finite = self._step_if_finite(params, opt_state, loss, grads)
        stats = out._asdict() | {
            "grad_norm": optax.global_norm(grads),
            "advantage_mean": advantage_mean,
            "value_target_mean": target_mean,
        }
        return params, opt_state, finite, stats

    def update_agents(self, state: TrainState, per_agent: MetaEpisode) -> tuple[Any, Any, jax.Array, dict]:
        # Co-players and naive initialisations are those of the version being updated (the acting ones in a
        # synchronous run, so the replay is the actors' episodes).
        return jax.vmap(self._update_agent_lola_dice, in_axes=(0, 0, 0, None, None, None))(
            state.meta_params,
            state.opt_state,
            per_agent,
            state.meta_params,
            self.naive_initialisations(state),
            state.run_key,
        )
