"""Runs an experiment over seeds and estimators, resumably, then writes its results.

Layout of the work directories (`workdir_root/<training experiment>/<estimator>/seed_<k>/`):
  metrics.csv    every iteration's metrics (written by `coala_dist.train`),
  result.json    written once the run has finished and been evaluated: final numbers, evaluation, wall time,
  params.msgpack the trained meta agents and naive initialisations (flax serialization).
Re-running the same command skips runs whose result.json matches the requested budget and continues the others
through `train(config, workdir)` (which resumes from a checkpoint in the workdir when one exists). Runs are
sequential: each goes through the one training loop, and the estimator's components (compiled rollout and update)
are shared by its seeds.

The published results live in the repository's `results/` folder; a smoke run never writes there
(`coala_dist.analysis.runs.in_published_results`), so a CI or test run cannot replace a committed table with a
1-seed, 1-iteration one. Evaluation, the report's numbers, tables and plots are in `coala_dist.analysis`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
from flax import serialization

from coala_dist.analysis.evaluation import (
    evaluate_against_naive,
    evaluate_between_meta_agents,
    make_meta_evaluator,
    make_naive_evaluator,
)
from coala_dist.analysis.experiment_report import final_window_mean, write_report
from coala_dist.analysis.runs import in_published_results, read_metrics_csv
from coala_dist.builder import build
from coala_dist.experiments.definitions import EXPERIMENTS, Experiment, experiment_config, paper_config
from coala_dist.experiments.early_stop import DefectionStop
from coala_dist.train import train

RESULT_FILE = "result.json"
PARAMS_FILE = "params.msgpack"
# Evaluation meta-episodes per naive initialisation (10 initialisations in IPD: 20 meta-episodes of B trajectories).
EVALUATION_EPISODES_PER_INITIALISATION = 2
# Evaluation meta-episodes per ordered pair of meta agents.
EVALUATION_EPISODES_PER_META_PAIR = 4


def run_directory(workdir_root: str, experiment: Experiment, estimator: str, seed: int) -> str:
    return os.path.join(workdir_root, experiment.training_experiment, estimator, f"seed_{seed}")


def final_window(config: ml_collections.ConfigDict) -> int:
    """Iterations averaged for a run's final numbers: the last 10% of training (at least one)."""
    return max(1, config.training_iterations // 10)


def load_result(run_dir: str, iterations: int) -> dict | None:
    """The finished run's result, or None if it is missing or was trained for a different budget (a run stopped
    early by a stop rule records its budget apart from the iterations it trained)."""
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    return result if result.get("budget", result.get("iterations")) == iterations else None


def _changed_fields(
    config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict
) -> dict[str, Any]:
    """Dotted fields where `config` differs from the paper defaults: what this CPU-scale run changed."""
    out: dict[str, Any] = {}

    def walk(a: dict, b: dict, prefix: str) -> None:
        for key, value in a.items():
            other = b.get(key)
            if isinstance(value, dict):
                walk(value, other or {}, f"{prefix}{key}.")
            elif value != other:
                out[f"{prefix}{key}"] = value

    walk(config.to_dict(), reference.to_dict(), "")
    return out


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    run_dir: str,
    components,
    evaluators: tuple[Any, Any],
    log: Callable[[str], None] = print,
    reference: ml_collections.ConfigDict | None = None,
    stop_after_defection: int = 0,
) -> dict:
    """Trains one run to `config.training_iterations`, evaluates it against fresh naive learners, writes its files.

    Args:
      reference: the paper's config for this run (its `changed_from_paper` lists the differences); None: the IPD
        defaults.
      stop_after_defection: if > 0, the run ends once its meta agents have defected against each other for this
        many iterations in a row (`early_stop.DefectionStop`); it is then finished at that iteration.

    Returns:
      The run's result (also written to `run_dir/result.json`).
    """
    from coala_dist.config import default_config

    os.makedirs(run_dir, exist_ok=True)
    start = time.perf_counter()
    stop_rule = DefectionStop(stop_after_defection) if stop_after_defection > 0 else None
    state, _ = train(
        config,
        run_dir,
        components=components,
        log=lambda line: log(f"[{run_dir}] {line}"),
        stop_rule=stop_rule,
    )
    stopped_early = stop_rule is not None and stop_rule.reached and int(state.step) < config.training_iterations
    if stopped_early:
        log(f"[{run_dir}] stopped early at iteration {int(state.step)}: {stop_rule.describe()}")
    elif int(state.step) < config.training_iterations:  # stopped by SIGTERM / Ctrl-C: a checkpoint was saved
        raise SystemExit(
            f"stopped {run_dir} at iteration {int(state.step)} of {config.training_iterations}; "
            "rerun the same command to resume"
        )
    with open(os.path.join(run_dir, PARAMS_FILE), "wb") as f:
        f.write(
            serialization.to_bytes(
                {"meta_params": state.meta_params, "naive_params": state.naive_params}
            )
        )
    metrics = read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
    window = final_window(config)
    naive_evaluator, meta_evaluator = evaluators
    evaluation = evaluate_against_naive(
        naive_evaluator,
        state.meta_params,
        components.learner.naive_initialisations(state),
        config.seed,
        config.population_size_meta,
    )
    meta_evaluation = (
        evaluate_between_meta_agents(
            meta_evaluator, state.meta_params, config.seed, config.population_size_meta
        )
        if config.population_size_meta > 1
        else None
    )
    result = {
        "estimator": config.estimator,
        "seed": config.seed,
        "iterations": int(state.step),
        "budget": config.training_iterations,
        "stopped_early": (
            {"iteration": int(state.step), "rule": stop_rule.describe()} if stopped_early else None
        ),
        "final_window": window,
        "final": {
            key: final_window_mean([row.get(key, float("nan")) for row in metrics], window)
            for key in metrics[-1]
            if key.startswith(("vs_naive/", "vs_meta/"))
        },
        # Sum of the per-iteration wall times over the whole run (the first includes compilation), so a resumed
        # run reports its total training time, not only the last session's.
        "train_time_s": sum(row["time/iteration_s"] for row in metrics),
        "session_wall_time_s": time.perf_counter() - start,
        "evaluation": evaluation,
        "meta_evaluation": meta_evaluation,
        "changed_from_paper": _changed_fields(config, reference or default_config()),
    }
    with open(os.path.join(run_dir, RESULT_FILE), "w") as f:
        json.dump(result, f)
    return result


def run_experiment(
    name: str,
    *,
    num_seeds: int,
    out_dir: str,
    workdir_root: str,
    smoke: bool = False,
    estimators: Sequence[str] | None = None,
    extra_overrides: dict[str, Any] | None = None,
    train_missing: bool = True,
    first_seed: int = 0,
    stop_after_defection: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Trains (or resumes, or skips) every (estimator, seed) run of an experiment, then writes its results.

    Args:
      name: a key of `EXPERIMENTS`, e.g. "ipd-fig5a".
      num_seeds: seeds first_seed … num_seeds − 1.
      out_dir: where the results go (per-seed CSV/JSON, summary.json, table.md, the PNG).
      workdir_root: root of the runs' work directories (see the module docstring).
      smoke: one tiny iteration per run (CI); refused with an `out_dir` inside the published results.
      estimators: a subset of the experiment's estimators; all of them if None.
      extra_overrides: dotted config overrides applied to every run (e.g. a different budget).
      train_missing: train runs that are not finished; if False, only report the finished ones.
      first_seed: skip the seeds below it (e.g. to train seeds 3-4 in a second process while a first one trains
        0-2; two processes must never train the same run). The report covers only the seeds of this call.
      stop_after_defection: passed to `train_and_evaluate` for the runs this call trains (0: every run trains to
        its budget).
      log: progress lines.

    Returns:
      The summary written to `out_dir/summary.json`.
    """
    if name not in EXPERIMENTS:
        raise ValueError(
            f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}"
        )
    if not 0 <= first_seed < num_seeds:
        raise ValueError(f"first_seed={first_seed} must be in [0, seeds={num_seeds})")
    published = in_published_results(out_dir) if smoke else None
    if published is not None:  # checked before any training: a smoke report would replace the committed one
        raise ValueError(
            f"--smoke never writes into the published results, and --out={out_dir} is inside {published}; "
            "drop --out (the report goes under the workdir root) or choose a folder outside it"
        )
    experiment = EXPERIMENTS[name]
    training = EXPERIMENTS[experiment.training_experiment]
    estimators = tuple(estimators or experiment.estimators)
    runs: list[dict] = []
    window = 1
    for estimator in estimators:
        components = evaluators = None
        for seed in range(first_seed, num_seeds):
            config = experiment_config(
                training, estimator, seed, smoke=smoke, extra_overrides=extra_overrides
            )
            window = final_window(config)
            run_dir = run_directory(workdir_root, training, estimator, seed)
            result = load_result(run_dir, config.training_iterations)
            if result is None and not train_missing:
                continue
            if result is None:
                log(f"{name}: training {estimator} seed {seed} -> {run_dir}")
                if components is None:
                    # Built once per estimator: the config differs between seeds only in `seed`, which the
                    # components never read (the initial state is drawn from it in `train`).
                    components = build(config)
                    evaluators = (
                        make_naive_evaluator(components, EVALUATION_EPISODES_PER_INITIALISATION),
                        make_meta_evaluator(components, EVALUATION_EPISODES_PER_META_PAIR),
                    )
                result = train_and_evaluate(
                    config,
                    run_dir,
                    components,
                    evaluators,
                    log,
                    paper_config(training, estimator),
                    stop_after_defection,
                )
            else:
                log(f"{name}: {estimator} seed {seed} already finished ({run_dir})")
            metrics = read_metrics_csv(os.path.join(run_dir, "metrics.csv"))
            runs.append(
                {"estimator": estimator, "seed": seed, "result": result, "metrics": metrics}
            )
    return write_report(experiment, runs, out_dir, window)
