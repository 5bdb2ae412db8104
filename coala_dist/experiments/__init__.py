"""The paper's RL experiments at CPU scale (`coala experiment NAME`): their definitions and the runner.

IPD Fig. 5A-C, the p_naive = 0 ablation, App. H.3, Clean Up-lite Figs. 6-7. Evaluation, tables and plots of their
results are in `coala_dist.analysis` (`evaluation`, `experiment_report`).
"""

from coala_dist.experiments.definitions import EXPERIMENTS, Experiment, experiment_config
from coala_dist.experiments.runner import run_experiment

__all__ = ["EXPERIMENTS", "Experiment", "experiment_config", "run_experiment"]
