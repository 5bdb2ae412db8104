"""Clean Up-lite mixed pool (paper Fig. 7): 3 meta agents, p_naive = 0.75, dynamic naive agents. Tables 5, 7, 8.

Starts from the pure-shaping file (same environment, T = 64, the same PPO/A2C settings where Table 7 repeats them)
and sets what differs. Naive learners are initialised each iteration from the current meta agents' parameters
(`dynamic_naive_agents`, Table 5) and then learn with A2C + SGD (Table 8, Cleanup Mixed column: lr 1, γ 1). Meta
agents use A2C + SGD (Table 7, Pool columns): reward scale 0.1 for every estimator, learning rate 0.1 for COALA-PG
and 0.03 for M-FOS / batch-unaware (`ESTIMATOR_OVERRIDES`). 0.1 is outside Table 6's
printed sweep set {0.03, 0.01, 0.5, 1.0}; Table 7's value is used. The pool's A2C value coefficient is not given
(docs/choices.md#table-7): the shaping columns' 0.5 is kept. `get_config()` returns the COALA-PG column.
"""

from coala_dist.configs import load_shipped

ESTIMATOR_OVERRIDES = {
    "coala": {"meta.learning_rate": 0.1},
    "batch_unaware": {"meta.learning_rate": 0.03},
    "mfos": {"meta.learning_rate": 0.03},
}


def get_config():
    config = load_shipped("cleanup_pure_shaping.py")
    config.training_iterations = 30000  # Table 5, Mixed Pool column
    config.batch_size = 64
    config.num_inner_episodes = 5
    config.p_naive = 0.75
    config.population_size_meta = 3
    config.population_size_naive = 3
    config.dynamic_naive_agents = True

    config.meta.algorithm = "a2c"  # Table 7, Pool, COALA column
    config.meta.reward_scale = 0.1
    config.meta.optimizer = "sgd"
    config.meta.learning_rate = 0.1

    config.naive.discount = 1.0  # Table 8, Cleanup Mixed column
    config.naive.optimizer = "sgd"
    config.naive.learning_rate = 1.0
    return config
