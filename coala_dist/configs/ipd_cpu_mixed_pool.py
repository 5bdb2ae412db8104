"""IPD mixed pool (paper Fig. 5C and the p_naive = 0 ablation) at CPU scale: `coala experiment ipd-fig5c`.

Paper values (Tables 2, 4, 8: p_naive = 0.75, 4 meta agents, 10 naive initialisations, B = 16, M = 20, T = 10,
γ = λ = 1) except, to fit a shared 2-core CPU:
  * meta_batch_size 128 -> 8 per meta agent (4 agents: 32 meta-episodes per iteration),
  * training_iterations 3000 -> 150,
  * learning_rate 3e-4 -> 3e-3, the largest value of the paper's sweep (Table 3).
The ablation (`ipd-ablation-pnaive0`) is this config with p_naive = 0.
"""

from coala_dist.config import default_config


def get_config():
    config = default_config()
    config.p_naive = 0.75
    config.population_size_meta = 4
    config.meta_batch_size = 8
    config.training_iterations = 150
    config.meta.learning_rate = 3e-3
    config.log_every = 10
    return config
