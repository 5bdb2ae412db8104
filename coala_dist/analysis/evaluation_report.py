"""`coala eval`'s output: the evaluation (`coala_dist.analysis.evaluation.evaluate`) as text tables and a PNG.

IPD: the meta agent's P(C | state) per inner episode, both players' cooperation rates and rewards, the ZD extortion
fit (paper Eq. 18, Fig. 8). Clean Up: the paper's metrics per inner episode (paper App. B.1.2, App. H.2). A group
absent from the result (between meta agents, for an exported agent) is left out. Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from coala_dist.analysis.cleanup_metrics import CLEANUP_METRICS
from coala_dist.analysis.ipd_statistics import IPD_STATE_NAMES

# The co-player groups of an evaluation (its result's keys) and their titles.
GROUPS = (("vs_naive", "against fresh naive learners"), ("vs_meta", "between meta agents"))


def _number(value: float | None, width: int = 6, precision: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a".rjust(width)
    return f"{value:{width}.{precision}f}"


def _chi(chi: float | None, phi: float | None, width: int) -> str:
    # With φ = 0 the ZD strategy is (1, 1, 0, 0) whatever χ: the fitted χ (at its grid bound) means nothing.
    if phi is not None and chi is not None and phi < 1e-6:
        return "-".rjust(width)
    return _number(chi, width, 2)


def _groups(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The co-player groups an evaluation has: both for a run, "vs_naive" only for an exported agent."""
    return [(group, title) for group, title in GROUPS if group in result]


def format_report(result: dict[str, Any]) -> str:
    """The evaluation as text tables, one per co-player type (a group absent from `result` is left out)."""
    lines = []
    if "agent" in result:
        agent, co = result["agent"], result["coplayer"]
        lines.append(
            f"agent {agent['name']} ({agent.get('estimator')}, seed {agent.get('seed')}, meta agent "
            f"{agent.get('agent_index')} of its run); co-players: fresh naive learners as in its training "
            f"({co.get('rule')}, learning rate {co.get('learning_rate'):g}, B={co.get('batch_size')})"
        )
    for group, title in _groups(result):
        summary = result[group]
        if summary is None:
            lines.append(f"{title}: no such episodes (p_naive and the population decide which co-players occur)\n")
            continue
        count = f"{summary['episodes']} meta-episode{'s' if summary['episodes'] != 1 else ''}"
        lines.append(f"{title}: {count} x B={result['batch_size']} games, after {result['step']} updates")
        per = summary["per_inner_episode"]
        if result["env"] == "ipd":
            states = summary["cooperation_by_state"]
            fit = summary["zd_extortion_fit"]
            header = " ".join(f"{'P(C|' + s + ')':>9}" for s in states["states"])
            lines.append(
                f"  {'ep':>3} {header} | {'coop_meta':>9} {'coop_co':>8} | {'r_meta':>7} {'r_co':>7} | "
                f"{'ZD chi':>7} {'phi':>6} {'sq.err':>7}"
            )
            for m, row in enumerate(states["per_inner_episode"]):
                cells = " ".join(_number(p, 9) for p in row)
                lines.append(
                    f"  {m + 1:3d} {cells} | {_number(per['cooperate_player_1']['mean'][m], 9)} "
                    f"{_number(per['cooperate_player_2']['mean'][m], 8)} | "
                    f"{_number(per['ego_reward']['mean'][m], 7)} {_number(per['coplayer_reward']['mean'][m], 7)} | "
                    f"{_chi(fit['per_inner_episode']['chi'][m], fit['per_inner_episode']['phi'][m], 7)} "
                    f"{_number(fit['per_inner_episode']['phi'][m], 6)} "
                    f"{_number(fit['per_inner_episode']['squared_error'][m], 7, 4)}"
                )
            cells = " ".join(_number(p, 9) for p in states["overall"])
            overall = fit["overall"]
            lines.append(
                f"  all {cells} | ZD extortion fit of P(C|CC,CD,DC,DD): chi {_chi(overall['chi'], overall['phi'], 0)}, "
                f"phi {_number(overall['phi'], 0)}, squared error {_number(overall['squared_error'], 0, 4)}"
            )
        elif result["env"] == "cleanup_lite":
            paper = summary["paper_metrics"]
            names = [name for name, _ in CLEANUP_METRICS]
            lines.append("  " + f"{'ep':>3} " + " ".join(f"{n[:12]:>12}" for n in names))
            for m in range(result["num_inner_episodes"]):
                cells = " ".join(_number(paper["per_inner_episode"][n][m], 12) for n in names)
                lines.append(f"  {m + 1:3d} {cells}")
            lines.append("  all " + " ".join(_number(paper["overall"][n], 12) for n in names))
        lines.append("")
    return "\n".join(lines)


def plot_evaluation(result: dict[str, Any], out_path: str) -> None:
    """IPD: P(C | state) per inner episode for each co-player type, cooperation rates and rewards per inner
    episode. Clean Up: each of the paper's metrics per inner episode, one line per co-player type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    episodes = np.arange(1, result["num_inner_episodes"] + 1)
    groups = _groups(result)
    present = [(g, t) for g, t in groups if result[g] is not None]
    styles = {"vs_naive": "-", "vs_meta": "--"}
    if result["env"] == "ipd":
        fig, axes = plt.subplots(1, len(groups) + 2, figsize=(4.25 * (len(groups) + 2), 3.6))
        for ax, (group, title) in zip(axes[: len(groups)], groups, strict=True):
            summary = result[group]
            ax.set_title(f"meta agent P(cooperate | state), {title}", fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            if summary is None:
                ax.text(0.5, 0.5, "no such episodes", ha="center", va="center", transform=ax.transAxes)
                continue
            table = np.array(summary["cooperation_by_state"]["per_inner_episode"], dtype=np.float64)
            for s, name in enumerate(IPD_STATE_NAMES):
                ax.plot(episodes, table[:, s], marker="o", ms=2.5, label=name)
            chi = summary["zd_extortion_fit"]["overall"]["chi"]
            error = summary["zd_extortion_fit"]["overall"]["squared_error"]
            if chi is not None and math.isfinite(chi):
                ax.set_title(f"{ax.get_title()}\nZD fit: chi={chi:.2f}, sq. error={error:.3f}", fontsize=8)
            ax.legend(fontsize=7, ncol=2)
        panels = (
            (axes[-2], "cooperation rate per inner episode", "cooperate_player_1", "cooperate_player_2"),
            (axes[-1], "reward per step per inner episode", "ego_reward", "coplayer_reward"),
        )
        for ax, title, ego_key, co_key in panels:
            for group, label in present:
                per = result[group]["per_inner_episode"]
                ax.plot(episodes, per[ego_key]["mean"], styles[group], color="tab:blue", label=f"meta, {label}")
                ax.plot(episodes, per[co_key]["mean"], styles[group], color="tab:red", label=f"co-player, {label}")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
        for ax in axes:
            ax.set_xlabel("inner episode", fontsize=8)
            ax.grid(alpha=0.3)
    else:
        fig, axes = plt.subplots(2, 4, figsize=(17, 6.4))
        for ax, (name, title) in zip(axes.ravel(), CLEANUP_METRICS, strict=False):
            for group, label in present:
                values = result[group]["paper_metrics"]["per_inner_episode"][name]
                ax.plot(episodes, values, styles[group], marker="o", ms=2.5, label=label)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("inner episode", fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        axes.ravel()[-1].axis("off")
    for ax in fig.axes:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # inner episodes are whole
    who = f"agent {result['agent']['name']}" if "agent" in result else "trained meta agents"
    fig.suptitle(f"{result['env']}: {who} after {result['step']} updates", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
