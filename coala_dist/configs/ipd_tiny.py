"""A tiny IPD config for tests and smoke runs: every code path of the mixed pool, seconds per iteration."""

from coala_dist.config import default_config


def get_config():
    config = default_config()
    config.training_iterations = 3
    config.env.inner_episode_length = 3
    config.num_inner_episodes = 3
    config.batch_size = 4
    config.meta_batch_size = 4
    config.p_naive = 0.5
    config.population_size_meta = 2
    config.population_size_naive = 3
    config.meta.ppo_num_epochs = 2
    config.meta.ppo_num_minibatches = 2
    config.policy.embed_dim = 8
    config.policy.lru_width = 8
    config.policy.mlp_width = 8
    # One meta-episode per gradient chunk, so the tests run the chunked gradient (the paper config chunks too).
    config.compute.gradient_chunk_trajectories = 4
    return config
