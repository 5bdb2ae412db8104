"""Where the time of one rollout or update goes, per XLA op.

    python scripts/profile_ops.py update|rollout [CONFIG] [k=v ...]

Builds CONFIG (default `configs/ipd_pure_shaping.py`, the paper's IPD config; `k=v` overrides fields), rolls out one
iteration's meta-batch, compiles the chosen program, times it 3 times, then traces one more call with `jax.profiler`
and sums the XLA:CPU runtime's op events by name (both worker threads merged). Prints JSON: wall times, the total op
time, the time by op kind (fusion kind without its number: `ynn_fusion`, `dot`, `call` (the RG-LRU scans),
`multiply_add_fusion`, ...), by how many times an op ran per call (e.g. the rollout's per-step ops run M·T times,
its naive-learner update M − 1 times), and the top ops.
"""

from __future__ import annotations

import collections
import glob
import json
import re
import sys
import tempfile
import time

from coala_dist import xla_flags

xla_flags.configure()  # as the `coala` CLI does, before JAX starts

import jax  # noqa: E402


def load_config(path: str, overrides: list[str]):
    """Config `path` (a file or a shipped config's name) with `k=v` overrides, each value of its field's type."""
    from coala_dist.configs import load

    config = load(path)
    for override in overrides:
        key, value = override.split("=")
        *parents, last = key.split(".")
        target = config
        for part in parents:
            target = target[part]
        target[last] = type(target[last])(value)
    return config


def op_times(trace_dir: str) -> tuple[dict[str, float], dict[str, int]]:
    """Milliseconds and counts per op name of the XLA:CPU runtime's events in a `jax.profiler` trace."""
    path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
    data = jax.profiler.ProfileData.from_file(path)
    times: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for plane in data.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):  # the runtime's worker threads
                continue
            for event in line.events:
                if event.name.startswith("ThunkExecutor"):
                    continue
                times[event.name] += event.duration_ns / 1e6
                counts[event.name] += 1
    return dict(times), dict(counts)


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else "update"
    if what not in ("update", "rollout"):
        sys.exit(f"profile_ops.py: the first argument must be update or rollout, not {what!r}")
    path = sys.argv[2] if len(sys.argv) > 2 and "=" not in sys.argv[2] else "configs/ipd_pure_shaping.py"
    overrides = [a for a in sys.argv[2:] if "=" in a]
    from coala_dist.builder import build

    components = build(load_config(path, overrides))
    state = components.learner.init(jax.random.PRNGKey(0))
    rollout_args = (
        state.meta_params,
        state.naive_params,
        state.run_key,
        state.version,
        components.rollout.iteration_indices(),
    )
    batch = components.rollout_episodes(*rollout_args)
    if what == "update":
        call = lambda: components.learner_update(state, batch)  # noqa: E731
    else:
        call = lambda: components.rollout_episodes(*rollout_args)  # noqa: E731
    jax.block_until_ready(call())
    wall = []
    for _ in range(3):
        start = time.perf_counter()
        jax.block_until_ready(call())
        wall.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir)
        jax.block_until_ready(call())
        jax.profiler.stop_trace()
        times, counts = op_times(trace_dir)
    by_kind: collections.Counter = collections.Counter()
    by_count: collections.Counter = collections.Counter()
    for name, ms in times.items():
        by_kind[re.sub(r"[._]\d+$", "", name)] += ms
        by_count[counts[name]] += ms
    top = sorted(times.items(), key=lambda item: -item[1])[:25]
    print(
        json.dumps(
            {
                "program": what,
                "config": path,
                "overrides": overrides,
                "wall_s": [round(w, 3) for w in wall],
                "op_total_ms": round(sum(times.values()), 1),
                "by_kind_ms": {k: round(v, 1) for k, v in by_kind.most_common(20)},
                "by_runs_per_call_ms": {str(k): round(v, 1) for k, v in by_count.most_common(8)},
                "top_ops_ms": {name: [round(ms, 1), counts[name]] for name, ms in top},
                "load_average": list(__import__("os").getloadavg()),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
