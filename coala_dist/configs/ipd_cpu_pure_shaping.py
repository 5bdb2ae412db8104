"""IPD pure shaping (paper Fig. 5A/5B) at CPU scale: `coala experiment ipd-fig5a` / `ipd-fig5b`.

Paper values (Tables 2, 4, 8) except, to fit a shared 2-core CPU (one paper iteration takes ~6 s here and the paper
runs 3000 of them per seed):
  * meta_batch_size 128 -> 16 (8x less work per iteration; B = 16, M = 20, T = 10 are kept, so the estimators'
    1/B scaling, the quantity Fig. 5A is about, is the paper's),
  * training_iterations 3000 -> 150,
  * learning_rate 3e-4 -> 3e-3, the largest value of the paper's sweep (Table 3), to make up for fewer updates.
γ = λ_td = λ_gae = 1 as in Table 4. The estimator (coala | mfos | batch_unaware) is set by the experiment runner.
"""

from coala_dist.config import default_config


def get_config():
    config = default_config()
    config.meta_batch_size = 16
    config.training_iterations = 150
    config.meta.learning_rate = 3e-3
    config.log_every = 10
    return config
