"""Writes results/agents/manifest.json from the exported agents' own files (each folder's agent.json and config.json).

    python scripts/agents_manifest.py [--root=results/agents]

One entry per agent folder, sorted by name: what it is (estimator, pool, meta-batch, learning rate, seed, agent index,
iteration), the run it came from, and the run's final-window reward per step against naive learners and between meta
agents (None where the pool has no such games).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _pool(agent: dict) -> str:
    agents = agent["population_size_meta"]
    return f"p_naive {agent['p_naive']:g}, {agents} meta agent{'s' if agents > 1 else ''}"


def _final(agent: dict, key: str) -> float | None:
    value = agent.get("final_metrics", {}).get("final_window", {}).get(key)
    return None if value is None else round(float(value), 3)


def entry(root: str, name: str) -> dict:
    with open(os.path.join(root, name, "agent.json")) as f:
        agent = json.load(f)
    with open(os.path.join(root, name, "config.json")) as f:
        config = json.load(f)
    return {
        "name": agent["name"],
        "folder": f"{os.path.basename(os.path.normpath(root))}/{name}",
        "estimator": agent["estimator"],
        "pool": _pool(agent),
        "meta_batch_size": config["meta_batch_size"],
        "learning_rate": config["meta"]["learning_rate"],
        "seed": agent["seed"],
        "agent_index": agent["agent_index"],
        "iteration": agent["iteration"],
        "source_run": agent["source"]["workdir"],
        "run_final_window_reward_vs_naive": _final(agent, "vs_naive/ego_reward"),
        "run_final_window_reward_between_meta_agents": _final(agent, "vs_meta/ego_reward"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="results/agents")
    args = parser.parse_args()
    if not os.path.isdir(args.root):
        print(f"agents_manifest: --root={args.root} is not a folder", file=sys.stderr)
        raise SystemExit(2)
    names = sorted(
        name for name in os.listdir(args.root) if os.path.exists(os.path.join(args.root, name, "agent.json"))
    )
    manifest = {"agents": [entry(args.root, name) for name in names]}
    path = os.path.join(args.root, "manifest.json")
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)
    print(f"{path}: {len(names)} agents")


if __name__ == "__main__":
    main()
