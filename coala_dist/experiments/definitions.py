"""The paper's experiments (IPD: Sec. 5.1, App. H.3; Clean Up-lite: Sec. 5.2) as data: config, estimators, numbers.

Each `Experiment` names a CPU-scale config file (`configs/ipd_cpu_*.py`, `configs/cleanup_cpu_*.py`), the overrides
that make it this claim (e.g. p_naive = 0 for the ablation), the naive-opponent estimators it compares, and the
training metrics whose final values are its headline numbers. A config file may define `ESTIMATOR_OVERRIDES`
(estimator -> dotted overrides) for hyperparameters the paper chose per estimator (Table 7). `experiment_config`
turns one (experiment, estimator, seed) into a config; `smoke_overrides` shrinks any of them to one tiny iteration
for CI.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from coala_dist.configs import load_shipped, load_shipped_module
from coala_dist.rl.estimators import PAPER_ESTIMATORS


@dataclasses.dataclass(frozen=True)
class Experiment:
    """One claim of the paper and how it is run.

    Attributes:
      name: the command-line name, e.g. "ipd-fig5a".
      claim: what the paper says should happen (paper Sec. 5.1, Fig. 5), for the results table.
      config_file: file name in `configs/` holding the CPU-scale settings.
      overrides: dotted config field -> value applied on top of the config file.
      estimators: naive-opponent rules compared (config field `estimator`).
      headline_metrics: training metrics whose final values are the experiment's numbers.
      runs_from: name of the experiment whose training runs this one reuses (Fig. 5B evaluates the Fig. 5A agents);
        None trains its own runs.
      within_meta_episode: whether the experiment's plot is the after-training evaluation per inner-episode index
        (Fig. 5B) rather than training curves.
      agent_estimators: per-agent naive-opponent rules with cross-rule pairing (App. H.3); the run's `estimator`
        field is then unused (its runs are filed under the first entry of `estimators`); sets the core's
        `config.agent_estimators` / `config.cross_estimator_pairing`.
      paper_config_file: the config file with the paper's values, against which a run records what it changed;
        None: the IPD defaults (`coala_dist.config.default_config`).
    """

    name: str
    claim: str
    config_file: str
    overrides: dict[str, Any]
    estimators: tuple[str, ...]
    headline_metrics: tuple[str, ...]
    runs_from: str | None = None
    within_meta_episode: bool = False
    agent_estimators: tuple[str, ...] | None = None
    paper_config_file: str | None = None

    @property
    def results_group(self) -> str:
        """The results/ subfolder of its environment: "ipd" or "cleanup"."""
        return self.name.split("-")[0]

    @property
    def training_experiment(self) -> str:
        """The experiment whose runs (work directories) this one reads."""
        return self.runs_from or self.name


H3_AGENT_ESTIMATORS = ("coala", "coala", "mfos", "mfos")
# The other reading of App. H.3's M-FOS: its policy gradient averaged over the B trajectories instead of summed.
H3_MFOS_MEAN_AGENT_ESTIMATORS = ("coala", "coala", "mfos_mean", "mfos_mean")

_PURE_SHAPING_METRICS = (
    "vs_naive/ego_reward",
    "vs_naive/coplayer_reward",
    "vs_naive/cooperate_player_1",
    "vs_naive/cooperate_player_2",
)
_MIXED_POOL_METRICS = (
    "vs_meta/ego_reward",
    "vs_meta/cooperate_player_1",
    "vs_naive/ego_reward",
    "vs_naive/coplayer_reward",
)

def _head_to_head(name: str, agent_estimators: tuple[str, ...], claim: str) -> Experiment:
    """An App. H.3 pool on the Fig. 5C config: the agents' rules `agent_estimators`, each meeting only agents of
    another rule (or naive learners)."""
    return Experiment(
        name=name,
        claim=claim,
        config_file="ipd_cpu_mixed_pool.py",
        overrides={"agent_estimators": agent_estimators, "cross_estimator_pairing": True},
        estimators=("coala",),
        headline_metrics=("vs_meta/ego_reward", "vs_meta/cooperate_player_1", "vs_naive/ego_reward"),
        agent_estimators=agent_estimators,
    )


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in (
        Experiment(
            name="ipd-fig5a",
            claim=(
                "Pure shaping (p_naive = 1, one meta agent, 10 naive initialisations): COALA-PG reaches a clearly "
                "higher reward per step against naive learners than M-FOS and batch-unaware, and extorts them "
                "(its reward per step exceeds the naive co-player's)."
            ),
            config_file="ipd_cpu_pure_shaping.py",
            overrides={},
            estimators=PAPER_ESTIMATORS,
            headline_metrics=_PURE_SHAPING_METRICS,
        ),
        Experiment(
            name="ipd-fig5b",
            claim=(
                "Within one meta-episode after training against fresh naive learners: COALA-PG first shapes the "
                "naive co-player to a low defection rate and exploits it toward the end; M-FOS defects from the start."
            ),
            config_file="ipd_cpu_pure_shaping.py",
            overrides={},
            estimators=PAPER_ESTIMATORS,
            headline_metrics=_PURE_SHAPING_METRICS,
            runs_from="ipd-fig5a",
            within_meta_episode=True,
        ),
        Experiment(
            name="ipd-fig5c",
            claim=(
                "Mixed pool (p_naive = 0.75, 4 meta agents): COALA-PG meta agents cooperate with each other (reward "
                "per step between meta agents near 1); M-FOS and batch-unaware fall into mutual defection (near 0); "
                "LOLA-DiCE also cooperates."
            ),
            config_file="ipd_cpu_mixed_pool.py",
            overrides={},
            estimators=PAPER_ESTIMATORS + ("lola_dice",),
            headline_metrics=_MIXED_POOL_METRICS,
        ),
        Experiment(
            name="ipd-ablation-pnaive0",
            claim="The Fig. 5C pool without naive learners (p_naive = 0): COALA-PG meta agents fail to cooperate.",
            config_file="ipd_cpu_mixed_pool.py",
            overrides={"p_naive": 0.0},
            estimators=("coala",),
            headline_metrics=("vs_meta/ego_reward", "vs_meta/cooperate_player_1"),
        ),
        _head_to_head(
            "ipd-h3",
            H3_AGENT_ESTIMATORS,
            "Head-to-head (App. H.3): a mixed pool (p_naive = 0.75) of 2 COALA-PG and 2 M-FOS agents where COALA "
            "agents meet only M-FOS agents or naive learners and vice versa. Paper: COALA-PG shapes M-FOS into "
            "cooperation, average rewards 0.850 ± 0.037 (COALA-PG) and 0.853 ± 0.017 (M-FOS).",
        ),
        _head_to_head(
            "ipd-h3-mfos-mean",
            H3_MFOS_MEAN_AGENT_ESTIMATORS,
            "App. H.3 with the other reading of M-FOS (policy gradient averaged over the B trajectories instead of "
            "summed, `mfos_mean`): 2 COALA-PG and 2 M-FOS agents, p_naive = 0.75, each rule meeting only the other "
            "rule's agents or naive learners. Paper: 0.850 ± 0.037 (COALA-PG) and 0.853 ± 0.017 (M-FOS).",
        ),
        Experiment(
            name="cleanup-fig6",
            claim=(
                "Clean Up-lite pure shaping (p_naive = 1, one meta agent, 10 naive initialisations): COALA-PG gets a "
                "higher return than M-FOS and batch-unaware and is zapped less; its naive co-players clean more "
                "than it does and also earn more; pollution is lower and apples more plentiful."
            ),
            config_file="cleanup_cpu_pure_shaping.py",
            paper_config_file="cleanup_pure_shaping.py",
            overrides={},
            estimators=PAPER_ESTIMATORS,
            headline_metrics=(
                "vs_naive/ego_reward",
                "vs_naive/coplayer_reward",
                "vs_naive/zapped_player_1",
                "vs_naive/cleaned_player_1",
                "vs_naive/cleaned_player_2",
                "vs_naive/cleaning_discrepancy",
                "vs_naive/pollution",
                "vs_naive/apples",
            ),
        ),
        Experiment(
            name="cleanup-fig7",
            claim=(
                "Clean Up-lite mixed pool (p_naive = 0.75, 3 meta agents, naive agents initialised from the meta "
                "agents): COALA-PG agents earn more against each other than the baselines' agents, divide cleaning "
                "more fairly, zap less, and keep pollution lower and apples more plentiful."
            ),
            config_file="cleanup_cpu_mixed_pool.py",
            paper_config_file="cleanup_mixed_pool.py",
            overrides={},
            estimators=PAPER_ESTIMATORS,
            headline_metrics=(
                "vs_meta/ego_reward",
                "vs_meta/cleaning_discrepancy",
                "vs_meta/zapped_player_1",
                "vs_meta/pollution",
                "vs_meta/apples",
                "vs_naive/ego_reward",
            ),
        ),
    )
}


def smoke_overrides() -> dict[str, Any]:
    """Sizes of `configs/ipd_tiny.py` and one iteration: every code path of an experiment in seconds (CI)."""
    return {
        "training_iterations": 1,
        "env.inner_episode_length": 3,
        "num_inner_episodes": 3,
        "batch_size": 4,
        "meta_batch_size": 4,
        "population_size_naive": 3,
        "meta.ppo_num_epochs": 2,
        "meta.ppo_num_minibatches": 2,
        "policy.embed_dim": 8,
        "policy.lru_width": 8,
        "policy.mlp_width": 8,
        "log_every": 1,
    }


def estimator_overrides(file_name: str, estimator: str) -> dict[str, Any]:
    """The config file's per-estimator overrides (its `ESTIMATOR_OVERRIDES[estimator]`; {} if it has none)."""
    return dict(getattr(load_shipped_module(file_name), "ESTIMATOR_OVERRIDES", {}).get(estimator, {}))


def paper_config(experiment: Experiment, estimator: str) -> ml_collections.ConfigDict:
    """The paper's values for this experiment and estimator: what a CPU-scale run reports as changed."""
    from coala_dist.config import default_config

    if experiment.paper_config_file is None:
        return default_config()
    config = load_shipped(experiment.paper_config_file)
    return apply_overrides(config, estimator_overrides(experiment.paper_config_file, estimator))


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: dict[str, Any]
) -> ml_collections.ConfigDict:
    """Sets dotted fields (e.g. "meta.learning_rate") on a copy of `config`."""
    config = ml_collections.ConfigDict(config.to_dict())
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        target = config
        for part in parents:
            target = target[part]
        if leaf not in target:
            raise ValueError(f"unknown config field {dotted!r}")
        target[leaf] = value
    return config


def experiment_config(
    experiment: Experiment,
    estimator: str,
    seed: int,
    *,
    smoke: bool = False,
    extra_overrides: dict[str, Any] | None = None,
) -> ml_collections.ConfigDict:
    """The config of one run: config file, experiment overrides, [smoke sizes], extra overrides, estimator, seed.

    Args:
      experiment: the experiment.
      estimator: one of `experiment.estimators`.
      seed: the run's seed (initial parameters, naive initialisations and every episode key derive from it).
      smoke: shrink to one tiny iteration.
      extra_overrides: further dotted overrides (e.g. a longer budget: {"training_iterations": 300}).
    """
    if estimator not in experiment.estimators:
        raise ValueError(
            f"{experiment.name} runs estimators {experiment.estimators}, not {estimator!r}"
        )
    base = load_shipped(experiment.config_file)
    overrides = dict(experiment.overrides) | estimator_overrides(experiment.config_file, estimator)
    if smoke:
        overrides |= smoke_overrides()
    overrides |= extra_overrides or {}
    overrides |= {"estimator": estimator, "seed": seed}
    return apply_overrides(base, overrides)
