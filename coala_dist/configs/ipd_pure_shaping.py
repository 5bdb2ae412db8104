"""IPD pure shaping (paper Fig. 5A/5B): one meta agent against naive learners only. Tables 2, 4, 8."""

from coala_dist.config import default_config


def get_config():
    return default_config()  # the defaults are this experiment, with the paper's values
