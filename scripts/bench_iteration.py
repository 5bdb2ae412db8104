"""Time one training iteration (rollout + update) of a config: `python scripts/bench_iteration.py CONFIG [N] [k=v ...]`.

Prints JSON: `learner.init` seconds, the first iteration (compilation included; with JAX's compilation cache warm,
a second run of the same config loads the programs instead), the median rollout / update / total seconds over N
timed iterations, the rollout's agent-steps/s, the install profile and the load average before and after.
`k=v` overrides config fields (e.g. `compute.gradient_chunk_trajectories=0`); `$COALA_COMPILATION_CACHE` chooses
the cache (`off`, or a directory).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from coala_dist import xla_flags

xla_flags.configure()  # as the `coala` CLI does, before JAX starts

import jax  # noqa: E402


def main() -> None:
    from coala_dist.configs import load

    path = sys.argv[1] if len(sys.argv) > 1 else "configs/ipd_pure_shaping.py"
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    config = load(path)
    for override in sys.argv[3:]:
        key, value = override.split("=")
        target = config
        parts = key.split(".")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = type(target[parts[-1]])(value)

    from coala_dist import profiles
    from coala_dist.builder import build
    from coala_dist.metrics import MetricsCsvWriter, agent_steps_per_iteration
    from coala_dist.train import InProcessSource, PreparedLearner, learner_loop

    load_before = list(os.getloadavg())
    config.training_iterations = 1 + repeats  # the first iteration includes compilation
    components = build(config)
    start = time.perf_counter()
    state = jax.block_until_ready(components.learner.init(jax.random.PRNGKey(0)))
    init_s = time.perf_counter() - start
    recorder = MetricsCsvWriter(None)
    learner_loop(PreparedLearner(components, state, [recorder]), InProcessSource(components))
    compile_s = recorder.history[0]["time/iteration_s"]
    rollouts = [m["time/rollout_s"] for m in recorder.history[1:]]
    updates = [m["time/update_s"] for m in recorder.history[1:]]
    print(
        json.dumps(
            {
                "config": path,
                "overrides": sys.argv[3:],
                "init_s": round(init_s, 3),
                "first_iteration_s": round(compile_s, 3),
                "rollout_s": round(statistics.median(rollouts), 3),
                "update_s": round(statistics.median(updates), 3),
                "iteration_s": round(statistics.median(r + u for r, u in zip(rollouts, updates, strict=True)), 3),
                "rollout_agent_steps_per_s": round(agent_steps_per_iteration(config) / statistics.median(rollouts)),
                "compilation_cache": os.environ.get("JAX_COMPILATION_CACHE_DIR"),
                "stack": profiles.stack(),
                "load_average_before": load_before,
                "load_average_after": list(os.getloadavg()),
                "devices": [str(d) for d in jax.devices()],
            }
        )
    )


if __name__ == "__main__":
    main()
