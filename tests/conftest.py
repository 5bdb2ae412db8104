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
xla_flags.configure()  # must precede the first JAX import, as in the `coala` CLI

import jax  # noqa: E402
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
    leaves, treedef = jax.tree_util.tree_flatten(state.meta_params)
    keys = jax.random.split(jax.random.PRNGKey(123), len(leaves))
    perturbed = [leaf + 0.5 * jax.random.normal(k, leaf.shape) for leaf, k in zip(leaves, keys, strict=True)]
    naive_leaves = jax.tree_util.tree_leaves(state.naive_params)
    naive_keys = jax.random.split(jax.random.PRNGKey(456), len(naive_leaves))
    naive_perturbed = [
        leaf + 0.5 * jax.random.normal(k, leaf.shape) for leaf, k in zip(naive_leaves, naive_keys, strict=True)
    ]
    return state._replace(
        meta_params=jax.tree_util.tree_unflatten(treedef, perturbed),
        naive_params=jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state.naive_params), naive_perturbed),
    )


@pytest.fixture(scope="session")
def tiny_episodes(tiny_components):
    """The jitted batched rollout of the tiny experiment."""
    return tiny_components.rollout_episodes
