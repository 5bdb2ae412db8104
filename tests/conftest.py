"""Shared fixtures: one tiny experiment built once per session, so jitted functions compile once."""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import tempfile

from coala_dist import xla_flags

# The suite's processes (this one, `coala` subprocesses, actors) share one compilation cache, fresh per session so
# no test depends on what an earlier run left behind.
if xla_flags.COMPILATION_CACHE_ENV not in os.environ:
    _cache = tempfile.mkdtemp(prefix="coala-test-jax-cache-")
    os.environ[xla_flags.COMPILATION_CACHE_ENV] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
# The suite compiles far more than it runs: XLA's CPU backend without LLVM's optimisation passes spends about 40% less
# CPU time here (and no test runs slower), while what every program computes is the same. Every process of the session
# inherits XLA_FLAGS (subprocesses, Ray nodes), so results compared across processes are compiled alike. A level named
# in XLA_FLAGS wins: XLA_FLAGS=--xla_backend_optimization_level=3 runs the suite as users compile.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
xla_flags.configure()  # must precede the first JAX import, as in the `coala` CLI

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name: str):
    """Loads `configs/<name>.py` and returns its `get_config()`."""
    path = os.path.join(REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="session")
def tiny_config():
    return load_config("ipd_tiny")


@pytest.fixture(scope="session")
def tiny_components(tiny_config):
    from coala_dist.builder import build

    return build(tiny_config)


@pytest.fixture(scope="session")
def tiny_state(tiny_components, tiny_config):
    """A TrainState whose policies are not uniform (all parameters perturbed), so behaviour is informative."""
    state = tiny_components.learner.init(jax.random.PRNGKey(tiny_config.seed))

    def perturb(params, seed):
        # Drawn on the host: with jax.random each leaf shape compiled its own sampler (about 10 s of CPU).
        rng = np.random.default_rng(seed)
        return jax.tree_util.tree_map(
            lambda leaf: jnp.asarray(np.asarray(leaf) + 0.5 * rng.standard_normal(leaf.shape), leaf.dtype), params
        )

    return state._replace(meta_params=perturb(state.meta_params, 123), naive_params=perturb(state.naive_params, 456))


@pytest.fixture(scope="session")
def tiny_episodes(tiny_components):
    """The jitted batched rollout of the tiny experiment."""
    return tiny_components.rollout_episodes


# Under pytest-xdist (the README's `-n 2`, with pyproject's `--dist loadfile`: each module on one worker, so its module
# fixtures are built once) the longest modules start first, so the two workers finish at about the same time
# (pyproject's `--no-loadscope-reorder` keeps this order; xdist would otherwise start the modules with most tests).
LONGEST_MODULES_FIRST = (
    "test_distributed_ray.py",
    "test_experiments.py",
    "test_ray_cluster.py",
    "test_checkpoint.py",
    "test_faults.py",
)


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # an xdist worker (every worker must collect the same order)
        rank = {name: i for i, name in enumerate(LONGEST_MODULES_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_MODULES_FIRST)))
