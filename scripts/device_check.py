"""The accelerator check: how this code base runs on the devices JAX finds here, as one JSON object.

    python scripts/device_check.py [--out=FILE.json] [--timed_iterations=5] [--fig5a_iterations=30]

Runs from a copy of the repository without installing it, with only jax (any backend), flax, optax,
orbax-checkpoint, chex, absl-py, numpy, ml_collections and PyYAML importable: no Reverb, Ray or TensorFlow (the
plain in-process loop). It prints:

* `devices`, `stack`: what JAX sees and the package versions;
* `paper_ipd`: the paper's IPD pure-shaping config (`configs/ipd_pure_shaping.py`, Tables 2, 4, 8): the first
  iteration's time (compilation included), then the median rollout, update and iteration times over
  `--timed_iterations` iterations, and agent-steps/s;
* `fig5a`: a short Fig. 5A run (`configs/ipd_cpu_pure_shaping.py`, COALA-PG, seed 0, `--fig5a_iterations`):
  the meta agent's reward per step against naive learners at every iteration, and the wall time.

Finishes in well under 8 minutes on a GPU (on this project's 2-core CPU: about 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from coala_dist import profiles, xla_flags  # noqa: E402

xla_flags.configure()  # before JAX starts its backend, as the `coala` CLI does

import jax  # noqa: E402


def load_config(path: str):
    """Config `path`, relative to the repository (the script may run from any folder)."""
    from coala_dist.configs import load

    return load(os.path.join(REPO, path))


def time_iterations(config_path: str, timed_iterations: int) -> dict:
    """First-iteration and median per-iteration times of the plain loop on `config_path`."""
    from coala_dist.metrics import agent_steps_per_iteration
    from coala_dist.train import train

    config = load_config(config_path)
    config.training_iterations = 1 + timed_iterations
    start = time.perf_counter()
    _, history = train(config, None, log=lambda line: None)
    wall = time.perf_counter() - start
    timed = history[1:]
    rollout = statistics.median(row["time/rollout_s"] for row in timed)
    update = statistics.median(row["time/update_s"] for row in timed)
    iteration = statistics.median(row["time/rollout_s"] + row["time/update_s"] for row in timed)
    steps = agent_steps_per_iteration(config)
    return {
        "config": config_path,
        "first_iteration_s": history[0]["time/rollout_s"] + history[0]["time/update_s"],
        "timed_iterations": timed_iterations,
        "rollout_s": rollout,
        "update_s": update,
        "iteration_s": iteration,
        "agent_steps_per_iteration": steps,
        "agent_steps_per_s": steps / iteration,
        "rollout_agent_steps_per_s": steps / rollout,
        "wall_s": round(wall, 2),
    }


def fig5a_curve(config_path: str, iterations: int) -> dict:
    """A short COALA-PG pure-shaping run: the meta agent's reward per step against naive learners per iteration."""
    from coala_dist.train import train

    config = load_config(config_path)
    config.estimator = "coala"
    config.seed = 0
    config.training_iterations = iterations
    start = time.perf_counter()
    _, history = train(config, None, log=lambda line: None)
    rewards = [round(float(row["vs_naive/ego_reward"]), 4) for row in history]
    coplayer = [round(float(row["vs_naive/coplayer_reward"]), 4) for row in history]
    return {
        "config": config_path,
        "estimator": "coala",
        "seed": 0,
        "iterations": iterations,
        "ego_reward_per_step": rewards,
        "naive_coplayer_reward_per_step": coplayer,
        "wall_s": round(time.perf_counter() - start, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper_config", default="configs/ipd_pure_shaping.py")
    parser.add_argument("--fig5a_config", default="configs/ipd_cpu_pure_shaping.py")
    parser.add_argument("--timed_iterations", type=int, default=5)
    parser.add_argument("--fig5a_iterations", type=int, default=30)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.timed_iterations < 1 or args.fig5a_iterations < 1:
        parser.error("--timed_iterations and --fig5a_iterations must be >= 1")
    start = time.perf_counter()
    result = {
        "devices": [str(device) for device in jax.devices()],
        "backend": jax.default_backend(),
        "stack": profiles.stack(),
        "cpu_count": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
    }
    print(f"device_check: {result['backend']} {result['devices']}", file=sys.stderr, flush=True)
    result["paper_ipd"] = time_iterations(args.paper_config, args.timed_iterations)
    print(f"device_check: paper_ipd {result['paper_ipd']}", file=sys.stderr, flush=True)
    result["fig5a"] = fig5a_curve(args.fig5a_config, args.fig5a_iterations)
    # The device machine has none of these; a core path that imported one would fail there.
    result["imported_optional_modules"] = sorted(
        name for name in ("ray", "reverb", "tensorflow", "tensorboardX", "matplotlib") if name in sys.modules
    )
    result["load_average_after"] = list(os.getloadavg())
    result["wall_s"] = round(time.perf_counter() - start, 2)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
