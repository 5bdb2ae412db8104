"""Time the Clean Up-lite environment alone and the in-process Clean Up rollout that uses it.

    python scripts/bench_cleanup_env.py [--repeats N] [--old PATH] [--skip-rollout]

Config: `coala_dist.analysis.bench.bench_configs()["cleanup"]` (T = 64, B = 32, M = 10, meta-batch 8, P = 1).

* env: one jitted `lax.scan` over the M inner episodes of a meta-batch, each `reset` + T `step`s with pre-drawn
  random actions, vmapped over the P · meta-batch episodes of B games each (the rollout's shapes: 256 games). It
  emits what the rollout keeps of every step (both observations, both rewards, the info), so nothing is dead code.
  Rate: env steps (game steps) per second.
* env_compute: the same without storing the observations (they are summed into the carry instead): the env's own
  work. The rollout stores them too, so `env` is the closer stand-in for the env's share of the rollout.
* rollout: `components.rollout_episodes(...)` of the built config, one call = one iteration's meta-batch. Rate: ego
  agent-steps per second (`coala_dist.metrics.agent_steps_per_iteration`).

With `--old PATH` (a copy of an earlier `cleanup_lite.py`) the same measurements are made for that module's
`CleanupLite` too, interleaved with the current code's (old, new, old, new, ...) so that a shared machine's load
hits both alike. Prints JSON: medians and minima of seconds per call and the rates, the env's fraction of the
rollout time (env seconds / rollout seconds), and the load average before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import statistics
import sys
import time

from coala_dist import xla_flags

xla_flags.configure()  # as the `coala` CLI does, before JAX starts

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def load_average() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def load_env_class(path: str):
    spec = importlib.util.spec_from_file_location("cleanup_lite_other", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module.CleanupLite


def env_scan_fn(env, num_episodes: int, batch: int, num_inner: int, store_obs: bool = True):
    """A jitted function (key, actions [M, T, E, B, 2]) running M × (reset + T steps) for E × B games.

    With `store_obs` every step's observations are stacked as the rollout stacks them; without, they are
    only summed into the carry (the env's own work, without writing [M, T, E, B, o] observations twice).
    """

    def one_episode(key, actions):  # actions [M, T, B, 2]
        def inner(_, xs):
            m, acts = xs
            out = env.reset(jax.random.fold_in(key, m), batch)

            def step(carry, a):
                out, obs_sum = carry
                nxt = env.step(out.state, a[:, 0], a[:, 1])
                emitted = (nxt.reward_player_1, nxt.reward_player_2, nxt.info)
                if store_obs:
                    emitted = (out.obs_player_1, out.obs_player_2, *emitted)
                else:
                    obs_sum = obs_sum + out.obs_player_1 + out.obs_player_2
                return (nxt, obs_sum), emitted

            (_, obs_sum), emitted = jax.lax.scan(step, (out, jnp.zeros_like(out.obs_player_1)), acts)
            return None, (emitted, obs_sum)

        _, emitted = jax.lax.scan(inner, None, (jnp.arange(num_inner), actions))
        return emitted

    def run(key, actions):
        keys = jax.random.split(key, num_episodes)
        return jax.vmap(one_episode, in_axes=(0, 2))(keys, actions)

    return jax.jit(run)


def timed(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def summarise(times: list[float], work: int) -> dict[str, float]:
    median = statistics.median(times)
    return {
        "median_s": median,
        "min_s": min(times),
        "per_s_median": work / median,
        "per_s_max": work / min(times),
        "repeats": len(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--old", default=None, help="path of an earlier cleanup_lite.py to compare against")
    parser.add_argument("--skip-rollout", action="store_true")
    args = parser.parse_args()

    from coala_dist.analysis.bench import bench_configs
    from coala_dist.builder import build
    from coala_dist.config import episodes_per_iteration
    from coala_dist.metrics import agent_steps_per_iteration

    load_before = load_average()
    config = bench_configs()["cleanup"]
    components = build(config)
    state = components.learner.init(jax.random.PRNGKey(0))
    rollout = components.rollout
    env_new = rollout.env
    variants = {"new": env_new}
    if args.old:
        old_class = load_env_class(args.old)
        fields = {f.name: getattr(env_new, f.name) for f in dataclasses.fields(env_new)}
        variants = {"old": old_class(**fields), "new": env_new}

    num_episodes = episodes_per_iteration(config)
    batch, num_inner, length = config.batch_size, config.num_inner_episodes, env_new.inner_episode_length
    env_steps = num_episodes * batch * num_inner * length
    agent_steps = agent_steps_per_iteration(config)
    actions = jax.random.randint(
        jax.random.PRNGKey(1), (num_inner, length, num_episodes, batch, 2), 0, env_new.num_actions, jnp.int32
    )
    env_key = jax.random.PRNGKey(2)
    indices = rollout.iteration_indices()
    rollout_args = (state.meta_params, state.naive_params, state.run_key, state.version, indices)

    env_fns, compute_fns, rollout_fns, compile_s = {}, {}, {}, {}
    for name, env in variants.items():
        env_fns[name] = env_scan_fn(env, num_episodes, batch, num_inner)
        compile_s[f"env_{name}"] = timed(env_fns[name], env_key, actions)
        compute_fns[name] = env_scan_fn(env, num_episodes, batch, num_inner, store_obs=False)
        compile_s[f"env_compute_{name}"] = timed(compute_fns[name], env_key, actions)
        if not args.skip_rollout:
            rollout_fns[name] = jax.jit(dataclasses.replace(rollout, env=env).episodes)
            compile_s[f"rollout_{name}"] = timed(rollout_fns[name], *rollout_args)

    env_times = {name: [] for name in variants}
    compute_times = {name: [] for name in variants}
    rollout_times = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name in variants:  # interleaved: old, new, old, new, ...
            env_times[name].append(timed(env_fns[name], env_key, actions))
            compute_times[name].append(timed(compute_fns[name], env_key, actions))
            if not args.skip_rollout:
                rollout_times[name].append(timed(rollout_fns[name], *rollout_args))

    result = {
        "config": {"T": length, "B": batch, "M": num_inner, "episodes": num_episodes, "games": num_episodes * batch},
        "env_steps_per_call": env_steps,
        "rollout_agent_steps_per_call": agent_steps,
        "first_call_s": compile_s,
    }
    for name in variants:
        entry = {"env": summarise(env_times[name], env_steps), "env_compute": summarise(compute_times[name], env_steps)}
        entry["env_steps_per_s"] = entry["env"]["per_s_median"]
        entry["env_compute_steps_per_s"] = entry["env_compute"]["per_s_median"]
        if not args.skip_rollout:
            entry["rollout"] = summarise(rollout_times[name], agent_steps)
            entry["rollout_agent_steps_per_s"] = entry["rollout"]["per_s_median"]
            entry["env_fraction_of_rollout"] = entry["env"]["median_s"] / entry["rollout"]["median_s"]
            entry["env_compute_fraction_of_rollout"] = entry["env_compute"]["median_s"] / entry["rollout"]["median_s"]
        result[name] = entry
    result["load_average_before"] = load_before
    result["load_average_after"] = load_average()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
