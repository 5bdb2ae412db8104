"""Co-players the shaper did not expect: frozen agents against naive learners unlike the ones they trained with.

COALA-PG weights a naive co-player's future episodes by 1/B (paper Eq. 5-7, App. A.1): a shaper trained against
learners that update on B trajectories per inner episode with one learning rate and rule has learned how *those*
learners respond. This study plays every agent against naive learners that differ in one factor at a time from its
own training setting (the run's `naive` section and B, paper Table 8):

* the batch size B they learn from (default 1, 4, 16, 64), at the training learning rate and rule;
* the learning rate times a factor (default 0.3, 1, 3), at the training B and rule;
* the rule (default a2c, pg: policy gradient without a critic, `league.zoo.NAIVE_RULES`), at the training B and rate.

Each setting is `meta_episodes` meta-episodes (the agent in seat 1) with a fresh naive initialisation per
meta-episode. Per agent: the shaper's and the naive learner's reward per step and cooperation rate, mean ± standard
error over meta-episodes; per estimator and setting, across agents (seeds): mean ± std and the IQM with a 95 %
stratified-bootstrap interval (`analysis.statistics.seed_summary`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from coala_dist.analysis import statistics
from coala_dist.league.league import make_game, play_seating
from coala_dist.league.match import Player
from coala_dist.league.zoo import NAIVE_RULES, naive_player

DEFAULT_BATCH_SIZES = (1, 4, 16, 64)
DEFAULT_LR_MULTIPLIERS = (0.3, 1.0, 3.0)
DEFAULT_RULES = NAIVE_RULES
FACTORS = ("batch_size", "lr_multiplier", "rule")


def settings(
    training_batch_size: int,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    lr_multipliers: tuple[float, ...] = DEFAULT_LR_MULTIPLIERS,
    rules: tuple[str, ...] = DEFAULT_RULES,
) -> list[dict[str, Any]]:
    """The naive learners of the study, one factor at a time around the training setting (listed once, first).

    Returns:
      [{"factor", "batch_size", "lr_multiplier", "rule"}]; factor "training" for the training setting itself.
    """
    base = {"batch_size": training_batch_size, "lr_multiplier": 1.0, "rule": "a2c"}
    out = [{"factor": "training", **base}]
    for factor, values in (("batch_size", batch_sizes), ("lr_multiplier", lr_multipliers), ("rule", rules)):
        for value in values:
            setting = {**base, factor: value}
            if setting != base:
                out.append({"factor": factor, **setting})
    return out


def _label(setting: dict[str, Any]) -> str:
    return f"B={setting['batch_size']}, lr×{setting['lr_multiplier']:g}, {setting['rule']}"


def run_mismatch(
    agents: list[Player],
    descriptions: list[dict[str, Any]],
    *,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    lr_multipliers: tuple[float, ...] = DEFAULT_LR_MULTIPLIERS,
    rules: tuple[str, ...] = DEFAULT_RULES,
    meta_episodes: int = 16,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plays every agent against every setting's naive learner; returns the JSON-ready result (`write_mismatch`)."""
    start = time.perf_counter()
    rows = []
    # Naive learners of one setting and one agent description are one player kind: compiled once, shared by seeds.
    naive_cache: dict[tuple[str, tuple[Any, ...]], Player] = {}
    for agent, description in zip(agents, descriptions, strict=True):
        game = make_game(description["game"])
        for setting in settings(description["game"]["batch_size"], batch_sizes, lr_multipliers, rules):
            key = (
                json.dumps([description["policy"], description["naive"], description["game"]], sort_keys=True),
                (setting["batch_size"], setting["lr_multiplier"], setting["rule"]),
            )
            if key not in naive_cache:
                naive_cache[key] = naive_player(
                    description,
                    batch_size=setting["batch_size"],
                    lr_multiplier=setting["lr_multiplier"],
                    rule=setting["rule"],
                    name=f"naive ({_label(setting)})",
                )
            naive = naive_cache[key]
            out = play_seating(agent, naive, game, meta_episodes, seed)
            row = {"agent": agent.name, "group": agent.group, **setting}
            for name, values in (
                ("shaper_reward", out["reward_1"]),
                ("naive_reward", out["reward_2"]),
                ("shaper_cooperation", out.get("cooperate_player_1")),
                ("naive_cooperation", out.get("cooperate_player_2")),
            ):
                if values is not None:
                    row[name] = float(np.mean(values))
                    row[f"{name}_se"] = statistics.standard_error(values)
            rows.append(row)
        log(f"  {agent.name}: {len(rows)} settings played ({time.perf_counter() - start:.0f} s)")
    return {
        "settings": settings(descriptions[0]["game"]["batch_size"], batch_sizes, lr_multipliers, rules)
        if descriptions
        else [],
        "meta_episodes": meta_episodes,
        "seed": seed,
        "rows": rows,
        "groups": _group_rows(rows, seed),
        "seconds": time.perf_counter() - start,
    }


def _group_rows(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["group"], row["factor"], row["batch_size"], row["lr_multiplier"], row["rule"])
        groups.setdefault(key, []).append(row)
    out = []
    for (group, factor, batch_size, lr_multiplier, rule), members in groups.items():
        entry = {
            "group": group,
            "factor": factor,
            "batch_size": batch_size,
            "lr_multiplier": lr_multiplier,
            "rule": rule,
            "agents": len(members),
        }
        for name in ("shaper_reward", "naive_reward"):
            entry[name] = statistics.seed_summary([m[name] for m in members], seed=seed)
        out.append(entry)
    return out


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_mismatch(result: dict[str, Any]) -> str:
    """Per estimator and setting: the shaper's and the naive learner's reward per step across agents (Markdown)."""
    lines = [
        "| estimator | naive learner | agents | shaper reward/step, mean ± std | IQM [95 % CI] | "
        "naive reward/step, mean ± std | IQM [95 % CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in result["groups"]:
        s, n = g["shaper_reward"], g["naive_reward"]
        setting = _label(g) + (" (training)" if g["factor"] == "training" else "")
        lines.append(
            f"| {g['group']} | {setting} | {g['agents']} | {_f(s['mean'])} ± {_f(s['std'])} | {_f(s['iqm'])} "
            f"[{_f(s['iqm_low'])}, {_f(s['iqm_high'])}] | {_f(n['mean'])} ± {_f(n['std'])} | {_f(n['iqm'])} "
            f"[{_f(n['iqm_low'])}, {_f(n['iqm_high'])}] |"
        )
    return "\n".join(lines)


def plot_mismatch(result: dict[str, Any], path: str) -> None:
    """One panel per factor: the shaper's (solid) and the naive learner's (dashed) reward per step against the
    factor's value, IQM with its 95 % interval across agents (the training setting is in every panel)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from coala_dist.analysis.style import ESTIMATOR_STYLE

    colours = {label: colour for label, colour in ESTIMATOR_STYLE.values()}
    fig, axes = plt.subplots(1, len(FACTORS), figsize=(5 * len(FACTORS), 3.8), squeeze=False)
    groups = list(dict.fromkeys(g["group"] for g in result["groups"]))
    for ax, factor in zip(axes[0], FACTORS, strict=True):
        for group in groups:
            entries = [g for g in result["groups"] if g["group"] == group and g["factor"] in (factor, "training")]
            values = sorted({g[factor] for g in entries}, key=lambda v: (isinstance(v, str), v))
            xs = np.arange(len(values)) if factor == "rule" else np.asarray(values, np.float64)
            for name, style in (("shaper_reward", "-o"), ("naive_reward", "--s")):
                stats = [next(g for g in entries if g[factor] == v)[name] for v in values]
                mid = np.asarray([s["iqm"] for s in stats], np.float64)
                err = np.asarray([[s["iqm"] - s["iqm_low"], s["iqm_high"] - s["iqm"]] for s in stats]).T
                who = "shaper" if name == "shaper_reward" else "naive learner"
                ax.errorbar(
                    xs, mid, yerr=err, fmt=style, capsize=3, ms=4, color=colours.get(group), label=f"{group}, {who}"
                )
            if factor == "rule":
                ax.set_xticks(xs, values)
                ax.set_xlim(-0.5, len(values) - 0.5)
            else:
                ax.set_xscale("log")
                ax.minorticks_off()
                ax.set_xticks(xs, [f"{v:g}" for v in values])
        ax.axhline(1.0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(
            {
                "batch_size": "naive learner's B",
                "lr_multiplier": "naive learning rate × training's",
                "rule": "naive learner's rule",
            }[factor],
            fontsize=9,
        )
        ax.set_ylabel("reward per step", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"frozen agents vs naive learners they did not train with: IQM and 95 % interval across agents, "
        f"{result['meta_episodes']} meta-episodes each",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_mismatch(result: dict[str, Any], out_dir: str) -> None:
    """mismatch.json (everything), mismatch.csv (one row per agent and setting), mismatch.md, mismatch.png."""
    from coala_dist.analysis.runs import json_safe

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "mismatch.json"), "w") as f:
        json.dump(json_safe(result), f, indent=1)
    fields = list(dict.fromkeys(k for row in result["rows"] for k in row))
    with open(os.path.join(out_dir, "mismatch.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(result["rows"])
    with open(os.path.join(out_dir, "mismatch.md"), "w") as f:
        f.write(format_mismatch(result) + "\n")
    plot_mismatch(result, os.path.join(out_dir, "mismatch.png"))
