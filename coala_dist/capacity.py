"""What this machine can hold and host, checked from the config before any heavy work.

* `meta_batch_memory_bytes`: an estimate, from below, of the learner's memory for one iteration, from the config
  alone: the meta-batch of episodes as the update reads it (observations, actions, rewards, behaviour log-probs and
  values), the per-step advantages and value targets, and the policy's residual stream (embed_dim floats per block
  and step) that its forward pass over the batch keeps for the backward pass. The real peak (every activation, XLA's
  buffers) is higher: the paper's IPD config at meta_batch_size=100000 is estimated at 55 GB and asked for 99 GB.
* `check_fits`: refuses a config whose bound exceeds this machine's memory (or the accelerator's, for an
  in-process learner on one), and a `local` launch with more actor processes than the machine can host.
"""

from __future__ import annotations

import os

import ml_collections

from coala_dist.config import episodes_per_iteration, meta_trajectory_length

GB = 1024**3
# Per agent-step float32 arrays besides the observation: action, reward, behaviour log-prob and value (the meta-batch),
# advantage and value target (the update).
FLOATS_PER_STEP = 6
# What one actor process of a `local` launch takes: a Python process with JAX and the compiled rollout, measured
# at about 0.4-0.6 GB resident on the tiny and paper IPD configs.
ACTOR_PROCESS_BYTES = GB // 2
# Actor processes per CPU core beyond which a `local` launch only adds load (each actor's rollout is CPU-bound).
ACTORS_PER_CPU = 4


def observation_size(config: ml_collections.ConfigDict) -> int:
    """The environment's observation size (floats per step), without tracing anything."""
    from coala_dist.envs import make_env

    kwargs = config.env.kwargs.to_dict() if hasattr(config.env.kwargs, "to_dict") else dict(config.env.kwargs)
    return int(make_env(config.env.name, config.env.inner_episode_length, **kwargs).obs_dim)


def meta_batch_memory_bytes(config: ml_collections.ConfigDict) -> int:
    """An estimate from below of one iteration's learner memory: P·N meta-episodes of B·M·T steps, each step holding
    its observation, `FLOATS_PER_STEP` floats and the residual stream of every policy block, 4 bytes per float."""
    steps = episodes_per_iteration(config) * config.batch_size * meta_trajectory_length(config)
    activations = config.policy.num_blocks * config.policy.embed_dim
    return steps * 4 * (observation_size(config) + FLOATS_PER_STEP + activations)


def machine_memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def accelerator_memory_bytes() -> int | None:
    """The first accelerator's memory when JAX's default backend is one (None on CPU or when it does not say)."""
    import jax

    if jax.default_backend() == "cpu":
        return None
    stats = jax.devices()[0].memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def check_fits(config: ml_collections.ConfigDict, *, launch: str, num_actors: int) -> None:
    """Raises a one-line ValueError if the config's iteration cannot fit this machine's (or its accelerator's)
    memory, or a `local` launch asks for more actor processes than this machine can host."""
    need = meta_batch_memory_bytes(config)
    if launch != "ray":  # a Ray cluster's learner runs elsewhere: its host is not this one
        have = machine_memory_bytes()
        if need > have:
            raise ValueError(_too_big(config, need, have, "this machine's memory"))
        device = accelerator_memory_bytes() if launch == "inprocess" else None
        if device is not None and need > device:
            raise ValueError(_too_big(config, need, device, "the accelerator's memory"))
    if launch == "local":
        cpus = os.cpu_count() or 1
        cap = max(1, min(ACTORS_PER_CPU * cpus, int(machine_memory_bytes() * 0.8) // ACTOR_PROCESS_BYTES))
        if num_actors > cap:
            raise ValueError(
                f"--num_actors={num_actors} with --launch=local starts that many processes here, but this machine "
                f"({cpus} CPUs, {machine_memory_bytes() / GB:.0f} GB) hosts at most {cap} (about "
                f"{ACTOR_PROCESS_BYTES / GB:.1f} GB and a quarter of a CPU each); use --num_actors<={cap} or "
                "--launch=ray on a cluster"
            )


def _too_big(config: ml_collections.ConfigDict, need: int, have: int, where: str) -> str:
    return (
        f"one iteration needs at least {need / GB:.1f} GB (meta_batch_size={config.meta_batch_size} x "
        f"population_size_meta={config.population_size_meta} meta-episodes of batch_size={config.batch_size} x "
        f"{meta_trajectory_length(config)} steps), more than {where} ({have / GB:.1f} GB); lower meta_batch_size or "
        "batch_size"
    )
