"""`coala bench`: how fast this system trains on this machine, and how far that is from the machine's limit.

Measured (medians over timed iterations, after one untimed iteration that compiles):

* rollout agent-steps/s and episodes/s of the in-process rollout for the paper's IPD config (Table 2, pure
  shaping) and a Clean Up config (Table 5 pure shaping with the meta-batch and M scaled down for time);
* update time per iteration for both, and for IPD with the RG-LRU's linear and associative scans
  (`config.policy.scan_type`; only the learner's sequence passes scan: the rollout steps one time step at a time);
* end-to-end episodes/s and agent-steps/s of the in-process loop and of the distributed `inprocess` and `local`
  launches with 1 and 2 actors, and the learner's wait fraction (`coala_dist.metrics.learner_wait_fraction`);
* the limit: FLOPs per agent-step of the policy (forward; naive forward + backward; PPO forward + backward; from
  the layer shapes, `coala_dist.analysis.flops`, cross-checked with XLA's cost analysis), this machine's measured
  dense-matmul FLOP/s at the policy's shapes, the agent-steps/s that speed would allow, and the fraction reached.

Wall times depend on what else the machine runs: the JSON records the load average before and after.

Where the JSON goes (`output_path`): --out if given, else `workdirs/bench/bench.json` (`--quick`:
`workdirs/bench/bench_quick.json`). The published `results/bench.json` is written only when named with --out, and
never by a `--quick` run, whose numbers mean nothing.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections

from coala_dist import keys, profiles
from coala_dist.analysis import flops
from coala_dist.analysis.runs import in_published_results
from coala_dist.builder import Components
from coala_dist.config import default_config, episodes_per_iteration, meta_trajectory_length
from coala_dist.learner import TrainState
from coala_dist.metrics import ThroughputMetrics, agent_steps_per_iteration
from coala_dist.networks.hawk import SCAN_TYPES
from coala_dist.train import InProcessSource, PreparedLearner, learner_loop

# (launch type, actors) of the distributed end-to-end measurements.
LAUNCHES = (("inprocess", 1), ("inprocess", 2), ("local", 1), ("local", 2))
SCENARIOS = ("ipd", "cleanup")
END_TO_END_FIELDS = ("iteration_s", "episodes_per_s", "agent_steps_per_s", "learner_wait_fraction")

# Every key of the JSON (dotted paths), in the order they are documented; launch entries may be null with a reason.
BENCH_KEYS = (
    "machine.platform",
    "machine.cpu_count",
    "machine.devices",
    "machine.load_average_before",
    "machine.load_average_after",
    "stack.profile",
    "stack.python",
    "stack.jax",
    "stack.jaxlib",
    "configs.ipd",
    "configs.cleanup",
    *(f"rollout.{s}.{k}" for s in SCENARIOS for k in ("agent_steps_per_s", "episodes_per_s", "rollout_s")),
    *(f"update.{s}.update_s" for s in SCENARIOS),
    *(f"scan.{t}.update_s" for t in SCAN_TYPES),
    "scan.associative_over_linear",
    *(f"end_to_end.inprocess_loop.{k}" for k in END_TO_END_FIELDS),
    *(
        f"end_to_end.launch_{launch}_{n}_actor{'s' if n > 1 else ''}.{k}"
        for launch, n in LAUNCHES
        for k in END_TO_END_FIELDS
    ),
    "learner_wait_fraction",
    "flops.forward_per_agent_step",
    "flops.forward_per_agent_step_dense_gates",
    "flops.per_agent_step.acting",
    "flops.per_agent_step.naive_forward_backward",
    "flops.per_agent_step.meta_forward_backward",
    "flops.per_agent_step.total",
    "flops.xla_cost_analysis.acting_step",
    "flops.xla_cost_analysis.sequence_forward",
    "flops.xla_cost_analysis.sequence_forward_backward",
    "flops.matmul.rows",
    "flops.matmul.flops_per_s_32x32",
    "flops.matmul.per_shape",
    "flops.matmul.policy_mix_flops_per_s",
    "flops.limit.agent_steps_per_s",
    "flops.limit.achieved_agent_steps_per_s",
    "flops.limit.fraction",
    "flops.limit.rollout_fraction",
    "flops.limit.update_fraction",
    "wall_time_s",
)


# Default JSON paths (relative to the working directory; workdirs/ is git-ignored). A quick run has its own file so
# that it does not replace a full run's numbers either.
DEFAULT_OUT = os.path.join("workdirs", "bench", "bench.json")
DEFAULT_QUICK_OUT = os.path.join("workdirs", "bench", "bench_quick.json")


def output_path(out: str | None, quick: bool) -> str:
    """Where `coala bench` writes its JSON: `out`, else the default for `quick`.

    Raises a one-line ValueError for a quick run whose `out` lies in the published results (results/).
    """
    if out is None:
        return DEFAULT_QUICK_OUT if quick else DEFAULT_OUT
    published = in_published_results(out) if quick else None
    if published is not None:
        raise ValueError(
            f"--quick never writes into the published results, and --out={out} is inside {published}; "
            "drop --out (the JSON goes to workdirs/bench/) or choose a file outside it"
        )
    return out


def write_json(result: dict[str, Any], path: str) -> str:
    """Writes the (JSON-safe) bench result to `path`, creating its folder; returns `path`."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return path


def launch_key(launch: str, num_actors: int) -> str:
    return f"launch_{launch}_{num_actors}_actor{'s' if num_actors > 1 else ''}"


def bench_configs(quick: bool = False) -> dict[str, ml_collections.ConfigDict]:
    """The configs measured: `ipd`, `ipd_associative` (the same with the associative scan) and `cleanup`.

    ipd is `default_config()`: the paper's IPD pure-shaping experiment (Tables 2, 4, 8). cleanup starts from it with
    env cleanup_lite, T = 64 and Table 5's pure-shaping sizes except meta_batch_size 512 → 8 and M 100 → 10 (one
    paper iteration would take minutes here). `quick` shrinks both to test sizes (seconds, for CI).
    """
    ipd = default_config()
    cleanup = default_config()
    cleanup.env.name = "cleanup_lite"
    cleanup.env.inner_episode_length = 64  # Table 5
    cleanup.batch_size = 32  # Table 5
    cleanup.num_inner_episodes = 10  # Table 5: 100
    cleanup.meta_batch_size = 8  # Table 5: 512
    if quick:
        for config in (ipd, cleanup):
            config.batch_size = 2
            config.num_inner_episodes = 2
            config.meta_batch_size = 2
            config.population_size_naive = 2
            config.meta.ppo_num_epochs = 1
            config.meta.ppo_num_minibatches = 1
            config.policy.embed_dim = config.policy.lru_width = config.policy.mlp_width = 8
        ipd.env.inner_episode_length = 3
        cleanup.env.inner_episode_length = 8
    configs = {"ipd": ipd, "cleanup": cleanup}
    associative = copy.deepcopy(ipd)
    associative.policy.scan_type = "associative"
    configs["ipd_associative"] = associative
    for config in configs.values():
        config.training_iterations = 10**6  # the benchmark sets how many iterations it runs
        config.log_every = 10**6
    return configs


def _median(rows: Sequence[dict[str, float]], key: str) -> float:
    values = [row[key] for row in rows if key in row]
    return float(statistics.median(values)) if values else float("nan")


class _Recorder:
    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_iteration(self, iteration: int, state, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))
        self.state = state

    def close(self) -> None:
        pass


def time_inprocess_loop(
    components: Components, timed_iterations: int, state: TrainState | None = None
) -> tuple[dict[str, float], TrainState]:
    """Runs the in-process loop for 1 + `timed_iterations` iterations from `state` (default: a fresh one).

    Returns:
      (timings, the final state): first_iteration_s (compilation included) and medians over the timed iterations
      of rollout_s, update_s, iteration_s, with the rates they imply.
    """
    config = components.config
    recorder = _Recorder()
    if state is None:
        state = components.learner.init(keys.seed_key(config.seed))
    learner = PreparedLearner(components, state, [ThroughputMetrics(config), recorder])
    learner_loop(learner, InProcessSource(components), total_iterations=1 + timed_iterations)
    timed = recorder.rows[1:]
    steps, episodes = agent_steps_per_iteration(config), episodes_per_iteration(config)
    rollout_s, update_s = _median(timed, "time/rollout_s"), _median(timed, "time/update_s")
    result = {
        "first_iteration_s": recorder.rows[0]["time/iteration_s"],
        "rollout_s": rollout_s,
        "update_s": update_s,
        "iteration_s": _median(timed, "time/iteration_s"),
        "agent_steps_per_iteration": steps,
        "episodes_per_iteration": episodes,
        "rollout_agent_steps_per_s": steps / rollout_s,
        "rollout_episodes_per_s": episodes / rollout_s,
        "episodes_per_s": _median(timed, "throughput/episodes_per_s"),
        "agent_steps_per_s": _median(timed, "throughput/agent_steps_per_s"),
        "learner_wait_fraction": _median(timed, "throughput/learner_wait_fraction"),
    }
    return result, recorder.state


def time_update(components: Components, state: TrainState, batch, repeats: int) -> dict[str, float]:
    """Compile time (first call) and median time of `components.learner_update(state, batch)`."""
    start = time.perf_counter()
    jax.block_until_ready(components.learner_update(state, batch))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(components.learner_update(state, batch))
        times.append(time.perf_counter() - start)
    return {"first_call_s": compile_s, "update_s": float(statistics.median(times))}


def time_launch(
    components: Components | None, config, launch: str, num_actors: int, timed_iterations: int
) -> dict[str, Any]:
    """End-to-end rates of the distributed program (coala_dist.distributed) with `num_actors` actors.

    `inprocess` shares `components` (nothing recompiles); `local` starts Ray processes that each compile.
    """
    from coala_dist.distributed.launch import launch as run_program
    from coala_dist.distributed.program import make_program

    config = ml_collections.ConfigDict(config.to_dict())
    config.training_iterations = 1 + timed_iterations
    program = make_program(config, launch=launch, num_actors=num_actors)
    start = time.perf_counter()
    result = run_program(program, components=components if launch == "inprocess" else None, log=lambda line: None)
    timed = result.history[1:]
    return {
        "iteration_s": _median(timed, "time/iteration_s"),
        "episodes_per_s": _median(timed, "throughput/episodes_per_s"),
        "agent_steps_per_s": _median(timed, "throughput/agent_steps_per_s"),
        "learner_wait_fraction": _median(timed, "throughput/learner_wait_fraction"),
        "wall_s": time.perf_counter() - start,
        "iterations": len(result.history),
    }


def _not_measured(reason: str) -> dict[str, Any]:
    return {**{k: None for k in END_TO_END_FIELDS}, "reason": reason}


def _config_summary(config) -> dict[str, Any]:
    return {
        "env": config.env.name,
        "inner_episode_length": config.env.inner_episode_length,
        "num_inner_episodes": config.num_inner_episodes,
        "batch_size": config.batch_size,
        "meta_batch_size": config.meta_batch_size,
        "population_size_meta": config.population_size_meta,
        "p_naive": config.p_naive,
        "ppo_epochs": config.meta.ppo_num_epochs,
        "ppo_minibatches": config.meta.ppo_num_minibatches,
        "policy": {k: config.policy[k] for k in ("embed_dim", "lru_width", "mlp_width", "num_heads", "num_blocks")},
        "agent_steps_per_iteration": agent_steps_per_iteration(config),
    }


def measure_limit(
    components: Components, state: TrainState, *, rows: int, repeats: int, sequence_rows: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """The FLOP model of `components`' policy, XLA's count (with the first meta agent's parameters of `state`), and
    this machine's matmul speed at the policy's shapes."""
    config, env = components.config, components.env
    forward = flops.policy_flops_from_config(config, env.obs_dim, env.num_actions)
    forward_dense = flops.policy_flops_from_config(config, env.obs_dim, env.num_actions, dense_gates=True)
    # The limit counts the FLOPs the implementation executes (dense gates).
    per_step = flops.training_flops_per_agent_step(config, forward_dense)
    params = jax.tree_util.tree_map(lambda x: x[0], state.meta_params)
    length = meta_trajectory_length(config)
    xla = flops.xla_policy_flops_per_step(components.policy, params, env.obs_dim, sequence_rows, length)
    step_macs = flops.policy_matmul_macs(config, env.obs_dim, env.num_actions)
    per_shape = {shape: flops.measure_matmul_flops_per_s(rows, *shape, repeats=repeats) for shape in step_macs}
    square = flops.measure_matmul_flops_per_s(rows, 32, 32, repeats=repeats)
    mix = flops.weighted_matmul_flops_per_s(per_shape, step_macs)
    section = {
        "forward_per_agent_step": forward,
        "forward_per_agent_step_dense_gates": forward_dense,
        "per_agent_step": per_step,
        "xla_cost_analysis": xla,
        "matmul": {
            "rows": rows,
            "flops_per_s_32x32": square,
            "per_shape": [{"inner": k, "outer": n, "flops_per_s": r} for (k, n), r in per_shape.items()],
            "policy_mix_flops_per_s": mix,
        },
    }
    return section, per_step


def run_bench(
    components: dict[str, Components],
    *,
    timed_iterations: int = 3,
    launches: Sequence[tuple[str, int]] = LAUNCHES,
    matmul_rows: int = 65536,
    matmul_repeats: int = 10,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs every measurement and returns the JSON-ready result (keys: `BENCH_KEYS`).

    Args:
      components: built components for "ipd", "ipd_associative" and "cleanup" (see `bench_configs`).
      timed_iterations: iterations timed per measurement (after one that compiles).
      launches: (launch type, actors) of the distributed measurements; the others are null with a reason.
      matmul_rows: rows of the matmuls timed for the limit.
      matmul_repeats: timed calls per matmul shape (the fastest counts).
      log: progress lines.
    """
    start = time.perf_counter()
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load_average_before": list(os.getloadavg()),
        },
        "stack": profiles.stack(),  # install profile and package versions (coala_dist/profiles.py)
        "configs": {name: _config_summary(components[name].config) for name in SCENARIOS},
        "timed_iterations": timed_iterations,
        "rollout": {},
        "update": {},
        "scan": {},
        "end_to_end": {},
    }
    loops: dict[str, dict[str, float]] = {}
    states: dict[str, TrainState] = {}
    fresh: dict[int, TrainState] = {}  # scenarios sharing components start from one fresh state
    for name in SCENARIOS:
        log(f"bench: {name}: in-process loop, 1 + {timed_iterations} iterations")
        built = components[name]
        if id(built) not in fresh:
            fresh[id(built)] = built.learner.init(keys.seed_key(built.config.seed))
        loops[name], states[name] = time_inprocess_loop(built, timed_iterations, fresh[id(built)])
        loop = loops[name]
        result["rollout"][name] = {
            "agent_steps_per_s": loop["rollout_agent_steps_per_s"],
            "episodes_per_s": loop["rollout_episodes_per_s"],
            "rollout_s": loop["rollout_s"],
            "first_iteration_s": loop["first_iteration_s"],
        }
        result["update"][name] = {"update_s": loop["update_s"]}
    log("bench: linear vs associative scan (the same batch and state)")
    ipd = components["ipd"]
    batch, _ = InProcessSource(ipd).next(states["ipd"])
    for scan_type, key in (("linear", "ipd"), ("associative", "ipd_associative")):
        result["scan"][scan_type] = time_update(components[key], states["ipd"], batch, timed_iterations)
    result["scan"]["associative_over_linear"] = (
        result["scan"]["associative"]["update_s"] / result["scan"]["linear"]["update_s"]
    )
    result["end_to_end"]["inprocess_loop"] = {k: loops["ipd"][k] for k in END_TO_END_FIELDS}
    for launch, num_actors in LAUNCHES:
        key = launch_key(launch, num_actors)
        if (launch, num_actors) not in launches:
            result["end_to_end"][key] = _not_measured("not requested (coala bench --launches)")
            continue
        log(f"bench: distributed launch {launch} with {num_actors} actor(s)")
        try:
            result["end_to_end"][key] = time_launch(
                ipd if launch == "inprocess" else None, ipd.config, launch, num_actors, timed_iterations
            )
        except Exception as error:  # noqa: BLE001 — a launch that cannot run here is recorded, not fatal
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            result["end_to_end"][key] = _not_measured(f"{type(error).__name__}: {reason}")
    result["learner_wait_fraction"] = {
        key: entry["learner_wait_fraction"] for key, entry in result["end_to_end"].items()
    }
    log("bench: FLOP limit")
    minibatch_rows = max(1, ipd.config.meta_batch_size // ipd.config.meta.ppo_num_minibatches) * ipd.config.batch_size
    section, per_step = measure_limit(
        ipd, states["ipd"], rows=matmul_rows, repeats=matmul_repeats, sequence_rows=minibatch_rows
    )
    rate = section["matmul"]["flops_per_s_32x32"]
    loop = loops["ipd"]
    achieved = loop["agent_steps_per_s"]
    rollout_flops = per_step["acting"] + per_step["naive_forward_backward"]
    section["limit"] = {
        "basis": "flops_per_s_32x32: this machine's dense [rows, 32] x [32, 32] matmul speed",
        "agent_steps_per_s": rate / per_step["total"],
        "achieved_agent_steps_per_s": achieved,
        "fraction": achieved * per_step["total"] / rate,
        "rollout_fraction": loop["rollout_agent_steps_per_s"] * rollout_flops / rate,
        "update_fraction": (loop["agent_steps_per_iteration"] / loop["update_s"])
        * per_step["meta_forward_backward"]
        / rate,
    }
    result["flops"] = section
    result["machine"]["load_average_after"] = list(os.getloadavg())
    result["wall_time_s"] = time.perf_counter() - start
    return result


def lookup(result: dict[str, Any], dotted: str) -> Any:
    """result["a"]["b"] for "a.b"; KeyError naming the missing path."""
    value: Any = result
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(dotted)
        value = value[part]
    return value


def markdown_table(result: dict[str, Any]) -> str:
    """The README's results table of a bench JSON."""

    def num(value, fmt: str = ".3g", scale: float = 1.0) -> str:
        return "n/a" if value is None else format(value * scale, fmt)

    r = result
    lines = ["| measurement | value |", "|---|---|"]
    titles = (
        {"ipd": "IPD", "cleanup": "Clean Up"}
        if r.get("quick")
        else {
            "ipd": "IPD (paper config)",
            "cleanup": "Clean Up (Table 5, scaled)",
        }
    )
    for name, title in titles.items():
        rollout = r["rollout"][name]
        lines.append(
            f"| {title} rollout | {num(rollout['agent_steps_per_s'])} agent-steps/s "
            f"({num(rollout['episodes_per_s'])} episodes/s, {num(rollout['rollout_s'])} s per iteration) |"
        )
    lines += [
        f"| IPD update per iteration | {num(r['update']['ipd']['update_s'])} s |",
        f"| Clean Up update per iteration | {num(r['update']['cleanup']['update_s'])} s |",
        f"| IPD update, linear / associative scan | {num(r['scan']['linear']['update_s'])} s / "
        f"{num(r['scan']['associative']['update_s'])} s (×{num(r['scan']['associative_over_linear'], '.2f')}) |",
    ]
    for key, entry in r["end_to_end"].items():
        if entry.get("episodes_per_s") is None:
            lines.append(f"| end-to-end {key} | not measured: {entry.get('reason', '')} |")
        else:
            lines.append(
                f"| end-to-end {key} | {num(entry['episodes_per_s'])} episodes/s, "
                f"{num(entry['agent_steps_per_s'])} agent-steps/s, learner waits "
                f"{num(entry['learner_wait_fraction'], '.0f', 100)}% |"
            )
    f = r["flops"]
    lines += [
        f"| policy forward FLOPs / agent-step (model; as executed; XLA) | {f['forward_per_agent_step']}; "
        f"{f['forward_per_agent_step_dense_gates']}; {num(f['xla_cost_analysis']['acting_step'], '.0f')} |",
        f"| training FLOPs / agent-step (acting + naive + PPO) | {num(f['per_agent_step']['acting'], '.0f')} + "
        f"{num(f['per_agent_step']['naive_forward_backward'], '.0f')} + "
        f"{num(f['per_agent_step']['meta_forward_backward'], '.0f')} = {num(f['per_agent_step']['total'], '.0f')} |",
        f"| dense matmul [{f['matmul']['rows']}, 32] x [32, 32]; the policy's shapes each at its speed | "
        f"{num(f['matmul']['flops_per_s_32x32'], '.3g', 1e-9)} GFLOP/s; "
        f"{num(f['matmul']['policy_mix_flops_per_s'], '.3g', 1e-9)} GFLOP/s |",
        f"| limit = 32x32 matmul FLOP/s ÷ training FLOPs per agent-step | "
        f"{num(f['limit']['agent_steps_per_s'])} agent-steps/s |",
        f"| reached (in-process loop) | {num(f['limit']['achieved_agent_steps_per_s'])} agent-steps/s = "
        f"{num(f['limit']['fraction'], '.2g', 100)}% of the limit (rollout "
        f"{num(f['limit']['rollout_fraction'], '.2g', 100)}%, "
        f"update {num(f['limit']['update_fraction'], '.2g', 100)}%) |",
    ]
    return "\n".join(lines) + "\n"
