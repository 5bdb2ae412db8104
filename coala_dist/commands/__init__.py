"""Sub-commands of the `coala` console script (see coala_dist/cli.py)."""
