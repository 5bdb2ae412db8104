"""After (or during) training: reading runs, plotting curves, evaluating trained agents, benchmarking the system.

The `coala plot`, `coala eval` and `coala bench` commands are thin wrappers around `curves`, `evaluation` and
`bench`; `runs` reads a work directory (metrics.csv and the config saved with its checkpoints); `flops` holds the
FLOP model of the policy used for the benchmark's limit.
"""
