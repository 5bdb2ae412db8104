"""Plots of the analytic IPD experiments (`coala analytic`, one PNG per figure), drawn with matplotlib's Agg backend."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from coala_dist.analytic.figures import FigureResult  # noqa: E402

STATE_LABELS = ("start", "CC", "CD", "DC", "DD")
DPI = 80  # keeps every PNG well under 300 KB


def _band(axis, steps, curves, label, color=None, spread="iqr", linestyle="-"):
    """Draws the median of [seeds, points] curves with an IQR band, or the mean with a standard-error band."""
    curves = np.asarray(curves)
    if spread == "iqr":
        centre = np.median(curves, 0)
        low, high = np.percentile(curves, 25, 0), np.percentile(curves, 75, 0)
    else:
        centre = curves.mean(0)
        error = curves.std(0, ddof=1) / np.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(centre)
        low, high = centre - error, centre + error
    (line,) = axis.plot(steps, centre, label=label, color=color, linestyle=linestyle)
    axis.fill_between(steps, low, high, alpha=0.2, color=line.get_color())


def _policy_bars(axis, cooperate_by_label: dict[str, np.ndarray]):
    """Median cooperation probability per state with IQR whiskers, one bar per label and state."""
    width = 0.8 / len(cooperate_by_label)
    positions = np.arange(len(STATE_LABELS))
    for index, (label, cooperate) in enumerate(cooperate_by_label.items()):
        cooperate = np.asarray(cooperate).reshape(-1, len(STATE_LABELS))
        median = np.median(cooperate, 0)
        error = np.stack([median - np.percentile(cooperate, 25, 0), np.percentile(cooperate, 75, 0) - median])
        axis.bar(positions + index * width, median, width, yerr=error, capsize=2, label=label)
    axis.set_xticks(positions + 0.4 - width / 2, STATE_LABELS)
    axis.set_ylim(0, 1.05)
    axis.set_xlabel("previous joint action (own, other)")
    axis.set_ylabel("P(cooperate)")
    axis.legend(fontsize=7)


def _save(figure, path: pathlib.Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def plot_fig3a(result: FigureResult, path: pathlib.Path) -> None:
    """Fig. 3A (rewards over training, learned policies) and Fig. 8 (ZD fit errors vs random policies)."""
    arrays = result.arrays
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for start, color in (("random", "C0"), ("defection", "C3")):
        steps = arrays[f"{start}/steps"]
        _band(axes[0], steps, arrays[f"{start}/agent_reward_final"], f"learning-aware ({start} start)", color)
        _band(axes[0], steps, arrays[f"{start}/naive_reward_final"], "its naive learners", color, linestyle="--")
    axes[0].axhline(1.0, color="grey", lw=0.5)
    axes[0].set(xlabel="meta update", ylabel="average reward after M naive steps")
    axes[0].set_title("Fig. 3A: shaping naive learners (median, IQR)")
    axes[0].legend(fontsize=7)
    _policy_bars(
        axes[1], {"random start": arrays["random/cooperate"], "defection start": arrays["defection/cooperate"]}
    )
    axes[1].set_title("learned policies (median, IQR over seeds)")
    errors = {
        "random policies": arrays["baseline/zd_error"],
        "learned, random start": arrays["random/zd_error"],
        "learned, defection start": arrays["defection/zd_error"],
    }
    bins = np.logspace(-4, 0.5, 46)
    for label, values in errors.items():
        axes[2].hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.55, label=label)
    axes[2].set_xscale("log")
    axes[2].set(xlabel="squared error of the best ZD-extortion fit", ylabel="policies")
    axes[2].set_title("Fig. 8: fit to the ZD extortion family")
    axes[2].legend(fontsize=7)
    _save(figure, path)


def plot_fig3b(result: FigureResult, path: pathlib.Path) -> None:
    """Fig. 3B: mutual reward of extortioners trained against each other and in self-play."""
    arrays = result.arrays
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    _band(axes[0], arrays["steps"], arrays["pair_reward"], "two extortioners, against each other")
    _band(axes[0], arrays["steps"], arrays["self_play_reward"], "extortioner in self-play")
    axes[0].axvline(float(arrays["turn_steps"]), color="grey", lw=0.5, linestyle=":")
    axes[0].set(xlabel="update (partial gradients, no naive learners)", ylabel="mutual average reward")
    axes[0].set_title("Fig. 3B: extortioners become cooperative (median, IQR)")
    axes[0].legend(fontsize=7)
    _policy_bars(
        axes[1],
        {
            "extortioners (after Fig. 3A training)": arrays["extortioner_cooperate"],
            "after training against each other": arrays["pair_cooperate"],
            "after self-play": arrays["self_play_cooperate"],
        },
    )
    axes[1].set_title("policies (median, IQR)")
    _save(figure, path)


def plot_fig3c(result: FigureResult, path: pathlib.Path) -> None:
    """Fig. 3C: final meta-vs-meta reward against p_naive, and the training curves."""
    arrays = result.arrays
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    p_naive = arrays["p_naive"]
    final = arrays["meta_reward_final"]  # [p, seeds]
    median = np.median(final, 1)
    error = np.stack([median - np.percentile(final, 25, 1), np.percentile(final, 75, 1) - median])
    axes[0].errorbar(p_naive, median, yerr=error, marker="o", capsize=3)
    axes[0].set(xlabel="p_naive", ylabel="final reward when learning-aware agents meet")
    axes[0].set_title("Fig. 3C: mixed groups cooperate (median, IQR)")
    for index, p in enumerate(p_naive):
        _band(axes[1], arrays["steps"], arrays["meta_reward"][index], f"p_naive = {p:g}")
    axes[1].set(xlabel="meta update", ylabel="reward when learning-aware agents meet")
    axes[1].legend(fontsize=7)
    _save(figure, path)


def plot_fig9(result: FigureResult, path: pathlib.Path) -> None:
    """Fig. 9: mixed groups started at defection; median and quartiles over seeds."""
    arrays = result.arrays
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for index, p in enumerate(arrays["p_naive"]):
        _band(axes[0], arrays["steps"], arrays["meta_reward"][index], f"p_naive = {p:g}")
        _band(axes[1], arrays["steps"], arrays["shaping_reward"][index], f"p_naive = {p:g}")
    axes[0].set(xlabel="meta update", ylabel="reward when learning-aware agents meet")
    axes[0].set_title("Fig. 9: from mutual defection (median, IQR)")
    axes[1].set(xlabel="meta update", ylabel="reward over the naive learning trajectory")
    axes[1].set_title("shaping naive learners")
    for axis in axes:
        axis.legend(fontsize=7)
    _save(figure, path)


def plot_fig10(result: FigureResult, path: pathlib.Path) -> None:
    """Fig. 10: from mutual TFT; rewards over training, policies, and shaping along one naive trajectory."""
    arrays = result.arrays
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    _band(axes[0], arrays["steps"], arrays["meta_reward"], "learning-aware agents meeting")
    _band(axes[0], arrays["steps"], arrays["shaping_reward"], "vs naive learners (Eq. 17 objective)")
    axes[0].set(xlabel="meta update", ylabel="average reward")
    axes[0].set_title("Fig. 10: from mutual TFT (median, IQR)")
    axes[0].legend(fontsize=7)
    _policy_bars(axes[1], {"initial TFT": arrays["tft_cooperate"][None], "learned": arrays["cooperate"]})
    axes[1].set_title("policies")
    naive_steps = np.arange(arrays["naive_step_agent_reward"].shape[1])
    axes[2].plot(naive_steps, arrays["naive_step_agent_reward"][0], "k-", label="TFT's reward")
    axes[2].plot(naive_steps, arrays["naive_step_naive_reward"][0], "k--", label="naive vs TFT")
    _band(axes[2], naive_steps, arrays["naive_step_agent_reward"][1:], "learned policy's reward", "C1")
    _band(axes[2], naive_steps, arrays["naive_step_naive_reward"][1:], "naive vs learned", "C1", linestyle="--")
    axes[2].set(xlabel="naive learning step", ylabel="average reward")
    axes[2].set_title("Fig. 10C: one naive learning trajectory")
    axes[2].legend(fontsize=7)
    _save(figure, path)


def plot_fig4(result: FigureResult, path: pathlib.Path) -> None:
    """Fig. 4: LOLA look-ahead sweep (mean ± SE), naive learners against LOLA, mixed-gradient curves."""
    arrays = result.arrays
    look_aheads = arrays["look_aheads"]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    for variant, marker in (("pure", "o"), ("mixed", "s")):
        finals = [arrays[f"{variant}/k={k}/reward_final"] for k in look_aheads]
        means = [f.mean() for f in finals]
        errors = [f.std(ddof=1) / np.sqrt(len(f)) for f in finals]
        label = "LOLA" if variant == "pure" else "LOLA + naive partial gradient"
        axes[0].errorbar(np.arange(len(look_aheads)), means, yerr=errors, marker=marker, capsize=3, label=label)
    axes[0].set_xticks(np.arange(len(look_aheads)), [str(k) for k in look_aheads])
    axes[0].set(xlabel="look-ahead steps", ylabel="final mutual average reward")
    axes[0].set_title("Fig. 4A/C: LOLA vs LOLA (mean ± SE)")
    axes[0].legend(fontsize=7)
    naive_steps = np.arange(arrays["naive_eval/lola_reward"].shape[1])
    _band(axes[1], naive_steps, arrays["naive_eval/lola_reward"], f"LOLA (k = {look_aheads[-1]})", spread="se")
    _band(axes[1], naive_steps, arrays["naive_eval/naive_reward"], "fresh naive learner", spread="se")
    _band(axes[1], naive_steps, arrays["naive_eval/naive_cooperation"], "naive cooperation rate", spread="se")
    axes[1].set(xlabel="naive learning step", ylabel="average reward / cooperation")
    axes[1].set_title("Fig. 4B: a naive learner against LOLA is extorted")
    axes[1].legend(fontsize=7)
    for k in look_aheads:
        _band(axes[2], arrays["steps"], arrays[f"pure/k={k}/reward"], f"k = {k}", spread="se")
    axes[2].set(xlabel="meta update", ylabel="mutual average reward")
    axes[2].set_title("pure LOLA training curves (mean ± SE)")
    axes[2].legend(fontsize=7)
    _save(figure, path)


PLOTTERS: dict[str, Callable[[FigureResult, pathlib.Path], None]] = {
    "fig3a": plot_fig3a,
    "fig3b": plot_fig3b,
    "fig3c": plot_fig3c,
    "fig9": plot_fig9,
    "fig10": plot_fig10,
    "fig4": plot_fig4,
}
