"""Exact analytic IPD experiments of the paper's §4 (Figs. 3, 4, 8–10): the trainers (`trainers`, pure JAX), the
figures that run them (`figures`) and the paper's claims about those figures as data (`claims`); their plots and
report are in `coala_dist.analysis` (`analytic_plots`, `analytic_report`)."""
