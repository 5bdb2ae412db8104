"""Reporting: everything after (or during) training that reads runs and writes numbers, tables and plots.

* `runs`: a run's work directory (metrics.csv, the config saved with its checkpoints, its newest state:
  `restore_workdir`), strict JSON (`json_safe`), and the guard that keeps throw-away outputs out of the published
  results/.
* `curves`: training curves of several runs, mean ± std over seeds (`coala plot`; `moving_average`).
* `statistics`: every aggregation across seeds: mean ± std (the paper's), standard error, quantiles, and the
  interquartile mean with a stratified-bootstrap interval (`seed_summary`).
* `evaluation`: trained meta agents against fresh naive learners and each other (`coala eval`, and the experiment
  runner's evaluations), each with its own key stream of `coala_dist.keys`; what it measures comes from
  `ipd_statistics` (cooperation per state, defection rates, the ZD extortion fit) and `cleanup_metrics` (the paper's
  Clean Up metrics), and `evaluation_report` prints and plots it.
* `experiment_report`: an experiment's per-seed files, table and plots (`coala experiment`).
* `analytic_report`, `analytic_plots`: the analytic IPD figures' JSON, README and PNGs (`coala analytic`).
* `bench`, `flops`: how fast the system trains on this machine and the FLOP model of its limit (`coala bench`).

The commands are thin wrappers around these modules; `coala_dist/experiments/` (definitions, runner) and
`coala_dist/analytic/` (the analytic experiments) produce what is reported here.
"""
