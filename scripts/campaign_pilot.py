"""The reproduction campaign's pilot (results/ipd/pilot/README.md): short runs of each candidate allocation of the
Fig. 5C and App. H.3 pools, with `coala snr` of the run's parameters at fixed points of training.

    python scripts/campaign_pilot.py --arms=fig5c-n128-lr1e-3,h3-n128-lr1e-3 --workdir_root=workdirs/pilot

Each arm trains in stages (a third of its budget each) through the one training loop, resuming from its workdir;
after each stage (and before the first) it measures the gradient SNR of its newest parameters (`analysis.snr`,
K meta-batches of the run's own size) and writes `snr_<iteration>.json` beside metrics.csv. Rerunning the same
command skips finished stages and resumes an interrupted one from its newest checkpoint; SIGTERM stops at the end of
the current iteration with a checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Arm name -> (experiment, meta-batch per agent, learning rate, iterations). Equal data per arm: N · iterations =
# 19,200 meta-episodes per agent.
ARMS = {
    "fig5c-n32-lr1e-3": ("ipd-fig5c", 32, 1e-3, 600),
    "fig5c-n32-lr3e-4": ("ipd-fig5c", 32, 3e-4, 600),
    "fig5c-n128-lr1e-3": ("ipd-fig5c", 128, 1e-3, 150),
    "fig5c-n128-lr3e-4": ("ipd-fig5c", 128, 3e-4, 150),
    "h3-n32-lr1e-3": ("ipd-h3", 32, 1e-3, 600),
    "h3-n128-lr1e-3": ("ipd-h3", 128, 1e-3, 150),
}
PILOT_SEED = 9  # seeds 0-4 stay unseen by the pilot: the final runs use them
STAGES = 3
SNR_META_BATCHES = 6


def arm_config(name: str):
    from coala_dist.experiments.definitions import EXPERIMENTS, experiment_config

    experiment, meta_batch, learning_rate, iterations = ARMS[name]
    return experiment_config(
        EXPERIMENTS[experiment],
        "coala",
        PILOT_SEED,
        extra_overrides={
            "meta_batch_size": meta_batch,
            "meta.learning_rate": learning_rate,
            "training_iterations": iterations,
            "checkpoint.save_every": max(5, iterations // 30),
            "log_every": 5,
        },
    )


def measure_snr(components, state, path: str, estimators: tuple[str, ...]) -> None:
    from coala_dist.analysis import snr
    from coala_dist.analysis.runs import json_safe

    start = time.perf_counter()
    result = snr.measure(components, state, snr.SnrSettings(num_batches=SNR_META_BATCHES, estimators=estimators))
    result["wall_s"] = time.perf_counter() - start
    with open(path + ".tmp", "w") as f:
        json.dump(json_safe(result), f, indent=1)
    os.replace(path + ".tmp", path)
    print(snr.format_report(result), flush=True)


def run_arm(name: str, workdir_root: str) -> None:
    from coala_dist import keys
    from coala_dist.builder import build
    from coala_dist.train import train

    config = arm_config(name)
    workdir = os.path.join(workdir_root, name)
    os.makedirs(workdir, exist_ok=True)
    # The H.3 pool: COALA-PG's and M-FOS's view of the same batches (agents 0-1 are COALA-PG, 2-3 M-FOS).
    estimators = ("coala", "mfos") if ARMS[name][0] == "ipd-h3" else ("coala",)
    components = build(config)
    total = config.training_iterations
    stage_ends = [round(total * (s + 1) / STAGES) for s in range(STAGES)]
    initial = os.path.join(workdir, "snr_0.json")
    if not os.path.exists(initial):
        measure_snr(components, components.learner.init(keys.seed_key(config.seed)), initial, estimators)
    for end in stage_ends:
        path = os.path.join(workdir, f"snr_{end}.json")
        if os.path.exists(path):
            continue
        stage = config.copy_and_resolve_references()
        stage.training_iterations = end
        start = time.perf_counter()
        state, _ = train(stage, workdir, components=components, log=lambda line: print(f"[{name}] {line}", flush=True))
        with open(os.path.join(workdir, "stage_times.jsonl"), "a") as f:
            f.write(json.dumps({"end": end, "step": int(state.step), "wall_s": time.perf_counter() - start}) + "\n")
        if int(state.step) < end:
            raise SystemExit(f"{name} stopped at iteration {int(state.step)}; rerun to resume")
        measure_snr(components, state, path, estimators)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", required=True, help=f"comma-separated, out of {', '.join(ARMS)}")
    parser.add_argument("--workdir_root", default="workdirs/pilot")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"campaign_pilot: unknown arms {unknown}; known: {', '.join(ARMS)}", file=sys.stderr)
        raise SystemExit(2)
    for arm in arms:
        run_arm(arm, args.workdir_root)


if __name__ == "__main__":
    main()
