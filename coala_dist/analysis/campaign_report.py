"""The IPD reproduction campaign's claim table and per-seed curves (paper Fig. 5C, its p_naive = 0 ablation, App. H.3).

    python scripts/campaign_report.py --workdir_root=results/ipd/campaign/runs --out=results/ipd/campaign

Each claim is one paper statement, the runs that test it (an experiment, an estimator, the seeds planned), what a
run reads and the target that reading must meet (results/ipd/README.md, "How each claim is judged", fixed before
the runs it judges finished). A run's reading:
  * between meta agents (Fig. 5C, the ablation): its `result.json` "final" reward per step between meta agents, the
    mean over the last 10 % of its training iterations;
  * one rule against the other (App. H.3): the after-training evaluation's reward per step of that rule's agents
    against the other rule's (`experiment_report.head_to_head_numbers`).
Across seeds the verdict reads the mean (mean ± std as the paper reports, the IQM with its 95 % stratified-bootstrap
interval beside it); it is "pending" until every planned seed has finished. Every run is listed with its status,
iterations, wall time and numbers, the unfinished ones with how far they got.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence

import numpy as np

from coala_dist.analysis.curves import moving_average
from coala_dist.analysis.experiment_report import head_to_head_numbers, report_json
from coala_dist.analysis.runs import read_metrics_csv
from coala_dist.analysis.statistics import seed_summary
from coala_dist.analysis.style import label
from coala_dist.experiments.definitions import EXPERIMENTS
from coala_dist.experiments.early_stop import BETWEEN_META, DEFECTION_LEVEL

VS_NAIVE = "vs_naive/ego_reward"
# Iterations averaged for an unfinished run's "so far" numbers, and the smoothing of the per-seed curves.
RECENT_ITERATIONS = 10


@dataclasses.dataclass(frozen=True)
class Claim:
    """One paper statement and the campaign runs that test it.

    Attributes:
      name: the statement, e.g. "Fig. 5C: COALA-PG meta agents cooperate with each other".
      paper: what the paper reports.
      experiment: the `coala experiment` name whose runs are read.
      estimator: the runs' estimator folder (`<workdir_root>/<experiment>/<estimator>/seed_<k>`).
      seeds: seeds planned (0 … seeds − 1).
      low, high: the target interval of the mean reading over seeds (None: unbounded on that side).
      rule: None reads the reward between meta agents; a rule name reads that rule's agents' reward against the
        other rule's (App. H.3).
    """

    name: str
    paper: str
    experiment: str
    estimator: str
    seeds: int
    low: float | None = None
    high: float | None = None
    rule: str | None = None

    def target(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low:.3f} – {self.high:.3f}"
        return f"≥ {self.low:.1f}" if self.low is not None else f"≤ {self.high:.1f}"

    def met(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)


H3_TOLERANCE = 0.1
CLAIMS: tuple[Claim, ...] = (
    Claim("Fig. 5C: COALA-PG meta agents cooperate with each other", "cooperate (curve near 1)",
          "ipd-fig5c", "coala", 5, low=0.9),
    Claim("Fig. 5C: M-FOS meta agents fall into defection", "defect (curve near 0)",
          "ipd-fig5c", "mfos", 3, high=DEFECTION_LEVEL),
    Claim("Fig. 5C: batch-unaware meta agents fall into defection", "defect (curve near 0)",
          "ipd-fig5c", "batch_unaware", 3, high=DEFECTION_LEVEL),
    Claim("Fig. 5C: LOLA-DiCE meta agents also cooperate", "cooperate", "ipd-fig5c", "lola_dice", 1, low=0.9),
    Claim("Fig. 5C: without naive learners (p_naive = 0) COALA-PG fails to cooperate", "defect",
          "ipd-ablation-pnaive0", "coala", 2, high=DEFECTION_LEVEL),
    Claim("App. H.3 (M-FOS Σ over B): COALA-PG's reward against M-FOS", "0.850 ± 0.037", "ipd-h3", "coala", 5,
          low=0.850 - H3_TOLERANCE, high=0.850 + H3_TOLERANCE, rule="coala"),
    Claim("App. H.3 (M-FOS Σ over B): M-FOS's reward against COALA-PG", "0.853 ± 0.017", "ipd-h3", "coala", 5,
          low=0.853 - H3_TOLERANCE, high=0.853 + H3_TOLERANCE, rule="mfos"),
    Claim("App. H.3 (M-FOS mean over B): COALA-PG's reward against M-FOS", "0.850 ± 0.037", "ipd-h3-mfos-mean",
          "coala", 2, low=0.850 - H3_TOLERANCE, high=0.850 + H3_TOLERANCE, rule="coala"),
    Claim("App. H.3 (M-FOS mean over B): M-FOS's reward against COALA-PG", "0.853 ± 0.017", "ipd-h3-mfos-mean",
          "coala", 2, low=0.853 - H3_TOLERANCE, high=0.853 + H3_TOLERANCE, rule="mfos_mean"),
)


@dataclasses.dataclass
class SeedRun:
    """One seed's run folder as it stands: its metrics and, once finished, its result."""

    seed: int
    directory: str
    metrics: list[dict[str, float]]
    result: dict | None

    @property
    def iteration(self) -> int:
        return int(self.metrics[-1]["iteration"]) if self.metrics else 0

    def recent(self, metric: str, iterations: int = RECENT_ITERATIONS) -> float:
        """Mean of `metric` over the run's last `iterations` iterations (NaN without any)."""
        values = np.array([row.get(metric, math.nan) for row in self.metrics[-iterations:]], np.float64)
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else math.nan


def read_seed_runs(workdir_root: str, claim: Claim) -> list[SeedRun]:
    """The planned seeds of `claim` that have a run folder with at least one iteration, in seed order."""
    runs = []
    for seed in range(claim.seeds):
        directory = os.path.join(workdir_root, claim.experiment, claim.estimator, f"seed_{seed}")
        metrics_path = os.path.join(directory, "metrics.csv")
        if not os.path.exists(metrics_path):
            continue
        metrics = read_metrics_csv(metrics_path)
        result_path = os.path.join(directory, "result.json")
        result = None
        if os.path.exists(result_path):
            with open(result_path) as f:
                result = json.load(f)
        if metrics or result:
            runs.append(SeedRun(seed, directory, metrics, result))
    return runs


def reading(claim: Claim, result: dict) -> float:
    """A finished run's number for `claim` (module docstring)."""
    if claim.rule is None:
        return float(result["final"].get(BETWEEN_META, math.nan))
    rules = EXPERIMENTS[claim.experiment].agent_estimators
    return head_to_head_numbers(result, rules)[claim.rule]["reward_vs_other_rule"]


def judge(claim: Claim, runs: Sequence[SeedRun]) -> dict:
    """The claim's row: each finished seed's reading, their summary over seeds and the verdict."""
    finished = [run for run in runs if run.result is not None]
    values = [reading(claim, run.result) for run in finished]
    summary = seed_summary(values)
    if len(finished) < claim.seeds:
        verdict = f"pending ({len(finished)} of {claim.seeds} seeds)"
    else:
        verdict = "yes" if claim.met(summary["mean"]) else "no"
    return {
        "claim": claim.name,
        "paper": claim.paper,
        "target": claim.target(),
        "experiment": claim.experiment,
        "estimator": claim.estimator,
        "seeds_planned": claim.seeds,
        "per_seed": {run.seed: value for run, value in zip(finished, values, strict=True)},
        "iterations": {run.seed: run.result["iterations"] for run in finished},
        "stopped_early": {
            run.seed: run.result["stopped_early"]["iteration"] for run in finished if run.result.get("stopped_early")
        },
        "summary": summary,
        "reproduced": verdict,
    }


def run_rows(runs: Sequence[SeedRun]) -> list[dict]:
    """Every run of an arm as it stands: iterations done, training wall time, its numbers and its status.

    A finished run's numbers are its `result.json` final-window means; an unfinished run's the means over its last
    `RECENT_ITERATIONS` iterations.
    """
    rows = []
    for run in runs:
        if run.result is None:
            status, iteration = "running", run.iteration
            train_time_s = float(np.nansum([row.get("time/iteration_s", math.nan) for row in run.metrics]))
            between, naive = run.recent(BETWEEN_META), run.recent(VS_NAIVE)
        else:
            stopped = run.result.get("stopped_early")
            status = f"stopped early at {stopped['iteration']}" if stopped else "finished"
            iteration, train_time_s = run.result["iterations"], run.result["train_time_s"]
            between = run.result["final"].get(BETWEEN_META, math.nan)
            naive = run.result["final"].get(VS_NAIVE, math.nan)
        rows.append(
            {
                "seed": run.seed,
                "status": status,
                "iteration": iteration,
                "train_time_s": train_time_s,
                "between_meta": between,
                "vs_naive": naive,
            }
        )
    return rows


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def claims_markdown(rows: Sequence[dict], runs: dict[str, list[dict]]) -> str:
    """The claim table (paper → here → reproduced?), then every run (`run_rows`) of each arm."""
    lines = [
        "| claim | paper | target | seeds finished | per seed | here: mean ± std | IQM [95 % CI] | reproduced? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["summary"]
        stopped = row["stopped_early"]
        per_seed = ", ".join(
            f"{seed}: {_number(v)}" + (f" (stopped at {stopped[seed]})" if seed in stopped else "")
            for seed, v in row["per_seed"].items()
        ) or "–"
        here = "–" if not s["n"] else f"{s['mean']:.3f} ± {s['std']:.3f}"
        iqm = "–" if not s["n"] else f"{s['iqm']:.3f} [{s['iqm_low']:.3f}, {s['iqm_high']:.3f}]"
        lines.append(
            f"| {row['claim']} | {row['paper']} | {row['target']} | {s['n']} of {row['seeds_planned']} | {per_seed} "
            f"| {here} | {iqm} | {row['reproduced']} |"
        )
    lines += [
        "",
        f"Every run: a finished run's numbers are its final-window means, a running one's its last {RECENT_ITERATIONS} "
        "iterations'; wall time is the sum of its iterations' times (compilation included, pauses not).",
        "",
        "| runs | seed | status | iterations | training wall time | reward/step between meta agents | vs naive |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, entries in runs.items():
        for entry in entries:
            lines.append(
                f"| {arm} | {entry['seed']} | {entry['status']} | {entry['iteration']} "
                f"| {entry['train_time_s'] / 3600:.2f} h | {_number(entry['between_meta'])} "
                f"| {_number(entry['vs_naive'])} |"
            )
    return "\n".join(lines) + "\n"


def _arm(claim: Claim) -> str:
    """The runs a claim reads: "ipd-fig5c: COALA-PG", "ipd-h3: COALA-PG + COALA-PG + M-FOS + M-FOS"."""
    rules = EXPERIMENTS[claim.experiment].agent_estimators or (claim.estimator,)
    return f"{claim.experiment}: {' + '.join(label(rule) for rule in rules)}"


def plot_per_seed_curves(arms: dict[str, list[SeedRun]], path: str, smoothing: int = RECENT_ITERATIONS) -> None:
    """One panel per arm: every seed's reward per step between meta agents (solid) and against naive learners
    (dashed) over training, smoothed by a trailing mean of `smoothing` iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, runs in arms.items() if runs]
    columns = min(3, max(len(names), 1))
    rows = max(1, -(-len(names) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.3 * rows), squeeze=False)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names, strict=False):
        for index, run in enumerate(arms[name]):
            iterations = [row["iteration"] for row in run.metrics]
            colour = f"C{index}"
            for metric, style in ((BETWEEN_META, "-"), (VS_NAIVE, "--")):
                values = moving_average(np.array([row.get(metric, math.nan) for row in run.metrics]), smoothing)
                ax.plot(iterations, values, style, color=colour, lw=1.2,
                        label=f"seed {run.seed}" + ("" if run.result else " (running)") if style == "-" else None)
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.axhline(0.0, color="gray", lw=0.8, ls=":")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("training iteration")
        ax.set_ylabel("reward / step")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"IPD campaign: reward/step between meta agents (solid) and against naive learners (dashed), "
        f"trailing mean of {smoothing} iterations",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_campaign_report(workdir_root: str, out_dir: str, claims: Sequence[Claim] = CLAIMS) -> list[dict]:
    """Writes `claims.md`, `claims.json` and `campaign.png` into `out_dir`; returns the claim rows."""
    arms: dict[str, list[SeedRun]] = {}
    rows = []
    for claim in claims:
        runs = read_seed_runs(workdir_root, claim)
        arms.setdefault(_arm(claim), runs)
        rows.append(judge(claim, runs))
    runs = {name: run_rows(seed_runs) for name, seed_runs in arms.items() if seed_runs}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "claims.md"), "w") as f:
        f.write(claims_markdown(rows, runs))
    with open(os.path.join(out_dir, "claims.json"), "w") as f:
        json.dump(report_json({"claims": rows, "runs": runs}), f, indent=1)
    plot_per_seed_curves(arms, os.path.join(out_dir, "campaign.png"))
    return rows
