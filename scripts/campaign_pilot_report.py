"""Report of the campaign's pilot (scripts/campaign_pilot.py): every arm's curve, its SNR readings, and the
allocation that the rule fixed in results/ipd/pilot/README.md picks.

    python scripts/campaign_pilot_report.py --workdir_root=workdirs/pilot --out=results/ipd/pilot

Writes OUT/arms.json (per arm: iterations done, time per iteration, windows of the reward between meta agents and
against naive learners, the SNR readings), OUT/snr.md (the readings as a table), OUT/pilot.png (curves and future
SNR per arm) and prints the rule's decision. Arms that have not finished are reported as far as they got.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from campaign_pilot import ARMS  # noqa: E402

PAPER_DISTANCE = 3e-4 * 3000  # the paper's learning rate × iterations (Table 3, Table 8)
TWO_HOURS_S = 2 * 3600
WINDOW = 25  # iterations per window of the reported curves


def read_metrics(path: str) -> list[dict[str, float]]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = []
        for row in csv.DictReader(f):
            try:
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
            except ValueError:
                continue
    return rows


def snr_readings(workdir: str, experiment: str) -> list[dict[str, float]]:
    """Future-episode SNR of the COALA-PG agents at each reading (H.3: agents 0-1 are the COALA-PG ones)."""
    readings = []
    for path in glob.glob(os.path.join(workdir, "snr_*.json")):
        iteration = int(re.search(r"snr_(\d+)\.json$", path).group(1))
        with open(path) as f:
            result = json.load(f)
        parts = result["estimators"]["coala"]
        agents = [0, 1] if experiment == "ipd-h3" else list(range(result["population_size_meta"]))
        row = {"iteration": iteration}
        for part in ("total", "current_episode", "future_episodes"):
            per_agent = parts[part]["per_agent"]
            row[f"{part}_snr"] = statistics.mean(per_agent[a]["snr"] for a in agents)
            row[f"{part}_cosine"] = statistics.mean(per_agent[a]["cosine_mean"] for a in agents)
        if "mfos" in result["estimators"]:  # the M-FOS agents' own rule on the same batches
            per_agent = result["estimators"]["mfos"]["total"]["per_agent"]
            row["mfos_agents_total_snr"] = statistics.mean(per_agent[a]["snr"] for a in (2, 3))
        readings.append(row)
    return sorted(readings, key=lambda r: r["iteration"])


def windows(rows: list[dict[str, float]], key: str) -> list[tuple[int, float]]:
    out = []
    for start in range(0, len(rows), WINDOW):
        chunk = [r[key] for r in rows[start : start + WINDOW] if key in r]
        if chunk:
            out.append((int(rows[min(start + WINDOW, len(rows)) - 1]["iteration"]), statistics.mean(chunk)))
    return out


def summarize(workdir_root: str) -> dict[str, dict]:
    arms = {}
    for name, (experiment, meta_batch, lr, iterations) in ARMS.items():
        workdir = os.path.join(workdir_root, name)
        rows = read_metrics(os.path.join(workdir, "metrics.csv"))
        times = [r["time/iteration_s"] for r in rows[1:] if "time/iteration_s" in r]  # the first one compiles
        arms[name] = {
            "experiment": experiment,
            "meta_batch_size": meta_batch,
            "learning_rate": lr,
            "pilot_iterations": iterations,
            "iterations_done": len(rows),
            "median_iteration_s_two_at_a_time": statistics.median(times) if times else None,
            "vs_meta_reward_windows": windows(rows, "vs_meta/ego_reward"),
            "vs_naive_reward_windows": windows(rows, "vs_naive/ego_reward"),
            "snr": snr_readings(workdir, experiment),
        }
    return arms


def median_future(readings: list[dict]) -> float | None:
    values = [r["future_episodes_snr"] for r in readings]
    return statistics.median(values) if values else None


def pick(
    arms: dict[str, dict], experiment: str, slowdown: float, seconds_alone: dict[int, float] | None = None
) -> dict:
    """The rule of results/ipd/pilot/README.md, applied to `experiment`'s arms.

    Rule 3 takes the time per iteration alone from `seconds_alone` (meta-batch -> seconds, measured side by side on a
    quiet machine) where it has the chosen N, else the arm's median time two at a time divided by `slowdown`.
    """
    by_n: dict[int, list[dict]] = {}
    for arm in arms.values():
        if arm["experiment"] == experiment:
            by_n.setdefault(arm["meta_batch_size"], []).extend(arm["snr"])
    medians = {n: median_future(r) for n, r in sorted(by_n.items())}
    resolved = [n for n, m in medians.items() if m is not None and m >= 1.0]
    n = min(resolved) if resolved else 128
    candidates = {}
    for name, arm in arms.items():
        if arm["experiment"] != "ipd-fig5c" or arm["meta_batch_size"] != n:
            continue  # learning rate and iterations come from the Fig. 5C arms at that N (rules 2-3)
        if seconds_alone and n in seconds_alone:
            alone = seconds_alone[n]
        else:
            two = arm["median_iteration_s_two_at_a_time"]
            alone = None if two is None else two / slowdown
        iterations = None if alone is None else int(TWO_HOURS_S / alone // 50 * 50)
        candidates[arm["learning_rate"]] = {
            "arm": name,
            "resolved_after_start": sum(r["future_episodes_snr"] >= 1 for r in arm["snr"] if r["iteration"] > 0),
            "iterations_in_2h": iterations,
        }

    def key(lr: float) -> tuple:
        c = candidates[lr]
        if c["iterations_in_2h"] is None:
            return (-c["resolved_after_start"], math.inf)
        distance = abs(math.log(lr * c["iterations_in_2h"] / PAPER_DISTANCE))
        return (-c["resolved_after_start"], distance)

    lr = min(candidates, key=key) if candidates else None
    return {
        "median_future_snr_by_n": medians,
        "meta_batch_size": n,
        "learning_rate": lr,
        "candidates": candidates,
        "iterations": candidates[lr]["iterations_in_2h"] if lr is not None else None,
    }


def snr_table(arms: dict[str, dict]) -> str:
    lines = [
        "| arm | iteration | future SNR | future cosine | current SNR | total SNR | M-FOS agents' SNR |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, arm in arms.items():
        for r in arm["snr"]:
            mfos = r.get("mfos_agents_total_snr")
            lines.append(
                f"| {name} | {r['iteration']} | {r['future_episodes_snr']:.3f} | {r['future_episodes_cosine']:+.3f} | "
                f"{r['current_episode_snr']:.3g} | {r['total_snr']:.3f} | {'' if mfos is None else f'{mfos:.3f}'} |"
            )
    return "\n".join(lines) + "\n"


def plot(arms: dict[str, dict], workdir_root: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, arm in arms.items():
        rows = read_metrics(os.path.join(workdir_root, name, "metrics.csv"))
        if not rows:
            continue
        episodes = [r["iteration"] * arm["meta_batch_size"] for r in rows]
        for ax, key in ((axes[0], "vs_meta/ego_reward"), (axes[1], "vs_naive/ego_reward")):
            values = [r.get(key, math.nan) for r in rows]
            width = max(1, len(values) // 30)
            smooth = [statistics.mean(values[max(0, i - width + 1) : i + 1]) for i in range(len(values))]
            ax.plot(episodes, smooth, label=name, marker="." if len(values) < 5 else None)
        if arm["snr"]:
            axes[2].plot(
                [r["iteration"] * arm["meta_batch_size"] for r in arm["snr"]],
                [max(r["future_episodes_snr"], 1e-3) for r in arm["snr"]],
                marker="o",
                label=name,
            )
    axes[0].set_title("reward/step between meta agents (COALA-PG agents)")
    axes[1].set_title("reward/step of meta agents vs naive learners")
    axes[2].set_title("COALA-PG future-episode SNR of one meta-batch")
    axes[2].set_yscale("log")
    axes[2].axhline(1.0, color="k", lw=0.8, ls="--")
    for ax in axes:
        ax.set_xlabel("meta-episodes per agent")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir_root", default="workdirs/pilot")
    parser.add_argument("--out", default="workdirs/pilot/report")
    parser.add_argument(
        "--slowdown",
        type=float,
        default=1.0,
        help="time per iteration two at a time ÷ alone, measured side by side (rule 3)",
    )
    parser.add_argument(
        "--seconds_alone",
        default="",
        help="N:seconds,... time per iteration of one run alone on a quiet machine (rule 3), e.g. 32:4.24,128:13.98",
    )
    args = parser.parse_args()
    try:
        seconds_alone = {
            int(n): float(s) for n, s in (part.split(":") for part in args.seconds_alone.split(",") if part)
        }
    except ValueError:
        parser.error(f"--seconds_alone={args.seconds_alone!r}: give N:seconds pairs, e.g. 32:4.24,128:13.98")
    arms = summarize(args.workdir_root)
    os.makedirs(args.out, exist_ok=True)
    fig5c = pick(arms, "ipd-fig5c", args.slowdown, seconds_alone)
    h3 = pick(arms, "ipd-h3", args.slowdown, seconds_alone)
    # Rule 4: H.3 takes the Fig. 5C allocation unless its own arms ask for a larger N.
    h3_allocation = h3 if h3["meta_batch_size"] > fig5c["meta_batch_size"] else dict(fig5c, from_fig5c=True)
    decision = {"ipd-fig5c": fig5c, "ipd-h3": dict(h3_allocation, median_future_snr_by_n=h3["median_future_snr_by_n"])}
    with open(os.path.join(args.out, "arms.json"), "w") as f:
        json.dump(
            {"arms": arms, "decision": decision, "slowdown": args.slowdown, "seconds_alone": seconds_alone}, f, indent=1
        )
    with open(os.path.join(args.out, "snr.md"), "w") as f:
        f.write(snr_table(arms))
    plot(arms, args.workdir_root, os.path.join(args.out, "pilot.png"))
    print(snr_table(arms))
    for name, arm in arms.items():
        meta = [f"{v:.2f}" for _, v in arm["vs_meta_reward_windows"]]
        print(f"{name}: {arm['iterations_done']} iterations; reward between meta agents per window: {meta}")
    print(json.dumps(decision, indent=1))


if __name__ == "__main__":
    main()
