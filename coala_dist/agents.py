"""Exported agents: one trained meta agent as a self-describing folder, and `load_agent` to step it.

`coala export --workdir=W --out=DIR [--agent=i]` takes agent i's slice of the leading agent axis of the newest
readable checkpoint's `meta_params` and writes DIR/agent.json (the manifest), DIR/params.npz and DIR/config.json.
Both layouts, the checkpoint's and the agent folder's, are documented in one place:
docs/architecture.md#checkpoints-and-exported-agents.

No Orbax and no config machinery is needed to read it back:

    from coala_dist.agents import load_agent
    agent = load_agent("agents/coala-seed0")
    carry = agent.initial_carry(batch_size=16)          # a fresh meta-trajectory (segment position 0)
    for l in range(agent.meta_trajectory_length):       # M·T steps; the state is never reset in between
        step, carry = agent.step(carry, obs, key)       # obs [16, obs_dim] (IPD: one-hot start/CC/CD/DC/DD,
        ...                                              #  own action first); step.action [16] int32

An agent acts exactly as its run's policy: the same network, the same sampling (`jax.random.categorical` of the
logits with the key given), so with the same observations and keys it takes the same actions (tests/test_agents.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = "coala-agent"
FORMAT_VERSION = 1
MANIFEST = "agent.json"
PARAMS_FILE = "params.npz"
CONFIG_FILE = "config.json"
# metrics.csv columns that describe the machine, not the agent.
_NOT_AGENT_METRICS = ("time/", "throughput/", "checkpoint/", "replay/")


class AgentCarry(NamedTuple):
    """What an agent carries between steps: its policy's recurrent state and the step index l in the
    meta-trajectory (its segment position; 0 resets the state)."""

    cache: Any
    position: jax.Array


class AgentStep(NamedTuple):
    """One step of an agent for [B] games: the sampled `action` [B] int32, the `logits` [B, |A|], the `value` [B]."""

    action: jax.Array
    logits: jax.Array
    value: jax.Array


def _flatten(params: Any) -> dict[str, np.ndarray]:
    from flax import traverse_util

    return {k: np.asarray(v) for k, v in traverse_util.flatten_dict(params, sep="/").items()}


def params_digest(flat: dict[str, np.ndarray]) -> str:
    """sha256 over the parameters' names, shapes, dtypes and bytes, in name order."""
    sha = hashlib.sha256()
    for name in sorted(flat):
        array = np.ascontiguousarray(flat[name])
        sha.update(f"{name}{array.shape}{array.dtype}".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def is_agent_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST))


class Agent:
    """A loaded agent: `initial_carry`, `step` and `act` (jitted), its `policy` module, `params` and `manifest`."""

    def __init__(self, path: str, manifest: dict[str, Any], params: Any):
        from coala_dist.networks.policy import HawkPolicy

        self.path, self.manifest, self.params = path, manifest, params
        fields = dict(manifest["policy"])
        self.obs_dim = int(fields.pop("obs_dim"))
        self.policy = HawkPolicy(**fields)
        self._step = jax.jit(self._step_fn)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def num_actions(self) -> int:
        return self.policy.num_actions

    @property
    def meta_trajectory_length(self) -> int:
        """L = M·T, the steps of the meta-trajectories it was trained on."""
        game = self.manifest["game"]
        return int(game["num_inner_episodes"]) * int(game["inner_episode_length"])

    def make_env(self):
        """The environment it was trained in (`coala_dist.envs.make_env` with the run's settings)."""
        from coala_dist.envs import make_env

        game = self.manifest["game"]
        return make_env(game["env"], int(game["inner_episode_length"]), **game.get("env_kwargs", {}))

    def initial_carry(self, batch_size: int) -> AgentCarry:
        """The state at the start of a meta-trajectory, for `batch_size` games."""
        return AgentCarry(self.policy.init_cache(batch_size), jnp.zeros((), jnp.int32))

    def _step_fn(self, params, carry: AgentCarry, obs: jax.Array, key: jax.Array) -> tuple[AgentStep, AgentCarry]:
        segment_pos = jnp.full((obs.shape[0], 1), carry.position, jnp.int32)
        output, cache = self.policy.apply({"params": params}, obs[:, None, :], segment_pos, carry.cache)
        logits = output.logits[:, 0]
        action = jax.random.categorical(key, logits).astype(jnp.int32)
        return AgentStep(action, logits, output.value[:, 0]), AgentCarry(cache, carry.position + 1)

    def step(self, carry: AgentCarry, obs: Any, key: jax.Array) -> tuple[AgentStep, AgentCarry]:
        """One step in [B] games: obs [B, obs_dim] float32 (what the agent sees as player 1, own first)."""
        obs = jnp.asarray(obs, jnp.float32)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"obs must be [batch, {self.obs_dim}], got shape {tuple(obs.shape)}")
        return self._step(self.params, carry, obs, key)

    def act(self, carry: AgentCarry, obs: Any, key: jax.Array) -> tuple[jax.Array, AgentCarry]:
        """`step`'s action only."""
        step, carry = self.step(carry, obs, key)
        return step.action, carry

    def __repr__(self) -> str:
        return f"Agent({self.name!r}, {self.manifest.get('estimator')}, {self.path})"


def read_manifest(path: str) -> dict[str, Any]:
    """The manifest of an exported agent.

    Raises:
      FileNotFoundError: `path` is not a folder.
      ValueError: it holds no agent.json, or one of another format or a newer version.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is not a folder")
    if not is_agent_dir(path):
        raise ValueError(f"{path} is not an exported agent (no {MANIFEST}; make one with coala export)")
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"{os.path.join(path, MANIFEST)} is unreadable ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{os.path.join(path, MANIFEST)} is not a {FORMAT} manifest")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {manifest['format_version']}; this coala reads up to {FORMAT_VERSION}"
        )
    return manifest


def load_agent(path: str) -> Agent:
    """The agent exported to `path` (`coala export`), ready to step. Checks the parameters' sha256.

    Raises:
      FileNotFoundError, ValueError: see `read_manifest`; a missing or damaged params.npz is a ValueError.
    """
    from flax import traverse_util

    manifest = read_manifest(path)
    params_path = os.path.join(path, manifest["params"]["file"])
    try:
        with np.load(params_path) as archive:
            flat = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"{params_path} is unreadable ({error})") from None
    if params_digest(flat) != manifest["params"]["sha256"]:
        raise ValueError(f"{params_path} does not match the sha256 in its manifest (damaged or edited)")
    params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
    return Agent(path, manifest, params)


def code_commit() -> str | None:
    """The git commit of the checkout this package runs from (None outside a git checkout)."""
    import coala_dist

    root = os.path.dirname(os.path.dirname(os.path.abspath(coala_dist.__file__)))
    try:
        out = subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def final_metrics(workdir: str) -> dict[str, Any]:
    """The run's metrics.csv at its end: the last iteration's row and the mean of the last 10 % of iterations
    (the window the experiment reports average over), without the machine's timings; {} without metrics.csv.

    Rows hold population means: with several meta agents they describe the population, not one agent."""
    from coala_dist.analysis.runs import json_safe, read_metrics_csv

    path = os.path.join(workdir, "metrics.csv")
    if not os.path.exists(path):
        return {}
    rows = read_metrics_csv(path)
    if not rows:
        return {}
    keys = [k for k in rows[-1] if not k.startswith(_NOT_AGENT_METRICS)]
    window = max(1, len(rows) // 10)
    means = {}
    for key in keys:
        if key == "iteration":
            continue
        values = np.asarray([row.get(key, math.nan) for row in rows[-window:]], np.float64)
        values = values[np.isfinite(values)]
        means[key] = float(values.mean()) if values.size else None
    return json_safe(
        {
            "last_iteration": {k: int(rows[-1][k]) if k == "iteration" else rows[-1][k] for k in keys},
            "final_window": {"iterations": [int(rows[-window]["iteration"]), int(rows[-1]["iteration"])], **means},
        }
    )


def describe(config: Any, env: Any, agent_index: int) -> dict[str, Any]:
    """What a manifest says about agent `agent_index` of a run with this config and environment: its rule, seed,
    the fields that rebuild its network, the game it was trained in and the naive learners it was trained against."""
    population = int(config.population_size_meta)
    estimators = list(config.agent_estimators) or [config.estimator] * population
    return {
        "estimator": estimators[agent_index],
        "agent_index": agent_index,
        "population_size_meta": population,
        "p_naive": float(config.p_naive),
        "seed": int(config.seed),
        "policy": {"num_actions": int(env.num_actions), "obs_dim": int(env.obs_dim), **config.policy.to_dict()},
        "game": {
            "env": config.env.name,
            "inner_episode_length": int(config.env.inner_episode_length),
            "env_kwargs": config.env.kwargs.to_dict(),
            "num_inner_episodes": int(config.num_inner_episodes),
            "batch_size": int(config.batch_size),
        },
        "naive": config.naive.to_dict(),
    }


def export_agent(workdir: str, out: str, agent_index: int = 0, name: str | None = None) -> dict[str, Any]:
    """Writes agent `agent_index` of the run in `workdir` (its newest readable checkpoint) to the folder `out`.

    Returns:
      The manifest written.

    Raises:
      FileNotFoundError: the workdir has no readable checkpoint.
      IndexError: the run has no agent `agent_index`.
    """
    from coala_dist.analysis.runs import json_safe, restore_workdir
    from coala_dist.pool import select_params

    components, state = restore_workdir(workdir)
    config = components.config
    population = int(config.population_size_meta)
    if not 0 <= agent_index < population:
        raise IndexError(
            f"the run in {workdir} has {population} meta agent(s) (0..{population - 1}), not {agent_index}"
        )
    flat = _flatten(jax.device_get(select_params(state.meta_params, agent_index)))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or os.path.basename(os.path.normpath(out)),
        **describe(config, components.env, agent_index),
        "iteration": int(state.step),
        "source": {"workdir": os.path.abspath(workdir), "checkpoint_iteration": int(state.step)},
        "code_commit": code_commit(),
        "final_metrics": final_metrics(workdir),
        "params": {
            "file": PARAMS_FILE,
            "sha256": params_digest(flat),
            "count": int(sum(a.size for a in flat.values())),
        },
        "config_file": CONFIG_FILE,
    }
    os.makedirs(out, exist_ok=True)
    np.savez(os.path.join(out, PARAMS_FILE), **flat)
    with open(os.path.join(out, CONFIG_FILE), "w") as f:
        json.dump(json_safe(config.to_dict()), f, indent=1, sort_keys=True)
    with open(os.path.join(out, MANIFEST), "w") as f:
        json.dump(json_safe(manifest), f, indent=1)
    return manifest
