"""Throughput of the distributed actor-learner against the plain loop; prints one JSON object.

    python scripts/bench_distributed.py --config=configs/ipd_cpu_pure_shaping.py --iterations=8 --warmup=2 \
        [--runs=plain,inprocess:1,local:1,local:2,local:1>2] [--mode=sync] [--config.FIELD=VALUE ...]

Every run trains `warmup + iterations` updates from scratch with no workdir; the first `warmup` iterations
(compilation, process start-up) are left out of the averages. Per run:

* `episodes_per_s`: meta-episodes consumed by the learner per second of training wall time (the sum of the
  learner's iteration times: wait for data + update);
* `agent_steps_per_s`: episodes/s x B x L x 2 (both players act at every step of every trajectory);
* `learner_update_s`: mean time of one update; `wait_fraction`: the share of iteration time the learner spent
  waiting for its batch (for the plain loop: generating it itself);
* `queue_size_mean`: episodes already waiting in the learner's queues when it asked for a batch;
* `overhead_vs_plain`: iteration time / the plain loop's iteration time - 1 (negative: faster than plain);
* `wall_s`: the whole run including start-up.

A run `local:A>B` is one job scaled while it trains (`coala scale`): it starts with A actors, is asked for B after
`warmup + iterations` iterations, and measures `warmup + iterations` more once the learner publishes for B (it trains
APPLY_ITERATIONS more to leave new actors time to start, or fewer if shrinking took no time); it reports
both phases side by side (`before`, `after`, each leaving out its first `warmup` iterations) and how long the change
took to apply (`apply_s`: request to the driver's confirmation, which waits for new actors to build their rollout).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from coala_dist import xla_flags

xla_flags.configure()  # as the `coala` CLI does, before JAX starts

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", "configs/ipd_cpu_pure_shaping.py", "Experiment config file.")
_ITERATIONS = flags.DEFINE_integer("iterations", 8, "Measured iterations per run.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Iterations left out at the start of each run (compilation).")
_RUNS = flags.DEFINE_list(
    "runs",
    ["plain", "inprocess:1", "local:1", "local:2"],
    "Runs: plain, LAUNCH:NUM_ACTORS with LAUNCH inprocess|local, or local:A>B (scaled from A to B actors while it "
    "trains).",
)
_MODE = flags.DEFINE_enum("mode", "sync", ["sync", "async"], "Mode of the distributed runs.")


def _summary(name: str, history: list[dict[str, float]], config, warmup: int, wall_s: float) -> dict:
    measured = history[warmup:]
    if not measured:
        raise ValueError(f"run {name} produced {len(history)} iterations, none after the {warmup} warm-up ones")
    from coala_dist.config import episodes_per_iteration, meta_trajectory_length

    iteration_s = sum(row["time/iteration_s"] for row in measured)
    waits = [row.get("time/wait_for_data_s", row.get("time/rollout_s", 0.0)) for row in measured]
    episodes_per_s = episodes_per_iteration(config) * len(measured) / iteration_s
    steps_per_episode = config.batch_size * meta_trajectory_length(config)
    queue = [row["replay/queue_size"] for row in measured if "replay/queue_size" in row]
    lags = [row["replay/policy_lag_mean"] for row in measured if "replay/policy_lag_mean" in row]
    return {
        "run": name,
        "iterations_measured": len(measured),
        "iteration_s": round(iteration_s / len(measured), 4),
        "episodes_per_s": round(episodes_per_s, 2),
        "agent_steps_per_s": round(episodes_per_s * steps_per_episode * 2, 1),
        "learner_update_s": round(statistics.mean(row["time/update_s"] for row in measured), 4),
        "wait_fraction": round(sum(waits) / iteration_s, 3),
        "queue_size_mean": round(statistics.mean(queue), 2) if queue else None,
        "policy_lag_mean": round(statistics.mean(lags), 3) if lags else None,
        "wall_s": round(wall_s, 1),
    }


APPLY_ITERATIONS = 40  # a scaled run trains this many more iterations, in which new actors start and build


def _scaled_run(config, run: str, components) -> dict:
    """`local:A>B`: one job, scaled from A to B actors halfway; both phases measured."""
    import tempfile
    import threading

    from coala_dist.distributed.control import request_scale
    from coala_dist.distributed.launch import launch
    from coala_dist.distributed.program import make_program

    before, after = (int(n) for n in run.split(":")[1].split(">"))
    phase = _WARMUP.value + _ITERATIONS.value
    config = config.copy_and_resolve_references()
    config.training_iterations = 2 * phase + APPLY_ITERATIONS
    applied: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as workdir:
        program = make_program(config, launch="local", num_actors=before, mode=_MODE.value, workdir=workdir)
        metrics = os.path.join(workdir, "metrics.csv")

        def rows() -> int:
            if not os.path.exists(metrics):
                return 0
            with open(metrics) as f:
                return sum(1 for _ in f) - 1  # the header

        def scale() -> None:
            while rows() < phase:
                time.sleep(0.1)
            start = time.perf_counter()
            request_scale(workdir, after, timeout_s=600)
            applied["apply_s"] = time.perf_counter() - start

        scaler = threading.Thread(target=scale, daemon=True)
        start = time.perf_counter()
        scaler.start()
        history = launch(program, components=components, log=lambda line: None, forward_node_logs=False).history
        wall_s = time.perf_counter() - start
    first = [row for row in history if row.get("replay/num_actors") == before][:phase]
    second = [row for row in history if row.get("replay/num_actors") == after][:phase]
    return {
        "run": run,
        "before": _summary(f"local:{before}", first, config, _WARMUP.value, wall_s),
        "after": _summary(f"local:{after}", second, config, _WARMUP.value, wall_s),
        "apply_s": round(applied.get("apply_s", float("nan")), 1),
        "wall_s": round(wall_s, 1),
    }


def main(argv: list[str]) -> None:
    del argv
    import jax
    from absl import logging

    logging.set_verbosity(logging.WARNING)

    from coala_dist.builder import build
    from coala_dist.distributed.launch import launch
    from coala_dist.distributed.program import make_program
    from coala_dist.train import train

    config = _CONFIG.value
    config.training_iterations = _WARMUP.value + _ITERATIONS.value
    config.log_every = 10**9
    components = build(config)  # shared by the runs in this process, so each compiles only once
    results = []
    for run in _RUNS.value:
        start = time.perf_counter()
        if ">" in run:
            results.append(_scaled_run(config, run, components))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
            continue
        if run == "plain":
            _, history = train(config, None, components=components, log=lambda line: None)
        else:
            launch_type, num_actors = run.split(":")
            program = make_program(config, launch=launch_type, num_actors=int(num_actors), mode=_MODE.value)
            history = launch(program, components=components, log=lambda line: None, forward_node_logs=False).history
        results.append(_summary(run, history, config, _WARMUP.value, time.perf_counter() - start))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    plain = next((r for r in results if r["run"] == "plain"), None)
    if plain is not None:
        for result in results:
            if "iteration_s" not in result:  # a scaled run: its phases
                continue
            result["overhead_vs_plain"] = round(result["iteration_s"] / plain["iteration_s"] - 1.0, 3)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        json.dumps(
            {
                "config": config_flags.get_config_filename(flags.FLAGS["config"]),
                "overrides": [arg for arg in sys.argv[1:] if arg.startswith("--config.")],
                "mode": _MODE.value,
                "devices": [str(d) for d in jax.devices()],
                "cpus": os.cpu_count(),
                "load_average_at_end": load,
                "runs": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    app.run(main)
