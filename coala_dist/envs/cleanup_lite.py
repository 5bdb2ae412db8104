"""Clean Up-lite: a two-player 5 × 4 public-goods grid world (paper App. B.1.2, Table 5).

A simplified Melting Pot Clean Up. The orchard (leftmost column) grows apples, worth +1 to whoever
harvests them, but only while the river (rightmost column) is clean: the apple spawn probability
falls linearly with the number of dirt cells and is zero from `pollution_threshold` dirt cells on.
Cleaning costs time and pays nothing, so each player would rather the other cleaned; either may zap
the other to freeze it.

Grid and indices. Cells are numbered row-major, `cell = row · grid_width + col`, row 0 at the top;
"up" decreases the row, "right" increases the column. Column 0 is the orchard, column
`grid_width − 1` the river, the columns in between are always empty. A cell holds one of EMPTY (0),
APPLE (1), DIRT (2); apples only ever appear in the orchard and dirt only in the river. Actions:
0 move right, 1 move left, 2 move up, 3 move down, 4 zap, 5 do nothing (the paper's order). Player
axes inside the state are ordered (player 1, player 2).

One step, in the order of paper App. B.1.2 ("free" = not frozen at the start of the step):
  1. If some river cell is clean, with probability `pollution_probability` (0.35) dirt appears on a
     uniformly random clean river cell.
  2. If some orchard cell has no apple, with probability p_apple = 1 − min(1, P / P_threshold)
     (`apple_spawn_probability`; P = dirt cells *after* step 1, P_threshold =
     `pollution_threshold` = 3) an apple appears on a uniformly random apple-free orchard cell.
  3. A free agent standing on an apple harvests it: reward `apple_reward` (+1), the cell empties.
  4. A free agent standing on dirt cleans it (cleaning is visiting; there is no beam).
  5. A free agent that zaps succeeds with probability `zap_probability` (0.9) if the co-player is
     free and at most `zap_range` (2) cells away; the co-player is then frozen for
     `freeze_duration` (5) steps.
  6. Agents move (walls stop them).
Because movement comes last, harvesting and cleaning at step t act on the cell reached at t − 1.

Decisions where paper App. B.1.2 is ambiguous or silent (docs/choices.md#clean-up-lite-rules; switch = dataclass field):
  - Orientation "5 × 4": read as 5 rows × 4 columns (matrix convention), so river and orchard have
    5 cells each and there are 2 middle columns. Switch: `grid_height`, `grid_width` (4 × 5 gives
    the other reading).
  - Zap distance: Manhattan (L1), the number of moves between the two cells. Switch:
    `zap_distance_metric` ("manhattan" | "chebyshev"). Agents on the same cell (distance 0) are in
    range.
  - Walls: the grid's border; a move off the grid leaves the agent where it is. Dirt and apples do
    not block movement.
  - Co-location: by default both agents may stand on the same cell (no collisions). If both are
    free on the same apple, a fair coin decides who harvests it; if both are free on the same dirt,
    the cell is cleaned once and both are credited with cleaning. Switch: `allow_co_location=False`
    blocks moves that would end on the cell the co-player ends on, or swap the two agents (both
    moves are undone, which is the same as blocking the movers), and places the agents on distinct
    cells at reset.
  - Frozen agents neither move, zap, harvest nor clean. An agent zapped at step t does not move at
    step t (the zap precedes movement) and is frozen during steps t + 1, …, t + `freeze_duration`;
    it acts again at step t + `freeze_duration` + 1. While frozen it cannot be zapped (immunity),
    so a zap never extends a freeze. Zaps are simultaneous: two free agents can zap each other in
    the same step. Switch: `frozen_agent_moves=True` lets frozen agents move (they still cannot
    zap, harvest or clean).
  - The zapped flag in the observation is `frozen_steps_left > 0` after the step, i.e. "this
    player cannot act in the next step".
  - "Free orchard cell" means a cell without an apple (the text's "not occupied by dirt" cannot be
    meant literally: orchard cells never hold dirt). Agents do not stop spawning; an apple that
    spawns under a free agent is harvested in the same step (step 3 follows step 2).
  - Zapping costs nothing and pays nothing; being zapped only costs the lost steps.
  - Initial state: each agent on a uniformly random cell (distinct cells if co-location is off),
    unzapped; no apples; `num_initial_dirt` (3) distinct uniformly random river cells dirty.

Observation (full and symmetric; `obs_dim = 5·N + 2`, 102 for N = 20 cells), "own" first:
  [0, N)      own position, one-hot over cells;
  [N, 2N)     co-player position, one-hot;
  [2N, 5N)    cell contents, cell-major: index 2N + 3·cell + kind, kind ∈ {EMPTY, APPLE, DIRT};
  5N          own zapped flag;
  5N + 1      co-player zapped flag.
Swapping the players' positions and freeze counters swaps their observations.

The environment is stochastic: every game carries its own PRNG key in the state and splits it each
step, so a batch of games is a pure function of the key given to `reset` and the actions. It never
resets itself; the rollout calls `reset` at every inner-episode boundary
(`inner_episode_length` = 64 steps, Table 5).

Per-step `info` (each [b] float32; zeros at reset):
  apple_player_1/2    1 if the player harvested an apple this step (reward = `apple_reward` × it);
  cleaned_player_1/2  1 if the player cleaned a dirt cell this step;
  zapped_player_1/2   1 if the player got zapped this step (a freeze started);
  frozen_player_1/2   1 if the player was frozen during this step (its action was ignored);
  pollution           dirt cells / river cells, at the end of the step;
  apples              apples / orchard cells, at the end of the step.
The paper's metrics (§4.2, §7.3) follow by averaging. Let ⟨x⟩ be the mean of `info[x]` over all
steps of a meta-episode (B games × M inner episodes × T steps; reset outputs excluded) and let the
ego be player 1 (swap the suffixes for player 2):
  - own return per inner episode       = T · `apple_reward` · ⟨apple_player_1⟩;
  - co-player return per inner episode = T · `apple_reward` · ⟨apple_player_2⟩ (the naive agent's
    reward when the co-player is naive);
  - cleaning discrepancy               = |⟨cleaned_player_1⟩ − ⟨cleaned_player_2⟩| per game (difference in
    the fraction of time each player spends cleaning), reported by `episode_metrics` as
    `cleaning_discrepancy`;
  - zap rate                           = ⟨zapped_player_1⟩ (how often the ego gets zapped, per
    step);
  - average pollution                  = ⟨pollution⟩;
  - average apples                     = ⟨apples⟩.

Notation: b = batch (parallel games), N = grid_height · grid_width cells, o = obs_dim.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from coala_dist.envs.base import EnvStep

# Actions, in the paper's order.
MOVE_RIGHT, MOVE_LEFT, MOVE_UP, MOVE_DOWN, ZAP, NOOP = range(6)
NUM_ACTIONS = 6
# (row, col) displacement of each action; zap and do-nothing stay in place.
ACTION_DISPLACEMENT = ((0, 1), (0, -1), (-1, 0), (1, 0), (0, 0), (0, 0))

# Cell contents.
EMPTY, APPLE, DIRT = range(3)
NUM_CELL_KINDS = 3

ZAP_DISTANCE_METRICS = ("manhattan", "chebyshev")

INFO_KEYS = (
    "apple_player_1",
    "apple_player_2",
    "cleaned_player_1",
    "cleaned_player_2",
    "zapped_player_1",
    "zapped_player_2",
    "frozen_player_1",
    "frozen_player_2",
    "pollution",
    "apples",
)


class CleanupLiteState(NamedTuple):
    """Batched Clean Up-lite state. Player axes are ordered (player 1, player 2).

    Attributes:
      contents: [b, N] int32, EMPTY / APPLE / DIRT per cell (row-major cell index).
      position: [b, 2] int32, each player's cell index.
      frozen_steps_left: [b, 2] int32, steps each player stays frozen (0 = free to act next step).
      t: [b] int32, steps taken in the current inner episode.
      key: [b] per-game PRNG keys ([b, 2] uint32 for raw keys), split at every step.
    """

    contents: jax.Array
    position: jax.Array
    frozen_steps_left: jax.Array
    t: jax.Array
    key: jax.Array


def apple_spawn_probability(num_dirt: jax.Array, pollution_threshold: float) -> jax.Array:
    """Apple spawn probability p_apple = 1 − min(1, P / P_threshold) (paper App. B.1.2, step 2).

    Args:
      num_dirt: P, the number of dirt cells, any shape, int or float.
      pollution_threshold: P_threshold (3 in the paper), > 0.

    Returns:
      float32 array of the shape of `num_dirt`, in [0, 1].
    """
    pollution = jnp.asarray(num_dirt, jnp.float32) / pollution_threshold
    return 1.0 - jnp.minimum(1.0, pollution)


def _gumbel_noise(key: jax.Array, num_cells: int, batch_ndim: int = 0) -> jax.Array:
    """The Gumbel noise that `jax.random.categorical(key, logits)` adds to [num_cells] logits.

    Args:
      key: PRNG keys with `batch_ndim` batch axes (typed keys, or raw uint32 keys with a trailing 2).
      num_cells: the number of logits.
      batch_ndim: the number of batch axes of `key`; every key draws its own noise.

    Returns:
      [*batch, num_cells] finite floats of the default float dtype (the dtype of the logits
      `where(allowed, 0.0, -inf)`, float32 unless 64-bit mode is on).
    """
    draw = lambda k: jax.random.gumbel(k, (num_cells,), jnp.result_type(float))
    for _ in range(batch_ndim):
        draw = jax.vmap(draw)
    return draw(key)


def _first_argmax(scores: jax.Array) -> jax.Array:
    """`jnp.argmax(scores, axis=-1)` for scores without NaN: the first index of the maximum.

    Computed as a max-reduction and an index search: XLA's float `argmax` (a two-operand
    reduction) is the slowest part of a step on CPU.
    """
    size = scores.shape[-1]
    is_best = scores == jnp.max(scores, axis=-1, keepdims=True)
    return jnp.min(jnp.where(is_best, jnp.arange(size, dtype=jnp.int32), size), axis=-1)


def _random_cell(key: jax.Array, allowed: jax.Array) -> jax.Array:
    """A uniformly random index among the True entries of `allowed` ([..., N] bool), one key per row.

    The draw of `jax.random.categorical(key, where(allowed, 0, −inf))`, bit for bit (Gumbel noise
    for every cell, the first index of the maximum). Returns 0 in a row without a True entry;
    callers only use the result when there is one.
    """
    noise = _gumbel_noise(key, allowed.shape[-1], batch_ndim=allowed.ndim - 1)
    scores = noise + jnp.where(allowed, 0.0, -jnp.inf)
    return _first_argmax(scores)


@dataclasses.dataclass(frozen=True)
class CleanupLite:
    """Batched two-player Clean Up-lite (module docstring: rules, decisions, observation, metrics).

    Attributes:
      inner_episode_length: steps per inner episode (T = 64, Table 5).
      grid_height: rows (5); the river and the orchard have this many cells.
      grid_width: columns (4), ≥ 2; column 0 is the orchard, the last column the river.
      pollution_probability: chance per step that dirt spawns on a clean river cell (0.35).
      pollution_threshold: P_threshold, dirt count at which apples stop growing (3).
      apple_reward: reward per harvested apple (1).
      zap_probability: chance that a zap within range hits a free co-player (0.9).
      zap_range: largest distance at which a zap can hit (2).
      zap_distance_metric: "manhattan" (L1) or "chebyshev" (L∞).
      freeze_duration: steps a zapped player stays frozen (5).
      num_initial_dirt: dirty river cells at reset (3).
      allow_co_location: whether both players may stand on one cell.
      frozen_agent_moves: whether frozen players may still move.
    """

    inner_episode_length: int = 64
    grid_height: int = 5
    grid_width: int = 4
    pollution_probability: float = 0.35
    pollution_threshold: float = 3.0
    apple_reward: float = 1.0
    zap_probability: float = 0.9
    zap_range: int = 2
    zap_distance_metric: str = "manhattan"
    freeze_duration: int = 5
    num_initial_dirt: int = 3
    allow_co_location: bool = True
    frozen_agent_moves: bool = False

    def __post_init__(self):
        def check(ok: bool, field: str, allowed: str):
            if not ok:
                value = getattr(self, field)
                raise ValueError(f"CleanupLite {field} must be {allowed}, got {value!r}")

        check(self.inner_episode_length >= 1, "inner_episode_length", ">= 1")
        check(self.grid_height >= 1, "grid_height", ">= 1")
        check(self.grid_width >= 2, "grid_width", ">= 2 (orchard and river are distinct columns)")
        check(0.0 <= self.pollution_probability <= 1.0, "pollution_probability", "in [0, 1]")
        check(self.pollution_threshold > 0, "pollution_threshold", "> 0")
        check(0.0 <= self.zap_probability <= 1.0, "zap_probability", "in [0, 1]")
        check(self.zap_range >= 0, "zap_range", ">= 0")
        check(
            self.zap_distance_metric in ZAP_DISTANCE_METRICS,
            "zap_distance_metric",
            f"one of {ZAP_DISTANCE_METRICS}",
        )
        check(self.freeze_duration >= 0, "freeze_duration", ">= 0")
        check(
            0 <= self.num_initial_dirt <= self.grid_height,
            "num_initial_dirt",
            f"in [0, grid_height={self.grid_height}]",
        )

    # ----- static geometry (numpy, built at trace time) -----

    @property
    def num_cells(self) -> int:
        return self.grid_height * self.grid_width

    @property
    def num_actions(self) -> int:
        return NUM_ACTIONS

    @property
    def obs_dim(self) -> int:
        return 2 * self.num_cells + NUM_CELL_KINDS * self.num_cells + 2

    def cell_index(self, row: int, col: int) -> int:
        """Row-major index of cell (row, col)."""
        return row * self.grid_width + col

    def river_mask(self) -> np.ndarray:
        """[N] bool, True on the river (last column)."""
        return np.arange(self.num_cells) % self.grid_width == self.grid_width - 1

    def orchard_mask(self) -> np.ndarray:
        """[N] bool, True on the orchard (first column)."""
        return np.arange(self.num_cells) % self.grid_width == 0

    def move_table(self) -> np.ndarray:
        """[N, 6] int32: the cell an agent on `cell` reaches with `action`; the border is a wall."""
        rows, cols = np.divmod(np.arange(self.num_cells), self.grid_width)
        displacement = np.asarray(ACTION_DISPLACEMENT)
        new_rows = np.clip(rows[:, None] + displacement[None, :, 0], 0, self.grid_height - 1)
        new_cols = np.clip(cols[:, None] + displacement[None, :, 1], 0, self.grid_width - 1)
        return (new_rows * self.grid_width + new_cols).astype(np.int32)

    def distance_table(self) -> np.ndarray:
        """[N, N] int32: zap distance between two cells under `zap_distance_metric`."""
        rows, cols = np.divmod(np.arange(self.num_cells), self.grid_width)
        row_gap = np.abs(rows[:, None] - rows[None, :])
        col_gap = np.abs(cols[:, None] - cols[None, :])
        if self.zap_distance_metric == "manhattan":
            return (row_gap + col_gap).astype(np.int32)
        return np.maximum(row_gap, col_gap).astype(np.int32)

    # ----- observation -----

    def observe(self, state: CleanupLiteState) -> tuple[jax.Array, jax.Array]:
        """Both players' observations of `state` (layout in the module docstring).

        Args:
          state: a batched `CleanupLiteState`.

        Returns:
          (obs_player_1, obs_player_2), each [b, o] float32, ordered (own, other).
        """
        batch = state.contents.shape[0]
        cells = jnp.arange(self.num_cells, dtype=jnp.int32)
        at = (state.position[:, :, None] == cells).astype(jnp.float32)  # [b, 2, N]
        kinds = jnp.arange(NUM_CELL_KINDS, dtype=jnp.int32)
        contents = (state.contents[:, :, None] == kinds).astype(jnp.float32).reshape(batch, -1)  # [b, 3N]
        zapped = (state.frozen_steps_left > 0).astype(jnp.float32)  # [b, 2]

        def view(own: int, other: int) -> jax.Array:
            flags = zapped[:, (own, other)]
            return jnp.concatenate([at[:, own], at[:, other], contents, flags], axis=-1)

        return view(0, 1), view(1, 0)

    # ----- reset -----

    def episode_metrics(self, info: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-inner-episode metrics that are not means of a per-step quantity.

        Args:
          info: the inner episode's per-step info, each [b, T].

        Returns:
          `cleaning_discrepancy`: |fraction of steps player 1 cleaned − fraction player 2 cleaned|, per game, then
          averaged over the b games (per game, so that games where different players clean do not cancel).
        """
        per_game = jnp.abs(info["cleaned_player_1"].mean(axis=-1) - info["cleaned_player_2"].mean(axis=-1))
        return {"cleaning_discrepancy": per_game.mean()}

    def reset(self, key: jax.Array, batch_size: int) -> EnvStep:
        """Starts `batch_size` independent games: random positions, no apples, some dirt.

        Args:
          key: PRNG key; each game gets its own split of it.
          batch_size: b.

        Returns:
          `EnvStep` with both players' first observations, zero rewards and zero `info`.
        """
        state = jax.vmap(self._reset_single)(jax.random.split(key, batch_size))
        obs_player_1, obs_player_2 = self.observe(state)
        zeros = jnp.zeros((batch_size,), jnp.float32)
        info = {name: zeros for name in INFO_KEYS}
        return EnvStep(state, obs_player_1, obs_player_2, zeros, zeros, info)

    def _reset_single(self, key: jax.Array) -> CleanupLiteState:
        key, key_player_1, key_player_2, key_dirt = jax.random.split(key, 4)
        cells = jnp.arange(self.num_cells)
        position_player_1 = jax.random.randint(key_player_1, (), 0, self.num_cells)
        if self.allow_co_location:
            position_player_2 = jax.random.randint(key_player_2, (), 0, self.num_cells)
        else:
            position_player_2 = _random_cell(key_player_2, cells != position_player_1)
        river_cells = np.flatnonzero(self.river_mask())
        dirt_cells = jax.random.choice(
            key_dirt, river_cells, (self.num_initial_dirt,), replace=False
        )
        contents = jnp.zeros((self.num_cells,), jnp.int32).at[dirt_cells].set(DIRT)
        position = jnp.stack([position_player_1, position_player_2]).astype(jnp.int32)
        return CleanupLiteState(
            contents=contents,
            position=position,
            frozen_steps_left=jnp.zeros((2,), jnp.int32),
            t=jnp.zeros((), jnp.int32),
            key=key,
        )

    # ----- step -----

    def step(
        self, state: CleanupLiteState, action_player_1: jax.Array, action_player_2: jax.Array
    ) -> EnvStep:
        """Advances every game by one step (rules in the module docstring).

        All games are advanced together with [b, ...] array operations; each game draws from its own
        key exactly as a lone game would (`jax.random` under `vmap` gives every key its own draws).

        Args:
          state: the current batched `CleanupLiteState`.
          action_player_1: [b] int in [0, 6).
          action_player_2: [b] int in [0, 6).

        Returns:
          `EnvStep` with the new state, both observations ordered (own, other), both rewards
          ([b] float32) and the per-step `info` ([b] float32 each).
        """
        actions = jnp.stack(
            [action_player_1.astype(jnp.int32), action_player_2.astype(jnp.int32)], axis=-1
        )  # [b, 2]
        contents, position = state.contents, state.position  # [b, N], [b, 2]
        frozen_steps_left = state.frozen_steps_left  # [b, 2]
        # Per game: key, key_dirt, key_dirt_cell, key_apple, key_apple_cell, key_tie, key_zap.
        keys = jax.vmap(lambda k: jax.random.split(k, 7))(state.key)  # [b, 7] keys
        key = keys[:, 0]
        # The coin flips: `bernoulli(k, p)` is `uniform(k, dtype of p) < p`, so the apple and the tie
        # coin (float32 p) are drawn as uniforms together and compared with their p later.
        spawn_dirt_coin = jax.vmap(lambda k: jax.random.bernoulli(k, self.pollution_probability))(keys[:, 1])
        uniform = jax.vmap(jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32)))
        coin_apple, coin_tie = jnp.moveaxis(uniform(keys[:, (3, 5)]), -1, 0)  # [b] each
        # The categorical noise of the dirt cell and of the apple cell, [b, H, W] each.
        noise = _gumbel_noise(keys[:, (2, 4)], self.num_cells, batch_ndim=2)
        noise_dirt, noise_apple = (
            x.reshape(-1, self.grid_height, self.grid_width) for x in jnp.moveaxis(noise, 1, 0)
        )
        cells = jnp.arange(self.num_cells, dtype=jnp.int32)
        river_col, orchard_col = self.grid_width - 1, 0
        grid = contents.reshape(-1, self.grid_height, self.grid_width)
        # "Free" is decided once, at the start of the step: a player zapped in this step still
        # harvested and cleaned in steps 3–4, and one whose freeze ends in this step acts only
        # from the next one.
        free = frozen_steps_left == 0  # [b, 2]

        # 1. Pollution spawns on a clean river cell. The random cell is the categorical draw over
        # all N cells with −inf logits off the clean river; only the river column can win, so the
        # first maximum is searched there (row-major order within one column is row order).
        clean_river = grid[:, :, river_col] != DIRT  # [b, H]
        spawn_dirt = jnp.any(clean_river, axis=-1) & spawn_dirt_coin
        dirt_row = _first_argmax(jnp.where(clean_river, noise_dirt[:, :, river_col], -jnp.inf))
        dirt_cell = dirt_row * self.grid_width + river_col

        # 2. An apple spawns on an apple-free orchard cell, the less likely the dirtier the river
        # (counted after step 1; step 1 changed no orchard cell).
        num_dirt = jnp.sum(contents == DIRT, axis=-1) + spawn_dirt  # [b] int32
        open_orchard = grid[:, :, orchard_col] == EMPTY  # [b, H]
        p_apple = apple_spawn_probability(num_dirt, self.pollution_threshold)
        spawn_apple = jnp.any(open_orchard, axis=-1) & (coin_apple < p_apple)
        apple_row = _first_argmax(jnp.where(open_orchard, noise_apple[:, :, orchard_col], -jnp.inf))
        apple_cell = apple_row * self.grid_width + orchard_col

        # What each player stands on after steps 1–2; steps 3 and 4 only empty the cells under
        # free players (an apple cell by harvesting, a dirt cell by cleaning), so this also says
        # who cleans in step 4.
        under = jnp.take_along_axis(contents, position, axis=1)  # [b, 2]
        under = jnp.where(spawn_dirt[:, None] & (position == dirt_cell[:, None]), DIRT, under)
        under = jnp.where(spawn_apple[:, None] & (position == apple_cell[:, None]), APPLE, under)

        # 3. Harvest. Two free players on one apple: a fair coin says who gets it (one apple).
        on_apple = free & (under == APPLE)
        same_cell = position[:, 0] == position[:, 1]
        contested = on_apple[:, 0] & on_apple[:, 1] & same_cell
        player_2_wins = coin_tie < np.float32(0.5)  # `jax.random.bernoulli(key_tie)`
        loses_tie = contested[:, None] & jnp.stack([player_2_wins, ~player_2_wins], axis=-1)
        harvested = on_apple & ~loses_tie

        # 4. Cleaning by visiting; co-located free players both get the credit for the one cell.
        cleaned = free & (under == DIRT)

        # The grid after steps 1–4: spawned cells set, harvested and cleaned cells emptied.
        emptied = harvested | cleaned  # [b, 2]
        on_cell = position[:, :, None] == cells  # [b, 2, N]
        contents = jnp.where(spawn_dirt[:, None] & (cells == dirt_cell[:, None]), DIRT, contents)
        contents = jnp.where(spawn_apple[:, None] & (cells == apple_cell[:, None]), APPLE, contents)
        contents = jnp.where(
            (on_cell[:, 0] & emptied[:, 0, None]) | (on_cell[:, 1] & emptied[:, 1, None]), EMPTY, contents
        )
        # Cell counts at the end of the step: harvested cells are distinct (a contested apple
        # goes to one player), cleaned cells coincide when both players clean the same cell.
        num_dirt_end = num_dirt - cleaned[:, 0] - cleaned[:, 1] + (cleaned[:, 0] & cleaned[:, 1] & same_cell)
        num_apples_end = (
            jnp.sum(state.contents == APPLE, axis=-1) + spawn_apple - harvested[:, 0] - harvested[:, 1]
        )

        # 5. Zaps, simultaneous. zap_hits[p]: player p's zap froze its co-player. A frozen target
        # is immune, so a freeze is never extended.
        rows, cols = position // self.grid_width, position % self.grid_width  # [b, 2]
        row_gap = jnp.abs(rows[:, 0] - rows[:, 1])
        col_gap = jnp.abs(cols[:, 0] - cols[:, 1])
        if self.zap_distance_metric == "manhattan":
            distance = row_gap + col_gap
        else:
            distance = jnp.maximum(row_gap, col_gap)
        in_range = distance <= self.zap_range
        zap_succeeds = jax.vmap(lambda k: jax.random.bernoulli(k, self.zap_probability, (2,)))(keys[:, 6])
        zap_hits = free & (actions == ZAP) & free[:, ::-1] & in_range[:, None] & zap_succeeds
        zapped = zap_hits[:, ::-1]
        new_frozen_steps_left = jnp.where(
            zapped, self.freeze_duration, jnp.maximum(frozen_steps_left - 1, 0)
        ).astype(jnp.int32)

        # 6. Movement, last; the border is a wall (`move_table`, computed arithmetically).
        can_move = jnp.ones_like(free) if self.frozen_agent_moves else free & ~zapped
        row_step = jnp.where(actions == MOVE_UP, -1, jnp.where(actions == MOVE_DOWN, 1, 0))
        col_step = jnp.where(actions == MOVE_LEFT, -1, jnp.where(actions == MOVE_RIGHT, 1, 0))
        moved_to = (
            jnp.clip(rows + row_step, 0, self.grid_height - 1) * self.grid_width
            + jnp.clip(cols + col_step, 0, self.grid_width - 1)
        )
        proposed = jnp.where(can_move, moved_to, position)
        if not self.allow_co_location:
            # Only two players: ending on one cell or swapping are the only conflicts, and undoing
            # both moves leaves them on their previous (distinct) cells.
            same_cell = proposed[:, 0] == proposed[:, 1]
            swap = (proposed[:, 0] == position[:, 1]) & (proposed[:, 1] == position[:, 0])
            proposed = jnp.where((same_cell | swap)[:, None], position, proposed)
        new_position = proposed.astype(jnp.int32)

        rewards = self.apple_reward * harvested.astype(jnp.float32)
        as_float = lambda x: x.astype(jnp.float32)
        info = {
            "apple_player_1": as_float(harvested[:, 0]),
            "apple_player_2": as_float(harvested[:, 1]),
            "cleaned_player_1": as_float(cleaned[:, 0]),
            "cleaned_player_2": as_float(cleaned[:, 1]),
            "zapped_player_1": as_float(zapped[:, 0]),
            "zapped_player_2": as_float(zapped[:, 1]),
            "frozen_player_1": as_float(~free[:, 0]),
            "frozen_player_2": as_float(~free[:, 1]),
            "pollution": num_dirt_end / jnp.float32(self.grid_height),
            "apples": num_apples_end / jnp.float32(self.grid_height),
        }
        new_state = CleanupLiteState(
            contents=contents,
            position=new_position,
            frozen_steps_left=new_frozen_steps_left,
            t=state.t + 1,
            key=key,
        )
        obs_player_1, obs_player_2 = self.observe(new_state)
        return EnvStep(new_state, obs_player_1, obs_player_2, rewards[:, 0], rewards[:, 1], info)
