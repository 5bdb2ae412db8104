"""Results of an experiment (`coala experiment`): per-seed files, the table of final numbers, and the plots.

Numbers reported per run are the mean of a training metric over the last `final_window` iterations (each iteration's
value is already a mean over that iteration's meta-batch); across seeds, mean ± sample std (ddof = 1) as in the
paper's RL figures (mean ± std over 5 seeds, paper App. B.4), and beside it the interquartile mean with its 95 %
stratified-bootstrap interval (`coala_dist.analysis.statistics.seed_summary`). Plots use matplotlib's Agg backend.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from coala_dist.analysis.curves import moving_average
from coala_dist.analysis.ipd_statistics import defection_rates
from coala_dist.analysis.runs import json_safe
from coala_dist.analysis.statistics import BOOTSTRAP_RESAMPLES, aggregate_over_seeds, seed_summary
from coala_dist.analysis.style import color, label
from coala_dist.console import MARKER_MAX_POINTS, counted, smoothing_note

if TYPE_CHECKING:
    from coala_dist.experiments.definitions import Experiment

# Labels of the training metrics used in tables and plots (keys as written by coala_dist.metrics).
METRIC_LABELS = {
    "vs_naive/ego_reward": "meta agent reward/step vs naive",
    "vs_naive/coplayer_reward": "naive co-player reward/step",
    "vs_meta/ego_reward": "reward/step between meta agents",
    "vs_naive/cooperate_player_1": "meta agent cooperation rate vs naive",
    "vs_naive/cooperate_player_2": "naive co-player cooperation rate",
    "vs_meta/cooperate_player_1": "cooperation rate between meta agents",
    # Clean Up-lite (coala_dist/envs/cleanup_lite.py: per-step means of its info, and its episode metrics)
    "vs_naive/zapped_player_1": "meta agent zapped/step vs naive",
    "vs_naive/cleaned_player_1": "meta agent cleaning/step vs naive",
    "vs_naive/cleaned_player_2": "naive co-player cleaning/step",
    "vs_naive/cleaning_discrepancy": "cleaning discrepancy vs naive",
    "vs_naive/pollution": "pollution vs naive",
    "vs_naive/apples": "apples vs naive",
    "vs_meta/zapped_player_1": "zapped/step between meta agents",
    "vs_meta/cleaning_discrepancy": "cleaning discrepancy between meta agents",
    "vs_meta/pollution": "pollution between meta agents",
    "vs_meta/apples": "apples between meta agents",
}
# Floats in an experiment's JSON files (per_seed/*.json, summary.json) keep this many significant digits.
SIGNIFICANT_DIGITS = 5


def report_json(value: Any) -> Any:
    """`value` as an experiment's JSON files hold it: `json_safe` with floats rounded to `SIGNIFICANT_DIGITS`."""
    return json_safe(value, SIGNIFICANT_DIGITS)


def final_window_mean(values: Sequence[float], final_window: int) -> float:
    """Mean of the last `final_window` finite values (NaN marks iterations without such episodes).

    Args:
      values: [iterations] one metric over training.
      final_window: how many of the last iterations to average (clipped to the run's length).

    Returns:
      The mean, or NaN if none of the last values is finite.
    """
    tail = np.asarray(values, dtype=np.float64)[-max(final_window, 1) :]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else math.nan


def _format(mean: float, std: float) -> str:
    return "n/a" if math.isnan(mean) else f"{mean:+.3f} ± {std:.3f}"


def _format_iqm(summary: dict[str, float]) -> str:
    """The IQM cell: "+0.812 [+0.790, +0.830]" (its 95 % stratified-bootstrap interval), or n/a without seeds."""
    if math.isnan(summary["iqm"]):
        return "n/a"
    return f"{summary['iqm']:+.3f} [{summary['iqm_low']:+.3f}, {summary['iqm_high']:+.3f}]"


def _cells(summary: dict[str, float]) -> list[str]:
    """A metric's two table cells: the paper's mean ± std over seeds, then the IQM with its interval."""
    return [_format(summary["mean"], summary["std"]), _format_iqm(summary)]


def write_per_seed_files(out_dir: str, run: dict, metric_names: Sequence[str]) -> None:
    """`per_seed/<estimator>_seed<k>.csv` (iteration and the headline metrics) and `.json` (the run's result)."""
    per_seed = os.path.join(out_dir, "per_seed")
    os.makedirs(per_seed, exist_ok=True)
    stem = os.path.join(per_seed, f"{run['estimator']}_seed{run['seed']}")
    columns = ["iteration", *metric_names, "time/iteration_s"]
    with open(stem + ".csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in run["metrics"]:
            writer.writerow([int(row["iteration"])] + [f"{row.get(c, math.nan):.5g}" for c in columns[1:]])
    with open(stem + ".json", "w") as f:
        json.dump(report_json(run["result"]), f)


def head_to_head_numbers(result: dict, agent_estimators: Sequence[str]) -> dict[str, dict[str, float]]:
    """One run's App. H.3 numbers per rule: means over its agents of the after-training evaluation.

    For rule r: `reward_vs_other_rule` / `cooperation_vs_other_rule` average agent i's reward per step / cooperation
    rate over ordered pairs (i, j) with rule(i) = r ≠ rule(j); `reward_vs_naive` averages the rule's agents' reward
    per step against fresh naive learners.

    Args:
      result: a run's result with `meta_evaluation` ([P][P] matrices) and `evaluation` (rows grouped by agent).
      agent_estimators: the rule of each of the P agents.
    """
    rules = list(agent_estimators)
    num_agents = len(rules)
    naive_rewards = np.asarray(result["evaluation"]["ego_reward"], dtype=np.float64)  # [P·K·r, M]
    naive_per_agent = naive_rewards.reshape(num_agents, -1).mean(axis=1)
    out = {}
    for rule in dict.fromkeys(rules):
        pairs = [(i, j) for i in range(num_agents) for j in range(num_agents) if rules[i] == rule != rules[j]]
        out[rule] = {
            "reward_vs_other_rule": float(np.mean([result["meta_evaluation"]["ego_reward"][i][j] for i, j in pairs])),
            "cooperation_vs_other_rule": float(
                np.mean([result["meta_evaluation"]["cooperate_player_1"][i][j] for i, j in pairs])
            ),
            "reward_vs_naive": float(np.mean([naive_per_agent[i] for i in range(num_agents) if rules[i] == rule])),
        }
    return out


def summarize_runs(experiment: Experiment, runs: list[dict]) -> dict:
    """Per estimator: each headline metric's final value and each evaluation number over seeds, as
    `statistics.seed_summary` gives them (n, mean, std, iqm, iqm_low, iqm_high)."""
    summary: dict = {"experiment": experiment.name, "claim": experiment.claim, "estimators": {}}
    for estimator in experiment.estimators:
        mine = [r for r in runs if r["estimator"] == estimator]
        if not mine:
            continue
        entry: dict = {
            "seeds": [r["seed"] for r in mine],
            "iterations": [r["result"]["iterations"] for r in mine],
            "train_time_s": [r["result"]["train_time_s"] for r in mine],
            # Runs a stop rule ended before their budget (`coala experiment --stop_after_defection`): seed -> iteration.
            "stopped_early": {
                r["seed"]: r["result"]["stopped_early"]["iteration"] for r in mine if r["result"].get("stopped_early")
            },
            "final": {},
            "evaluation": {},
        }
        for metric in experiment.headline_metrics:
            entry["final"][metric] = seed_summary([r["result"]["final"].get(metric, math.nan) for r in mine])
        for metric in ("ego_reward", "coplayer_reward"):
            per_run = [float(np.mean(r["result"]["evaluation"][metric])) for r in mine if r["result"]["evaluation"]]
            entry["evaluation"][metric] = seed_summary(per_run)
        for player, key in (("meta", "cooperate_player_1"), ("naive", "cooperate_player_2")):
            per_run = [
                defection_rates(r["result"]["evaluation"][key])[0]
                for r in mine
                if key in (r["result"]["evaluation"] or {})  # IPD only: Clean Up-lite has no cooperate action
            ]
            if per_run:
                curves = np.stack(per_run)  # [seeds, M]
                # First and last inner episode, and each seed's lowest defection rate over the meta-episode
                # (Fig. 5B: a shaper cooperates most in the middle, then exploits toward the end).
                per_position = {
                    "first": curves[:, 0],
                    "last": curves[:, -1],
                    "min": curves.min(axis=1),
                }
                for position, values in per_position.items():
                    entry["evaluation"][f"defection_{player}_{position}"] = seed_summary(values)
        if experiment.agent_estimators:
            per_run = [head_to_head_numbers(r["result"], experiment.agent_estimators) for r in mine]
            entry["head_to_head"] = {
                rule: {key: seed_summary([p[rule][key] for p in per_run]) for key in per_run[0][rule]}
                for rule in per_run[0]
            }
        summary["estimators"][estimator] = entry
    return summary


def _columns(names: Sequence[str]) -> list[str]:
    """Two columns per metric (see `_cells`)."""
    return [column for name in names for column in (name, f"{name}: IQM [95% CI]")]


def table_markdown(experiment: Experiment, summary: dict, final_window: int) -> str:
    """The markdown table of an experiment's numbers (one row per estimator; per metric, mean ± std and the IQM)."""
    lines = [f"### {experiment.name}", "", f"Claim: {experiment.claim}", ""]
    if experiment.within_meta_episode:
        names = [
            "defection meta, episode 1",
            "defection meta, lowest",
            "defection meta, episode M",
            "defection naive, episode 1",
            "defection naive, episode M",
            "eval reward/step meta",
            "eval reward/step naive",
        ]
        header = ["estimator", "seeds", *_columns(names)]
        keys = [
            ("evaluation", "defection_meta_first"),
            ("evaluation", "defection_meta_min"),
            ("evaluation", "defection_meta_last"),
            ("evaluation", "defection_naive_first"),
            ("evaluation", "defection_naive_last"),
            ("evaluation", "ego_reward"),
            ("evaluation", "coplayer_reward"),
        ]
    else:
        header = ["estimator", "seeds", *_columns([METRIC_LABELS[m] for m in experiment.headline_metrics])]
        keys = [("final", m) for m in experiment.headline_metrics]
    if experiment.agent_estimators:
        header = [
            "agents",
            "seeds",
            *_columns(["reward/step vs the other rule", "cooperation vs the other rule", "reward vs naive"]),
        ]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for entry in summary["estimators"].values():
            for rule, numbers in entry["head_to_head"].items():
                cells = [label(rule), str(len(entry["seeds"]))]
                cells += [cell for value in numbers.values() for cell in _cells(value)]
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")  # then the training numbers of the whole pool
        header = ["pool", "seeds", *_columns([METRIC_LABELS[m] for m in experiment.headline_metrics])]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for estimator, entry in summary["estimators"].items():
        cells = [_run_label(experiment, estimator), str(len(entry["seeds"]))]
        for group, key in keys:
            cells += _cells(entry[group].get(key) or seed_summary([]))
        lines.append("| " + " | ".join(cells) + " |")
    iterations = sorted({i for e in summary["estimators"].values() for i in e["iterations"]})
    times = [t for e in summary["estimators"].values() for t in e["train_time_s"]]
    lines.append("")
    if experiment.within_meta_episode:
        lines.append(
            "Evaluation after training: each meta agent against fresh naive learners (every naive initialisation); "
            "defection rates per inner episode, mean ± std over seeds."
        )
    else:
        lines.append(
            f"Mean over the last {final_window} training iterations per seed, then mean ± std (ddof=1) over seeds."
        )
    lines.append(
        "IQM: the interquartile mean over seeds (⌊n/4⌋ of the n seeds' values cut from each end) with its 95 % "
        f"stratified-bootstrap interval ({BOOTSTRAP_RESAMPLES} resamples; Agarwal et al. 2021)."
    )
    if times:
        lines.append(
            f"Training iterations per run: {', '.join(map(str, iterations))}; wall time per run "
            f"{min(times):.0f}–{max(times):.0f} s (total {sum(times) / 60:.1f} min)."
        )
    stopped = [
        f"{label(estimator)} seed {seed} at iteration {iteration}"
        for estimator, entry in summary["estimators"].items()
        for seed, iteration in entry.get("stopped_early", {}).items()
    ]
    if stopped:
        lines.append(
            "Stopped early, once the reward per step between meta agents had stayed at defection "
            f"(`--stop_after_defection`; their final window ends there): {', '.join(stopped)}."
        )
    return "\n".join(lines) + "\n"


def _run_label(experiment: Experiment, estimator: str) -> str:
    """What one line of a plot is: the estimator, or the whole pool's rules for a head-to-head experiment."""
    if experiment.agent_estimators:
        return " + ".join(label(rule) for rule in experiment.agent_estimators)
    return label(estimator)


def plot_training_curves(experiment: Experiment, runs: list[dict], path: str, smoothing: int = 5) -> None:
    """One panel per headline metric: mean ± std over seeds against the training iteration, per estimator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = experiment.headline_metrics
    columns = min(len(metrics), 4)
    rows = -(-len(metrics) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    points = 0
    for ax, metric in zip(list(axes.flat)[: len(metrics)], metrics, strict=True):
        for estimator in experiment.estimators:
            mine = [r for r in runs if r["estimator"] == estimator]
            if not mine:
                continue
            length = min(len(r["metrics"]) for r in mine)
            curves = np.array([[row.get(metric, math.nan) for row in r["metrics"][:length]] for r in mine])
            curves = moving_average(curves, smoothing)
            iterations = np.arange(1, length + 1)
            points = max(points, length)
            mean, std, _ = aggregate_over_seeds(curves)
            line_color = color(estimator)
            ax.plot(
                iterations,
                mean,
                color=line_color,
                marker="o" if length <= MARKER_MAX_POINTS else None,
                markersize=3,
                label=f"{'pool ' if experiment.agent_estimators else ''}{_run_label(experiment, estimator)} "
                f"({counted(len(mine), 'seed')})",
            )
            ax.fill_between(iterations, mean - std, mean + std, color=line_color, alpha=0.2)
        if "reward" in metric and experiment.results_group == "ipd":  # IPD: mutual cooperation / defection
            ax.axhline(1.0, color="gray", lw=0.8, ls="--")
            ax.axhline(0.0, color="gray", lw=0.8, ls=":")
        ax.set_title(METRIC_LABELS[metric], fontsize=9)
        ax.set_xlabel("training iteration")
    title = f"{experiment.name} (mean ± std over seeds{smoothing_note(smoothing, points)})"
    _finish(fig, axes[0][0], title, path)


def plot_within_meta_episode(experiment: Experiment, runs: list[dict], path: str) -> None:
    """Fig. 5B: defection rates of the meta agent and of the naive co-player per inner-episode index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    panels = (("cooperate_player_1", "meta agent"), ("cooperate_player_2", "naive co-player"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for estimator in experiment.estimators:
            mine = [r for r in runs if r["estimator"] == estimator and r["result"]["evaluation"]]
            if not mine:
                continue
            curves = np.stack([defection_rates(r["result"]["evaluation"][key])[0] for r in mine])  # [seeds, M]
            mean, std, _ = aggregate_over_seeds(curves)
            episodes = np.arange(1, curves.shape[1] + 1)
            line_color = color(estimator)
            ax.plot(
                episodes,
                mean,
                marker="o",
                ms=3,
                color=line_color,
                label=label(estimator),
            )
            ax.fill_between(episodes, mean - std, mean + std, color=line_color, alpha=0.2)
        ax.set_title(f"defection rate: {title}", fontsize=10)
        ax.set_xlabel("inner episode within the meta-episode")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("defection rate")
    title = f"{experiment.name}: trained meta agent vs fresh naive learners (mean ± std over seeds)"
    _finish(fig, axes[0], title, path)


def _finish(fig: Any, legend_axis: Any, title: str, path: str) -> None:
    """The end of every experiment plot: a legend on `legend_axis` if it drew labelled lines, the title, the PNG."""
    import matplotlib.pyplot as plt

    if legend_axis.get_legend_handles_labels()[0]:
        legend_axis.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(experiment: Experiment, runs: list[dict], out_dir: str, final_window: int) -> dict:
    """Writes everything an experiment produces into `out_dir`; returns the summary.

    Files: `per_seed/<estimator>_seed<k>.{csv,json}`, `summary.json`, `table.md`, `<name>.png`.
    """
    os.makedirs(out_dir, exist_ok=True)
    for run in runs:
        write_per_seed_files(out_dir, run, experiment.headline_metrics)
    summary = summarize_runs(experiment, runs)
    summary["final_window"] = final_window
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(report_json(summary), f, indent=1)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table_markdown(experiment, summary, final_window))
    plot_path = os.path.join(out_dir, f"{experiment.name}.png")
    if experiment.within_meta_episode:
        plot_within_meta_episode(experiment, runs, plot_path)
    else:
        plot_training_curves(experiment, runs, plot_path)
    return summary
