"""Clean Up-lite pure shaping (paper Fig. 6) at CPU scale: `coala experiment cleanup-fig6`.

Paper values (configs/cleanup_pure_shaping.py: Tables 5, 7 reading 1, 8; T = 64 kept) except, to fit a shared
2-core CPU (one paper iteration is 512 meta-episodes × 32 games × 6400 steps, ~10⁸ agent-steps; the paper runs 3000):
  * meta_batch_size 512 -> 8, batch_size B 32 -> 8, num_inner_episodes M 100 -> 10 (≈ 2000× fewer agent-steps per
    iteration),
  * training_iterations 3000 -> 150,
  * meta learning_rate -> 3e-3 for every estimator, the largest value of the paper's sweep (Table 6), to make up for
    20× fewer updates (the IPD CPU configs make the same choice). Reward scales stay per estimator (Table 7).
"""

from coala_dist.configs import load_shipped

ESTIMATOR_OVERRIDES = {
    "coala": {"meta.reward_scale": 0.1, "meta.learning_rate": 3e-3},
    "batch_unaware": {"meta.reward_scale": 1.0, "meta.learning_rate": 3e-3},
    "mfos": {"meta.reward_scale": 1.0, "meta.learning_rate": 3e-3},
}


def get_config():
    config = load_shipped("cleanup_pure_shaping.py")
    config.meta_batch_size = 8
    config.batch_size = 8
    config.num_inner_episodes = 10
    config.training_iterations = 150
    config.meta.learning_rate = 3e-3
    config.log_every = 10
    return config
