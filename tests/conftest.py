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
import ray_helpers  # noqa: E402

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


# The Ray instance and references of the modules that launch `local` runs (test_ray_*.py, helpers in ray_helpers.py).
@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory):
    """Node processes (which inherit these variables) share compiled executables: the session's cache (conftest.py),
    which already holds the programs the in-process launch compiled for the same config, else a temporary one."""
    with pytest.MonkeyPatch.context() as patch:
        if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
            patch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("jax_cache")))
        patch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        yield


@pytest.fixture(scope="module")
def ray_instance(compilation_cache):
    import ray

    xla_flags.configure()
    ray.init(
        address="local",
        num_cpus=6,
        include_dashboard=False,
        object_store_memory=128 * 1024**2,
        log_to_driver=False,
        runtime_env={"env_vars": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def plain_loop_state(tiny_config, tiny_components):
    """The final state of the plain in-process loop after ray_helpers.ITERATIONS iterations (the launched runs')."""
    from helpers import with_fields

    from coala_dist.train import train

    config = with_fields(tiny_config, training_iterations=ray_helpers.ITERATIONS)
    state, _ = train(config, None, components=tiny_components, log=lambda line: None)
    return jax.device_get(state)


# Under pytest-xdist (the README's `-n 2`, with pyproject's `--dist loadfile`: each module on one worker, so its module
# fixtures are built once) the longest modules start first, so the two workers finish at about the same time
# (pyproject's `--no-loadscope-reorder` keeps this order; xdist would otherwise start the modules with most tests).
# xdist hands a worker its next module as soon as it has at most two tests left, so the first worker takes the 1st and
# 3rd module at once and the second the 2nd and 4th: the 3rd is short, so that the reverb leg's two long single-test
# modules (the 1st and 2nd) run side by side, one on each worker.
LONGEST_MODULES_FIRST = (
    "test_ray_learners.py",
    "test_ray_replay_node.py",
    "test_checkpoint.py",
    "test_ray_local.py",
    "test_experiments.py",
    "test_ray_cluster.py",
    "test_faults.py",
)


# The tests whose outcome can depend on the installed stack, marked `stack`: the reverb profile's CI leg runs only
# these (`-m stack`, README "Tests"), the current profile's leg runs everything. What differs between the profiles is
# Python, jax/jaxlib, flax, optax, orbax-checkpoint, numpy and Reverb/TensorFlow; Ray, psutil and absl are the same
# versions. So the subset is: Reverb and the replay contract, the install profile, Orbax checkpoints, the
# multi-device and multi-process learner (jax.distributed, collectives), the XLA/compilation-cache settings chosen per
# jaxlib, the multi-process and fault tests run with Reverb, and a fast core subset of the numerics (the equations,
# the keys, the environments, the rollout and the update on this jax). Left to the current leg: experiments, the
# analytic game, reporting commands, the cloud launchers, Ray-only orchestration (scaling, clusters, the reaper),
# which run the same code on both profiles.
STACK_MODULES = frozenset({
    "test_profiles.py",  # which profile is installed and what each refuses
    "test_distributed.py",  # the replay contract and the learner's sources on queues and Reverb, the wire format
    "test_checkpoint.py",  # Orbax save and restore, exact resume, 1 -> 8 devices
    "test_distributed_sharding.py",  # the data-parallel update and jax.distributed groups
    "test_compilation_cache.py",  # JAX's persistent cache and the XLA flags chosen per jaxlib
})
# The fast core subset (tests not marked `slow`): each equation against its oracle, the PRNG streams, the IPD, the
# pool, the rollout and the update, on this jax, flax and optax.
CORE_MODULES = frozenset({
    "test_returns.py",
    "test_estimators.py",
    "test_losses.py",
    "test_dice.py",
    "test_keys.py",
    "test_pool.py",
    "test_ipd.py",
    "test_naive.py",
    "test_rollout.py",
    "test_learner.py",
})
# Single tests of other modules: (module, test function, the parameter value it needs or None for every one).
STACK_TESTS = frozenset({
    (
        "test_ray_replay_node.py",
        "test_a_killed_actor_then_a_killed_replay_node_are_restarted_and_the_run_ends_as_an_uninterrupted_one",
        "reverb",
    ),
    (
        "test_ray_learners.py",
        "test_two_learner_processes_of_four_devices_save_resume_after_a_sigkill_and_match_the_plain_loop",
        None,
    ),
    ("test_cli.py", "test_a_run_with_an_actor_prints_only_progress_lines", "reverb"),
    ("test_cli.py", "test_native_chatter_is_dropped_and_everything_else_kept", None),
    # Hawk on this flax: the numpy oracle, the parameter count, the initialisers; Clean Up's draws on this jax.random.
    ("test_hawk.py", "test_policy_matches_numpy_oracle", None),
    ("test_hawk.py", "test_parameter_count_at_paper_sizes", None),
    ("test_hawk.py", "test_rg_lru_init_a_range_and_finite_gradient_at_a_equal_one", None),
    ("test_hawk.py", "test_mlp_up_projection_initial_std_follows_its_fan_in", None),
    ("test_cleanup_lite.py", "test_spawns_are_the_documented_draws_of_the_split_key", None),
    ("test_faults.py", "test_every_checkpoint_unreadable_is_refused_unless_starting_over", None),
    ("test_faults.py", "test_a_resumed_run_keeps_counting_consecutive_skipped_updates", None),
    ("test_faults.py", "test_a_signal_saves_then_exits_with_128_plus_its_number", None),
})


def _depends_on_the_stack(item) -> bool:
    if item.path.name in STACK_MODULES:
        return True
    if item.path.name in CORE_MODULES:
        return item.get_closest_marker("slow") is None
    params = list(getattr(getattr(item, "callspec", None), "params", {}).values())
    name = getattr(item, "originalname", item.name)
    return any(
        (module, test) == (item.path.name, name) and (value is None or value in params)
        for module, test, value in STACK_TESTS
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if _depends_on_the_stack(item):
            item.add_marker(pytest.mark.stack)
    if hasattr(config, "workerinput"):  # an xdist worker (every worker must collect the same order)
        rank = {name: i for i, name in enumerate(LONGEST_MODULES_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_MODULES_FIRST)))
