"""Builds every component of an experiment from its config — the one place that wires them.

The in-process loop, the distributed actor and learner nodes, evaluation and benchmarks all call `build(config)`,
so there is one rollout and one update implementation whatever the launch type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import ml_collections

from coala_dist.config import meta_coplayer_mask, validate
from coala_dist.envs import TwoPlayerEnv, make_env
from coala_dist.learner import Learner
from coala_dist.networks.policy import HawkPolicy
from coala_dist.rl.naive import NaiveLearner
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
    p = config.policy
    return HawkPolicy(
        num_actions=num_actions,
        embed_dim=p.embed_dim,
        lru_width=p.lru_width,
        mlp_width=p.mlp_width,
        num_heads=p.num_heads,
        num_blocks=p.num_blocks,
        conv_width=p.conv_width,
        scan_type=p.scan_type,
    )


def build(config: ml_collections.ConfigDict) -> Components:
    """Validates the config, then builds env, policy, naive learner, rollout and learner."""
    validate(config)
    env = make_env(config.env.name, config.env.inner_episode_length, **config.env.kwargs.to_dict())
    policy = make_policy(config, env.num_actions)
    naive_learner = NaiveLearner.from_config(policy, config.naive)
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
    learner = Learner.from_config(config, policy, env.obs_dim)
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
