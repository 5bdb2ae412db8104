"""Hawk building blocks: RMSNorm, RG-LRU, causal Conv1D, recurrent / MLP / residual blocks.

The paper (App. B.3) uses one Hawk residual block (De et al., 2024, "Griffin: Mixing Gated
Linear Recurrences with Local Attention for Efficient Language Models",
https://arxiv.org/abs/2402.19427) as the policy backbone; the block internals follow the reference
Griffin/Hawk implementation (docs/choices.md#hawk-details, google-deepmind/recurrentgemma, `jax/layers.py` and
`jax/modules.py`), re-written here for jax 0.4.34 and with resets honoured everywhere.

Notation for array shapes:
  b  batch
  l  time (sequence length of one call; l = M·T for a whole meta-trajectory)
  d  model width (the observation embedding width, `embed_dim`)
  e  recurrent branch width (`lru_width`)
  f  MLP expanded width (`mlp_width`)
  w  temporal width of the causal convolution (`conv_width`)
  h  number of heads (diagonal blocks of the RG-LRU gates)

Resets come from positions: `segment_pos == 0` marks the first step of a segment (a meta-trajectory
for meta agents, an inner episode for naive learners). Nothing before that step may influence it or
anything after it: the RG-LRU drops its state and the convolution masks out inputs from the previous
segment, in the full-sequence pass and when continuing from a cache alike.

Every module returns its new cache; under `jax.jit` an unused cache costs nothing (dead code is
removed).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

Array = jax.Array

ScanType = Literal["linear", "associative"]
SCAN_TYPES: tuple[str, ...] = ("linear", "associative")

# Initialisation of the gated MLP's up projection (a choice; recurrentgemma and our layout differ). Both branches
# W_1, W_2: d -> f are linear maps of the d-wide input, so the default "branch" draws each with LeCun's fan-in d
# (std 1/√d), like every other Dense layer here. recurrentgemma stores them as one [2, d, f] Einsum kernel and its
# variance-scaling initialiser counts the stacked axis of size 2 as receptive field, so its fan-in is 2d
# (std 1/√(2d), √2 smaller): "stacked" reproduces that. The default keeps the initialisation every published run of
# this project used.
MlpUpFanIn = Literal["branch", "stacked"]
MLP_UP_FAN_IN: tuple[str, ...] = ("branch", "stacked")

# RG-LRU constants (recurrentgemma `layers.RGLRU`): c in log a_t = −c·r_t·softplus(Λ), the ring that
# a is initialised on, and the cap on d√x/dx that keeps the input normalisation's gradient finite as
# a_t → 1.
LOG_A_SCALE = 8.0
A_MIN_RADIUS = 0.9
A_MAX_RADIUS = 0.999
MAX_SQRT_GRADIENT = 1000.0


def _check_scan_type(scan_type: str) -> None:
    if scan_type not in SCAN_TYPES:
        raise ValueError(f"scan_type={scan_type!r} is not supported; choose one of {SCAN_TYPES}.")


def _lift(v: Array, ndim: int) -> Array:
    """Prepends unit axes to v up to rank `ndim` (explicit broadcasting, rank promotion 'raise')."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


def matmul(x: Array, kernel: Array) -> Array:
    """x @ kernel over the last axis, with every leading axis folded into one.

    XLA's CPU backend runs a 2-D [rows, d] x [d, f] product (and its gradients) as one GEMM; with the [b, l] axes
    left separate, the kernel gradient was several times slower.

    Args:
      x: [..., d].
      kernel: [d, f].

    Returns:
      [..., f].
    """
    flat = x.reshape(-1, x.shape[-1]) @ kernel
    return flat.reshape(*x.shape[:-1], kernel.shape[-1])


class Dense(nn.Module):
    """A linear layer whose matmul goes through `matmul` (one GEMM for any number of leading axes).

    Attributes:
      features: output width.
      kernel_init: kernel initialiser.
      bias_init: bias initialiser.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps x: [..., d] -> [..., features]."""
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return matmul(x, kernel) + _lift(bias, x.ndim)


def lecun_normal_fan_in(scale: float = 1.0) -> nn.initializers.Initializer:
    """Variance-scaling initialiser, fan-in, normal (Hawk's default for linear layers)."""
    return nn.initializers.variance_scaling(scale=scale, mode="fan_in", distribution="normal")


# --------------------------------------------------------------------------------------------------
# Equations as pure functions.
# --------------------------------------------------------------------------------------------------


def rms_norm(x: Array, scale: Array, eps: float = 1e-6) -> Array:
    """RMS normalisation with a zero-centred scale (recurrentgemma).

    y = x / sqrt(mean_d(x²) + eps) ⊙ (1 + scale)

    Args:
      x: [..., d] activations.
      scale: [d] learned scale, initialised to 0 so the layer starts as a plain RMS normalisation.
      eps: added to the mean square before the square root.

    Returns:
      [..., d] normalised activations.
    """
    mean_square = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(mean_square + eps) * (1.0 + _lift(scale, x.ndim))


def block_diagonal_linear(x: Array, kernel: Array, bias: Array) -> Array:
    """Linear map with a block-diagonal weight matrix (the RG-LRU gates, recurrentgemma).

    The width is split into h contiguous blocks of size i = e/h; block k maps x[k·i:(k+1)·i]
    through kernel[k]:
    y[k·j + n] = Σ_m x[k·i + m] · kernel[k, m, n] + bias[k, n].

    Args:
      x: [..., h·i] inputs.
      kernel: [h, i, j] one weight matrix per block.
      bias: [h, j] one bias per block.

    Returns:
      [..., h·j] outputs.
    """
    num_heads, block_in, block_out = kernel.shape
    # One dense matmul with the block-diagonal matrix: at these widths (h·i = 32) it is several times faster on CPU
    # than a batched per-head einsum, whose head axis forces transposes of the large activation.
    eye = jnp.eye(num_heads, dtype=kernel.dtype)
    dense_kernel = jnp.einsum("hk,hij->hikj", eye, kernel).reshape(num_heads * block_in, num_heads * block_out)
    return matmul(x, dense_kernel) + _lift(bias.reshape(-1), x.ndim)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def sqrt_bound_derivative(x: Array, max_gradient: float) -> Array:
    """√x whose derivative is capped at `max_gradient` (recurrentgemma's `sqrt_bound_derivative`).

    The value is exactly √x. The derivative 1/(2√x) is evaluated at max(x, 1/(4·max_gradient²)), so
    it never exceeds `max_gradient` and stays finite at x = 0 (a_t = 1 in the RG-LRU).

    Args:
      x: array of non-negative values, any shape.
      max_gradient: the cap on d√x/dx (a Python float, not differentiated).

    Returns:
      √x, same shape as x.
    """
    return jnp.sqrt(x)


@sqrt_bound_derivative.defjvp
def _sqrt_bound_derivative_jvp(
    max_gradient: float, primals: tuple[Array], tangents: tuple[Array]
) -> tuple[Array, Array]:
    (x,) = primals
    (x_dot,) = tangents
    x_floor = 1.0 / (4.0 * max_gradient**2)
    derivative = 0.5 * jax.lax.rsqrt(jnp.maximum(x, x_floor))
    return jnp.sqrt(x), x_dot * derivative


def rg_lru_a_param_init(
    min_radius: float = A_MIN_RADIUS, max_radius: float = A_MAX_RADIUS
) -> nn.initializers.Initializer:
    """Initialiser for the RG-LRU parameter Λ (recurrentgemma `rnn_param_init`).

    a = exp(−softplus(Λ)) is drawn so that a² is uniform on [min_radius², max_radius²] (uniform by
    area on a ring of the complex plane), hence a ∈ [min_radius, max_radius], and then
    Λ = softplus⁻¹(−log a) = log(1/a − 1).

    Args:
      min_radius: smallest a.
      max_radius: largest a.

    Returns:
      A Flax initialiser `(key, shape, dtype) -> Λ`.
    """

    def init(key: Array, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
        a_squared = jax.random.uniform(key, shape, jnp.float32, minval=min_radius**2, maxval=max_radius**2)
        a = jnp.sqrt(a_squared)
        return jnp.log(1.0 / a - 1.0).astype(dtype)

    return init


def rg_lru_coefficients(x: Array, gate_a: Array, gate_x: Array, a_param: Array, reset: Array) -> tuple[Array, Array]:
    """Per-step coefficients of the RG-LRU recurrence h_t = a_t ⊙ h_{t−1} + b_t (De et al., 2024).

    log a_t = −8 · r_t · softplus(Λ)
    b_t     = sqrt(1 − a_t²) ⊙ (i_t ⊙ x_t)

    At a segment start (reset_t) the previous state is dropped (a_t ← 0) and the multiplier
    sqrt(1 − a_t²) is replaced by 1, so h_t = i_t ⊙ x_t there. The square root has its gradient
    capped at 1000 (`sqrt_bound_derivative`).

    Args:
      x: [b, l, e] inputs x_t.
      gate_a: [b, l, e] recurrence gate r_t = σ(W_a x_t + b_a), in (0, 1).
      gate_x: [b, l, e] input gate i_t = σ(W_x x_t + b_x), in (0, 1).
      a_param: [e] Λ.
      reset: [b, l] bool, True where a segment starts.

    Returns:
      a: [b, l, e] transition a_t (0 at resets).
      b: [b, l, e] input term b_t.
    """
    chex.assert_rank([x, gate_a, gate_x, a_param, reset], [3, 3, 3, 1, 2])
    chex.assert_equal_shape([x, gate_a, gate_x])
    chex.assert_shape(reset, x.shape[:2])
    log_a = -LOG_A_SCALE * gate_a * _lift(jax.nn.softplus(a_param), gate_a.ndim)
    a = jnp.exp(log_a)
    # 1 − a² reaches 0 as a → 1 (r_t → 0 or Λ → −∞), where d√x/dx is unbounded: hence the cap.
    multiplier = sqrt_bound_derivative(1.0 - jnp.exp(2.0 * log_a), MAX_SQRT_GRADIENT)
    reset = reset[..., None]
    multiplier = jnp.where(reset, jnp.ones_like(multiplier), multiplier)
    a = jnp.where(reset, jnp.zeros_like(a), a)
    return a, multiplier * (gate_x * x)


def linear_recurrence(
    a: Array, b: Array, h0: Array, scan_type: ScanType = "linear", unroll: int = 8
) -> tuple[Array, Array]:
    """Diagonal linear recurrence h_t = a_t ⊙ h_{t−1} + b_t over the time axis, in float32.

    Args:
      a: [b, l, e] transitions a_t for t in [0, l).
      b: [b, l, e] inputs b_t for t in [0, l).
      h0: [b, e] float32 state before step 0 (h_{−1}).
      scan_type: "linear" runs `lax.scan` over time (O(l) sequential steps); "associative" runs
        `lax.associative_scan` on the pairs (a_t, b_t) with (a, b)∘(a', b') = (a'a, a'b + b'),
        O(log l) depth. l == 1 never scans.
      unroll: steps per iteration of the linear scan's loop (lets XLA fuse consecutive steps).

    Returns:
      h: [b, l, e] float32 states h_t for t in [0, l).
      h_last: [b, e] float32 state after the last step, h_{l−1}.
    """
    chex.assert_rank([a, b, h0], [3, 3, 2])
    chex.assert_equal_shape([a, b])
    chex.assert_type(h0, jnp.float32)
    _check_scan_type(scan_type)
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    if a.shape[1] == 1:
        # Sampling fast path: one step, no loop.
        h_last = a[:, 0] * h0 + b[:, 0]
        return h_last[:, None], h_last
    if scan_type == "linear":

        def step(h_prev: Array, a_b_t: tuple[Array, Array]) -> tuple[Array, Array]:
            a_t, b_t = a_b_t
            h_t = a_t * h_prev + b_t
            return h_t, h_t

        time_major = (jnp.swapaxes(a, 0, 1), jnp.swapaxes(b, 0, 1))
        h_last, h = jax.lax.scan(step, h0, time_major, unroll=min(unroll, a.shape[1]))
        return jnp.swapaxes(h, 0, 1), h_last

    def combine(earlier: tuple[Array, Array], later: tuple[Array, Array]) -> tuple[Array, Array]:
        a_i, b_i = earlier
        a_j, b_j = later
        return a_j * a_i, a_j * b_i + b_j

    # Fold the initial state into the first input: h_0 = a_0 h_{−1} + b_0, after which the scan
    # starts from 0.
    b = b.at[:, 0].add(a[:, 0] * h0)
    _, h = jax.lax.associative_scan(combine, (a, b), axis=1)
    return h, h[:, -1]


def causal_conv1d(x: Array, kernel: Array, bias: Array, reset: Array, state: Array) -> tuple[Array, Array]:
    """Causal temporal convolution that does not mix segments (recurrentgemma Conv1D).

    y_t = bias + Σ_{k=0}^{w−1} kernel[k] ⊙ x_{t−k} · [no segment starts in (t−k, t]]

    Steps before the chunk come from `state`, which holds the last w−1 inputs of the previous chunk
    with every entry that a later step of that chunk cut off (a reset after it) already set to zero.
    Because the convolution is linear, a zero entry is the same as a masked one, so only resets
    inside this chunk need checking here, and the returned state keeps the same invariant. A zero
    state is a fresh start.

    Args:
      x: [b, l, e] inputs.
      kernel: [w, e]; kernel[k] weights the input k steps back (k = 0 is the current step).
      bias: [e].
      reset: [b, l] bool, True where a segment starts.
      state: [b, w−1, e] the previous w−1 inputs, oldest first, masked as above.

    Returns:
      y: [b, l, e] outputs.
      new_state: [b, w−1, e] the last w−1 inputs (of state ++ x), masked as above.
    """
    chex.assert_rank([x, kernel, bias, reset, state], [3, 2, 1, 2, 3])
    conv_width = kernel.shape[0]
    history = conv_width - 1
    batch_size, seq_len, width = x.shape
    chex.assert_shape(reset, (batch_size, seq_len))
    chex.assert_shape(state, (batch_size, history, width))
    x_ext = jnp.concatenate([state.astype(x.dtype), x], axis=1)  # [b, w−1+l, e]
    # Buffered steps are already masked, so they count as "no reset" here.
    not_reset_ext = jnp.concatenate(
        [jnp.ones((batch_size, history), x.dtype), (~reset).astype(x.dtype)], axis=1
    )  # [b, w−1+l]

    y = x * _lift(kernel[0], 3) + _lift(bias, 3)
    in_segment = jnp.ones((batch_size, seq_len), x.dtype)  # [no reset in (t−k, t]]
    for k in range(1, conv_width):
        # x_{t−k} stays in the window only if none of the steps t−k+1, ..., t starts a segment.
        in_segment = in_segment * not_reset_ext[:, history - k + 1 : history - k + 1 + seq_len]
        x_shifted = x_ext[:, history - k : history - k + seq_len]
        y = y + (x_shifted * in_segment[..., None]) * _lift(kernel[k], 3)

    # New state: tail entry j (of w−1) survives only if no later step of the tail starts a segment.
    total_len = history + seq_len
    tail = x_ext[:, total_len - history :]
    tail_not_reset = not_reset_ext[:, total_len - history :]
    if history == 0:
        return y, tail
    # keep_j = Π_{i>j} not_reset(tail entry i), built from the newest entry (always kept) back.
    keep = [jnp.ones((batch_size,), x.dtype)]
    for j in range(history - 2, -1, -1):
        keep.insert(0, keep[0] * tail_not_reset[:, j + 1])
    return y, tail * jnp.stack(keep, axis=1)[..., None]


def gated_mlp(x: Array, up_kernel: Array, up_bias: Array, down_kernel: Array, down_bias: Array) -> Array:
    """Gated MLP of the Hawk residual block (recurrentgemma MLPBlock).

    y = W_down (GeLU(W_1 x + c_1) ⊙ (W_2 x + c_2)) + c_down, with the tanh approximation of GeLU
    (Flax's and Hawk's default).

    Args:
      x: [..., d] inputs.
      up_kernel: [d, 2f]; columns [0, f) are W_1 (gate branch), [f, 2f) are W_2 (value branch).
      up_bias: [2f].
      down_kernel: [f, d].
      down_bias: [d].

    Returns:
      [..., d] outputs.
    """
    gate, value = jnp.split(matmul(x, up_kernel) + _lift(up_bias, x.ndim), 2, axis=-1)
    hidden = jax.nn.gelu(gate, approximate=True) * value
    return matmul(hidden, down_kernel) + _lift(down_bias, x.ndim)


# --------------------------------------------------------------------------------------------------
# Modules.
# --------------------------------------------------------------------------------------------------


class RecurrentBlockCache(NamedTuple):
    """State a recurrent block carries between calls.

    Attributes:
      rg_lru_state: [b, e] float32 RG-LRU state after the last step.
      conv1d_state: [b, w−1, e] the last w−1 inputs of the convolution, oldest first; entries that
        precede a later segment start inside the buffer are zero (see `causal_conv1d`), so no extra
        validity flags.
    """

    rg_lru_state: Array
    conv1d_state: Array


class RMSNorm(nn.Module):
    """RMSNorm layer (see `rms_norm`).

    Attributes:
      width: d, size of the last axis.
      eps: small constant added to the mean square.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    width: int
    eps: float = 1e-6
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Normalises x: [..., d] -> [..., d]."""
        scale = self.param("scale", nn.initializers.zeros_init(), (self.width,), self.param_dtype)
        x, scale = nn.dtypes.promote_dtype(x, scale, dtype=self.dtype)
        return rms_norm(x, scale, self.eps)


class BlockDiagonalLinear(nn.Module):
    """Block-diagonal linear layer with `num_heads` square blocks (see `block_diagonal_linear`).

    Attributes:
      width: input and output width (divisible by num_heads).
      num_heads: number of diagonal blocks.
      w_init_variance_scale: variance scale of the fan-in normal kernel initialiser.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    width: int
    num_heads: int
    w_init_variance_scale: float = 1.0
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    @property
    def kernel_init(self) -> nn.initializers.Initializer:
        """Fan-in normal initialiser; fan-in is the block width (axis 1 of the [h, i, j] kernel)."""
        return nn.initializers.variance_scaling(
            scale=self.w_init_variance_scale,
            mode="fan_in",
            distribution="normal",
            in_axis=1,
            out_axis=2,
        )

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps x: [..., e] -> [..., e]."""
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} must be divisible by num_heads={self.num_heads}.")
        block_width = self.width // self.num_heads
        kernel = self.param("w", self.kernel_init, (self.num_heads, block_width, block_width), self.param_dtype)
        bias = self.param("b", nn.initializers.zeros_init(), (self.num_heads, block_width), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return block_diagonal_linear(x, kernel, bias)


class RGLRU(nn.Module):
    """Real-Gated Linear Recurrent Unit (see `rg_lru_coefficients` and `linear_recurrence`).

    Attributes:
      width: e, the recurrence width.
      num_heads: number of diagonal blocks of the two gate matrices W_a and W_x.
      scan_type: "linear" (lax.scan) or "associative" (lax.associative_scan); l == 1 never scans.
      w_init_variance_scale: variance scale of the gate kernels' initialiser.
      dtype: computation dtype (the state is float32 whatever this is).
      param_dtype: parameter dtype.
    """

    width: int
    num_heads: int
    scan_type: ScanType = "linear"
    w_init_variance_scale: float = 1.0
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    def setup(self) -> None:
        _check_scan_type(self.scan_type)
        self.a_param = self.param("a_param", rg_lru_a_param_init(), (self.width,), self.param_dtype)
        gate_kwargs = dict(
            width=self.width,
            num_heads=self.num_heads,
            w_init_variance_scale=self.w_init_variance_scale,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        self.input_gate = BlockDiagonalLinear(**gate_kwargs, name="input_gate")
        self.a_gate = BlockDiagonalLinear(**gate_kwargs, name="a_gate")

    def __call__(self, x: Array, segment_pos: Array, cache: Array | None = None) -> tuple[Array, Array]:
        """Runs the RG-LRU over a chunk.

        Args:
          x: [b, l, e] inputs.
          segment_pos: [b, l] int32 positions within the segment; 0 starts a new segment (state
            reset).
          cache: [b, e] float32 state before the chunk; None means zeros (a fresh start).

        Returns:
          y: [b, l, e] outputs (the states h_t, cast to the computation dtype).
          new_cache: [b, e] float32 state after the last step.
        """
        x, a_param = nn.dtypes.promote_dtype(x, self.a_param, dtype=self.dtype)
        batch_size, seq_len, _ = x.shape
        chex.assert_shape(segment_pos, (batch_size, seq_len))
        if cache is None:
            cache = self.init_cache(batch_size, self.width)
        gate_x = jax.nn.sigmoid(self.input_gate(x))
        gate_a = jax.nn.sigmoid(self.a_gate(x))
        a, b = rg_lru_coefficients(x, gate_a, gate_x, a_param, segment_pos == 0)
        h, h_last = linear_recurrence(a, b, cache, self.scan_type)
        return h.astype(x.dtype), h_last

    @classmethod
    def init_cache(cls, batch_size: int, width: int) -> Array:
        """Zero state [batch_size, width], float32 whatever the computation dtype."""
        return jnp.zeros((batch_size, width), jnp.float32)


class Conv1D(nn.Module):
    """Causal temporal convolution that never looks across a segment start (see `causal_conv1d`).

    Attributes:
      width: e, channels (the convolution is depthwise).
      conv_width: w, number of time steps in the window (current step included).
      w_init_variance_scale: variance scale of the fan-in normal kernel initialiser (0.01 in Hawk).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    width: int
    conv_width: int = 4
    w_init_variance_scale: float = 0.01
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array, segment_pos: Array, cache: Array | None = None) -> tuple[Array, Array]:
        """Convolves a chunk.

        Args:
          x: [b, l, e] inputs.
          segment_pos: [b, l] int32; 0 starts a new segment (earlier inputs are masked out).
          cache: [b, w−1, e] previous inputs (see `causal_conv1d`); None means zeros (a fresh
            start).

        Returns:
          y: [b, l, e] outputs.
          new_cache: [b, w−1, e].
        """
        kernel = self.param(
            "w",
            lecun_normal_fan_in(self.w_init_variance_scale),
            (self.conv_width, self.width),
            self.param_dtype,
        )
        bias = self.param("b", nn.initializers.zeros_init(), (self.width,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        if cache is None:
            cache = self.init_cache(x.shape[0], self.width, self.conv_width, x.dtype)
        return causal_conv1d(x, kernel, bias, segment_pos == 0, cache)

    @classmethod
    def init_cache(cls, batch_size: int, width: int, conv_width: int = 4, dtype: DTypeLike = jnp.float32) -> Array:
        """Zero buffer [batch_size, conv_width − 1, width] (no history)."""
        return jnp.zeros((batch_size, conv_width - 1, width), dtype)


class RecurrentBlock(nn.Module):
    """Hawk's temporal-mixing block (recurrentgemma RecurrentBlock).

    y = GeLU(Linear_y(x)); u = RG-LRU(Conv1D(Linear_x(x))); out = Linear_out(u ⊙ y).

    Attributes:
      width: d, input and output width.
      lru_width: e, width of the recurrent branch.
      num_heads: diagonal blocks of the RG-LRU gates.
      conv_width: w, temporal width of the convolution.
      scan_type: "linear" or "associative".
      final_w_init_variance_scale: variance scale of Linear_out's initialiser.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    width: int
    lru_width: int
    num_heads: int
    conv_width: int = 4
    scan_type: ScanType = "linear"
    final_w_init_variance_scale: float = 1.0
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    def setup(self) -> None:
        dense_kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.linear_y = Dense(self.lru_width, kernel_init=lecun_normal_fan_in(), name="linear_y", **dense_kwargs)
        self.linear_x = Dense(self.lru_width, kernel_init=lecun_normal_fan_in(), name="linear_x", **dense_kwargs)
        self.linear_out = Dense(
            self.width,
            kernel_init=lecun_normal_fan_in(self.final_w_init_variance_scale),
            name="linear_out",
            **dense_kwargs,
        )
        self.conv_1d = Conv1D(width=self.lru_width, conv_width=self.conv_width, name="conv_1d", **dense_kwargs)
        self.rg_lru = RGLRU(
            width=self.lru_width,
            num_heads=self.num_heads,
            scan_type=self.scan_type,
            name="rg_lru",
            **dense_kwargs,
        )

    def __call__(
        self, x: Array, segment_pos: Array, cache: RecurrentBlockCache | None = None
    ) -> tuple[Array, RecurrentBlockCache]:
        """Runs the block over a chunk.

        Args:
          x: [b, l, d] inputs.
          segment_pos: [b, l] int32; 0 starts a new segment.
          cache: state after the previous chunk; None means a fresh start.

        Returns:
          out: [b, l, d] outputs.
          new_cache: state after the last step.
        """
        y_branch = jax.nn.gelu(self.linear_y(x), approximate=True)
        x_branch = self.linear_x(x)
        x_branch, conv1d_state = self.conv_1d(x_branch, segment_pos, None if cache is None else cache.conv1d_state)
        x_branch, rg_lru_state = self.rg_lru(x_branch, segment_pos, None if cache is None else cache.rg_lru_state)
        out = self.linear_out(x_branch * y_branch)
        return out, RecurrentBlockCache(rg_lru_state=rg_lru_state, conv1d_state=conv1d_state)

    @classmethod
    def init_cache(
        cls, batch_size: int, lru_width: int, conv_width: int = 4, dtype: DTypeLike = jnp.float32
    ) -> RecurrentBlockCache:
        """Zero cache (a fresh start) for a batch of `batch_size` rows."""
        return RecurrentBlockCache(
            rg_lru_state=RGLRU.init_cache(batch_size, lru_width),
            conv1d_state=Conv1D.init_cache(batch_size, lru_width, conv_width, dtype),
        )


class MLPBlock(nn.Module):
    """Hawk's gated MLP block (see `gated_mlp`).

    Attributes:
      width: d, input and output width.
      expanded_width: f, width of the gated hidden layer.
      final_w_init_variance_scale: variance scale of the down projection's initialiser.
      up_fan_in: initialisation of the up projection (see `MLP_UP_FAN_IN`): "branch" (default) draws W_1 and
        W_2 with std 1/√d, "stacked" with std 1/√(2d) as recurrentgemma's [2, d, f] Einsum kernel does.
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    width: int
    expanded_width: int
    final_w_init_variance_scale: float = 1.0
    up_fan_in: MlpUpFanIn = "branch"
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Maps x: [..., d] -> [..., d]."""
        # W_1 and W_2 live in one [d, 2f] kernel so the two branches cost one matmul (see MLP_UP_FAN_IN for
        # their initialisation).
        if self.up_fan_in not in MLP_UP_FAN_IN:
            raise ValueError(f"up_fan_in={self.up_fan_in!r} is not supported; choose one of {MLP_UP_FAN_IN}.")
        up_kernel = self.param(
            "ffw_up_kernel",
            lecun_normal_fan_in(1.0 if self.up_fan_in == "branch" else 0.5),
            (self.width, 2 * self.expanded_width),
            self.param_dtype,
        )
        up_bias = self.param(
            "ffw_up_bias",
            nn.initializers.zeros_init(),
            (2 * self.expanded_width,),
            self.param_dtype,
        )
        down_kernel = self.param(
            "ffw_down_kernel",
            lecun_normal_fan_in(self.final_w_init_variance_scale),
            (self.expanded_width, self.width),
            self.param_dtype,
        )
        down_bias = self.param("ffw_down_bias", nn.initializers.zeros_init(), (self.width,), self.param_dtype)
        x, up_kernel, up_bias, down_kernel, down_bias = nn.dtypes.promote_dtype(
            x, up_kernel, up_bias, down_kernel, down_bias, dtype=self.dtype
        )
        return gated_mlp(x, up_kernel, up_bias, down_kernel, down_bias)


class ResidualBlock(nn.Module):
    """Hawk's pre-norm residual block (recurrentgemma ResidualBlock).

    y = x + RecurrentBlock(RMSNorm(x)); out = y + MLPBlock(RMSNorm(y)).

    Attributes:
      width: d, the residual stream width.
      lru_width: e, the recurrent branch width.
      mlp_width: f, the MLP expanded width.
      num_heads: diagonal blocks of the RG-LRU gates.
      conv_width: w, temporal width of the convolution.
      scan_type: "linear" or "associative".
      mlp_up_fan_in: the MLP up projection's initialisation (`MLPBlock.up_fan_in`).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    width: int
    lru_width: int
    mlp_width: int
    num_heads: int
    conv_width: int = 4
    scan_type: ScanType = "linear"
    mlp_up_fan_in: MlpUpFanIn = "branch"
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    def setup(self) -> None:
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.temporal_pre_norm = RMSNorm(self.width, name="temporal_pre_norm", **kwargs)
        self.recurrent_block = RecurrentBlock(
            width=self.width,
            lru_width=self.lru_width,
            num_heads=self.num_heads,
            conv_width=self.conv_width,
            scan_type=self.scan_type,
            name="recurrent_block",
            **kwargs,
        )
        self.channel_pre_norm = RMSNorm(self.width, name="channel_pre_norm", **kwargs)
        self.mlp_block = MLPBlock(
            self.width, self.mlp_width, up_fan_in=self.mlp_up_fan_in, name="mlp_block", **kwargs
        )

    def __call__(
        self, x: Array, segment_pos: Array, cache: RecurrentBlockCache | None = None
    ) -> tuple[Array, RecurrentBlockCache]:
        """Runs the block over a chunk.

        Args:
          x: [b, l, d] residual stream.
          segment_pos: [b, l] int32; 0 starts a new segment.
          cache: state after the previous chunk; None means a fresh start.

        Returns:
          out: [b, l, d] residual stream.
          new_cache: state after the last step.
        """
        temporal_out, new_cache = self.recurrent_block(self.temporal_pre_norm(x), segment_pos, cache)
        residual = x + temporal_out
        return residual + self.mlp_block(self.channel_pre_norm(residual)), new_cache

    @classmethod
    def init_cache(
        cls, batch_size: int, lru_width: int, conv_width: int = 4, dtype: DTypeLike = jnp.float32
    ) -> RecurrentBlockCache:
        """Zero cache (a fresh start) for a batch of `batch_size` rows."""
        return RecurrentBlock.init_cache(batch_size, lru_width, conv_width, dtype)
