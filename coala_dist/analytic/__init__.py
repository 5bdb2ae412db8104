"""Exact analytic IPD experiments of the paper's §4 (Figs. 3, 4, 8–10): experiments, plots, report."""
