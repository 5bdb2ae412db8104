"""The round-robin league: trained agents and a zoo of reference co-players, every pair, both seats.

Each unordered pair {i, j} plays `meta_episodes` meta-episodes with i in seat 1 and as many with j in seat 1; a
player against itself plays 2·`meta_episodes` in one seating. A meta-episode is M inner episodes of T steps in B
parallel games (the agents' game, paper Table 2), and it is the unit of every statistic: its per-step mean reward is
one sample (a naive learner couples the B games of a meta-episode, so games are not independent samples). Cell
(i, j) of a matrix pools i's samples against j from both seats: mean, standard error, count.

Keys: every seating's meta-episodes are `split(fold_in(fold_in(league_key, id(a)), id(b)), n)` with id a 31-bit
CRC of the seated players' names, so a pair's games do not change when players join or leave the league.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import zlib
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from coala_dist.analysis import statistics
from coala_dist.league.match import FrozenHawk, Game, Player, compiled_match, match_batch_size

# fold_in index of the league's key under jax.random.PRNGKey(seed): no run's streams start this way (coala_dist.keys).
LEAGUE_STREAM = 0x1EA6_0E00
SKIPPED_FOLDERS = ("league", "eval", "tensorboard", "control")


class AgentSourceError(ValueError):
    """An --agents entry is not a folder, or holds no agent (a mistake in what was typed)."""


# ---------------------------------------------------------------------------------------------------------------------
# Where agents come from.
def _is_run(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "checkpoints"))


def find_agent_folders(source: str, max_depth: int = 4) -> list[str]:
    """The exported agents (agent.json) and runs (checkpoints/) at or below `source`, in sorted order.

    Raises:
      AgentSourceError: `source` is not a folder or holds neither.
    """
    from coala_dist.agents import is_agent_dir

    if not os.path.isdir(source):
        raise AgentSourceError(f"--agents: {source} is not a folder")
    if is_agent_dir(source) or _is_run(source):
        return [source]
    found = []
    base_depth = os.path.normpath(source).count(os.sep)
    for root, dirs, _ in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_FOLDERS and not d.startswith(("checkpoints", ".")))
        if root != source and (is_agent_dir(root) or _is_run(root)):
            found.append(root)
            dirs[:] = []
        elif os.path.normpath(root).count(os.sep) - base_depth >= max_depth:
            dirs[:] = []
    if not found:
        raise AgentSourceError(
            f"--agents: {source} is not an agent: no agent.json (coala export), no checkpoints/ (a run's workdir) "
            "and no folder below it holding either"
        )
    return sorted(found)


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}~{seen[name]}")
    return out


def load_players(sources: list[str], log: Callable[[str], None] = print) -> tuple[list[Player], list[dict[str, Any]]]:
    """Frozen players from runs (every meta agent of each), experiment folders and exported agents.

    Returns:
      (players, descriptions): one manifest-like description per player (`coala_dist.agents.describe`).

    Raises:
      AgentSourceError: a source is not a folder or holds no agent.
      FileNotFoundError: a run has no readable checkpoint.
    """
    from coala_dist.agents import describe, is_agent_dir, load_agent
    from coala_dist.analysis.runs import restore_workdir
    from coala_dist.analysis.style import label
    from coala_dist.pool import select_params

    entries: list[tuple[str, FrozenHawk, Any, dict[str, Any], dict[str, Any]]] = []
    for source in sources:
        folders = find_agent_folders(source)
        parent = os.path.dirname(os.path.normpath(os.path.abspath(source)))
        for folder in folders:
            base = os.path.relpath(os.path.abspath(folder), parent)
            if is_agent_dir(folder):
                agent = load_agent(folder)
                description = agent.manifest
                info = {"source": folder, "iteration": description.get("iteration")}
                entries.append((agent.name, FrozenHawk(agent.policy), agent.params, description, info))
                continue
            components, state = restore_workdir(folder)
            population = int(components.config.population_size_meta)
            for i in range(population):
                description = describe(components.config, components.env, i)
                info = {"source": folder, "iteration": int(state.step), "agent_index": i}
                name = base if population == 1 else f"{base}:{i}"
                params = jax.device_get(select_params(state.meta_params, i))
                entries.append((name, FrozenHawk(components.policy), params, description, info))
            log(f"loaded {folder}: {population} meta agent(s) after {int(state.step)} iterations")
    names = _unique([entry[0] for entry in entries])
    players, descriptions = [], []
    for name, (_, kind, params, description, info) in zip(names, entries, strict=True):
        info = {"estimator": description["estimator"], "seed": description["seed"], **info}
        players.append(
            Player(name=name, kind=kind, data=params, group=label(description["estimator"]), zoo=False, info=info)
        )
        descriptions.append(description)
    return players, descriptions


def common_game(descriptions: list[dict[str, Any]]) -> dict[str, Any]:
    """The game every agent was trained in (env, T, env settings, M; B of the first); the paper's IPD without agents.

    Raises:
      AgentSourceError: two agents were trained in different games.
    """
    if not descriptions:
        from coala_dist.config import default_config

        config = default_config()
        return {
            "env": config.env.name,
            "inner_episode_length": config.env.inner_episode_length,
            "env_kwargs": {},
            "num_inner_episodes": config.num_inner_episodes,
            "batch_size": config.batch_size,
        }
    first = descriptions[0]["game"]
    for description in descriptions[1:]:
        game = description["game"]
        differing = [
            k
            for k in ("env", "inner_episode_length", "env_kwargs", "num_inner_episodes")
            if game.get(k) != first.get(k)
        ]
        if differing:
            details = ", ".join(f"{k} {first.get(k)!r} vs {game.get(k)!r}" for k in differing)
            raise AgentSourceError(f"--agents were trained in different games ({details}); a league needs one")
    return dict(first)


def reference_description(descriptions: list[dict[str, Any]]) -> dict[str, Any]:
    """Whose training settings the zoo's naive learners take: the first agent's, or the paper's IPD ones."""
    if descriptions:
        return descriptions[0]
    from coala_dist.config import default_config
    from coala_dist.envs import make_env

    config = default_config()
    env = make_env(config.env.name, config.env.inner_episode_length)
    from coala_dist.agents import describe

    return describe(config, env, 0)


def make_game(game: dict[str, Any]) -> Game:
    from coala_dist.envs import make_env

    env = make_env(game["env"], int(game["inner_episode_length"]), **(game.get("env_kwargs") or {}))
    return Game(env=env, num_inner_episodes=int(game["num_inner_episodes"]), batch_size=int(game["batch_size"]))


# ---------------------------------------------------------------------------------------------------------------------
# Playing.
def _name_id(name: str) -> int:
    return zlib.crc32(name.encode()) & 0x7FFF_FFFF


def seating_keys(seed: int, name_1: str, name_2: str, count: int) -> jax.Array:
    """The keys of the `count` meta-episodes with `name_1` in seat 1 and `name_2` in seat 2."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), LEAGUE_STREAM)
    key = jax.random.fold_in(jax.random.fold_in(key, _name_id(name_1)), _name_id(name_2))
    return jax.random.split(key, count)


def seat_metrics(metrics: dict[str, np.ndarray]) -> tuple[str, ...]:
    """Stems of the per-player metrics of an environment's info (`cooperate` for `cooperate_player_1/2`)."""
    return tuple(sorted(k[: -len("_player_1")] for k in metrics if k.endswith("_player_1")))


def play_seating(
    player_1: Player, player_2: Player, game: Game, count: int, seed: int, *, swap: bool = False
) -> dict[str, np.ndarray]:
    """`count` meta-episodes with `player_1` in seat 1 (in seat 2 if `swap`): per meta-episode [count] means over its
    M·T steps and B games of `reward_1`, `reward_2` and each per-player metric (`<stem>_player_1`, `_player_2`),
    1 and 2 naming the players, not the seats. Both seatings of a pair share one compiled program."""
    fn = compiled_match(player_1.kind, player_2.kind, game)
    seated = (player_2.name, player_1.name) if swap else (player_1.name, player_2.name)
    keys = seating_keys(seed, *seated, count)
    metrics = jax.device_get(fn(player_1.data, player_2.data, keys, np.bool_(swap)))
    # Every inner episode has the same B·T steps: the mean of the per-inner-episode means is the per-step mean.
    return {k: np.asarray(v, np.float64).mean(axis=1) for k, v in metrics.items()}


@dataclasses.dataclass
class PairResult:
    """Two players' games: `samples` metric -> (p's per-meta-episode values against q, q's against p), both seats
    pooled; `seatings` (seat-1 name, seat-2 name) -> `play_seating`'s output keyed by seat."""

    samples: dict[str, tuple[np.ndarray, np.ndarray]]
    seatings: dict[tuple[str, str], dict[str, np.ndarray]]


def play_pair(p: Player, q: Player, game: Game, meta_episodes: int, seed: int) -> PairResult:
    """`meta_episodes` meta-episodes with p in seat 1 and as many with q in seat 1; a player against itself plays
    2·`meta_episodes` in one seating, and a meta-episode's sample is then the mean of its two seats."""
    if p is q or p.name == q.name:
        out = play_seating(p, p, game, 2 * meta_episodes, seed)
        own = {"reward": (out["reward_1"] + out["reward_2"]) / 2}
        for stem in seat_metrics(out):
            own[stem] = (out[f"{stem}_player_1"] + out[f"{stem}_player_2"]) / 2
        return PairResult({k: (v, v) for k, v in own.items()}, {(p.name, p.name): out})
    first = play_seating(p, q, game, meta_episodes, seed)
    second = play_seating(p, q, game, meta_episodes, seed, swap=True)
    samples = {
        metric: (np.concatenate([first[one], second[one]]), np.concatenate([first[two], second[two]]))
        for metric, (one, two) in _seat_keys(first).items()
    }
    seatings = {(p.name, q.name): first, (q.name, p.name): {k: second[_other(k)] for k in second}}
    return PairResult(samples, seatings)


@dataclasses.dataclass
class LeagueResult:
    """What a league measured.

    Attributes:
      players: the entrants, in table order.
      game: the game's settings (env, T, env_kwargs, M, B).
      meta_episodes: per seating.
      seed: the league's seed.
      samples: metric ("reward", "cooperate", ...) -> [N][N] lists of per-meta-episode values of the row player
        against the column player, both seats pooled.
      seatings: (name_1, name_2) -> `play_seating`'s output.
      seconds: wall time of the games (compilation included).
    """

    players: list[Player]
    game: dict[str, Any]
    meta_episodes: int
    seed: int
    samples: dict[str, list[list[np.ndarray]]]
    seatings: dict[tuple[str, str], dict[str, np.ndarray]]
    seconds: float

    def cell(self, metric: str, i: int, j: int) -> dict[str, float]:
        values = self.samples[metric][i][j]
        return {"mean": float(np.mean(values)), "se": statistics.standard_error(values), "n": int(len(values))}


def run_league(
    players: list[Player],
    game: dict[str, Any],
    *,
    meta_episodes: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> LeagueResult:
    """Plays every pair of `players` in both seats (`meta_episodes` each) and itself (2·`meta_episodes`).

    Raises:
      ValueError: fewer than one player, fewer than one meta-episode, or two players that cannot meet.
    """
    if not players:
        raise ValueError("a league needs at least one player")
    if meta_episodes < 1:
        raise ValueError(f"meta_episodes must be >= 1, got {meta_episodes}")
    spec = make_game(game)
    count = len(players)
    for a in range(count):
        for b in range(a, count):
            match_batch_size(players[a].kind, players[b].kind, spec.batch_size)  # fail before playing anything
    seatings: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    samples: dict[str, list[list[Any]]] = {}
    start = time.perf_counter()
    pairs = count * (count + 1) // 2
    done = 0
    for i in range(count):
        for j in range(i, count):
            pair = play_pair(players[i], players[j], spec, meta_episodes, seed)
            seatings.update(pair.seatings)
            for metric, (mine, theirs) in pair.samples.items():
                _matrix(samples, metric, count)[i][j] = mine
                _matrix(samples, metric, count)[j][i] = theirs
            done += 1
            if done == pairs or done % max(1, pairs // 10) == 0:
                log(f"  played {done}/{pairs} pairs ({time.perf_counter() - start:.0f} s)")
    return LeagueResult(
        players=players,
        game=game,
        meta_episodes=meta_episodes,
        seed=seed,
        samples=samples,
        seatings=seatings,
        seconds=time.perf_counter() - start,
    )


def _other(name: str) -> str:
    """The same metric of the other player: `reward_1` <-> `reward_2`, `x_player_1` <-> `x_player_2`."""
    if name.endswith("1"):
        return name[:-1] + "2"
    if name.endswith("2"):
        return name[:-1] + "1"
    return name


def _seat_keys(out: dict[str, np.ndarray]) -> dict[str, tuple[str, str]]:
    keys = {"reward": ("reward_1", "reward_2")}
    keys.update({stem: (f"{stem}_player_1", f"{stem}_player_2") for stem in seat_metrics(out)})
    return keys


def _matrix(samples: dict[str, list[list[Any]]], metric: str, count: int) -> list[list[Any]]:
    return samples.setdefault(metric, [[None] * count for _ in range(count)])


# ---------------------------------------------------------------------------------------------------------------------
# Summaries.
def per_player_table(result: LeagueResult, *, seed: int = 0) -> list[dict[str, Any]]:
    """One row per player, best mean reward first: its reward per step averaged over every opponent (itself
    included, as in a round-robin tournament) with a standard error, the interquartile mean of its per-meta-episode
    rewards with a 95 % stratified-bootstrap interval (strata: the opponents; `analysis.statistics`), its means
    against the zoo and against trained agents, and its mean cooperation rate (IPD)."""
    rows = []
    players = result.players
    for i, player in enumerate(players):
        cells = [result.cell("reward", i, j) for j in range(len(players))]
        means = np.asarray([c["mean"] for c in cells])
        ses = np.asarray([c["se"] for c in cells])
        strata = result.samples["reward"][i]
        low, high = statistics.stratified_bootstrap_interval(strata, seed=seed)
        zoo = [m for m, q in zip(means, players, strict=True) if q.zoo]
        agents = [m for m, q in zip(means, players, strict=True) if not q.zoo]
        row = {
            "player": player.name,
            "group": player.group,
            "zoo": player.zoo,
            "reward_mean": float(means.mean()),
            "reward_se": float(math.sqrt(float(np.sum(ses**2))) / len(means)),
            "reward_iqm": statistics.interquartile_mean(np.concatenate(strata)),
            "reward_iqm_low": low,
            "reward_iqm_high": high,
            "reward_vs_zoo": float(np.mean(zoo)) if zoo else math.nan,
            "reward_vs_agents": float(np.mean(agents)) if agents else math.nan,
        }
        if "cooperate" in result.samples:
            row["cooperate_mean"] = float(
                np.mean([result.cell("cooperate", i, j)["mean"] for j in range(len(players))])
            )
        rows.append(row)
    return sorted(rows, key=lambda r: -r["reward_mean"])


def group_table(rows: list[dict[str, Any]], *, seed: int = 0) -> list[dict[str, Any]]:
    """Trained agents grouped (by estimator): across the group's agents (seeds), their mean reward over all
    opponents and over the zoo, as `statistics.seed_summary` (mean ± std, IQM with a 95 % bootstrap interval)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if not row["zoo"]:
            groups.setdefault(row["group"], []).append(row)
    return [
        {
            "group": group,
            "agents": len(members),
            "reward": statistics.seed_summary([m["reward_mean"] for m in members], seed=seed),
            "reward_vs_zoo": statistics.seed_summary([m["reward_vs_zoo"] for m in members], seed=seed),
        }
        for group, members in groups.items()
    ]
