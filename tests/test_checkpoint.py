"""Orbax checkpoints: exact resume, SIGKILL and resume, corrupted checkpoints, incompatible configs, device counts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import coala_train_command

from coala_dist.checkpoint import (
    Checkpointer,
    IncompatibleCheckpointError,
    abstract_train_state,
    check_compatible,
)
from coala_dist.train import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _with(config, **fields):
    """A copy of `config` with dotted fields replaced."""
    config = config.copy_and_resolve_references()
    for name, value in fields.items():
        target, *path = name.split("__")
        node = config
        for part in [target, *path][:-1]:
            node = node[part]
        node[[target, *path][-1]] = value
    return config


def _assert_same_params(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def reference_states(tiny_config, tiny_components):
    """Uninterrupted in-memory runs: {iterations: final state}, computed on demand."""
    cache = {}

    def get(iterations: int):
        if iterations not in cache:
            config = _with(tiny_config, training_iterations=iterations)
            cache[iterations], _ = train(config, None, components=tiny_components, log=lambda line: None)
        return cache[iterations]

    return get


@pytest.mark.slow
def test_resume_in_process_is_exact(tiny_config, tiny_components, reference_states, tmp_path):
    first = _with(tiny_config, training_iterations=3, checkpoint__save_every=3)
    train(first, str(tmp_path), components=tiny_components, log=lambda line: None)
    assert Checkpointer(str(tmp_path), save_every=3, max_to_keep=3).all_steps() == [3]
    lines = []
    resumed, history = train(
        _with(first, training_iterations=6), str(tmp_path), components=tiny_components, log=lines.append
    )
    assert lines[0].startswith("resumed from") and "iteration 3" in lines[0]
    assert [row["iteration"] for row in history] == [4, 5, 6]
    assert int(resumed.step) == 6 and int(resumed.version) == 6
    _assert_same_params(resumed, reference_states(6))
    # A finished run says so and does nothing.
    lines.clear()
    again, history = train(
        _with(first, training_iterations=6), str(tmp_path), components=tiny_components, log=lines.append
    )
    assert history == [] and "already finished" in lines[-1]
    _assert_same_params(again, resumed)
    # The CSV holds every iteration once.
    with open(tmp_path / "metrics.csv") as f:
        assert [int(line.split(",")[0]) for line in f.readlines()[1:]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_config, tiny_components, reference_states, tmp_path):
    workdir = tmp_path / "run"
    # A long run, killed hard as soon as its first checkpoint (update 3) is on disk: maybe mid-iteration, maybe in
    # the middle of writing a later checkpoint.
    proc = subprocess.Popen(
        coala_train_command(workdir, "--config.training_iterations=100000", "--config.checkpoint.save_every=3"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoints = workdir / "checkpoints"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if checkpoints.exists() and any(name.isdigit() for name in os.listdir(checkpoints)):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    saved = Checkpointer(str(workdir), save_every=3, max_to_keep=3).all_steps()
    assert saved and saved[-1] % 3 == 0
    target = saved[-1] + 3
    result = subprocess.run(
        coala_train_command(workdir, f"--config.training_iterations={target}", "--config.checkpoint.save_every=3"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resumed from" in result.stdout
    config = _with(tiny_config, training_iterations=target)
    checkpointer = Checkpointer(str(workdir), save_every=3, max_to_keep=3)
    abstract = abstract_train_state(tiny_components.learner.init, jax.random.PRNGKey(config.seed))
    restored = checkpointer.restore_latest(abstract, config)
    assert int(restored.step) == target
    _assert_same_params(restored, reference_states(target))


def test_corrupted_latest_checkpoint_is_skipped_with_a_warning(tiny_config, tiny_components, tmp_path, capsys):
    state = tiny_components.learner.init(jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(tmp_path), save_every=1, max_to_keep=5)
    first = state._replace(step=jnp.int32(1))
    second = state._replace(step=jnp.int32(2), meta_params=jax.tree_util.tree_map(lambda x: x + 1, state.meta_params))
    checkpointer.save(first, tiny_config)
    checkpointer.save(second, tiny_config)
    checkpointer.wait()
    for root, _, files in os.walk(tmp_path / "checkpoints" / "2" / "state"):
        for name in files:
            with open(os.path.join(root, name), "r+b") as f:
                f.truncate(0)
    abstract = abstract_train_state(tiny_components.learner.init, jax.random.PRNGKey(0))
    restored = Checkpointer(str(tmp_path), save_every=1, max_to_keep=5).restore_latest(abstract, tiny_config)
    assert int(restored.step) == 1
    _assert_same_params(restored.meta_params, first.meta_params)
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warning) == 1 and str(tmp_path / "checkpoints" / "2") in warning[0]


def test_incompatible_config_names_the_fields(tiny_config, tiny_components, tmp_path):
    state = tiny_components.learner.init(jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(tmp_path), save_every=1, max_to_keep=2)
    checkpointer.save(state._replace(step=jnp.int32(1)), tiny_config)
    checkpointer.wait()
    changed = _with(tiny_config, policy__embed_dim=16, population_size_meta=3, log_every=7, training_iterations=99)
    abstract = abstract_train_state(tiny_components.learner.init, jax.random.PRNGKey(0))
    with pytest.raises(IncompatibleCheckpointError) as error:
        checkpointer.restore_latest(abstract, changed)
    message = str(error.value)
    assert "\n" not in message
    assert "policy.embed_dim" in message and "population_size_meta" in message
    assert "log_every" not in message and "training_iterations" not in message
    # Only compatible changes: restores.
    compatible = _with(tiny_config, log_every=7, training_iterations=99, checkpoint__save_every=5)
    assert int(checkpointer.restore_latest(abstract, compatible).step) == 1


def test_a_field_added_after_the_checkpoint_is_compatible_only_at_its_default(tiny_config):
    saved = tiny_config.to_dict()
    del saved["meta"]["lola_look_ahead_lr"]  # a checkpoint written before the field existed
    check_compatible(saved, tiny_config, "CKPT")  # the default: the old behaviour
    expected = r"meta.lola_look_ahead_lr \(checkpoint '<absent>', now 0.5\)"
    with pytest.raises(IncompatibleCheckpointError, match=expected):
        check_compatible(saved, _with(tiny_config, meta__lola_look_ahead_lr=0.5), "CKPT")
    del saved["population_size_meta"]  # not a new field with its default: still a difference
    with pytest.raises(IncompatibleCheckpointError, match="population_size_meta"):
        check_compatible(saved, tiny_config, "CKPT")


@pytest.mark.slow
def test_saved_on_one_device_resumes_on_eight(tiny_config, tiny_components, tmp_path):
    state = tiny_components.learner.init(jax.random.PRNGKey(0))
    checkpointer = Checkpointer(str(tmp_path), save_every=1, max_to_keep=2)
    checkpointer.save(state._replace(step=jnp.int32(1)), tiny_config)
    checkpointer.wait()
    batch = tiny_components.rollout_episodes(
        state.meta_params, state.naive_params, state.run_key, state.version, tiny_components.rollout.iteration_indices()
    )
    expected, _ = tiny_components.learner_update(state._replace(step=jnp.int32(1)), batch)
    np.savez(tmp_path / "batch.npz", *jax.tree_util.tree_leaves(batch))
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()  # and the session's
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "resume_on_devices.py"), str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices 8" in result.stdout
    updated = np.load(tmp_path / "updated.npz")
    leaves = jax.tree_util.tree_leaves(expected.meta_params)
    assert len(updated.files) == len(leaves)
    for i, leaf in enumerate(leaves):
        np.testing.assert_allclose(updated[f"arr_{i}"], np.asarray(leaf), atol=1e-5)


def test_tuple_fields_resume_from_their_json_lists(tiny_config, tmp_path):
    # The checkpoint stores the config as JSON, where a tuple field (e.g. agent_estimators = ()) comes back as a
    # list; resuming must not call that a changed experiment. A really different value still is one.
    import json

    from coala_dist.checkpoint import check_compatible

    config = tiny_config.copy_and_resolve_references()
    config.agent_estimators = ("coala", "mfos")
    saved = json.loads(json.dumps(config.to_dict()))
    assert saved["agent_estimators"] == ["coala", "mfos"]
    check_compatible(saved, config, str(tmp_path))
    config.agent_estimators = ("mfos", "coala")
    with pytest.raises(IncompatibleCheckpointError, match="agent_estimators"):
        check_compatible(saved, config, str(tmp_path))
