"""Reference co-players for the league: fixed IPD strategies and fresh naive learners.

IPD (payoffs of `coala_dist.envs.ipd.IPD`, Table 1: R = 1, S = −1, T = 2, P = 0 per step), memory-one strategies
over the observed states (start, CC, CD, DC, DD; own action first):

| name               | P(C | start, CC, CD, DC, DD)       |
|--------------------|----------------------------------|
| always_cooperate   | 1, 1, 1, 1, 1                    |
| always_defect      | 0, 0, 0, 0, 0                    |
| random             | ½ everywhere                     |
| tit_for_tat        | 1, 1, 0, 1, 0 (copies the co-player's last action) |
| zd_extortion       | p₁, p₁, p₂, p₃, 0 with χ = 3, φ = φ_max(χ)/2 (paper Eq. 18; Press & Dyson 2012) |

The ZD extortioner enforces s_own − P = χ (s_other − P) on long-run average payoffs; with χ = 3 and φ = φ_max/2 =
1/14 it cooperates with probability 6/7 after CC, 1/2 after CD, 5/14 after DC and never after DD. It opens as after
mutual cooperation (p₁): the family fixes only the four conditional probabilities.

Clean Up-lite (`coala_dist.envs.cleanup_lite`, paper App. B.1.2): scripted bots reading their own position and the
cells' contents from the observation: `always_clean` walks to the river and from dirt to the nearest other dirt
(cleaning is visiting), waiting on the river when it is clean; `never_clean` walks to the orchard and from apple to
the nearest other apple, never entering the river (it cleans only if it starts on dirt); `random` picks any of the
six actions uniformly. None of them zaps except `random`.

`naive` is a fresh naive learner with the training hyperparameters (paper App. B.2, Table 8: one A2C step per
inner episode on its B trajectories), drawn from the policy initialisation the run's naive learners were drawn
from, a new draw every meta-episode. `naive_player` also makes the mismatched ones: another batch size B, the
learning rate times a factor, or another rule (`NAIVE_RULES`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from coala_dist.league.match import MemoryOne, NaiveHawk, Player

ZD_CHI = 3.0
IPD_FIXED = ("always_cooperate", "always_defect", "random", "tit_for_tat", "zd_extortion")
IPD_ZOO = (*IPD_FIXED, "naive")
# Naive learning rules: "a2c" is training's (Table 8); "pg" drops the critic: the value loss's weight is 0, so the
# zero-initialised value head stays 0 and the advantage is the (batch-normalised) Monte Carlo return, REINFORCE.
NAIVE_RULES = ("a2c", "pg")


def zd_extortion_table(chi: float = ZD_CHI) -> np.ndarray:
    """P(C | start, CC, CD, DC, DD) of the ZD extortioner with factor χ and φ = φ_max(χ)/2 (paper Eq. 18)."""
    from coala_dist.envs.analytic_ipd import zero_determinant_phi_max, zero_determinant_strategy

    phi = float(zero_determinant_phi_max(chi)) / 2
    p = np.asarray(zero_determinant_strategy(chi, phi), np.float64)
    return np.asarray([p[0], *p], np.float32)


def ipd_table(name: str) -> np.ndarray:
    """The memory-one table of one of `IPD_FIXED`."""
    tables = {
        "always_cooperate": [1.0] * 5,
        "always_defect": [0.0] * 5,
        "random": [0.5] * 5,
        "tit_for_tat": [1.0, 1.0, 0.0, 1.0, 0.0],
    }
    if name == "zd_extortion":
        return zd_extortion_table()
    if name not in tables:
        raise ValueError(f"unknown IPD strategy {name!r}; valid: {', '.join(IPD_FIXED)}")
    return np.asarray(tables[name], np.float32)


def naive_player(
    reference: dict[str, Any],
    *,
    batch_size: int | None = None,
    lr_multiplier: float = 1.0,
    rule: str = "a2c",
    name: str | None = None,
) -> Player:
    """A fresh naive learner with the hyperparameters of `reference` (a manifest's `policy`, `naive` and `game`),
    optionally mismatched: batch size, learning-rate factor, rule."""
    from coala_dist.networks.policy import HawkPolicy
    from coala_dist.rl.naive import NaiveLearner
    from coala_dist.rl.optim import make_optimizer

    if rule not in NAIVE_RULES:
        raise ValueError(f"unknown naive rule {rule!r}; valid: {', '.join(NAIVE_RULES)}")
    if not lr_multiplier > 0:
        raise ValueError(f"the learning-rate factor must be > 0, got {lr_multiplier}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"the naive batch size must be >= 1, got {batch_size}")
    fields = dict(reference["policy"])
    obs_dim = int(fields.pop("obs_dim"))
    policy = HawkPolicy(**fields)
    n = reference["naive"]
    learning_rate = float(n["learning_rate"]) * lr_multiplier
    learner = NaiveLearner(
        policy=policy,
        optimizer=make_optimizer(n["optimizer"], learning_rate, n["max_grad_norm"], n["adam_epsilon"]),
        discount=n["discount"],
        reward_scale=n["reward_scale"],
        value_coefficient=n["value_coefficient"] if rule == "a2c" else 0.0,
        entropy_coefficient=n["entropy_coefficient"],
        advantage_normalization=n["advantage_normalization"],
    )
    if name is None:
        parts = ["naive"]
        if batch_size is not None and batch_size != reference["game"]["batch_size"]:
            parts.append(f"B{batch_size}")
        if lr_multiplier != 1.0:
            parts.append(f"lr×{lr_multiplier:g}")
        if rule != "a2c":
            parts.append(rule)
        name = "-".join(parts)
    kind = NaiveHawk(policy=policy, learner=learner, obs_dim=obs_dim, fresh_init=True, batch_size=batch_size)
    info = {
        "kind": "naive learner",
        "rule": rule,
        "learning_rate": learning_rate,
        "batch_size": batch_size or reference["game"]["batch_size"],
    }
    return Player(name=name, kind=kind, data=(), group=name, zoo=True, info=info)


def ipd_zoo(names: tuple[str, ...] | list[str], reference: dict[str, Any]) -> list[Player]:
    """The IPD zoo's players named in `names` (`IPD_ZOO`), in that order."""
    players = []
    for name in names:
        if name == "naive":
            players.append(naive_player(reference))
        elif name in IPD_FIXED:
            table = ipd_table(name)
            info = {
                "kind": "memory-one",
                "p_cooperate": dict(zip(("start", "CC", "CD", "DC", "DD"), table.tolist(), strict=True)),
            }
            players.append(Player(name=name, kind=MemoryOne(), data=table, group=name, zoo=True, info=info))
        else:
            raise ValueError(f"unknown zoo player {name!r}; valid: {', '.join(IPD_ZOO)}")
    return players


CLEANUP_BOTS = ("always_clean", "never_clean", "random")
CLEANUP_ZOO = (*CLEANUP_BOTS, "naive")


@dataclasses.dataclass(frozen=True)
class CleanupBot:
    """A scripted Clean Up-lite player (module docstring). Data: `()`.

    Attributes:
      mode: "always_clean", "never_clean" or "random".
      grid_height, grid_width: the grid (the river is the last column, the orchard the first).
    """

    mode: str
    grid_height: int
    grid_width: int
    batch_size: int | None = None

    def start(self, data, key, batch):
        del data, key, batch
        return ()

    def act(self, data, carry, obs, long_position, t, key):
        from coala_dist.envs.cleanup_lite import APPLE, DIRT, MOVE_DOWN, MOVE_LEFT, MOVE_RIGHT, MOVE_UP, NOOP

        del data, long_position, t
        if self.mode == "random":
            return jax.random.randint(key, obs.shape[:1], 0, 6).astype(jnp.int32), carry
        cells = self.grid_height * self.grid_width
        cell = jnp.argmax(obs[:, :cells], axis=-1)
        row, col = cell // self.grid_width, cell % self.grid_width
        contents = obs[:, 2 * cells : 5 * cells].reshape(-1, self.grid_height, self.grid_width, 3)
        column, kind, step = (
            (self.grid_width - 1, DIRT, MOVE_RIGHT) if self.mode == "always_clean" else (0, APPLE, MOVE_LEFT)
        )
        wanted = contents[:, :, column, kind] > 0.5  # [b, rows]
        rows = jnp.arange(self.grid_height)
        # The cell it stands on is cleaned (harvested) this step whatever it does: head for the nearest other one.
        wanted = jnp.logical_and(wanted, rows[None, :] != row[:, None])
        distance = jnp.where(wanted, jnp.abs(rows[None, :] - row[:, None]), self.grid_height + 1)
        target = jnp.argmin(distance, axis=-1)
        along = jnp.where(target < row, MOVE_UP, jnp.where(target > row, MOVE_DOWN, NOOP))
        along = jnp.where(jnp.any(wanted, axis=-1), along, NOOP)
        action = jnp.where(col == column, along, step)
        return action.astype(jnp.int32), carry

    def end_inner_episode(self, data, carry, obs, actions, rewards, learns):
        del data, obs, actions, rewards, learns
        return carry


def cleanup_zoo(names: tuple[str, ...] | list[str], reference: dict[str, Any], env: Any) -> list[Player]:
    """The Clean Up-lite zoo's players named in `names` (`CLEANUP_ZOO`) for the grid of `env`."""
    players = []
    for name in names:
        if name == "naive":
            players.append(naive_player(reference))
        elif name in CLEANUP_BOTS:
            kind = CleanupBot(name, env.grid_height, env.grid_width)
            players.append(Player(name=name, kind=kind, data=(), group=name, zoo=True, info={"kind": "scripted"}))
        else:
            raise ValueError(f"unknown Clean Up zoo player {name!r}; valid: {', '.join(CLEANUP_ZOO)}")
    return players


ZOOS = {"ipd": IPD_ZOO, "cleanup_lite": CLEANUP_ZOO}


def zoo_players(names: tuple[str, ...] | list[str], reference: dict[str, Any], env: Any, env_name: str) -> list[Player]:
    """The zoo players `names` of environment `env_name`."""
    if env_name == "cleanup_lite":
        return cleanup_zoo(names, reference, env)
    return ipd_zoo(names, reference)
