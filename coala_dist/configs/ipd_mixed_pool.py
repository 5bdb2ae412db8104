"""IPD mixed pool (paper Fig. 5C): 4 meta agents, co-players naive with probability 0.75. Tables 2, 4, 8."""

from coala_dist.config import default_config


def get_config():
    config = default_config()
    config.p_naive = 0.75
    config.population_size_meta = 4
    return config
