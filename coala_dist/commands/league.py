"""`coala league --agents=DIR,... [--zoo=auto] [--meta_episodes=16] [--out=DIR]`: every pair, both seats.

Each --agents entry is a run's workdir (every meta agent of its newest checkpoint), an exported agent (coala
export) or a folder holding either (an experiment's runs, results/agents/). The zoo (IPD): always_cooperate,
always_defect, random, tit_for_tat, zd_extortion (χ = 3) and naive (a fresh naive A2C learner with the first agent's
training hyperparameters). Every pair plays --meta_episodes meta-episodes in each seating; a player meets itself too.

Writes reward and cooperation matrices (CSV, JSON with standard errors, a heatmap PNG), a per-player table (mean
over opponents, IQM with a 95 % stratified-bootstrap interval) and a per-estimator table across seeds to --out
(default: DIR/league of the first run or experiment folder, else workdirs/league; never results/ unless named).
"""

from __future__ import annotations

import os
import time

from absl import flags

from coala_dist.commands import UsageError

_AGENTS = flags.DEFINE_list("agents", [], "Runs, experiment folders or exported agents, comma-separated.")
_ZOO = flags.DEFINE_string(
    "zoo", "auto", "Reference co-players: auto (the environment's zoo), none, ipd, or names (e.g. tit_for_tat,naive)."
)
_META_EPISODES = flags.DEFINE_integer("meta_episodes", 16, "Meta-episodes per pair and seating (each of B games).")
_OUT = flags.DEFINE_string("out", None, "Output folder (default: FIRST_AGENTS/league, or workdirs/league).")
_SEED = flags.DEFINE_integer("seed", 0, "The league's seed (its games' keys; the bootstrap's).")
DEFAULT_ROOT = os.path.join("workdirs", "league")


def default_out(sources: list[str]) -> str:
    """Next to the first run or experiment folder; workdirs/league for an exported agent, none, or results/."""
    from coala_dist.agents import is_agent_dir
    from coala_dist.analysis.runs import in_published_results

    if not sources or is_agent_dir(sources[0]) or in_published_results(sources[0]) is not None:
        return DEFAULT_ROOT
    return os.path.join(sources[0], "league")


def zoo_names(value: str, env: str) -> list[str]:
    """The zoo players named by --zoo for this environment."""
    from coala_dist.league.zoo import IPD_ZOO, ZOOS

    if value == "none":
        return []
    if value == "auto":
        return list(ZOOS.get(env, ()))
    if value in ZOOS:
        if value != env:
            raise UsageError(f"--zoo={value} cannot play {env}; use --zoo=none or --zoo=auto")
        return list(ZOOS[value])
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in IPD_ZOO]
    if unknown:
        raise UsageError(f"--zoo: unknown player(s) {', '.join(unknown)}; valid: auto, none, ipd, {', '.join(IPD_ZOO)}")
    if env != "ipd":
        raise UsageError(f"--zoo: {', '.join(names)} play the IPD, not {env}")
    return names


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {argv[1:]}; use --agents=DIR,DIR")
    if _META_EPISODES.value < 2:
        raise UsageError(f"--meta_episodes must be >= 2 (a standard error needs two), got {_META_EPISODES.value}")
    sources = list(_AGENTS.value)
    for source in sources:
        if not os.path.isdir(source):
            raise UsageError(f"--agents: {source} is not a folder")
    from coala_dist.checkpoint import IncompatibleCheckpointError
    from coala_dist.commands import check_writable_dir
    from coala_dist.league import league, report
    from coala_dist.league.zoo import ipd_zoo

    out = _OUT.value or default_out(sources)
    start = time.perf_counter()
    try:
        players, descriptions = league.load_players(sources)
        game = league.common_game(descriptions)
    except league.AgentSourceError as error:
        raise UsageError(str(error)) from None
    except (FileNotFoundError, IncompatibleCheckpointError, ValueError, OSError) as error:
        raise SystemExit(f"coala league: {error}") from None
    names = zoo_names(_ZOO.value, game["env"])
    players += ipd_zoo(names, league.reference_description(descriptions)) if names else []
    if len(players) < 2:
        raise UsageError("a league needs at least two players: name --agents, or leave --zoo=auto")
    taken = {p.name for p in players if not p.zoo}
    clash = [p.name for p in players if p.zoo and p.name in taken]
    if clash:
        raise UsageError(
            f"--agents: {', '.join(clash)} is also the name of a zoo player; rename it (coala export --name)"
        )
    try:
        check_writable_dir(out, "--out")
    except ValueError as error:
        raise SystemExit(f"coala league: {error}") from None
    pairs = len(players) * (len(players) + 1) // 2
    print(
        f"league of {len(players)} players ({len(players) - len(names)} trained, {len(names)} zoo): {pairs} pairs, "
        f"{_META_EPISODES.value} meta-episodes per seating, {game['env']} M = {game['num_inner_episodes']}, "
        f"T = {game['inner_episode_length']}, B = {game['batch_size']}; each new pair of player kinds compiles once"
    )
    result = league.run_league(players, game, meta_episodes=_META_EPISODES.value, seed=_SEED.value)
    summary = report.write_league(result, out)
    print(report.format_players(summary))
    groups = report.format_groups(summary)
    if groups:
        print("\ntrained agents per estimator, across seeds:\n" + groups)
    print(
        f"\n{time.perf_counter() - start:.0f} s; wrote league.json, reward.csv, pairs.csv, players.md and league.png "
        f"to {out}"
    )
