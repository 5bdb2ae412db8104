"""The Hawk policy/value network shared by meta agents and naive learners (paper App. B.3).

Observation → linear embedding (d = embed_dim) → `num_blocks` Hawk residual blocks → RMSNorm → two
linear readouts, policy logits (|A|) and value (1). The readouts are initialised to zero ("The last
readout layers are however initialized to 0"), so a fresh policy is exactly uniform with value 0.

Shapes: b batch, l time, d embed_dim. The same module serves the learner (a whole meta-trajectory,
l = M·T, no cache) and the rollout (l = 1 with the cache of the previous step); `segment_pos == 0`
resets the state.

Usage:
  policy = HawkPolicy(num_actions=2)
  params = init_policy_params(policy, key, obs_dim=5)
  cache = policy.init_cache(batch_size)
  out, cache = policy.apply({"params": params}, obs, segment_pos, cache)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from coala_dist.networks.hawk import (
    Dense,
    MlpUpFanIn,
    RecurrentBlockCache,
    ResidualBlock,
    RMSNorm,
    ScanType,
    lecun_normal_fan_in,
)

Array = jax.Array
Params = Any  # a Flax params pytree: nested dicts of arrays


class PolicyOutput(NamedTuple):
    """Policy and value readouts.

    Attributes:
      logits: [b, l, num_actions] float32 unnormalised log-probabilities.
      value: [b, l] float32 value estimates.
    """

    logits: Array
    value: Array


class PolicyCache(NamedTuple):
    """Recurrent state of the whole policy after a step.

    Attributes:
      blocks: one `RecurrentBlockCache` per residual block, in order.
    """

    blocks: tuple[RecurrentBlockCache, ...]


class HawkPolicy(nn.Module):
    """Hawk sequence policy with a value head (paper App. B.3).

    Attributes:
      num_actions: |A|, number of discrete actions.
      embed_dim: d, width of the observation embedding and residual stream (32 in the paper).
      lru_width: e, width of the recurrent branch (32).
      mlp_width: f, expanded width of the gated MLP (32).
      num_heads: diagonal blocks of the RG-LRU gates (2).
      num_blocks: number of residual blocks (1).
      conv_width: w, temporal width of the causal convolution (4).
      scan_type: "linear" (lax.scan) or "associative" (lax.associative_scan) for sequences; l == 1
        never scans.
      mlp_up_fan_in: initialisation of the MLP up projection (`coala_dist.networks.hawk.MLP_UP_FAN_IN`).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    num_actions: int
    embed_dim: int = 32
    lru_width: int = 32
    mlp_width: int = 32
    num_heads: int = 2
    num_blocks: int = 1
    conv_width: int = 4
    scan_type: ScanType = "linear"
    mlp_up_fan_in: MlpUpFanIn = "branch"
    dtype: DTypeLike = jnp.float32
    param_dtype: DTypeLike = jnp.float32

    def setup(self) -> None:
        if self.lru_width % self.num_heads:
            raise ValueError(f"lru_width={self.lru_width} must be divisible by num_heads={self.num_heads}.")
        kwargs = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.obs_embedding = Dense(self.embed_dim, kernel_init=lecun_normal_fan_in(), name="obs_embedding", **kwargs)
        self.residual_blocks = [
            ResidualBlock(
                width=self.embed_dim,
                lru_width=self.lru_width,
                mlp_width=self.mlp_width,
                num_heads=self.num_heads,
                conv_width=self.conv_width,
                scan_type=self.scan_type,
                mlp_up_fan_in=self.mlp_up_fan_in,
                name=f"residual_block_{i}",
                **kwargs,
            )
            for i in range(self.num_blocks)
        ]
        self.final_norm = RMSNorm(self.embed_dim, name="final_norm", **kwargs)
        zeros = nn.initializers.zeros_init()
        self.policy_head = Dense(self.num_actions, kernel_init=zeros, bias_init=zeros, name="policy_head", **kwargs)
        self.value_head = Dense(1, kernel_init=zeros, bias_init=zeros, name="value_head", **kwargs)

    def __call__(
        self, obs: Array, segment_pos: Array, cache: PolicyCache | None = None
    ) -> tuple[PolicyOutput, PolicyCache]:
        """Runs the policy over a chunk of time steps.

        Args:
          obs: [b, l, obs_dim] float32 observations.
          segment_pos: [b, l] int32 positions within the segment; 0 starts a segment (the recurrent
            state and the convolution window are reset there, also when continuing from a cache).
          cache: the state after the previous chunk; None starts from zeros (same as `init_cache`).

        Returns:
          output: logits [b, l, num_actions] and value [b, l], float32.
          new_cache: the state after the last step of the chunk.
        """
        chex.assert_rank(obs, 3)
        chex.assert_shape(segment_pos, obs.shape[:2])
        if cache is not None and len(cache.blocks) != self.num_blocks:
            raise ValueError(f"cache has {len(cache.blocks)} blocks, expected {self.num_blocks}.")
        x = self.obs_embedding(obs)
        new_block_caches = []
        for i, block in enumerate(self.residual_blocks):
            x, block_cache = block(x, segment_pos, None if cache is None else cache.blocks[i])
            new_block_caches.append(block_cache)
        x = self.final_norm(x)
        logits = self.policy_head(x).astype(jnp.float32)
        value = self.value_head(x)[..., 0].astype(jnp.float32)
        return PolicyOutput(logits=logits, value=value), PolicyCache(blocks=tuple(new_block_caches))

    @nn.nowrap
    def init_cache(self, batch_size: int) -> PolicyCache:
        """Zero state for `batch_size` rows (a fresh start); needs no params and no `apply`."""
        return PolicyCache(
            blocks=tuple(
                ResidualBlock.init_cache(batch_size, self.lru_width, self.conv_width, self.dtype)
                for _ in range(self.num_blocks)
            )
        )


def init_policy_params(policy: HawkPolicy, key: Array, obs_dim: int) -> Params:
    """Initialises the policy's parameters (Hawk's initialisation, zero readouts).

    Args:
      policy: the module.
      key: PRNG key.
      obs_dim: size of the last axis of the observations.

    Returns:
      The "params" collection, to be used as
      `policy.apply({"params": params}, obs, segment_pos, cache)`.
    """
    # One step is enough to create every parameter and is the cheapest trace; jit compiles the
    # initialisers into one program, which is faster than running them op by op.
    dummy_obs = jnp.zeros((1, 1, obs_dim), jnp.float32)
    dummy_segment_pos = jnp.zeros((1, 1), jnp.int32)
    return jax.jit(policy.init)(key, dummy_obs, dummy_segment_pos)["params"]


def action_log_probs(logits: Array, actions: Array) -> tuple[Array, Array]:
    """log π(a | h) of the taken actions and the policy's entropy, from logits [..., |A|] and actions [...] (int).

    Returns:
      logp [...] and entropy [...], float32.
    """
    log_probs = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
    return logp, entropy


def evaluate_actions(policy: HawkPolicy, params: Params, obs: Array, actions: Array) -> tuple[Array, Array, Array]:
    """The policy along whole sequences that each start fresh (segment position l, no cache): log π(aₗ | hₗ) of the
    taken actions, the entropy and the value at each step.

    Serves the learner (meta-trajectories, l = M·T) and the naive learners (one inner episode, l = T) alike.

    Args:
      policy: the module.
      params: its parameters.
      obs: [..., L, obs_dim] observations.
      actions: [..., L] int actions taken.

    Returns:
      logp, entropy and value, each [..., L].
    """
    lead, length = actions.shape[:-1], actions.shape[-1]
    rows = obs.reshape((-1, length, obs.shape[-1]))
    segment_pos = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), rows.shape[:2])
    output, _ = policy.apply({"params": params}, rows, segment_pos)
    logp, entropy = action_log_probs(output.logits.reshape(lead + (length, -1)), actions)
    return logp, entropy, output.value.reshape(lead + (length,))


def count_params(params: Params) -> int:
    """Total number of scalar parameters in a pytree."""
    return sum(int(leaf.size) for leaf in jax.tree_util.tree_leaves(params))
