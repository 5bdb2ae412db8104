"""`coala export` and `load_agent`: an exported agent acts exactly as its run's policy."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import exported_tiny_agent, run_coala, tiny_run_workdir  # noqa: F401 (fixtures)

from coala_dist.agents import MANIFEST, PARAMS_FILE, load_agent
from coala_dist.analysis.runs import restore_workdir
from coala_dist.pool import select_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def test_the_manifest_describes_the_agent(exported, tiny_config):
    with open(os.path.join(exported, MANIFEST)) as f:
        manifest = json.load(f)
    assert manifest["format"] == "coala-agent" and manifest["format_version"] == 1
    assert manifest["name"] == "tiny-agent1"
    assert (manifest["agent_index"], manifest["population_size_meta"]) == (1, 2)
    assert (manifest["estimator"], manifest["seed"], manifest["iteration"]) == ("coala", tiny_config.seed, 2)
    assert manifest["policy"] == {"num_actions": 2, "obs_dim": 5, **tiny_config.policy.to_dict()}
    assert manifest["game"] == {
        "env": "ipd",
        "inner_episode_length": 3,
        "env_kwargs": {},
        "num_inner_episodes": 3,
        "batch_size": 4,
    }
    assert manifest["naive"]["learning_rate"] == tiny_config.naive.learning_rate
    assert manifest["final_metrics"]["last_iteration"]["iteration"] == 2
    assert "vs_naive/ego_reward" in manifest["final_metrics"]["final_window"]
    assert not any(k.startswith("time/") for k in manifest["final_metrics"]["last_iteration"])
    commit = manifest["code_commit"]
    assert commit is None or len(commit) == 40
    assert os.path.exists(os.path.join(exported, "config.json"))


def test_exported_agent_acts_bit_identically_to_the_runs_policy(exported, workdir, tiny_components):
    """The run's own rollout plays agent 1 against a naive learner; the loaded agent, fed the same observations and
    the rollout's per-step keys, takes the same actions with the same log-probabilities, bit for bit."""
    components, state = restore_workdir(workdir, tiny_components)
    params = select_params(state.meta_params, 1)
    agent = load_agent(exported)
    jax.tree_util.tree_map(np.testing.assert_array_equal, agent.params, jax.device_get(params))

    rollout = components.rollout
    key = jax.random.PRNGKey(123)
    naive = select_params(state.naive_params, 0)
    trajectory, _ = jax.jit(rollout.play)(params, naive, jnp.array(True), key)
    length, num_inner = rollout.inner_episode_length, rollout.num_inner_episodes
    assert agent.meta_trajectory_length == length * num_inner

    carry = agent.initial_carry(rollout.batch_size)
    actions, logps = [], []
    for m in range(num_inner):
        for t in range(length):
            step_key = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, m), t))[0]  # the ego's key
            step, carry = agent.step(carry, trajectory["obs"][:, m * length + t], step_key)
            actions.append(step.action)
            logps.append(jax.nn.log_softmax(step.logits)[jnp.arange(step.action.shape[0]), step.action])
    np.testing.assert_array_equal(np.stack(actions, axis=1), np.asarray(trajectory["actions"]))
    np.testing.assert_array_equal(np.stack(logps, axis=1), np.asarray(trajectory["behaviour_logp"]))
    assert int(carry.position) == agent.meta_trajectory_length


def test_load_agent_refuses_what_is_not_an_agent(exported, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_agent(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="not an exported agent"):
        load_agent(str(tmp_path))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in (MANIFEST, "config.json"):
        shutil.copy(os.path.join(exported, name), damaged / name)
    with np.load(os.path.join(exported, PARAMS_FILE)) as archive:
        flat = {k: archive[k] for k in archive.files}
    first = sorted(flat)[0]
    flat[first] = flat[first] + 1.0
    np.savez(damaged / PARAMS_FILE, **flat)
    with pytest.raises(ValueError, match="sha256"):
        load_agent(str(damaged))


def test_agent_checks_the_observation_shape(exported):
    agent = load_agent(exported)
    with pytest.raises(ValueError, match=r"obs must be \[batch, 5\]"):
        agent.step(agent.initial_carry(2), np.zeros((2, 4)), jax.random.PRNGKey(0))


def test_coala_export_command(workdir, tmp_path):
    out = tmp_path / "agent0"
    done = run_coala("export", f"--workdir={workdir}", f"--out={out}", "--name=tiny0")
    assert done.returncode == 0, done.stderr
    assert "exported agent 0" in done.stdout
    assert load_agent(str(out)).name == "tiny0"
    # Typed mistakes: one line, exit status 2.
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    for args, words in (
        ((f"--workdir={tmp_path / 'missing'}", f"--out={out}"), "is not a folder"),
        ((f"--workdir={tmp_path / 'not_a_run'}", f"--out={out}"), "not a run's workdir"),
        ((f"--workdir={workdir}", f"--out={out}", "--agent=2"), "has 2 meta agent(s)"),
        ((f"--workdir={workdir}", f"--out={tmp_path / 'busy'}"), "holding other files"),
        ((f"--workdir={workdir}",), "--workdir and --out are required"),
    ):
        done = run_coala("export", *args)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, done.stderr)
