"""Exact analytic IPD experiments of the paper's §4 (Figs. 3, 4, 8–10); their plots and report are in
`coala_dist.analysis` (`analytic_plots`, `analytic_report`)."""
