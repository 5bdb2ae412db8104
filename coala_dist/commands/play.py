"""`coala play`: build the IPD env and two fresh Hawk policies, play one batched meta-episode, print rewards.

A smoke test of the whole stack on a newcomer's machine: env, policy, naive learner and rollout, no training.
"""

from __future__ import annotations

import os

from ml_collections import config_flags

from coala_dist import keys
from coala_dist.commands import UsageError
from coala_dist.configs import CONFIG_DIR

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    os.path.join(CONFIG_DIR, "ipd_pure_shaping.py"),
    "Experiment config: a file, or a shipped config's name (e.g. ipd_tiny; default ipd_pure_shaping).",
    lock_config=True,
)


def main(argv: list[str]) -> None:
    del argv
    import jax
    import jax.numpy as jnp

    from coala_dist.builder import build
    from coala_dist.config import validate

    config = _CONFIG.value
    try:
        validate(config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    components = build(config)
    state = components.learner.init(keys.seed_key(config.seed))
    episode = components.rollout_episodes(
        state.meta_params, state.naive_params, state.run_key, state.version, jnp.zeros((1, 1), jnp.int32)
    )
    episode = jax.tree_util.tree_map(lambda x: x[0], episode)
    kind = "naive learner" if bool(episode.coplayer_is_naive) else "meta agent"
    print(
        f"{config.env.name}: one meta-episode of B={config.batch_size} x M={config.num_inner_episodes} inner "
        f"episodes x T={config.env.inner_episode_length} steps, fresh meta agent vs {kind} {int(episode.coplayer_id)}"
    )
    print("inner episode | meta reward/step | co-player reward/step")
    for m, (ego, co) in enumerate(zip(episode.metrics["ego_reward"], episode.metrics["coplayer_reward"], strict=True)):
        print(f"{m:13d} | {float(ego):+16.3f} | {float(co):+21.3f}")
    print(f"total reward per step: meta {float(episode.rewards.mean()):+.3f}")
