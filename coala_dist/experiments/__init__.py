"""The paper's IPD experiments (Fig. 5A, 5B, 5C, the p_naive = 0 ablation) at CPU scale: `coala experiment NAME`."""

from coala_dist.experiments.definitions import EXPERIMENTS, Experiment, experiment_config
from coala_dist.experiments.runner import run_experiment

__all__ = ["EXPERIMENTS", "Experiment", "experiment_config", "run_experiment"]
