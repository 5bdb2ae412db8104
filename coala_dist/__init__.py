"""coala-dist: learning-aware multi-agent RL (COALA-PG) with a distributed actor-learner.

Importing the package makes JAX's partitionable threefry lowering the default: with it a random draw
gives the same bits however its array is sharded, so the data-parallel update on N devices equals the 1-device one
and every process of a run draws the same streams. jax >= 0.5 has it on by default; jax 0.4.34 (the reverb
profile) does not, and there it changes every random stream compared with runs made before this default. A user
who sets `JAX_THREEFRY_PARTITIONABLE` keeps their choice (a multi-device update then refuses to run without it).
"""

import os
import sys

__version__ = "0.1.0"

PARTITIONABLE_RNG_ENV = "JAX_THREEFRY_PARTITIONABLE"

if PARTITIONABLE_RNG_ENV not in os.environ:
    # Before JAX is imported the variable is enough (and keeps `import coala_dist` from importing JAX); child
    # processes (actors, learner processes, `coala` subprocesses) inherit it.
    os.environ[PARTITIONABLE_RNG_ENV] = "1"
    if "jax" in sys.modules:  # imported first by the user: set the flag itself
        sys.modules["jax"].config.update("jax_threefry_partitionable", True)
