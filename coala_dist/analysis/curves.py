"""Training curves of several runs in the style of the paper's Fig. 5: mean ± std over seeds, one colour per estimator.

Runs are grouped by their estimator (read from the config saved with their checkpoints; runs without one are their
own group, named after their work directory); runs whose configs differ in more than the seed are never averaged
together (`group_runs`), and a folder given twice counts once (`distinct_workdirs`). Within a group every run is
one seed: at each iteration the curve is the mean over the seeds that reached it and the band is ± the sample
standard deviation (ddof = 1), as in the paper's RL figures (mean ± std over 5 seeds, paper App. B.4, Figs. 5–7).
Each run is first smoothed by a trailing moving average over iterations.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from coala_dist.analysis.runs import Run
from coala_dist.analysis.statistics import aggregate_over_seeds
from coala_dist.analysis.style import ESTIMATOR_STYLE
from coala_dist.console import MARKER_MAX_POINTS, counted, smoothing_note

# (metric key, panel title), in the order panels are filled; metrics no run has are skipped.
CANDIDATE_METRICS = (
    ("vs_naive/ego_reward", "meta agent reward/step vs naive learners"),
    ("vs_naive/coplayer_reward", "naive learner reward/step"),
    ("vs_meta/ego_reward", "reward/step between meta agents"),
    ("vs_naive/cooperate_player_1", "meta agent cooperation rate vs naive"),
    ("vs_naive/cooperate_player_2", "naive learner cooperation rate"),
    ("vs_meta/cooperate_player_1", "cooperation rate between meta agents"),
    ("vs_naive/zapped_player_1", "meta agent zapped per step vs naive"),
    ("vs_naive/pollution", "pollution vs naive"),
    ("vs_naive/apples", "apples vs naive"),
    ("vs_meta/zapped_player_1", "zapped per step between meta agents"),
)
MAX_DEFAULT_PANELS = 6
OTHER_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive", "tab:cyan")


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average along the last axis, ignoring NaN: out[..., i] = mean of the finite values among
    values[..., max(0, i − window + 1) : i + 1]; NaN where there is none.

    Args:
      values: [..., I].
      window: number of iterations averaged (1: unchanged).

    Returns:
      [..., I] float64.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0), axis=-1)
    counts = np.cumsum(finite, axis=-1).astype(np.float64)
    if window < values.shape[-1]:
        sums[..., window:] = sums[..., window:] - sums[..., :-window].copy()
        counts[..., window:] = counts[..., window:] - counts[..., :-window].copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def metric_matrix(runs: Sequence[Run], metric: str) -> np.ndarray:
    """[S, I] values of `metric` by run and iteration (column i is iteration i + 1); NaN where absent."""
    last = max((int(row["iteration"]) for run in runs for row in run.rows), default=0)
    matrix = np.full((len(runs), last), np.nan)
    for s, run in enumerate(runs):
        for row in run.rows:
            matrix[s, int(row["iteration"]) - 1] = row.get(metric, math.nan)
    return matrix


def _experiment_without_seed(run: Run) -> dict:
    """The run's experiment-defining config fields (as a resume compares them) except the seed: what its seeds share.
    Empty for a run without a saved config."""
    from coala_dist.checkpoint import experiment_fields

    if run.config is None:
        return {}
    fields = experiment_fields(run.config)
    fields.pop("seed", None)
    return fields


def _differing_fields(configs: Sequence[dict]) -> list[str]:
    """The fields whose value is not the same in all of `configs`, sorted."""
    keys = set().union(*configs)
    return sorted(k for k in keys if len({repr(c.get(k, "<absent>")) for c in configs}) > 1)


def group_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by group, in a stable order: the paper's estimators first, then others by name.

    A group holds the seeds of one experiment: runs with the same estimator but configs that differ in another
    experiment-defining field than the seed (another game, another meta-batch...) are separate groups, named after
    the estimator and the first differing fields' values, never averaged together.
    """
    by_label: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        fingerprint = repr(sorted(_experiment_without_seed(run).items()))
        by_label.setdefault(run.group, {}).setdefault(fingerprint, []).append(run)
    groups: dict[str, list[Run]] = {}
    for label, variants in by_label.items():
        if len(variants) == 1:
            groups[label] = next(iter(variants.values()))
            continue
        configs = [_experiment_without_seed(members[0]) for members in variants.values()]
        shown = _differing_fields(configs)[:2]
        for config, members in zip(configs, variants.values(), strict=True):
            values = ", ".join(f"{k}={config.get(k, '<absent>')}" for k in shown)
            groups[f"{label} [{values}]"] = members
    order = {label: i for i, (label, _) in enumerate(ESTIMATOR_STYLE.values())}
    return dict(sorted(groups.items(), key=lambda item: (order.get(item[1][0].group, len(order)), item[0])))


def distinct_workdirs(workdirs: Sequence[str]) -> tuple[list[str], list[str]]:
    """(`workdirs` with each folder once, in order; those given again, by another spelling or a link included)."""
    seen: set[str] = set()
    kept, repeated = [], []
    for workdir in workdirs:
        real = os.path.realpath(workdir)
        (repeated if real in seen else kept).append(workdir)
        seen.add(real)
    return kept, repeated


def available_metrics(runs: Sequence[Run]) -> list[str]:
    """Candidate metrics (in panel order) with at least one finite value in some run."""
    present = []
    for key, _ in CANDIDATE_METRICS:
        if any(math.isfinite(row.get(key, math.nan)) for run in runs for row in run.rows):
            present.append(key)
    return present


def default_smoothing(runs: Sequence[Run]) -> int:
    """A moving-average window of about 2% of the longest run (1 for short runs)."""
    longest = max((len(run.rows) for run in runs), default=1)
    return max(1, longest // 50)


def plot_runs(
    runs: Sequence[Run],
    out_path: str,
    metrics: Sequence[str] | None = None,
    smoothing: int | None = None,
    title: str | None = None,
) -> dict:
    """Draws one panel per metric (mean ± std over seeds per estimator) and saves a PNG.

    Args:
      runs: the runs to plot (seeds of one or several estimators).
      out_path: the PNG to write.
      metrics: metric keys (default: the first `MAX_DEFAULT_PANELS` of `CANDIDATE_METRICS` that the runs have).
      smoothing: moving-average window in iterations (default `default_smoothing`).
      title: the figure title.

    Returns:
      A summary: the metrics drawn, the smoothing, and per group the seeds and each metric's final mean and std.

    Raises:
      ValueError: no runs, or none of the metrics has a value.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("no runs to plot")
    metrics = list(metrics) if metrics else available_metrics(runs)[:MAX_DEFAULT_PANELS]
    if not metrics:
        raise ValueError("none of the runs has a metric to plot; give --metrics")
    smoothing = smoothing or default_smoothing(runs)
    titles = dict(CANDIDATE_METRICS)
    groups = group_runs(runs)
    columns = 2 if len(metrics) == 4 else min(3, len(metrics))
    rows = math.ceil(len(metrics) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 3.3 * rows), squeeze=False)
    summary: dict = {"metrics": metrics, "smoothing": smoothing, "groups": {}}
    ipd_only = all(run.config is not None and run.config.get("env", {}).get("name") == "ipd" for run in runs)
    other_colors = iter(OTHER_COLORS * 10)
    known_colors = dict(ESTIMATOR_STYLE.values())
    colors = {name: known_colors.get(name) or next(other_colors) for name in groups}
    for name, members in groups.items():
        summary["groups"][name] = {"seeds": len(members), "workdirs": [r.workdir for r in members], "final": {}}
    for index, metric in enumerate(metrics):
        ax = axes[index // columns][index % columns]
        for name, members in groups.items():
            mean, std, count = aggregate_over_seeds(moving_average(metric_matrix(members, metric), smoothing))
            iterations = np.arange(1, mean.shape[0] + 1)
            shown = count > 0
            if not shown.any():
                continue
            label = f"{name} ({counted(len(members), 'seed')})"
            marker = "o" if shown.sum() <= MARKER_MAX_POINTS else None
            ax.plot(iterations[shown], mean[shown], color=colors[name], lw=1.4, marker=marker, ms=3, label=label)
            ax.fill_between(
                iterations[shown], (mean - std)[shown], (mean + std)[shown], color=colors[name], alpha=0.2, lw=0
            )
            last = np.flatnonzero(shown)[-1]
            summary["groups"][name]["final"][metric] = {"mean": float(mean[last]), "std": float(std[last])}
        if ipd_only and metric.endswith("reward"):
            ax.axhline(1.0, color="gray", lw=0.7, ls="--")  # mutual cooperation
            ax.axhline(0.0, color="gray", lw=0.7, ls=":")  # mutual defection
        ax.set_title(titles.get(metric, metric), fontsize=9)
        ax.set_xlabel("training iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for index in range(len(metrics), rows * columns):
        axes[index // columns][index % columns].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    longest = max((len(run.rows) for run in runs), default=1)
    fig.suptitle(title or f"mean ± std over seeds{smoothing_note(smoothing, longest)}", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return summary
