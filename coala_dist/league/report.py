"""The league's outputs: matrices (CSV, JSON) with standard errors, a heatmap, the per-player and per-group tables.

Files written into the output folder:

| file | what |
|---|---|
| `league.json` | everything: players, game, settings, every matrix's mean/se/n, both tables, timing |
| `reward.csv`, `cooperate.csv` (IPD) | matrices of means: row = the player whose value it is, column = its opponent |
| `pairs.csv` | one row per (player, opponent): every matrix's mean, standard error and meta-episode count |
| `players.csv`, `players.md` | the per-player table (`league.per_player_table`) |
| `groups.md` | trained agents aggregated over seeds per estimator (`league.group_table`) |
| `league.png` | heatmaps of the matrices, each cell "mean ± standard error" |
"""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Any

import numpy as np

from coala_dist.league.league import LeagueResult, group_table, per_player_table

TITLES = {
    "reward": "reward per step of the row player",
    "cooperate": "cooperation rate of the row player",
    "cleaned": "cleaning rate of the row player",
    "apple": "apples per step of the row player",
    "zapped": "zapped per step (row player)",
    "frozen": "frozen per step (row player)",
}


def matrices(result: LeagueResult) -> dict[str, dict[str, list[list[float]]]]:
    """metric -> {"mean", "se", "n"}: [N][N] nested lists (row player, column opponent)."""
    count = len(result.players)
    out = {}
    for metric in result.samples:
        cells = [[result.cell(metric, i, j) for j in range(count)] for i in range(count)]
        out[metric] = {field: [[cell[field] for cell in row] for row in cells] for field in ("mean", "se", "n")}
    return out


def summarize(result: LeagueResult) -> dict[str, Any]:
    """The league as one JSON-ready dict (what league.json holds)."""
    from coala_dist.analysis.runs import json_safe

    rows = per_player_table(result, seed=result.seed)
    return json_safe(
        {
            "players": [{"name": p.name, "group": p.group, "zoo": p.zoo, "info": p.info} for p in result.players],
            "game": result.game,
            "meta_episodes_per_seating": result.meta_episodes,
            "seed": result.seed,
            "matrices": matrices(result),
            "players_table": rows,
            "groups_table": group_table(rows, seed=result.seed),
            "seconds": result.seconds,
        }
    )


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_players(summary: dict[str, Any]) -> str:
    """The per-player table as Markdown."""
    coop = any("cooperate_mean" in r for r in summary["players_table"])
    header = "| rank | player | reward/step, mean over opponents ± SE | IQM [95 % CI] | vs zoo | vs agents |"
    rule = "|---|---|---|---|---|---|"
    if coop:
        header += " cooperation |"
        rule += "---|"
    lines = [header, rule]
    for rank, row in enumerate(summary["players_table"], 1):
        name = row["player"] + (" (zoo)" if row["zoo"] else "")
        line = (
            f"| {rank} | {name} | {_f(row['reward_mean'])} ± {_f(row['reward_se'])} | "
            f"{_f(row['reward_iqm'])} [{_f(row['reward_iqm_low'])}, {_f(row['reward_iqm_high'])}] | "
            f"{_f(row['reward_vs_zoo'])} | {_f(row['reward_vs_agents'])} |"
        )
        if coop:
            line += f" {_f(row.get('cooperate_mean'))} |"
        lines.append(line)
    return "\n".join(lines)


def format_groups(summary: dict[str, Any]) -> str:
    """Trained agents per estimator, across seeds, as Markdown ('' without trained agents)."""
    if not summary["groups_table"]:
        return ""
    lines = [
        "| estimator | agents | reward/step over all opponents, mean ± std | IQM [95 % CI] | vs zoo, mean ± std |",
        "|---|---|---|---|---|",
    ]
    for row in summary["groups_table"]:
        r, z = row["reward"], row["reward_vs_zoo"]
        lines.append(
            f"| {row['group']} | {row['agents']} | {_f(r['mean'])} ± {_f(r['std'])} | {_f(r['iqm'])} "
            f"[{_f(r['iqm_low'])}, {_f(r['iqm_high'])}] | {_f(z['mean'])} ± {_f(z['std'])} |"
        )
    return "\n".join(lines)


def plot_league(summary: dict[str, Any], path: str) -> None:
    """Heatmaps of every matrix, each cell 'mean ± SE' (row: the player, column: its opponent)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [p["name"] for p in summary["players"]]
    count = len(names)
    metrics = list(summary["matrices"])
    size = max(5.0, 0.9 * count + 2.5)
    fig, axes = plt.subplots(1, len(metrics), figsize=(size * len(metrics), size * 0.9), squeeze=False)
    font = max(5.0, min(9.0, 100.0 / max(count, 1)))
    for ax, metric in zip(axes[0], metrics, strict=True):
        mean = np.asarray(summary["matrices"][metric]["mean"], np.float64)
        se = np.asarray(summary["matrices"][metric]["se"], np.float64)
        image = ax.imshow(mean, cmap="viridis")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        low, high = np.nanmin(mean), np.nanmax(mean)
        for i in range(count):
            for j in range(count):
                light = high > low and (mean[i, j] - low) / (high - low) < 0.5
                ax.text(
                    j,
                    i,
                    f"{mean[i, j]:.2f}\n±{se[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=font,
                    color="white" if light else "black",
                )
        ax.set_xticks(range(count), names, rotation=60, ha="right", fontsize=font + 1)
        ax.set_yticks(range(count), names, fontsize=font + 1)
        ax.set_xlabel("opponent", fontsize=8)
        ax.set_title(TITLES.get(metric, metric), fontsize=9)
    game = summary["game"]
    fig.suptitle(
        f"{game['env']} league: {summary['meta_episodes_per_seating']} meta-episodes per seating, both seats "
        f"(M = {game['num_inner_episodes']}, T = {game['inner_episode_length']}, B = {game['batch_size']}); "
        "mean ± standard error over meta-episodes",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_league(result: LeagueResult, out_dir: str) -> dict[str, Any]:
    """Writes every file of the module docstring into `out_dir`; returns the summary (league.json's content)."""
    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(result)
    names = [p["name"] for p in summary["players"]]
    with open(os.path.join(out_dir, "league.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for metric, table in summary["matrices"].items():
        with open(os.path.join(out_dir, f"{metric}.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["player \\ opponent", *names])
            for name, row in zip(names, table["mean"], strict=True):
                writer.writerow([name, *row])
    with open(os.path.join(out_dir, "pairs.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        metrics = list(summary["matrices"])
        writer.writerow(["player", "opponent", *[f"{m}_{field}" for m in metrics for field in ("mean", "se", "n")]])
        for i, name in enumerate(names):
            for j, opponent in enumerate(names):
                cells = [summary["matrices"][m][field][i][j] for m in metrics for field in ("mean", "se", "n")]
                writer.writerow([name, opponent, *cells])
    rows = summary["players_table"]
    with open(os.path.join(out_dir, "players.csv"), "w", newline="") as f:
        fields = list(rows[0])
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(out_dir, "players.md"), "w") as f:
        f.write(format_players(summary) + "\n")
    groups = format_groups(summary)
    if groups:
        with open(os.path.join(out_dir, "groups.md"), "w") as f:
            f.write(groups + "\n")
    plot_league(summary, os.path.join(out_dir, "league.png"))
    return summary
