"""Digest of the final training state of short sync runs: the check that a refactoring changed no behaviour.

Each case trains a tiny config in this process (sync, `coala_dist.train.train`) and prints the sha256 of the final
TrainState's bytes (parameters, optimiser state, naive initialisations, keys, counters) and of its metrics. Run it
before and after a change on the same profile: equal digests mean bit-identical runs.

    python scripts/params_digest.py > before.json    # (on the old commit)
    python scripts/params_digest.py > after.json
    diff before.json after.json

The cases cover every branch of the update: the mixed pool with PPO (chunked gradient, advantage centring), A2C, the
per-agent estimators of App. H.3 with cross-rule pairing, M-FOS and batch-unaware rules, static and dynamic naive
agents, and Clean Up-lite.
"""

from __future__ import annotations

import hashlib
import json
import sys

from coala_dist import xla_flags

xla_flags.configure()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from coala_dist.configs import load_shipped  # noqa: E402
from coala_dist.train import train  # noqa: E402

# Wall-clock metrics differ between any two runs.
TIMING_PREFIXES = ("time/", "throughput/agent_steps_per_s", "throughput/episodes_per_s", "throughput/learner_wait")

CASES = {
    "mixed_pool_ppo": {},
    "a2c": {"meta.algorithm": "a2c"},
    "mfos_centred_std": {"estimator": "mfos", "meta.advantage_divide_by_std": True},
    "batch_unaware_dynamic_naive": {
        "estimator": "batch_unaware",
        "dynamic_naive_agents": True,
        "population_size_naive": 2,
    },
    "h3_per_agent_rules": {
        "population_size_meta": 4,
        "agent_estimators": ("coala", "coala", "mfos", "mfos"),
        "cross_estimator_pairing": True,
    },
    "cleanup": {"env.name": "cleanup_lite", "env.inner_episode_length": 4},
}


def _set(config, dotted: str, value) -> None:
    *path, last = dotted.split(".")
    node = config
    for name in path:
        node = node[name]
    node[last] = value


def digest(tree) -> str:
    sha = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        array = np.asarray(leaf)
        sha.update(str((array.shape, array.dtype)).encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def main(names: list[str]) -> None:
    result = {}
    for name in names or list(CASES):
        config = load_shipped("ipd_tiny.py")
        for dotted, value in CASES[name].items():
            _set(config, dotted, value)
        state, history = train(config, log=lambda line: None)
        result[name] = {
            "state": digest(state),
            "metrics": digest(
                [[np.float64(m[k]) for k in sorted(m) if not k.startswith(TIMING_PREFIXES)] for m in history]
            ),
        }
        print(name, result[name], file=sys.stderr)
    print(json.dumps({"jax": jax.__version__, "cases": result}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
