"""Tests of the Hawk (RG-LRU) policy (paper App. B.3): equations vs numpy loops, resets, caches, scans.

The oracles below are plain float64 numpy loops over batch and time written from the equations in
paper App. B.3; they share no code with `coala_dist.networks`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from coala_dist.networks.hawk import (
    RGLRU,
    Conv1D,
    RecurrentBlockCache,
    block_diagonal_linear,
    rg_lru_a_param_init,
    rg_lru_coefficients,
    rms_norm,
    sqrt_bound_derivative,
)
from coala_dist.networks.policy import (
    HawkPolicy,
    PolicyCache,
    count_params,
    init_policy_params,
)

# Paper sizes (paper App. B.3): embed 32, LRU 32, MLP 32, 2 heads, 1 block; IPD: 5 observations,
# 2 actions.
OBS_DIM = 5
NUM_ACTIONS = 2
SCAN_TYPES = ("linear", "associative")


@pytest.fixture(autouse=True)
def _explicit_broadcasting():
    # Every broadcast in the code under test must be explicit (rlax's convention).
    with jax.numpy_rank_promotion("raise"):
        yield


# ------------------------------------------------------------------------------------------------
# numpy oracles (float64 loops written from the equations).
# ------------------------------------------------------------------------------------------------


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_softplus(x):
    return np.log1p(np.exp(x))


def np_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def np_rms_norm(x, scale, eps=1e-6):
    return x / np.sqrt(np.mean(x**2) + eps) * (1.0 + scale)


def np_block_diagonal_matrix(kernel):
    """[h, i, j] blocks -> the dense [h·i, h·j] block-diagonal matrix."""
    num_heads, block_in, block_out = kernel.shape
    dense = np.zeros((num_heads * block_in, num_heads * block_out))
    for k in range(num_heads):
        dense[k * block_in : (k + 1) * block_in, k * block_out : (k + 1) * block_out] = kernel[k]
    return dense


def np_rg_lru(x, segment_pos, p, h0):
    """RG-LRU loop: log a = −8 r softplus(Λ); h = a h + sqrt(1 − a²)(i x); a reset drops h."""
    x = np.asarray(x, np.float64)
    w_a = np_block_diagonal_matrix(np.asarray(p["a_gate"]["w"], np.float64))
    b_a = np.asarray(p["a_gate"]["b"], np.float64).reshape(-1)
    w_x = np_block_diagonal_matrix(np.asarray(p["input_gate"]["w"], np.float64))
    b_x = np.asarray(p["input_gate"]["b"], np.float64).reshape(-1)
    softplus_lambda = np_softplus(np.asarray(p["a_param"], np.float64))
    batch_size, seq_len, _ = x.shape
    y = np.zeros_like(x)
    h_last = np.zeros((batch_size, x.shape[-1]))
    for b in range(batch_size):
        h = np.asarray(h0[b], np.float64)
        for t in range(seq_len):
            r = np_sigmoid(x[b, t] @ w_a + b_a)
            i = np_sigmoid(x[b, t] @ w_x + b_x)
            a = np.exp(-8.0 * r * softplus_lambda)
            if segment_pos[b, t] == 0:
                h = i * x[b, t]
            else:
                h = a * h + np.sqrt(1.0 - a**2) * (i * x[b, t])
            y[b, t] = h
        h_last[b] = h
    return y, h_last


def np_causal_conv(x, segment_pos, kernel, bias):
    """Conv loop from a fresh start: y_t = bias + Σ_k kernel[k] x_{t−k}, within the segment."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    batch_size, seq_len, _ = x.shape
    y = np.zeros_like(x)
    for b in range(batch_size):
        for t in range(seq_len):
            out = np.asarray(bias, np.float64).copy()
            for k in range(kernel.shape[0]):
                source = t - k
                if source < 0:
                    break
                out += kernel[k] * x[b, source]
                if segment_pos[b, source] == 0:
                    break  # steps before a segment start are out of reach
            y[b, t] = out
    return y


def np_dense(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"], np.float64)


def np_policy(params, obs, segment_pos):
    """The whole HawkPolicy forward pass from a fresh start, one row at a time."""
    obs = np.asarray(obs, np.float64)
    x = np_dense(obs, params["obs_embedding"])
    for name in sorted(k for k in params if k.startswith("residual_block_")):
        p = params[name]
        rec = p["recurrent_block"]
        normed = np.stack([[np_rms_norm(v, np.asarray(p["temporal_pre_norm"]["scale"])) for v in row] for row in x])
        y_branch = np_gelu_tanh(np_dense(normed, rec["linear_y"]))
        x_branch = np_dense(normed, rec["linear_x"])
        x_branch = np_causal_conv(x_branch, segment_pos, rec["conv_1d"]["w"], rec["conv_1d"]["b"])
        h0 = np.zeros((x.shape[0], x_branch.shape[-1]))
        x_branch, _ = np_rg_lru(x_branch, segment_pos, rec["rg_lru"], h0)
        residual = x + np_dense(x_branch * y_branch, rec["linear_out"])
        normed = np.stack(
            [[np_rms_norm(v, np.asarray(p["channel_pre_norm"]["scale"])) for v in row] for row in residual]
        )
        mlp = p["mlp_block"]
        up = normed @ np.asarray(mlp["ffw_up_kernel"]) + np.asarray(mlp["ffw_up_bias"])
        width = up.shape[-1] // 2
        hidden = np_gelu_tanh(up[..., :width]) * up[..., width:]
        x = residual + hidden @ np.asarray(mlp["ffw_down_kernel"]) + np.asarray(mlp["ffw_down_bias"])
    x = np.stack([[np_rms_norm(v, np.asarray(params["final_norm"]["scale"])) for v in row] for row in x])
    logits = np_dense(x, params["policy_head"])
    value = np_dense(x, params["value_head"])[..., 0]
    return logits, value


# ------------------------------------------------------------------------------------------------
# Helpers and shared (module-scoped) jitted functions.
# ------------------------------------------------------------------------------------------------


def perturb(params, seed, scale=0.3):
    """Adds Gaussian noise to every parameter, so zero readouts and norm scales become generic."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray(leaf + scale * rng.normal(size=leaf.shape), jnp.float32), params
    )


def periodic_segment_pos(batch_size, seq_len, period, offsets):
    """[b, l] int32 positions (t + offset_b) mod period: a reset every `period` steps."""
    t = np.arange(seq_len)[None, :] + np.asarray(offsets)[:, None]
    assert t.shape == (batch_size, seq_len)
    return jnp.asarray(t % period, jnp.int32)


def segment_pos_from_starts(seq_len, starts_per_row):
    """[b, l] int32 positions restarting at 0 at each listed start (and at t = 0)."""
    rows = []
    for starts in starts_per_row:
        pos, row = 0, []
        for t in range(seq_len):
            pos = 0 if (t == 0 or t in starts) else pos + 1
            row.append(pos)
        rows.append(row)
    return jnp.asarray(rows, jnp.int32)


def max_abs_diff(x, y):
    return float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))


def assert_trees_close(got, want, atol):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        assert max_abs_diff(g, w) <= atol


@pytest.fixture(scope="module")
def policies():
    return {s: HawkPolicy(num_actions=NUM_ACTIONS, scan_type=s) for s in SCAN_TYPES}


@pytest.fixture(scope="module")
def fresh_params(policies):
    return init_policy_params(policies["linear"], jax.random.PRNGKey(0), OBS_DIM)


@pytest.fixture(scope="module")
def params(fresh_params):
    return perturb(fresh_params, 1)


@pytest.fixture(scope="module")
def apply_fns(policies):
    """scan_type -> jitted (params, obs, segment_pos, cache) -> (PolicyOutput, PolicyCache)."""
    return {
        s: jax.jit(lambda p, o, sp, c, policy=policy: policy.apply({"params": p}, o, sp, c))
        for s, policy in policies.items()
    }


@pytest.fixture(scope="module")
def run_stepwise(policies):
    """Jitted: the policy one step at a time (l = 1 with cache) in a lax.scan, from zeros."""
    policy = policies["linear"]

    @jax.jit
    def run(p, obs, segment_pos):
        def step(cache, inputs):
            obs_t, segment_pos_t = inputs
            out, cache = policy.apply({"params": p}, obs_t[:, None], segment_pos_t[:, None], cache)
            return cache, out

        time_major = (jnp.swapaxes(obs, 0, 1), jnp.swapaxes(segment_pos, 0, 1))
        final_cache, outs = jax.lax.scan(step, policy.init_cache(obs.shape[0]), time_major)
        logits = jnp.swapaxes(outs.logits[:, :, 0], 0, 1)
        value = jnp.swapaxes(outs.value[:, :, 0], 0, 1)
        return logits, value, final_cache

    return run


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def random_obs(seed, batch_size, seq_len):
    return normal(seed, (batch_size, seq_len, OBS_DIM))


# ------------------------------------------------------------------------------------------------
# Equation-level tests.
# ------------------------------------------------------------------------------------------------


def test_rms_norm_matches_numpy():
    x = np.random.default_rng(0).normal(size=(3, 4, 6)).astype(np.float32)
    scale = np.random.default_rng(1).normal(size=(6,)).astype(np.float32)
    expected = np.stack([[np_rms_norm(v.astype(np.float64), scale) for v in row] for row in x])
    np.testing.assert_allclose(rms_norm(jnp.asarray(x), jnp.asarray(scale)), expected, rtol=1e-5)


def test_block_diagonal_linear_matches_dense_block_matrix():
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(2, 3, 3)).astype(np.float32)
    bias = rng.normal(size=(2, 3)).astype(np.float32)
    x = rng.normal(size=(4, 5, 6)).astype(np.float32)
    expected = x.astype(np.float64) @ np_block_diagonal_matrix(kernel) + bias.reshape(-1)
    got = block_diagonal_linear(jnp.asarray(x), jnp.asarray(kernel), jnp.asarray(bias))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_sqrt_bound_derivative_value_and_capped_gradient():
    x = jnp.asarray([0.0, 1e-9, 0.25, 1.0])
    np.testing.assert_array_equal(sqrt_bound_derivative(x, 1000.0), jnp.sqrt(x))
    grad = jax.vmap(jax.grad(lambda v: sqrt_bound_derivative(v, 1000.0)))(x)
    # d√x/dx = 1/(2√x) below the cap, the cap 1000 near 0 (finite at x = 0, i.e. at a = 1).
    np.testing.assert_allclose(grad, [1000.0, 1000.0, 1.0, 0.5], rtol=1e-6)
    # Forward mode agrees with reverse mode.
    _, tangent = jax.jvp(lambda v: sqrt_bound_derivative(v, 1000.0), (x,), (jnp.ones_like(x),))
    np.testing.assert_allclose(tangent, grad, rtol=1e-6)


def test_a_param_init_puts_a_squared_uniform_on_the_ring():
    a_param = rg_lru_a_param_init()(jax.random.PRNGKey(0), (20_000,))
    a = np.exp(-np_softplus(np.asarray(a_param, np.float64)))
    assert a.min() >= 0.9 - 1e-6 and a.max() <= 0.999 + 1e-6
    # a² ~ U[0.81, 0.998001]: compare the empirical CDF with the uniform one (Kolmogorov distance).
    a_squared = np.sort(a**2)
    uniform_cdf = (a_squared - 0.81) / (0.999**2 - 0.81)
    empirical_cdf = np.arange(1, a_squared.size + 1) / a_squared.size
    assert np.max(np.abs(uniform_cdf - empirical_cdf)) < 0.02


@pytest.mark.parametrize("scan_type", SCAN_TYPES)
@pytest.mark.parametrize("seq_len", [1, 13])
def test_rg_lru_matches_numpy_loop(scan_type, seq_len):
    # Given an RG-LRU with generic parameters, a non-zero initial state and resets mid-sequence,
    width, batch_size = 8, 3
    module = RGLRU(width=width, num_heads=2, scan_type=scan_type)
    x = normal(2, (batch_size, seq_len, width))
    segment_pos = jnp.asarray(np.random.default_rng(3).integers(0, 3, (batch_size, seq_len)), jnp.int32)
    h0 = normal(4, (batch_size, width))
    params = jax.jit(module.init)(jax.random.PRNGKey(5), x, segment_pos)["params"]
    p = perturb(params, 6)
    # When it runs from the state,
    y, h_last = jax.jit(module.apply)({"params": p}, x, segment_pos, h0)
    # Then it matches the loop of the equations, and the state is float32.
    y_expected, h_last_expected = np_rg_lru(x, np.asarray(segment_pos), p, np.asarray(h0))
    np.testing.assert_allclose(y, y_expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h_last, h_last_expected, rtol=1e-5, atol=1e-5)
    assert h_last.dtype == jnp.float32 and h_last.shape == (batch_size, width)


def test_rg_lru_init_a_range_and_finite_gradient_at_a_equal_one():
    module = RGLRU(width=32, num_heads=2)
    x = normal(0, (2, 6, 32))
    segment_pos = jnp.asarray([[0, 1, 2, 3, 4, 5], [3, 4, 0, 1, 2, 3]], jnp.int32)
    p = jax.jit(module.init)(jax.random.PRNGKey(1), x, segment_pos)["params"]
    a = np.exp(-np_softplus(np.asarray(p["a_param"], np.float64)))
    assert a.min() >= 0.9 - 1e-6 and a.max() <= 0.999 + 1e-6
    # Λ → −∞ gives softplus(Λ) = 0 in float32, so a_t = 1 exactly and 1 − a² = 0 inside the sqrt.
    p = {**p, "a_param": jnp.full((32,), -200.0)}
    a_t, _ = rg_lru_coefficients(x, jnp.full_like(x, 0.5), jnp.full_like(x, 0.5), p["a_param"], segment_pos == 0)
    assert float(jnp.max(a_t)) == 1.0

    def loss(params):
        y, h_last = module.apply({"params": params}, x, segment_pos)
        return jnp.sum(y**2) + jnp.sum(h_last)

    grads = jax.jit(jax.grad(loss))(p)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


@pytest.mark.parametrize("conv_width", [1, 2, 4])
def test_conv1d_masks_across_resets_in_full_pass_and_from_cache(conv_width):
    # Given a depthwise causal conv with generic weights and frequent resets (some just before chunk
    # ends),
    width, batch_size, seq_len = 4, 3, 17
    module = Conv1D(width=width, conv_width=conv_width)
    x = normal(0, (batch_size, seq_len, width))
    segment_pos = segment_pos_from_starts(seq_len, [{3, 4, 10}, {5, 11, 16}, {9}])
    params = jax.jit(module.init)(jax.random.PRNGKey(1), x, segment_pos)["params"]
    p = perturb(params, 2, 1.0)
    expected = np_causal_conv(x, np.asarray(segment_pos), p["w"], p["b"])
    apply = jax.jit(module.apply)
    # When run in one pass,
    y_full, cache_full = apply({"params": p}, x, segment_pos)
    np.testing.assert_allclose(y_full, expected, rtol=1e-5, atol=1e-5)
    # and in chunks from the cache (boundaries 5, 6, 11: one step after a reset, a one-step chunk,
    # at a reset),
    cache = Conv1D.init_cache(batch_size, width, conv_width)
    pieces = []
    for start, stop in [(0, 5), (5, 6), (6, 11), (11, 17)]:
        y, cache = apply({"params": p}, x[:, start:stop], segment_pos[:, start:stop], cache)
        pieces.append(y)
    # Then both match the loop, which never reaches back across a segment start.
    np.testing.assert_allclose(jnp.concatenate(pieces, axis=1), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cache, cache_full, rtol=0, atol=1e-6)
    assert cache.shape == (batch_size, conv_width - 1, width)


# ------------------------------------------------------------------------------------------------
# Policy-level tests. Sequences are [2, 30] (chunks of 7, 12 and 11 steps) wherever possible, so the
# jitted functions compile for few shapes.
# ------------------------------------------------------------------------------------------------

BATCH_SIZE = 2
SEQ_LEN = 30
CHUNKS = [(0, 7), (7, 19), (19, 30)]


def test_parameter_count_at_paper_sizes(fresh_params):
    # embed 5·32+32 = 192; block: 2 norms 64, linear x/y/out 3·1056, conv 4·32+32, Λ 32, two gates
    # 2·(2·16·16+32), MLP up 32·64+64 and down 32·32+32; final norm 32; readouts 32·2+2 + 32+1.
    expected = 192 + (64 + 3 * 1056 + 160 + 32 + 2 * 544 + 2112 + 1056) + 32 + 66 + 33
    assert count_params(fresh_params) == expected == 8003


def test_policy_matches_numpy_oracle(apply_fns, params):
    # Given generic parameters and resets at different times per row,
    obs = random_obs(3, BATCH_SIZE, SEQ_LEN)
    segment_pos = segment_pos_from_starts(SEQ_LEN, [{7, 8, 20}, {12}])
    expected_logits, expected_value = np_policy(params, obs, np.asarray(segment_pos))
    # Then both scans reproduce the numpy loop of the whole network.
    for scan_type, apply in apply_fns.items():
        out, _ = apply(params, obs, segment_pos, None)
        np.testing.assert_allclose(out.logits, expected_logits, rtol=1e-4, atol=1e-4, err_msg=scan_type)
        np.testing.assert_allclose(out.value, expected_value, rtol=1e-4, atol=1e-4, err_msg=scan_type)


def test_stepwise_equals_full_sequence(apply_fns, run_stepwise, params):
    # (a) l = 1 with cache for 200 steps, resets every 10 steps (phase per row) == full pass.
    seq_len = 200
    obs = random_obs(4, BATCH_SIZE, seq_len)
    segment_pos = periodic_segment_pos(BATCH_SIZE, seq_len, 10, [0, 3])
    step_logits, step_value, step_cache = run_stepwise(params, obs, segment_pos)
    assert float(jnp.std(step_logits)) > 1e-2  # the comparison is not trivially between zeros
    for scan_type, apply in apply_fns.items():
        out, full_cache = apply(params, obs, segment_pos, None)
        assert max_abs_diff(out.logits, step_logits) <= 1e-5, scan_type
        assert max_abs_diff(out.value, step_value) <= 1e-5, scan_type
        assert_trees_close(step_cache, full_cache, atol=1e-5)


@pytest.mark.parametrize("scan_type", SCAN_TYPES)
def test_outputs_after_reset_equal_fresh_run_on_suffix(apply_fns, params, scan_type):
    # (b) Given rows that all restart at t = 19 after different histories,
    apply = apply_fns[scan_type]
    reset_at = 19
    obs = random_obs(5, BATCH_SIZE, SEQ_LEN)
    segment_pos = segment_pos_from_starts(SEQ_LEN, [{5, reset_at}, {reset_at, 25}])
    fresh, _ = apply(params, obs[:, reset_at:], segment_pos[:, reset_at:], None)
    # When run in one pass, or continued from the (non-zero) cache of the prefix,
    whole, _ = apply(params, obs, segment_pos, None)
    _, prefix_cache = apply(params, obs[:, :reset_at], segment_pos[:, :reset_at], None)
    continued, _ = apply(params, obs[:, reset_at:], segment_pos[:, reset_at:], prefix_cache)
    # Then everything from the reset on is what a fresh policy outputs on the suffix. (The
    # associative scan of the whole sequence groups its products differently from the suffix's, so
    # there float32 rounding alone reaches ~1e-6. The linear scan runs the same recurrence, but the
    # dense layers around it multiply B·T = 2·32 rows in one case and 2·13 in the other, and newer
    # XLA:CPU dot kernels (jax >= 0.5) may block their 32-term sums differently by row count: a few
    # float32 ulps per layer. Measured: 9.5e-7 on jax 0.4.34 and 1.9e-6 on jax 0.12, with logits up
    # to 4.1 and 4.8 (2.0 and 3.3 ulps of them), so the bound is 8 ulps of the largest logit.)
    ulps = 8 * np.finfo(np.float32).eps * max(1.0, float(np.abs(np.asarray(fresh.logits)).max()))
    whole_tolerance = ulps if scan_type == "linear" else 1e-5
    assert max_abs_diff(whole.logits[:, reset_at:], fresh.logits) <= whole_tolerance
    assert max_abs_diff(whole.value[:, reset_at:], fresh.value) <= whole_tolerance
    assert max_abs_diff(continued.logits, fresh.logits) <= 1e-6
    assert max_abs_diff(continued.value, fresh.value) <= 1e-6
    # whereas without the reset the history would have mattered (so the test can fail).
    no_reset_pos = segment_pos.at[:, reset_at:].add(100)
    no_reset, _ = apply(params, obs[:, reset_at:], no_reset_pos[:, reset_at:], prefix_cache)
    assert max_abs_diff(no_reset.logits, fresh.logits) > 1e-4


def test_fresh_policy_is_uniform_with_zero_value(apply_fns, fresh_params):
    # (c) Zero readouts: logits exactly 0 (uniform policy) and value exactly 0, for any input.
    obs = random_obs(6, BATCH_SIZE, SEQ_LEN)
    segment_pos = periodic_segment_pos(BATCH_SIZE, SEQ_LEN, 5, [0, 2])
    for apply in apply_fns.values():
        out, _ = apply(fresh_params, obs, segment_pos, None)
        assert out.logits.shape == (BATCH_SIZE, SEQ_LEN, NUM_ACTIONS)
        assert out.value.shape == (BATCH_SIZE, SEQ_LEN)
        assert out.logits.dtype == jnp.float32 and out.value.dtype == jnp.float32
        np.testing.assert_array_equal(out.logits, 0.0)
        np.testing.assert_array_equal(out.value, 0.0)
        np.testing.assert_array_equal(jax.nn.softmax(out.logits), 1.0 / NUM_ACTIONS)


@pytest.mark.parametrize("scan_type", SCAN_TYPES)
def test_gradients_finite_and_nonzero_for_every_parameter(policies, params, fresh_params, scan_type):
    # (d) Given a loss that reads both heads on a sequence with resets,
    policy = policies[scan_type]
    obs = random_obs(7, BATCH_SIZE, SEQ_LEN)
    segment_pos = periodic_segment_pos(BATCH_SIZE, SEQ_LEN, 10, [0, 4])
    weights = normal(8, (BATCH_SIZE, SEQ_LEN, NUM_ACTIONS + 1))

    @jax.jit
    def grad_fn(p):
        def loss(p):
            out, _ = policy.apply({"params": p}, obs, segment_pos)
            logits_term = jnp.sum(out.logits * weights[..., :NUM_ACTIONS])
            return logits_term + jnp.sum(out.value * weights[..., -1])

        return jax.grad(loss)(p)

    # Then with non-zero readouts every single parameter gets a finite, non-zero gradient,
    flat_grads = jax.tree_util.tree_flatten_with_path(grad_fn(params))[0]
    for path, g in flat_grads:
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), name
        assert bool(jnp.all(g != 0.0)), name
    # and at initialisation the gradients are finite too (only the readouts get any).
    for g in jax.tree_util.tree_leaves(grad_fn(fresh_params)):
        assert bool(jnp.all(jnp.isfinite(g)))


def test_linear_and_associative_scans_agree(apply_fns, params):
    # (e) Full sequences with resets, from a zero start and then from the (non-zero) cache.
    obs = random_obs(9, BATCH_SIZE, SEQ_LEN)
    segment_pos = periodic_segment_pos(BATCH_SIZE, SEQ_LEN, 10, [0, 5])
    out_lin, cache_lin = apply_fns["linear"](params, obs, segment_pos, None)
    out_assoc, cache_assoc = apply_fns["associative"](params, obs, segment_pos, None)
    assert max_abs_diff(out_lin.logits, out_assoc.logits) <= 1e-5
    assert max_abs_diff(out_lin.value, out_assoc.value) <= 1e-5
    more_obs = random_obs(10, BATCH_SIZE, 11)
    more_pos = periodic_segment_pos(BATCH_SIZE, 11, 10, [4, 9])
    out_lin, _ = apply_fns["linear"](params, more_obs, more_pos, cache_lin)
    out_assoc, _ = apply_fns["associative"](params, more_obs, more_pos, cache_assoc)
    assert max_abs_diff(out_lin.logits, out_assoc.logits) <= 1e-5
    assert max_abs_diff(out_lin.value, out_assoc.value) <= 1e-5


@pytest.mark.parametrize("scan_type", SCAN_TYPES)
def test_chunked_continuation_equals_one_pass(apply_fns, params, scan_type):
    # (g) 30 steps in chunks [0, 7), [7, 19), [19, 30); resets are not aligned with the chunks
    # (row 0 restarts 2 steps and 1 step before a boundary; row 1 restarts exactly at one).
    apply = apply_fns[scan_type]
    obs = random_obs(11, BATCH_SIZE, SEQ_LEN)
    segment_pos = segment_pos_from_starts(SEQ_LEN, [{5, 10, 18, 25}, {6, 12, 19, 29}])
    whole, whole_cache = apply(params, obs, segment_pos, None)
    cache = None
    logits, values = [], []
    for start, stop in CHUNKS:
        out, cache = apply(params, obs[:, start:stop], segment_pos[:, start:stop], cache)
        logits.append(out.logits)
        values.append(out.value)
    assert max_abs_diff(jnp.concatenate(logits, axis=1), whole.logits) <= 1e-5
    assert max_abs_diff(jnp.concatenate(values, axis=1), whole.value) <= 1e-5
    assert_trees_close(cache, whole_cache, atol=1e-5)


def test_init_cache_is_zeros_with_the_returned_structure(params):
    policy = HawkPolicy(num_actions=NUM_ACTIONS, num_blocks=2)
    cache = policy.init_cache(4)  # no params, no apply
    assert isinstance(cache, PolicyCache) and len(cache.blocks) == 2
    assert all(isinstance(block, RecurrentBlockCache) for block in cache.blocks)
    assert cache.blocks[0].rg_lru_state.shape == (4, 32)
    assert cache.blocks[0].conv1d_state.shape == (4, 3, 32)
    for leaf in jax.tree_util.tree_leaves(cache):
        assert leaf.dtype == jnp.float32
        np.testing.assert_array_equal(leaf, 0.0)
    # The cache a call returns has the same structure, shapes and dtypes (a valid lax.scan carry).
    policy = HawkPolicy(num_actions=NUM_ACTIONS)
    _, returned = jax.eval_shape(
        lambda p: policy.apply({"params": p}, jnp.zeros((4, 1, OBS_DIM)), jnp.zeros((4, 1), jnp.int32)),
        params,
    )
    expected = policy.init_cache(4)
    assert jax.tree_util.tree_structure(returned) == jax.tree_util.tree_structure(expected)
    leaf_types = lambda tree: [(x.shape, x.dtype) for x in jax.tree_util.tree_leaves(tree)]
    assert leaf_types(returned) == leaf_types(expected)


def test_unknown_scan_type_is_rejected():
    policy = HawkPolicy(num_actions=NUM_ACTIONS, scan_type="parallel")
    with pytest.raises(ValueError, match="scan_type"):
        init_policy_params(policy, jax.random.PRNGKey(0), OBS_DIM)


@pytest.mark.parametrize("fan_in, expected_std", [("branch", 1 / np.sqrt(128)), ("stacked", 1 / np.sqrt(2 * 128))])
def test_mlp_up_projection_initial_std_follows_its_fan_in(fan_in, expected_std):
    """W_1, W_2 of the gated MLP start with std 1/√d ("branch", the default: LeCun fan-in d of each d -> f map) or
    1/√(2d) ("stacked": recurrentgemma's [2, d, f] kernel, whose initialiser counts the stacked axis as fan-in)."""
    width = 128
    policy = HawkPolicy(num_actions=2, embed_dim=width, lru_width=width, mlp_width=width, mlp_up_fan_in=fan_in)
    params = policy.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 3)), jnp.zeros((1, 1), jnp.int32))["params"]
    up = np.asarray(params["residual_block_0"]["mlp_block"]["ffw_up_kernel"])
    assert up.shape == (width, 2 * width)
    for branch in (up[:, :width], up[:, width:]):  # W_1 and W_2 separately: 16384 draws each
        assert abs(branch.std() / expected_std - 1) < 0.03 and abs(branch.mean()) < 0.1 * expected_std
    # The other d-input linear layers keep LeCun's 1/√d whatever the MLP's choice.
    linear_x = np.asarray(params["residual_block_0"]["recurrent_block"]["linear_x"]["kernel"])
    assert abs(linear_x.std() * np.sqrt(width) - 1) < 0.05


def test_unknown_mlp_up_fan_in_is_refused():
    policy = HawkPolicy(num_actions=2, mlp_up_fan_in="fan_out")
    with pytest.raises(ValueError, match="up_fan_in='fan_out' is not supported"):
        policy.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 3)), jnp.zeros((1, 1), jnp.int32))
