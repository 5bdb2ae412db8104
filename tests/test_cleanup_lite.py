"""Tests of the Clean Up-lite environment (paper App. B.1.2, Table 5), one rule at a time.

Single rules are tested on hand-built states (`make_state` draws the grid as text). Random rules are
tested statistically over many batched games with fixed seeds: an observed frequency must lie within
4 standard errors, 4·sqrt(p(1 − p)/n), of the rule's probability (a false alarm about once in
16,000 checks; a wrong rule, e.g. p off by 0.05 at n = 4000, fails by more than 6 standard errors).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.envs.base import EnvStep
from coala_dist.envs.cleanup_lite import (
    APPLE,
    DIRT,
    EMPTY,
    MOVE_DOWN,
    MOVE_LEFT,
    MOVE_RIGHT,
    MOVE_UP,
    NOOP,
    ZAP,
    CleanupLite,
    CleanupLiteState,
    _random_cell,
    apple_spawn_probability,
)

NUM_GAMES = 4000  # games per statistical check
SYMBOL_TO_KIND = {".": EMPTY, "a": APPLE, "d": DIRT}
# A 5 × 4 grid without apples whose river holds 3 dirt cells: p_apple = 0 there, so with pollution
# off (`QUIET`) nothing spawns and single rules play out deterministically.
CLEAN_ORCHARD_3_DIRT = [
    "...d",
    "...d",
    "...d",
    "....",
    "....",
]
EMPTY_GRID = ["...."] * 5

DEFAULT = CleanupLite()
QUIET = CleanupLite(pollution_probability=0.0)
QUIET_SURE_ZAP = CleanupLite(pollution_probability=0.0, zap_probability=1.0)


# One compiled function per environment configuration, shared by every test (CPU is scarce).
@functools.cache
def jitted_step(env: CleanupLite):
    return jax.jit(env.step)


@functools.cache
def jitted_reset(env: CleanupLite):
    return jax.jit(env.reset, static_argnums=1)


@functools.cache
def jitted_observe(env: CleanupLite):
    return jax.jit(env.observe)


def step(env: CleanupLite, state: CleanupLiteState, action_1, action_2) -> EnvStep:
    batch = state.t.shape[0]
    as_actions = lambda a: jnp.broadcast_to(jnp.asarray(a, jnp.int32), (batch,))
    return jitted_step(env)(state, as_actions(action_1), as_actions(action_2))


def make_state(
    env: CleanupLite,
    picture: list[str],
    position_player_1,
    position_player_2,
    frozen_steps_left=(0, 0),
    batch_size: int = 1,
    seed: int = 0,
) -> CleanupLiteState:
    """Builds a batched state directly, every game the same but for its PRNG key.

    Args:
      env: gives the grid size.
      picture: `grid_height` strings of `grid_width` characters: "." empty, "a" apple, "d" dirt.
      position_player_1: (row, col), or an int array [batch_size] of cell indices (games differ).
      position_player_2: same for player 2.
      frozen_steps_left: (player 1, player 2) freeze counters.
      batch_size: b.
      seed: seeds the per-game keys.
    """
    assert len(picture) == env.grid_height and all(len(r) == env.grid_width for r in picture)
    kinds = np.array([[SYMBOL_TO_KIND[c] for c in row] for row in picture], np.int32)
    assert np.all(kinds[:, 1:] != APPLE), "apples only in the orchard"
    assert np.all(kinds[:, :-1] != DIRT), "dirt only in the river"

    def cells(position):
        if isinstance(position, tuple):
            return np.full((batch_size,), position[0] * env.grid_width + position[1], np.int32)
        return np.asarray(position, np.int32)

    return CleanupLiteState(
        contents=jnp.asarray(np.tile(kinds.reshape(1, -1), (batch_size, 1))),
        position=jnp.asarray(np.stack([cells(position_player_1), cells(position_player_2)], -1)),
        frozen_steps_left=jnp.asarray(np.tile(np.int32(frozen_steps_left), (batch_size, 1))),
        t=jnp.zeros((batch_size,), jnp.int32),
        key=jax.random.split(jax.random.PRNGKey(seed), batch_size),
    )


def grid(env: CleanupLite, contents) -> np.ndarray:
    """[H, W] int view of one game's contents."""
    return np.asarray(contents).reshape(env.grid_height, env.grid_width)


def assert_rate(observed: float, probability: float, n: int):
    """Observed frequency within 4 standard errors of `probability` (0 or 1 must be exact)."""
    tolerance = 4.0 * np.sqrt(probability * (1.0 - probability) / n)
    assert abs(observed - probability) <= tolerance, (observed, probability, tolerance)


# ----- the apple spawn equation -----


def test_apple_spawn_probability_closed_form():
    dirt = jnp.arange(6)
    np.testing.assert_allclose(
        apple_spawn_probability(dirt, 3.0), [1.0, 2 / 3, 1 / 3, 0.0, 0.0, 0.0], rtol=1e-6
    )
    np.testing.assert_allclose(apple_spawn_probability(dirt, 2.0), [1, 0.5, 0, 0, 0, 0])
    assert apple_spawn_probability(jnp.int32(1), 3.0).dtype == jnp.float32


# ----- geometry, reset, observation -----


def test_geometry_defaults_follow_table_5_and_the_decisions():
    env = DEFAULT
    assert (env.grid_height, env.grid_width, env.num_cells) == (5, 4, 20)
    assert (env.num_actions, env.obs_dim, env.inner_episode_length) == (6, 102, 64)
    np.testing.assert_array_equal(np.flatnonzero(env.river_mask()), [3, 7, 11, 15, 19])
    np.testing.assert_array_equal(np.flatnonzero(env.orchard_mask()), [0, 4, 8, 12, 16])
    other_reading = CleanupLite(grid_height=4, grid_width=5)
    np.testing.assert_array_equal(np.flatnonzero(other_reading.river_mask()), [4, 9, 14, 19])
    assert other_reading.obs_dim == 102


def test_reset_initial_state():
    env = DEFAULT
    out = jitted_reset(env)(jax.random.PRNGKey(3), 500)
    state = out.state
    contents = np.asarray(state.contents)
    river = env.river_mask()
    assert not np.any(contents == APPLE), "no apples at the start"
    np.testing.assert_array_equal((contents == DIRT).sum(-1), 3)
    assert not np.any(contents[:, ~river] == DIRT), "dirt only in the river"
    np.testing.assert_array_equal(state.frozen_steps_left, 0)
    np.testing.assert_array_equal(state.t, 0)
    for name in ("contents", "position", "frozen_steps_left", "t"):
        assert getattr(state, name).dtype == jnp.int32, name
    # Random positions cover the grid, independently for the two players.
    position = np.asarray(state.position)
    assert position.min() >= 0 and position.max() < env.num_cells
    assert len(np.unique(position[:, 0])) == env.num_cells
    assert np.any(position[:, 0] == position[:, 1]), "co-location is allowed by default"
    # Every river cell gets dirt in 3/5 of the games.
    for cell in np.flatnonzero(river):
        assert_rate((contents[:, cell] == DIRT).mean(), 3 / 5, 500)
    # Nobody is zapped, and the first step has nothing to report.
    for obs in (out.obs_player_1, out.obs_player_2):
        assert obs.shape == (500, 102) and obs.dtype == jnp.float32
        np.testing.assert_array_equal(obs[:, 100:], 0.0)
    np.testing.assert_array_equal(out.reward_player_1, 0.0)
    np.testing.assert_array_equal(out.reward_player_2, 0.0)
    after = step(env, state, NOOP, NOOP)
    assert set(out.info) == set(after.info)
    for name, value in out.info.items():
        assert value.shape == (500,) and value.dtype == jnp.float32, name
        np.testing.assert_array_equal(value, 0.0)
        assert after.info[name].dtype == jnp.float32, name


def test_reset_without_co_location_uses_distinct_cells():
    env = CleanupLite(allow_co_location=False)
    state = jitted_reset(env)(jax.random.PRNGKey(4), 400).state
    assert np.all(state.position[:, 0] != state.position[:, 1])
    assert len(np.unique(np.asarray(state.position[:, 1]))) == env.num_cells


def test_observation_layout_by_hand():
    env = DEFAULT
    picture = [
        "a...",
        "...d",
        "....",
        "a...",
        "...d",
    ]
    state = make_state(env, picture, (1, 2), (4, 0), frozen_steps_left=(0, 3))
    obs_player_1, obs_player_2 = (np.asarray(o[0]) for o in jitted_observe(env)(state))
    own_cell, other_cell = 1 * 4 + 2, 4 * 4 + 0
    expected_1 = np.zeros(102, np.float32)
    expected_1[own_cell] = 1.0
    expected_1[20 + other_cell] = 1.0
    for cell in range(20):
        row, col = divmod(cell, 4)
        kind = SYMBOL_TO_KIND[picture[row][col]]
        expected_1[40 + 3 * cell + kind] = 1.0
    expected_1[100], expected_1[101] = 0.0, 1.0  # own (player 1) free, co-player zapped
    np.testing.assert_array_equal(obs_player_1, expected_1)
    # Player 2 sees the same grid, with itself first.
    expected_2 = expected_1.copy()
    expected_2[:40] = 0.0
    expected_2[other_cell] = 1.0
    expected_2[20 + own_cell] = 1.0
    expected_2[100], expected_2[101] = 1.0, 0.0
    np.testing.assert_array_equal(obs_player_2, expected_2)


def test_swapping_the_players_swaps_their_observations():
    env = DEFAULT
    key = jax.random.PRNGKey(5)
    state = jitted_reset(env)(key, 64).state
    # Advance with random actions so the states hold apples, dirt and freezes.
    for i in range(12):
        actions = jax.random.randint(jax.random.fold_in(key, i), (2, 64), 0, 6)
        state = step(env, state, actions[0], actions[1]).state
    assert np.any(state.frozen_steps_left > 0) and np.any(state.contents == APPLE)
    swapped = state._replace(
        position=state.position[:, ::-1], frozen_steps_left=state.frozen_steps_left[:, ::-1]
    )
    obs_1, obs_2 = jitted_observe(env)(state)
    swapped_obs_1, swapped_obs_2 = jitted_observe(env)(swapped)
    np.testing.assert_array_equal(obs_1, swapped_obs_2)
    np.testing.assert_array_equal(obs_2, swapped_obs_1)
    assert not np.array_equal(obs_1, obs_2)


# ----- spawning (statistical) -----


def test_pollution_spawns_with_p_035_on_a_uniform_clean_river_cell():
    env = DEFAULT
    picture = [
        "...d",
        "....",
        "...d",
        "....",
        "....",
    ]
    # Agents in the middle columns doing nothing: they never clean.
    state = make_state(env, picture, (0, 1), (4, 2), batch_size=NUM_GAMES, seed=1)
    contents = np.asarray(step(env, state, NOOP, NOOP).state.contents)
    new_dirt = (contents == DIRT).sum(-1) - 2
    assert set(np.unique(new_dirt)) <= {0, 1}
    assert_rate(new_dirt.mean(), 0.35, NUM_GAMES)
    for row in (1, 3, 4):  # the three clean river cells share the spawns evenly
        assert_rate((contents[:, row * 4 + 3] == DIRT).mean(), 0.35 / 3, NUM_GAMES)
    assert not np.any(contents[:, ~env.river_mask()] == DIRT)

    full_river = make_state(env, ["...d"] * 5, (0, 1), (4, 2), batch_size=NUM_GAMES, seed=2)
    contents = np.asarray(step(env, full_river, NOOP, NOOP).state.contents)
    np.testing.assert_array_equal((contents == DIRT).sum(-1), 5)


@pytest.mark.parametrize("num_dirt", [0, 1, 2, 3, 4])
def test_apple_spawn_rate_is_one_minus_dirt_over_three(num_dirt):
    env = QUIET  # pollution off, so the dirt count is the one we draw
    picture = ["...d"] * num_dirt + ["...."] * (5 - num_dirt)
    state = make_state(env, picture, (0, 1), (4, 2), batch_size=NUM_GAMES, seed=10 + num_dirt)
    contents = np.asarray(step(env, state, NOOP, NOOP).state.contents)
    spawned = (contents == APPLE).sum(-1)
    assert set(np.unique(spawned)) <= {0, 1}
    assert_rate(spawned.mean(), 1.0 - min(1.0, num_dirt / 3.0), NUM_GAMES)
    assert not np.any(contents[:, ~env.orchard_mask()] == APPLE)


def test_apple_spawn_counts_the_dirt_spawned_earlier_in_the_same_step():
    # One dirt cell and pollution on: p_apple = 0.65 · (1 − 1/3) + 0.35 · (1 − 2/3) = 0.55, not 2/3.
    env = DEFAULT
    picture = ["...d"] + ["...."] * 4
    state = make_state(env, picture, (0, 1), (4, 2), batch_size=NUM_GAMES, seed=20)
    out = step(env, state, NOOP, NOOP)
    contents = np.asarray(out.state.contents)
    spawned_apple = (contents == APPLE).sum(-1)
    spawned_dirt = (contents == DIRT).sum(-1) - 1
    assert_rate(spawned_apple.mean(), 0.65 * (2 / 3) + 0.35 * (1 / 3), NUM_GAMES)
    assert_rate(spawned_apple[spawned_dirt == 1].mean(), 1 / 3, int((spawned_dirt == 1).sum()))
    np.testing.assert_allclose(out.info["pollution"], (spawned_dirt + 1) / 5, rtol=1e-6)
    np.testing.assert_allclose(out.info["apples"], spawned_apple / 5, rtol=1e-6)


def test_apples_spawn_only_on_apple_free_orchard_cells():
    env = QUIET
    picture = ["a..."] * 3 + ["...."] * 2
    state = make_state(env, picture, (0, 1), (4, 2), batch_size=NUM_GAMES, seed=30)
    contents = np.asarray(step(env, state, NOOP, NOOP).state.contents)
    assert np.all(contents[:, [0, 4, 8]] == APPLE)
    assert_rate((contents == APPLE).sum(-1).mean() - 3, 1.0, NUM_GAMES)  # no dirt: p_apple = 1
    for cell in (12, 16):
        assert_rate((contents[:, cell] == APPLE).mean(), 0.5, NUM_GAMES)

    full_orchard = make_state(env, ["a..."] * 5, (0, 1), (4, 2), batch_size=64, seed=31)
    contents = np.asarray(step(env, full_orchard, NOOP, NOOP).state.contents)
    np.testing.assert_array_equal((contents == APPLE).sum(-1), 5)


# ----- harvest and cleaning -----


def test_harvest_pays_one_and_empties_the_cell():
    env = QUIET
    picture = ["a..d", "a..d", "...d", "....", "...."]
    state = make_state(env, picture, (1, 0), (2, 1))
    out = step(env, state, NOOP, NOOP)
    assert float(out.reward_player_1[0]) == 1.0 and float(out.reward_player_2[0]) == 0.0
    assert float(out.info["apple_player_1"][0]) == 1.0
    assert float(out.info["apple_player_2"][0]) == 0.0
    after = grid(env, out.state.contents[0])
    assert after[1, 0] == EMPTY and after[0, 0] == APPLE
    np.testing.assert_allclose(out.info["apples"], [1 / 5])
    # Standing still on the now empty cell pays nothing more.
    again = step(env, out.state, NOOP, NOOP)
    assert float(again.reward_player_1[0]) == 0.0


def test_harvest_uses_the_cell_reached_on_the_previous_step():
    env = QUIET
    picture = ["a..d", "...d", "...d", "....", "...."]
    state = make_state(env, picture, (0, 1), (4, 2))
    arrive = step(env, state, MOVE_LEFT, NOOP)  # movement is the last phase of the step
    assert int(arrive.state.position[0, 0]) == 0
    assert float(arrive.reward_player_1[0]) == 0.0
    assert grid(env, arrive.state.contents[0])[0, 0] == APPLE
    harvest = step(env, arrive.state, MOVE_RIGHT, NOOP)  # harvested before leaving
    assert float(harvest.reward_player_1[0]) == 1.0
    assert int(harvest.state.position[0, 0]) == 1


def test_frozen_players_neither_harvest_nor_clean():
    env = QUIET
    picture = ["a..d", "...d", "...d", "....", "...."]
    state = make_state(env, picture, (0, 0), (0, 3), frozen_steps_left=(2, 4))
    out = step(env, state, NOOP, NOOP)
    np.testing.assert_array_equal(out.reward_player_1, 0.0)
    assert float(out.info["cleaned_player_2"][0]) == 0.0
    assert grid(env, out.state.contents[0])[0, 0] == APPLE
    assert grid(env, out.state.contents[0])[0, 3] == DIRT
    assert float(out.info["frozen_player_1"][0]) == 1.0
    assert float(out.info["frozen_player_2"][0]) == 1.0


def test_two_players_on_one_apple_share_it_by_a_fair_coin():
    env = QUIET
    picture = ["a..d", "...d", "...d", "....", "...."]
    state = make_state(env, picture, (0, 0), (0, 0), batch_size=NUM_GAMES, seed=40)
    out = step(env, state, NOOP, NOOP)
    np.testing.assert_array_equal(out.reward_player_1 + out.reward_player_2, 1.0)
    assert_rate(float(out.reward_player_1.mean()), 0.5, NUM_GAMES)
    np.testing.assert_array_equal(out.state.contents[:, 0], EMPTY)


def test_cleaning_by_visiting():
    env = QUIET
    picture = CLEAN_ORCHARD_3_DIRT
    state = make_state(env, picture, (1, 3), (3, 3))  # player 1 on dirt, player 2 on clean river
    out = step(env, state, NOOP, NOOP)
    assert float(out.info["cleaned_player_1"][0]) == 1.0
    assert float(out.info["cleaned_player_2"][0]) == 0.0
    np.testing.assert_array_equal(out.reward_player_1, 0.0)  # cleaning pays nothing
    after = grid(env, out.state.contents[0])
    np.testing.assert_array_equal(after[:, 3], [DIRT, EMPTY, DIRT, EMPTY, EMPTY])
    np.testing.assert_allclose(out.info["pollution"], [2 / 5])
    # Co-located players clean the one cell together, and both get the credit.
    both = make_state(env, picture, (2, 3), (2, 3))
    out = step(env, both, NOOP, NOOP)
    assert float(out.info["cleaned_player_1"][0]) == float(out.info["cleaned_player_2"][0]) == 1.0
    np.testing.assert_allclose(out.info["pollution"], [2 / 5])


# ----- zapping and freezing -----


def test_zap_succeeds_with_p_09_within_distance_2_and_never_beyond():
    env = DEFAULT
    cases = (((2, 1), 2), ((1, 2), 2), ((0, 1), 0), ((2, 2), 3), ((3, 1), 3))
    for seed, (target, distance) in enumerate(cases):
        state = make_state(env, EMPTY_GRID, (0, 1), target, batch_size=NUM_GAMES, seed=seed)
        out = step(env, state, ZAP, NOOP)
        zapped = np.asarray(out.info["zapped_player_2"])
        assert_rate(zapped.mean(), 0.9 if distance <= 2 else 0.0, NUM_GAMES)
        np.testing.assert_array_equal(out.state.frozen_steps_left[:, 1], 5 * zapped)
        np.testing.assert_array_equal(out.info["zapped_player_1"], 0.0)


@pytest.mark.parametrize("metric", ["manhattan", "chebyshev"])
def test_zap_range_over_every_pair_of_cells(metric):
    env = CleanupLite(pollution_probability=0.0, zap_probability=1.0, zap_distance_metric=metric)
    cells_1, cells_2 = (c.ravel() for c in np.meshgrid(np.arange(20), np.arange(20)))
    state = make_state(env, EMPTY_GRID, cells_1, cells_2, batch_size=400)
    zapped = np.asarray(step(env, state, ZAP, NOOP).info["zapped_player_2"])
    for i, (a, b) in enumerate(zip(cells_1, cells_2, strict=True)):
        (row_a, col_a), (row_b, col_b) = divmod(int(a), 4), divmod(int(b), 4)
        if metric == "manhattan":
            distance = abs(row_a - row_b) + abs(col_a - col_b)
        else:
            distance = max(abs(row_a - row_b), abs(col_a - col_b))
        assert zapped[i] == float(distance <= 2), (a, b)


def test_freeze_lasts_5_steps_and_the_frozen_player_is_immune():
    env = QUIET_SURE_ZAP
    state = make_state(env, CLEAN_ORCHARD_3_DIRT, (2, 1), (2, 2))
    # Player 1 zaps at every step (always in range, always hitting a free target); player 2 tries
    # to move down at even steps and to zap back at odd steps, which all fall in its freezes.
    zapped, frozen, flags, rows = [], [], [], []
    for t in range(13):
        out = step(env, state, ZAP, ZAP if t % 2 else MOVE_DOWN)
        state = out.state
        zapped.append(float(out.info["zapped_player_2"][0]))
        frozen.append(float(out.info["frozen_player_2"][0]))
        flags.append(float(out.obs_player_2[0, 100]))
        rows.append(int(state.position[0, 1]) // 4)
        assert float(out.info["zapped_player_1"][0]) == 0.0, "a frozen player cannot zap"
        assert int(state.frozen_steps_left[0, 1]) <= 5
    # Zapped at step 0; frozen during steps 1..5, where player 1's zaps do not hit (immunity)
    # and do not extend the freeze; free again at step 6, where it is zapped again; and so on.
    assert zapped == [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert frozen == [0, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0]
    assert flags == [1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1]
    assert rows == [2] * 13, "a zapped or frozen player does not move"


def test_a_frozen_player_moves_again_on_the_sixth_step_after_the_zap():
    env = QUIET_SURE_ZAP
    state = make_state(env, CLEAN_ORCHARD_3_DIRT, (2, 1), (1, 2))
    rows = []
    for t in range(8):
        out = step(env, state, ZAP if t == 0 else NOOP, MOVE_DOWN)
        state = out.state
        rows.append(int(state.position[0, 1]) // 4)
    assert rows == [1, 1, 1, 1, 1, 1, 2, 3]
    assert float(out.info["frozen_player_2"][0]) == 0.0


def test_frozen_agent_moves_switch():
    env = CleanupLite(pollution_probability=0.0, frozen_agent_moves=True)
    picture = ["a..d", "...d", "...d", "....", "...."]
    state = make_state(env, picture, (1, 0), (4, 2), frozen_steps_left=(3, 0))
    out = step(env, state, MOVE_UP, NOOP)
    assert int(out.state.position[0, 0]) == 0, "moves while frozen"
    out = step(env, out.state, NOOP, NOOP)
    assert float(out.reward_player_1[0]) == 0.0, "but does not harvest"
    assert int(out.state.frozen_steps_left[0, 0]) == 1


# ----- movement -----


def test_moves_and_walls_for_every_cell_and_action():
    env = QUIET
    cells = np.repeat(np.arange(20), 6)
    actions = np.tile(np.arange(6), 20)
    state = make_state(env, CLEAN_ORCHARD_3_DIRT, cells, np.full(120, 13), batch_size=120)
    new_cells = np.asarray(step(env, state, actions, NOOP).state.position[:, 0])
    for cell, action, new_cell in zip(cells, actions, new_cells, strict=True):
        row, col = divmod(int(cell), 4)
        if action == MOVE_RIGHT and col < 3:
            col += 1
        elif action == MOVE_LEFT and col > 0:
            col -= 1
        elif action == MOVE_UP and row > 0:
            row -= 1
        elif action == MOVE_DOWN and row < 4:
            row += 1
        assert new_cell == row * 4 + col, (cell, action, new_cell)


def test_co_location_switch():
    free = QUIET
    blocked = CleanupLite(pollution_probability=0.0, allow_co_location=False)

    def end_cells(env, cell_1, cell_2, action_1, action_2):
        state = make_state(env, CLEAN_ORCHARD_3_DIRT, divmod(cell_1, 4), divmod(cell_2, 4))
        return tuple(int(c) for c in step(env, state, action_1, action_2).state.position[0])

    # Both step onto cell 6 from either side.
    assert end_cells(free, 5, 7, MOVE_RIGHT, MOVE_LEFT) == (6, 6)
    assert end_cells(blocked, 5, 7, MOVE_RIGHT, MOVE_LEFT) == (5, 7)
    # Walking onto a player who stays, and swapping places.
    assert end_cells(free, 5, 6, MOVE_RIGHT, NOOP) == (6, 6)
    assert end_cells(blocked, 5, 6, MOVE_RIGHT, NOOP) == (5, 6)
    assert end_cells(blocked, 5, 6, MOVE_RIGHT, MOVE_LEFT) == (5, 6)
    # Following a player who moves away is fine.
    assert end_cells(blocked, 5, 6, MOVE_RIGHT, MOVE_DOWN) == (6, 10)


# ----- contract: jit, vmap, determinism, validation -----


def test_jit_scan_vmap_and_determinism():
    env = CleanupLite(inner_episode_length=6)

    def play(key):
        """One inner episode of 4 games with random actions, scanned over time as a rollout does."""
        first = env.reset(key, 4)

        def one_step(state, step_key):
            actions = jax.random.randint(step_key, (2, 4), 0, 6)
            out = env.step(state, actions[0], actions[1])
            return out.state, (out.reward_player_1, out.obs_player_1)

        step_keys = jax.random.split(jax.random.fold_in(key, 1), env.inner_episode_length)
        state, (rewards, obs) = jax.lax.scan(one_step, first.state, step_keys)
        return rewards.sum(0), obs[-1], state.t

    keys = jax.random.split(jax.random.PRNGKey(7), 3)
    total, obs, t = jax.jit(jax.vmap(play))(keys)
    assert total.shape == (3, 4) and obs.shape == (3, 4, 102)
    np.testing.assert_array_equal(t, 6)
    play_one = jax.jit(play)
    for i in range(3):  # vmapping over keys changes nothing: same key, same games
        single_total, single_obs, _ = play_one(keys[i])
        np.testing.assert_array_equal(total[i], single_total)
        np.testing.assert_array_equal(obs[i], single_obs)
    assert not np.array_equal(obs[0], obs[1])


def test_state_key_advances_every_step():
    env = DEFAULT
    state = jitted_reset(env)(jax.random.PRNGKey(8), 500).state
    out = step(env, state, NOOP, NOOP)
    assert not np.array_equal(state.key, out.state.key)
    assert not np.array_equal(out.state.key[0], out.state.key[1])
    again = step(env, state, NOOP, NOOP)
    np.testing.assert_array_equal(out.state.contents, again.state.contents)


def test_random_cell_is_jax_categorical_bit_for_bit():
    # `_random_cell` finds the first maximum without XLA's float argmax; it must stay the very draw of
    # `jax.random.categorical` over the masked logits (rows without any allowed cell included).
    keys = jax.random.split(jax.random.PRNGKey(9), 3000)
    rng = np.random.default_rng(9)
    allowed = rng.random((3000, 20)) < rng.choice([0.0, 0.05, 0.3, 1.0], size=(3000, 1))
    expected = jax.vmap(jax.random.categorical)(keys, jnp.where(allowed, 0.0, -jnp.inf))
    np.testing.assert_array_equal(jax.jit(_random_cell)(keys, allowed), expected)


def test_spawns_are_the_documented_draws_of_the_split_key():
    # Steps 1-2 replayed from the state's key as one game would draw them: split(key, 7) gives (next key,
    # dirt coin, dirt cell, apple coin, apple cell, tie coin, zap coins); the cells are categorical draws.
    env = CleanupLite(pollution_probability=0.7)
    state = jitted_reset(env)(jax.random.PRNGKey(10), 2000).state
    apples = jax.random.bernoulli(jax.random.PRNGKey(11), 0.5, (2000, 20)) & env.orchard_mask()
    contents = jnp.where(apples, APPLE, state.contents)
    # Both players in a middle column: nobody harvests or cleans, so the grid shows exactly the spawns.
    state = state._replace(contents=contents, position=jnp.ones_like(state.position))
    river, orchard = jnp.asarray(env.river_mask()), jnp.asarray(env.orchard_mask())
    cells = jnp.arange(env.num_cells)

    def reference(key, contents):
        _, key_dirt, key_dirt_cell, key_apple, key_apple_cell, _, _ = jax.random.split(key, 7)
        clean_river = river & (contents != DIRT)
        spawn = jnp.any(clean_river) & jax.random.bernoulli(key_dirt, env.pollution_probability)
        cell = jax.random.categorical(key_dirt_cell, jnp.where(clean_river, 0.0, -jnp.inf))
        contents = jnp.where(spawn & (cells == cell), DIRT, contents)
        open_orchard = orchard & (contents == EMPTY)
        p_apple = apple_spawn_probability(jnp.sum(contents == DIRT), env.pollution_threshold)
        spawn = jnp.any(open_orchard) & jax.random.bernoulli(key_apple, p_apple)
        cell = jax.random.categorical(key_apple_cell, jnp.where(open_orchard, 0.0, -jnp.inf))
        return jnp.where(spawn & (cells == cell), APPLE, contents)

    expected = jax.jit(jax.vmap(reference))(state.key, state.contents)
    new_contents = step(env, state, NOOP, NOOP).state.contents
    np.testing.assert_array_equal(new_contents, expected)
    assert 0 < np.mean(np.any(new_contents != contents, axis=-1)) < 1, "some games spawn, some do not"


@pytest.mark.parametrize(
    "field, value",
    [
        ("grid_width", 1),
        ("pollution_probability", 1.5),
        ("pollution_threshold", 0.0),
        ("zap_probability", -0.1),
        ("zap_distance_metric", "euclid"),
        ("num_initial_dirt", 6),
        ("inner_episode_length", 0),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        CleanupLite(**{field: value})


def test_cleaning_discrepancy_is_per_game_then_averaged():
    env = CleanupLite()
    rng = np.random.default_rng(0)
    cleaned_1 = (rng.random((3, 7)) < 0.5).astype(np.float32)
    cleaned_2 = (rng.random((3, 7)) < 0.2).astype(np.float32)
    cleaned_2[1] = cleaned_1[1][::-1]  # game 1: the players clean equally often, so its discrepancy is 0
    out = env.episode_metrics({"cleaned_player_1": jnp.asarray(cleaned_1), "cleaned_player_2": jnp.asarray(cleaned_2)})
    expected = np.mean([abs(cleaned_1[g].sum() - cleaned_2[g].sum()) / 7 for g in range(3)])
    assert float(out["cleaning_discrepancy"]) == pytest.approx(expected, abs=1e-6)
    # Games where different players clean do not cancel.
    one = {
        "cleaned_player_1": jnp.array([[1.0, 1.0], [0.0, 0.0]]),
        "cleaned_player_2": jnp.array([[0.0, 0.0], [1.0, 1.0]]),
    }
    assert float(env.episode_metrics(one)["cleaning_discrepancy"]) == pytest.approx(1.0)
