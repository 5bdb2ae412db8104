"""`coala league --agents=DIR,... [--zoo=auto] [--meta_episodes=16] [--out=DIR]`: every pair, both seats.

Each --agents entry is a run's workdir (every meta agent of its newest checkpoint), an exported agent (coala
export) or a folder holding either (an experiment's runs, results/agents/). The zoo (IPD): always_cooperate,
always_defect, random, tit_for_tat, zd_extortion (χ = 3) and naive (a fresh naive A2C learner with the first agent's
training hyperparameters); Clean Up-lite: always_clean, never_clean, random and naive. Every pair plays
--meta_episodes meta-episodes in each seating; a player meets itself too.

Writes reward and cooperation matrices (CSV, JSON with standard errors, a heatmap PNG), a per-player table (mean
over opponents, IQM with a 95 % stratified-bootstrap interval) and a per-estimator table across seeds to --out
(default: DIR/league of the first run or experiment folder, else workdirs/league; never results/ unless named).

`--exploiter` trains, instead, a fresh meta agent against each agent as its only co-player
(--exploiter_iterations, --exploiter_meta_batch_size, --exploiter_learning_rate) and writes what each agent earns
against it and against the zoo to exploitability.{json,md,png}. `--mismatch` plays, instead, each agent against
naive learners that differ from its training ones in one factor at a time (--naive_batch_sizes,
--naive_lr_multipliers, --naive_rules) and writes mismatch.{json,csv,md,png}.
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
_MISMATCH = flags.DEFINE_bool("mismatch", False, "Play each agent against mismatched naive learners instead.")
_NAIVE_BATCH_SIZES = flags.DEFINE_list("naive_batch_sizes", ["1", "4", "16", "64"], "--mismatch: the naive B values.")
_NAIVE_LR = flags.DEFINE_list("naive_lr_multipliers", ["0.3", "1", "3"], "--mismatch: learning rate x these.")
_NAIVE_RULES = flags.DEFINE_list("naive_rules", ["a2c", "pg"], "--mismatch: naive rules (a2c; pg: no critic).")
_EXPLOITER = flags.DEFINE_bool("exploiter", False, "Train an exploiter of each agent and measure what it loses.")
_EXPLOITER_ITERATIONS = flags.DEFINE_integer("exploiter_iterations", 100, "--exploiter: training iterations.")
_EXPLOITER_BATCH = flags.DEFINE_integer("exploiter_meta_batch_size", 8, "--exploiter: meta-episodes per update.")
_EXPLOITER_LR = flags.DEFINE_float("exploiter_learning_rate", 3e-3, "--exploiter: its PPO learning rate.")
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
    from coala_dist.league.zoo import ZOOS

    if value == "none":
        return []
    if value == "auto":
        return list(ZOOS.get(env, ()))
    if value in ZOOS:
        if value != env:
            raise UsageError(f"--zoo={value} cannot play {env}; use --zoo=none or --zoo=auto")
        return list(ZOOS[value])
    names = [name.strip() for name in value.split(",") if name.strip()]
    valid = ZOOS.get(env, ())
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise UsageError(
            f"--zoo: unknown player(s) {', '.join(unknown)} for {env}; valid: auto, none, {env}, {', '.join(valid)}"
        )
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
    from coala_dist.league.zoo import zoo_players

    out = _OUT.value or default_out(sources)
    start = time.perf_counter()
    try:
        players, descriptions = league.load_players(sources)
        game = league.common_game(descriptions)
    except league.AgentSourceError as error:
        raise UsageError(str(error)) from None
    except (FileNotFoundError, IncompatibleCheckpointError, ValueError, OSError) as error:
        raise SystemExit(f"coala league: {error}") from None
    if _MISMATCH.value and _EXPLOITER.value:
        raise UsageError("--mismatch and --exploiter are separate studies; run one at a time")
    if _MISMATCH.value:
        _mismatch(players, descriptions, out, start)
        return
    names = zoo_names(_ZOO.value, game["env"])
    zoo = zoo_players(names, league.reference_description(descriptions), league.make_game(game).env, game["env"])
    if _EXPLOITER.value:
        _exploiter(players, descriptions, zoo, out, start)
        return
    players += zoo
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


def _numbers(values: list[str], flag: str, kind: type) -> tuple:
    try:
        numbers = tuple(kind(v) for v in values)
    except ValueError:
        raise UsageError(f"--{flag}: {','.join(values)} are not {kind.__name__}s") from None
    if not numbers or any(n <= 0 for n in numbers):
        raise UsageError(f"--{flag}: give one or more values > 0")
    return numbers


def _mismatch(players, descriptions, out: str, start: float) -> None:
    from coala_dist.commands import check_writable_dir
    from coala_dist.league import mismatch
    from coala_dist.league.zoo import NAIVE_RULES

    if not players:
        raise UsageError("--mismatch needs --agents")
    batch_sizes = _numbers(_NAIVE_BATCH_SIZES.value, "naive_batch_sizes", int)
    multipliers = _numbers(_NAIVE_LR.value, "naive_lr_multipliers", float)
    rules = tuple(_NAIVE_RULES.value)
    unknown = [r for r in rules if r not in NAIVE_RULES]
    if unknown or not rules:
        raise UsageError(
            f"--naive_rules: unknown {', '.join(unknown) or 'none given'}; valid: {', '.join(NAIVE_RULES)}"
        )
    try:
        check_writable_dir(out, "--out")
    except ValueError as error:
        raise SystemExit(f"coala league: {error}") from None
    count = len(mismatch.settings(descriptions[0]["game"]["batch_size"], batch_sizes, multipliers, rules))
    print(
        f"{len(players)} agents against {count} naive learners each, {_META_EPISODES.value} meta-episodes per "
        "setting; each setting compiles once"
    )
    result = mismatch.run_mismatch(
        players,
        descriptions,
        batch_sizes=batch_sizes,
        lr_multipliers=multipliers,
        rules=rules,
        meta_episodes=_META_EPISODES.value,
        seed=_SEED.value,
    )
    mismatch.write_mismatch(result, out)
    print(mismatch.format_mismatch(result))
    print(
        f"\n{time.perf_counter() - start:.0f} s; wrote mismatch.json, mismatch.csv, mismatch.md and mismatch.png "
        f"to {out}"
    )


def _exploiter(players, descriptions, zoo, out: str, start: float) -> None:
    from coala_dist.commands import check_writable_dir
    from coala_dist.league import exploiter

    if not players:
        raise UsageError("--exploiter needs --agents")
    if _EXPLOITER_ITERATIONS.value < 1 or _EXPLOITER_BATCH.value < 1 or not _EXPLOITER_LR.value > 0:
        raise UsageError("--exploiter_iterations and --exploiter_meta_batch_size must be >= 1, the rate > 0")
    try:
        check_writable_dir(out, "--out")
    except ValueError as error:
        raise SystemExit(f"coala league: {error}") from None
    print(
        f"training an exploiter of each of {len(players)} agents: {_EXPLOITER_ITERATIONS.value} iterations of "
        f"{_EXPLOITER_BATCH.value} meta-episodes, then {_META_EPISODES.value} meta-episodes per seating"
    )
    result = exploiter.exploitability(
        players,
        descriptions,
        zoo,
        iterations=_EXPLOITER_ITERATIONS.value,
        meta_batch_size=_EXPLOITER_BATCH.value,
        learning_rate=_EXPLOITER_LR.value,
        meta_episodes=_META_EPISODES.value,
        seed=_SEED.value,
    )
    exploiter.write_exploitability(result, out)
    print(exploiter.format_exploitability(result))
    print(f"\n{time.perf_counter() - start:.0f} s; wrote exploitability.json, .md and .png to {out}")
