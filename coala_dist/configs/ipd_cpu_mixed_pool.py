"""IPD mixed pool (paper Fig. 5C, App. H.3 and the p_naive = 0 ablation) at CPU scale: `coala experiment ipd-fig5c`.

The paper's values (Tables 2, 3, 4, 8: p_naive = 0.75, 4 meta agents, 10 naive initialisations, B = 16, M = 20,
T = 10, γ = λ = 1, meta-batch 128 per meta agent, learning rate 3e-4) except one, to fit 2 hours per seed on a
2-core CPU:
  * training_iterations 3000 -> 500.
The meta-batch and learning rate were picked, among N ∈ {32, 128} and lr ∈ {3e-4, 1e-3}, by the reproduction
campaign's pilot and a rule fixed before it ran (docs/choices.md#mixed-pool-allocation).
The ablation (`ipd-ablation-pnaive0`) is this config with p_naive = 0.
"""

from coala_dist.config import default_config


def get_config():
    config = default_config()
    config.p_naive = 0.75
    config.population_size_meta = 4
    config.meta_batch_size = 128
    config.training_iterations = 500
    config.meta.learning_rate = 3e-4
    config.log_every = 5
    # ≈ 14 s per iteration alone on the 2-core CPU: a checkpoint every ≈ 2.5 min, so a stopped run loses little.
    config.checkpoint.save_every = 10
    return config
