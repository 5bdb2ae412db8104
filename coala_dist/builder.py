"""Builds every component of an experiment from its config — the one place that wires them.

The in-process loop, the distributed actor and learner nodes, evaluation and benchmarks all call `build(config)`,
so there is one rollout and one update implementation whatever the launch type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import ml_collections

from coala_dist.config import agent_estimators, meta_coplayer_mask, validate
from coala_dist.envs import TwoPlayerEnv, make_env
from coala_dist.learner import Learner, LearnerSettings
from coala_dist.lola_dice_learner import LolaDiceLearner
from coala_dist.networks.policy import HawkPolicy
from coala_dist.rl.estimators import get_estimator
from coala_dist.rl.naive import NaiveLearner
from coala_dist.rl.optim import DIFFERENTIABLE_ADAM_EPS_ROOT, make_optimizer
from coala_dist.rollout import Rollout


@dataclasses.dataclass(frozen=True)
class Components:
    """What an experiment is made of."""

    config: ml_collections.FrozenConfigDict
    env: TwoPlayerEnv
    policy: HawkPolicy
    naive_learner: NaiveLearner
    rollout: Rollout
    learner: Learner
    # Jitted once per experiment and shared by every caller (loops, tests, benchmarks) so nothing compiles twice.
    rollout_episodes: Callable = dataclasses.field(repr=False, compare=False)
    learner_update: Callable = dataclasses.field(repr=False, compare=False)


def make_policy(config: ml_collections.ConfigDict, num_actions: int) -> HawkPolicy:
    """The Hawk policy: every field of `config.policy` is a `HawkPolicy` attribute of the same name."""
    return HawkPolicy(num_actions=num_actions, **config.policy.to_dict())


def make_naive_learner(config: ml_collections.ConfigDict, policy: HawkPolicy) -> NaiveLearner:
    """The naive co-players' A2C learner (paper App. B.2, Table 8). LOLA-DiCE agents differentiate
    through its steps, which needs Adam's `eps_root` (`rl.optim.DIFFERENTIABLE_ADAM_EPS_ROOT`; 0 otherwise)."""
    n = config.naive
    lola_dice = any(get_estimator(name).lola_dice for name in agent_estimators(config))
    eps_root = DIFFERENTIABLE_ADAM_EPS_ROOT if lola_dice else 0.0
    return NaiveLearner(
        policy=policy,
        optimizer=make_optimizer(n.optimizer, n.learning_rate, n.max_grad_norm, n.adam_epsilon, eps_root),
        discount=n.discount,
        reward_scale=n.reward_scale,
        value_coefficient=n.value_coefficient,
        entropy_coefficient=n.entropy_coefficient,
        advantage_normalization=n.advantage_normalization,
    )


def learner_settings(config: ml_collections.ConfigDict) -> LearnerSettings:
    """The meta agents' update settings: the only place the learner's config fields are read."""
    m = config.meta
    return LearnerSettings(
        population_size_meta=config.population_size_meta,
        population_size_naive=config.population_size_naive,
        meta_batch_size=config.meta_batch_size,
        inner_episode_length=config.env.inner_episode_length,
        dynamic_naive_agents=config.dynamic_naive_agents,
        agent_estimators=agent_estimators(config),
        algorithm=m.algorithm,
        reward_scale=m.reward_scale,
        discount=m.discount,
        gae_lambda=m.gae_lambda,
        td_lambda=m.td_lambda,
        value_targets_average_future=m.value_targets_average_future,
        advantage_normalization=m.advantage_normalization,
        advantage_divide_by_std=m.advantage_divide_by_std,
        clip_epsilon=m.clip_epsilon,
        value_coefficient=m.value_coefficient,
        clip_value=m.clip_value,
        value_clip_epsilon=m.value_clip_epsilon,
        entropy_coefficient=m.entropy_coefficient,
        ppo_num_minibatches=m.ppo_num_minibatches,
        ppo_num_epochs=m.ppo_num_epochs,
        gradient_chunk_trajectories=config.compute.gradient_chunk_trajectories,
        lola_look_ahead_steps=m.lola_look_ahead_steps,
        lola_look_ahead_lr=m.lola_look_ahead_lr,
    )


def make_learner(
    config: ml_collections.ConfigDict, policy: HawkPolicy, obs_dim: int, rollout: Rollout | None = None
) -> Learner:
    """The meta agents' learner: Adam/SGD with global-norm clipping (Table 4) and `learner_settings(config)`;
    `rollout` for LOLA-DiCE agents, whose update replays their episodes."""
    m = config.meta
    optimizer = make_optimizer(m.optimizer, m.learning_rate, m.max_grad_norm, m.adam_epsilon)
    settings = learner_settings(config)
    if any(get_estimator(name).lola_dice for name in settings.agent_estimators):
        return LolaDiceLearner(policy, optimizer, settings, obs_dim, rollout)
    return Learner(policy, optimizer, settings, obs_dim)


def build(config: ml_collections.ConfigDict) -> Components:
    """Validates the config, then builds env, policy, naive learner, rollout and learner."""
    validate(config)
    env = make_env(config.env.name, config.env.inner_episode_length, **config.env.kwargs.to_dict())
    policy = make_policy(config, env.num_actions)
    naive_learner = make_naive_learner(config, policy)
    rollout = Rollout(
        env=env,
        policy=policy,
        naive_learner=naive_learner,
        num_inner_episodes=config.num_inner_episodes,
        batch_size=config.batch_size,
        meta_batch_size=config.meta_batch_size,
        population_size_meta=config.population_size_meta,
        population_size_naive=config.population_size_naive,
        p_naive=config.p_naive,
        meta_coplayer_mask=meta_coplayer_mask(config),
    )
    learner = make_learner(config, policy, env.obs_dim, rollout)
    return Components(
        config=ml_collections.FrozenConfigDict(config),
        env=env,
        policy=policy,
        naive_learner=naive_learner,
        rollout=rollout,
        learner=learner,
        rollout_episodes=jax.jit(rollout.episodes),
        learner_update=jax.jit(learner.update),
    )
