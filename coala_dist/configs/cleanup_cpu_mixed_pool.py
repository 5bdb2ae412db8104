"""Clean Up-lite mixed pool (paper Fig. 7) at CPU scale: `coala experiment cleanup-fig7`.

Paper values (configs/cleanup_mixed_pool.py: Tables 5, 7, 8; P = 3, 3 dynamic naive agents, p_naive = 0.75,
M = 5, T = 64, A2C + SGD) except, to fit a shared 2-core CPU (the paper runs 30000 iterations of 512 meta-episodes
× 64 games per agent):
  * meta_batch_size 512 -> 8 per meta agent, batch_size B 64 -> 8,
  * training_iterations 30000 -> 150,
  * meta learning rates 10× the paper's (COALA-PG 0.1 -> 1.0, M-FOS / batch-unaware 0.03 -> 0.3; 1.0 is the largest
    value of Table 6's sweep), keeping the paper's ratio between estimators, to make up for 200× fewer updates,
  * value_coefficient 0.5 -> 0.05: the critic keeps the paper's step size. With SGD one update moves the parameters
    by lr · (∇L_policy + c_v ∇L_value), so c_v = 0.05 at 10× the learning rate is exactly the paper's value step
    (lr · c_v = 0.05 for COALA-PG, 0.015 for M-FOS / batch-unaware); at 10× with c_v = 0.5 the critic diverged
    (results/cleanup/README.md). `--config.meta.value_coefficient=0.5` gives the earlier runs' setting.
"""

from coala_dist.configs import load_shipped

ESTIMATOR_OVERRIDES = {
    "coala": {"meta.learning_rate": 1.0},
    "batch_unaware": {"meta.learning_rate": 0.3},
    "mfos": {"meta.learning_rate": 0.3},
}


def get_config():
    config = load_shipped("cleanup_mixed_pool.py")
    config.meta_batch_size = 8
    config.batch_size = 8
    config.training_iterations = 150
    config.meta.learning_rate = 1.0
    config.meta.value_coefficient = 0.05
    config.log_every = 10
    return config
